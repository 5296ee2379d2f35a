"""Fuzz the VRRP decoder with seeded random and mutated packets.

Every packet must either decode or be dropped with a `DropReason`; any other exception fails
the test, and the drop counter plus the accepted count must equal the number of packets fed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest

from lvsha.net.checksum import internet_checksum
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    VRRP_MULTICAST_IPV6,
    Advert,
    AuthType,
    DropCounter,
    DropReason,
    IpAddress,
    ReceivedAdvert,
    VrrpDatagram,
    VrrpVersion,
    decode_advert,
    encode_advert,
    receive_advert,
    receive_ipv4_packet,
)

PACKETS_PER_STRATEGY = 12_000
SEED = 5798


def random_advert(rng: random.Random, family: int) -> tuple[Advert, IpAddress, IpAddress]:
    count = rng.randrange(0, 12)
    if family == 4:
        source: IpAddress = IPv4Address(rng.getrandbits(32))
        destination: IpAddress = rng.choice([VRRP_MULTICAST_IPV4, IPv4Address(rng.getrandbits(32))])
        addresses: tuple[IpAddress, ...] = tuple(
            IPv4Address(rng.getrandbits(32)) for _ in range(count)
        )
        version = rng.choice([VrrpVersion.V2, VrrpVersion.V3])
    else:
        source = IPv6Address(rng.getrandbits(128))
        destination = rng.choice([VRRP_MULTICAST_IPV6, IPv6Address(rng.getrandbits(128))])
        addresses = tuple(IPv6Address(rng.getrandbits(128)) for _ in range(count))
        version = VrrpVersion.V3
    auth_type, auth_data = AuthType.NONE, b""
    if version is VrrpVersion.V2 and rng.random() < 0.5:
        auth_type = AuthType.SIMPLE_PASSWORD
        auth_data = rng.randbytes(rng.randrange(0, 9)).rstrip(b"\0")
    advert = Advert(
        version=version,
        vrid=rng.randrange(1, 256),
        priority=rng.randrange(0, 256),
        advert_interval=rng.randrange(1, 256 if version is VrrpVersion.V2 else 4096),
        addresses=addresses,
        auth_type=auth_type,
        auth_data=auth_data,
    )
    return advert, source, destination


def valid_datagram(rng: random.Random) -> VrrpDatagram:
    advert, source, destination = random_advert(rng, rng.choice([4, 6]))
    return VrrpDatagram(source, destination, 255, encode_advert(advert, source, destination))


def flip_bits(rng: random.Random, data: bytes) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def fix_checksum(datagram: VrrpDatagram, payload: bytes) -> bytes:
    """Give a random payload a valid checksum, the v2 or the v3 way, so later checks run."""
    if len(payload) < 8:
        return payload
    zeroed = payload[:6] + b"\0\0" + payload[8:]
    if payload[0] >> 4 == 3:
        if datagram.source.version == 4:
            pseudo = datagram.source.packed + datagram.destination.packed
            pseudo += bytes([0, 112]) + len(payload).to_bytes(2, "big")
        else:
            pseudo = datagram.source.packed + datagram.destination.packed
            pseudo += len(payload).to_bytes(4, "big") + bytes([0, 0, 0, 112])
        checksum = internet_checksum(pseudo + zeroed)
    else:
        checksum = internet_checksum(zeroed)
    return zeroed[:6] + checksum.to_bytes(2, "big") + zeroed[8:]


def random_bytes(rng: random.Random) -> VrrpDatagram:
    template = valid_datagram(rng)
    hop_limit = 255 if rng.random() < 0.9 else rng.randrange(256)
    return VrrpDatagram(
        template.source, template.destination, hop_limit, rng.randbytes(rng.randrange(0, 80))
    )


def random_fields_valid_checksum(rng: random.Random) -> VrrpDatagram:
    template = valid_datagram(rng)
    header = bytes(
        [
            rng.choice([0x21, 0x31, 0x11, 0x41, 0x22, 0x32, rng.randrange(256)]),
            rng.choice([0, 1, rng.randrange(256)]),
            rng.randrange(256),
            rng.randrange(0, 6),
            rng.choice([0, 1, 2, 3, rng.randrange(256)]),
            rng.choice([0, 1, rng.randrange(256)]),
            0,
            0,
        ]
    )
    body = rng.randbytes(rng.choice([0, 4, 8, 12, 16, 20, 24, 32, rng.randrange(0, 90)]))
    payload = fix_checksum(template, header + body)
    return VrrpDatagram(template.source, template.destination, 255, payload)


def bit_flipped(rng: random.Random) -> VrrpDatagram:
    template = valid_datagram(rng)
    return VrrpDatagram(
        template.source, template.destination, 255, flip_bits(rng, template.payload)
    )


def truncated(rng: random.Random) -> VrrpDatagram:
    template = valid_datagram(rng)
    cut = rng.randrange(0, len(template.payload))
    return VrrpDatagram(template.source, template.destination, 255, template.payload[:cut])


def extended(rng: random.Random) -> VrrpDatagram:
    template = valid_datagram(rng)
    payload = template.payload + rng.randbytes(rng.randrange(1, 40))
    if rng.random() < 0.5:
        # A valid checksum over the longer packet, so only the length checks can catch it.
        payload = fix_checksum(template, payload)
    return VrrpDatagram(template.source, template.destination, 255, payload)


def check_accepted(received: ReceivedAdvert) -> None:
    """An accepted advert must re-encode to a packet that decodes to the same advert."""
    advert = received.advert
    payload = encode_advert(advert, received.source, received.destination)
    again = decode_advert(VrrpDatagram(received.source, received.destination, 255, payload))
    assert again.advert == advert


STRATEGIES: dict[str, tuple[Callable[[random.Random], VrrpDatagram], set[DropReason]]] = {
    "random-bytes": (random_bytes, {DropReason.TRUNCATED, DropReason.UNKNOWN_VERSION}),
    "random-fields-valid-checksum": (
        random_fields_valid_checksum,
        {
            DropReason.UNKNOWN_TYPE,
            DropReason.AUTH_AH_UNSUPPORTED,
            DropReason.UNKNOWN_AUTH_TYPE,
            DropReason.ZERO_ADVERT_INTERVAL,
            DropReason.INVALID_VRID,
            DropReason.VERSION_2_OVER_IPV6,
        },
    ),
    "bit-flips": (bit_flipped, {DropReason.BAD_CHECKSUM}),
    "truncation": (truncated, {DropReason.TRUNCATED}),
    "extension": (
        extended,
        {DropReason.ADDRESS_COUNT_MISMATCH, DropReason.ADDRESS_LENGTH_MISMATCH},
    ),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_decoder_drops_or_accepts_every_packet(strategy: str) -> None:
    generate, expected_reasons = STRATEGIES[strategy]
    rng = random.Random(f"{SEED}-{strategy}")
    drops = DropCounter()
    accepted = 0
    for _ in range(PACKETS_PER_STRATEGY):
        received = receive_advert(generate(rng), drops)
        if received is not None:
            accepted += 1
            check_accepted(received)
    assert accepted + drops.total == PACKETS_PER_STRATEGY
    seen = {reason for reason, count in drops.snapshot().items() if count}
    assert expected_reasons <= seen, f"never saw {expected_reasons - seen}"


def ipv4_packet(rng: random.Random) -> bytes:
    template = valid_datagram(rng)
    while template.source.version != 4:
        template = valid_datagram(rng)
    header_length = rng.choice([20, 20, 20, 24])
    total_length = header_length + len(template.payload)
    header = (
        bytes([0x40 | header_length // 4, 0xC0])
        + total_length.to_bytes(2, "big")
        + bytes([0, 1, 0, 0, 255, 112, 0, 0])
        + template.source.packed
        + template.destination.packed
        + bytes(header_length - 20)
    )
    packet = header + template.payload
    mutation = rng.randrange(4)
    if mutation == 0:
        return flip_bits(rng, packet)
    if mutation == 1:
        return packet[: rng.randrange(0, len(packet))]
    if mutation == 2:
        return packet + rng.randbytes(rng.randrange(1, 20))
    return packet


def test_ipv4_framing_and_decoder_drop_or_accept_every_raw_read() -> None:
    rng = random.Random(f"{SEED}-ipv4")
    drops = DropCounter()
    accepted = 0
    for _ in range(PACKETS_PER_STRATEGY):
        if receive_ipv4_packet(ipv4_packet(rng), drops) is not None:
            accepted += 1
    assert accepted + drops.total == PACKETS_PER_STRATEGY
    assert accepted > PACKETS_PER_STRATEGY // 8, "the unmutated quarter should mostly decode"
    for reason in (
        DropReason.IPV4_HEADER_INVALID,
        DropReason.IPV4_LENGTH_MISMATCH,
        DropReason.NOT_VRRP_PROTOCOL,
        DropReason.TTL_NOT_255,
        DropReason.BAD_CHECKSUM,
    ):
        assert drops[reason] > 0, reason
