"""VRRP codec: round trips, every drop reason, checksum known answers, keepalived fixtures."""

from __future__ import annotations

import json
import socket
import struct
import sys
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsha.net.checksum import internet_checksum
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    VRRP_MULTICAST_IPV6,
    Advert,
    AdvertDropError,
    AuthType,
    DropCounter,
    DropReason,
    IpAddress,
    ReceivedAdvert,
    ReceivingInstance,
    VrrpDatagram,
    VrrpVersion,
    address_list_difference,
    check_advert_for_instance,
    decode_advert,
    encode_advert,
    ipv6_datagram,
    receive_advert,
    receive_ipv4_packet,
    split_ipv4_packet,
)

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = ("v2_ipv4", "v2_ipv4_auth_pass", "v3_ipv4", "v3_ipv6")

SOURCE_V4 = IPv4Address("192.0.2.1")
SOURCE_V6 = IPv6Address("fe80::1")
VIP_V4 = IPv4Address("192.0.2.100")
VIP_V6 = IPv6Address("2001:db8::100")


def ipv4_packet(
    payload: bytes,
    *,
    source: IPv4Address = SOURCE_V4,
    destination: IPv4Address = VRRP_MULTICAST_IPV4,
    ttl: int = 255,
    protocol: int = 112,
    options: bytes = b"",
) -> bytes:
    """An IPv4 header as Linux hands it to an AF_INET raw socket, followed by `payload`."""
    header_length = 20 + len(options)
    first_byte = 0x40 | header_length // 4
    header = struct.pack(
        "!BBHHHBBH4s4s",
        first_byte,
        0xC0,
        header_length + len(payload),
        1,
        0,
        ttl,
        protocol,
        0,
        source.packed,
        destination.packed,
    )
    return header + options + payload


def with_checksum(message: bytes, pseudo_header: bytes = b"") -> bytes:
    """Fill bytes 6-7 of a hand-built VRRP message with a valid checksum."""
    zeroed = message[:6] + b"\0\0" + message[8:]
    checksum = internet_checksum(pseudo_header + zeroed)
    return zeroed[:6] + checksum.to_bytes(2, "big") + zeroed[8:]


def ipv4_pseudo_header(length: int, destination: IPv4Address = VRRP_MULTICAST_IPV4) -> bytes:
    return SOURCE_V4.packed + destination.packed + bytes([0, 112]) + length.to_bytes(2, "big")


def ipv6_pseudo_header(length: int) -> bytes:
    return (
        SOURCE_V6.packed
        + VRRP_MULTICAST_IPV6.packed
        + length.to_bytes(4, "big")
        + bytes([0, 0, 0, 112])
    )


def v2_message(
    *,
    first_byte: int = 0x21,
    vrid: int = 1,
    count: int = 1,
    auth_type: int = 0,
    interval: int = 1,
    addresses: bytes = VIP_V4.packed,
    auth_data: bytes = bytes(8),
) -> bytes:
    header = bytes([first_byte, vrid, 100, count, auth_type, interval, 0, 0])
    return with_checksum(header + addresses + auth_data)


def v3_message(
    *,
    first_byte: int = 0x31,
    vrid: int = 1,
    count: int = 1,
    interval: int = 100,
    addresses: bytes = VIP_V4.packed,
    family: int = 4,
) -> bytes:
    header = bytes([first_byte, vrid, 100, count]) + interval.to_bytes(2, "big") + b"\0\0"
    message = header + addresses
    pseudo = ipv4_pseudo_header(len(message)) if family == 4 else ipv6_pseudo_header(len(message))
    return with_checksum(message, pseudo)


def v4_datagram(payload: bytes, ttl: int = 255) -> VrrpDatagram:
    return VrrpDatagram(SOURCE_V4, VRRP_MULTICAST_IPV4, ttl, payload)


def v6_datagram(payload: bytes, hop_limit: int = 255) -> VrrpDatagram:
    return VrrpDatagram(SOURCE_V6, VRRP_MULTICAST_IPV6, hop_limit, payload)


def drop_reason(datagram: VrrpDatagram) -> DropReason:
    with pytest.raises(AdvertDropError) as dropped:
        decode_advert(datagram)
    return dropped.value.reason


# --- checksum known answers ---------------------------------------------------------------


def test_internet_checksum_matches_the_rfc_1071_example() -> None:
    # RFC 1071 section 3: these words sum to 0xddf2, so the checksum is its complement.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_internet_checksum_pads_an_odd_length_with_a_zero_byte() -> None:
    assert internet_checksum(b"\x01") == 0xFEFF
    assert internet_checksum(b"") == 0xFFFF


def test_internet_checksum_of_data_carrying_its_checksum_is_zero() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7") + (0x220D).to_bytes(2, "big")
    assert internet_checksum(data) == 0


def test_v2_checksum_covers_the_vrrp_message_only() -> None:
    # Worked by hand: 0x2101 + 0x6401 + 0x0001 + 0xc000 + 0x0201 = 0x4705 (folded); ~ = 0xb8fa.
    advert = Advert(VrrpVersion.V2, 1, 100, 1, (IPv4Address("192.0.2.1"),))
    payload = encode_advert(advert, IPv4Address("192.0.2.9"), VRRP_MULTICAST_IPV4)
    assert payload.hex() == "210164010001b8fac0000201" + "00" * 8
    other_source = encode_advert(advert, IPv4Address("198.51.100.7"), VRRP_MULTICAST_IPV4)
    assert other_source == payload


def test_v3_ipv4_checksum_covers_the_pseudo_header() -> None:
    # Worked by hand: pseudo-header c000 0201 e000 0012 0070 000c plus the message words
    # 3101 6401 0064 c000 0264 sum to 0x2fa59, folded 0xfa5b; ~ = 0x05a4 (RFC 5798 5.2.8).
    advert = Advert(VrrpVersion.V3, 1, 100, 100, (IPv4Address("192.0.2.100"),))
    payload = encode_advert(advert, SOURCE_V4, VRRP_MULTICAST_IPV4)
    assert payload.hex() == "31016401006405a4c0000264"
    unicast = encode_advert(advert, SOURCE_V4, IPv4Address("192.0.2.2"))
    assert unicast[6:8] != payload[6:8]


def test_v3_checksum_computed_the_v2_way_is_refused() -> None:
    # Some old implementations skip the pseudo-header for v3 over IPv4; RFC 5798 requires it.
    message = bytes([0x31, 1, 100, 1, 0, 100, 0, 0]) + VIP_V4.packed
    assert drop_reason(v4_datagram(with_checksum(message))) is DropReason.BAD_CHECKSUM


def test_v3_checksum_depends_on_the_destination() -> None:
    payload = v3_message()
    unicast = VrrpDatagram(SOURCE_V4, IPv4Address("192.0.2.2"), 255, payload)
    assert drop_reason(unicast) is DropReason.BAD_CHECKSUM


# --- round trips --------------------------------------------------------------------------

ipv4_addresses = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6_addresses = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
passwords = st.binary(min_size=0, max_size=8).map(lambda data: data.rstrip(b"\0"))


@st.composite
def v2_adverts(draw: st.DrawFn) -> Advert:
    auth_type = draw(st.sampled_from([AuthType.NONE, AuthType.SIMPLE_PASSWORD]))
    return Advert(
        version=VrrpVersion.V2,
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        advert_interval=draw(st.integers(1, 255)),
        addresses=tuple(draw(st.lists(ipv4_addresses, max_size=20))),
        auth_type=auth_type,
        auth_data=draw(passwords) if auth_type is AuthType.SIMPLE_PASSWORD else b"",
    )


def v3_adverts(addresses: st.SearchStrategy[IpAddress]) -> st.SearchStrategy[Advert]:
    return st.builds(
        Advert,
        version=st.just(VrrpVersion.V3),
        vrid=st.integers(1, 255),
        priority=st.integers(0, 255),
        advert_interval=st.integers(1, 4095),
        addresses=st.lists(addresses, max_size=20).map(tuple),
    )


def assert_round_trip(advert: Advert, source: IpAddress, destination: IpAddress) -> None:
    payload = encode_advert(advert, source, destination)
    received = decode_advert(VrrpDatagram(source, destination, 255, payload))
    assert received == ReceivedAdvert(
        source, destination, advert, int.from_bytes(payload[6:8], "big")
    )


@given(v2_adverts(), ipv4_addresses, ipv4_addresses)
def test_v2_ipv4_round_trip(advert: Advert, source: IPv4Address, dest: IPv4Address) -> None:
    assert_round_trip(advert, source, dest)


@given(v3_adverts(ipv4_addresses), ipv4_addresses, ipv4_addresses)
def test_v3_ipv4_round_trip(advert: Advert, source: IPv4Address, dest: IPv4Address) -> None:
    assert_round_trip(advert, source, dest)


@given(v3_adverts(ipv6_addresses), ipv6_addresses, ipv6_addresses)
def test_v3_ipv6_round_trip(advert: Advert, source: IPv6Address, dest: IPv6Address) -> None:
    assert_round_trip(advert, source, dest)


@given(v2_adverts(), ipv4_addresses, st.integers(0, 255))
def test_ipv4_raw_socket_read_round_trip(advert: Advert, source: IPv4Address, ttl: int) -> None:
    payload = encode_advert(advert, source, VRRP_MULTICAST_IPV4)
    datagram = split_ipv4_packet(ipv4_packet(payload, source=source, ttl=ttl))
    assert datagram == VrrpDatagram(source, VRRP_MULTICAST_IPV4, ttl, payload)


def test_advert_interval_is_kept_in_wire_units_and_exposed_in_seconds() -> None:
    v2 = Advert(VrrpVersion.V2, 1, 100, 3, (VIP_V4,))
    v3 = Advert(VrrpVersion.V3, 1, 100, 50, (VIP_V4,))
    assert (v2.advert_interval, v2.advert_interval_seconds) == (3, 3.0)
    assert (v3.advert_interval, v3.advert_interval_seconds) == (50, 0.5)


def test_simple_password_is_zero_padded_to_eight_bytes() -> None:
    advert = Advert(VrrpVersion.V2, 7, 100, 1, (VIP_V4,), AuthType.SIMPLE_PASSWORD, auth_data=b"pw")
    payload = encode_advert(advert, SOURCE_V4, VRRP_MULTICAST_IPV4)
    assert payload[4] == 1
    assert payload[-8:] == b"pw\0\0\0\0\0\0"


def test_v3_reserved_bits_are_ignored_on_reception() -> None:
    payload = v3_message(interval=0xF000 | 100)
    assert decode_advert(v4_datagram(payload)).advert.advert_interval == 100


def test_v2_auth_data_is_ignored_without_authentication() -> None:
    payload = v2_message(auth_data=b"junkjunk")
    advert = decode_advert(v4_datagram(payload)).advert
    assert (advert.auth_type, advert.auth_data) == (AuthType.NONE, b"")


# --- decode drops, one hand-built packet each ---------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        pytest.param(v4_datagram(v2_message(), ttl=254), DropReason.TTL_NOT_255, id="ttl-254"),
        pytest.param(v6_datagram(v3_message(family=6, addresses=VIP_V6.packed), hop_limit=1),
                     DropReason.TTL_NOT_255, id="hop-limit-1"),
        pytest.param(v4_datagram(v2_message()[:7]), DropReason.TRUNCATED, id="short-header"),
        pytest.param(v4_datagram(b""), DropReason.TRUNCATED, id="empty"),
        pytest.param(v4_datagram(v2_message()[:-1]), DropReason.TRUNCATED, id="v2-short-auth"),
        pytest.param(v4_datagram(v3_message(count=2)), DropReason.TRUNCATED, id="v3-count-2-of-1"),
        pytest.param(v4_datagram(v2_message(first_byte=0x11)), DropReason.UNKNOWN_VERSION,
                     id="version-1"),
        pytest.param(v4_datagram(v3_message(first_byte=0x41)), DropReason.UNKNOWN_VERSION,
                     id="version-4"),
        pytest.param(v6_datagram(v2_message(addresses=VIP_V6.packed, count=1)),
                     DropReason.VERSION_2_OVER_IPV6, id="v2-over-ipv6"),
        pytest.param(v4_datagram(v3_message(first_byte=0x32)), DropReason.UNKNOWN_TYPE,
                     id="type-2"),
        pytest.param(v4_datagram(v2_message(first_byte=0x20)), DropReason.UNKNOWN_TYPE,
                     id="type-0"),
        pytest.param(v6_datagram(v3_message(family=6, count=0, addresses=VIP_V4.packed)),
                     DropReason.ADDRESS_LENGTH_MISMATCH, id="ipv4-address-in-ipv6"),
        pytest.param(v4_datagram(v3_message(addresses=VIP_V4.packed + b"\0\0")),
                     DropReason.ADDRESS_LENGTH_MISMATCH, id="v3-two-stray-bytes"),
        pytest.param(v4_datagram(v3_message(addresses=VIP_V4.packed * 2)),
                     DropReason.ADDRESS_COUNT_MISMATCH, id="v3-count-1-of-2"),
        pytest.param(v4_datagram(v2_message(addresses=VIP_V4.packed * 3)),
                     DropReason.ADDRESS_COUNT_MISMATCH, id="v2-count-1-of-3"),
        pytest.param(v4_datagram(v2_message(auth_type=2)), DropReason.AUTH_AH_UNSUPPORTED,
                     id="auth-ah"),
        pytest.param(v4_datagram(v2_message(auth_type=3)), DropReason.UNKNOWN_AUTH_TYPE,
                     id="auth-3"),
        pytest.param(v4_datagram(v2_message(interval=0)), DropReason.ZERO_ADVERT_INTERVAL,
                     id="v2-interval-0"),
        pytest.param(v4_datagram(v3_message(interval=0xF000)), DropReason.ZERO_ADVERT_INTERVAL,
                     id="v3-interval-0-reserved-set"),
        pytest.param(v4_datagram(v3_message(vrid=0)), DropReason.INVALID_VRID, id="vrid-0"),
    ],
)  # fmt: skip
def test_decode_drops(datagram: VrrpDatagram, reason: DropReason) -> None:
    assert drop_reason(datagram) is reason


# Version/type (byte 0) and the address count (byte 3) are checked before the checksum.
@pytest.mark.parametrize("byte_index", [index for index in range(8 + 4 + 8) if index not in (0, 3)])
def test_any_flipped_bit_fails_the_v2_checksum(byte_index: int) -> None:
    payload = bytearray(v2_message())
    payload[byte_index] ^= 0x04
    assert drop_reason(v4_datagram(bytes(payload))) is DropReason.BAD_CHECKSUM


def test_a_flipped_bit_in_an_ipv6_address_fails_the_v3_checksum() -> None:
    payload = bytearray(v3_message(family=6, addresses=VIP_V6.packed))
    assert decode_advert(v6_datagram(bytes(payload))).advert.addresses == (VIP_V6,)
    payload[-1] ^= 0x80
    assert drop_reason(v6_datagram(bytes(payload))) is DropReason.BAD_CHECKSUM


def test_drop_error_names_its_reason() -> None:
    with pytest.raises(AdvertDropError, match=r"^ttl_not_255: TTL/hop limit 64, must be 255"):
        decode_advert(v4_datagram(v2_message(), ttl=64))


# --- drop counter -------------------------------------------------------------------------


def test_receive_advert_counts_drops_by_reason_and_passes_adverts() -> None:
    drops = DropCounter()
    assert receive_advert(v4_datagram(v2_message(), ttl=1), drops) is None
    assert receive_advert(v4_datagram(v2_message(), ttl=2), drops) is None
    assert receive_advert(v4_datagram(b"\x21"), drops) is None
    received = receive_advert(v4_datagram(v2_message()), drops)
    assert received is not None
    assert received.advert.addresses == (VIP_V4,)
    assert drops[DropReason.TTL_NOT_255] == 2
    assert drops[DropReason.TRUNCATED] == 1
    assert drops.total == 3
    snapshot = drops.snapshot()
    assert set(snapshot) == set(DropReason)
    assert snapshot[DropReason.BAD_CHECKSUM] == 0


def test_receive_ipv4_packet_counts_framing_drops() -> None:
    drops = DropCounter()
    assert receive_ipv4_packet(ipv4_packet(v2_message(), protocol=6), drops) is None
    assert receive_ipv4_packet(ipv4_packet(v2_message(), ttl=1), drops) is None
    assert receive_ipv4_packet(ipv4_packet(v2_message()), drops) is not None
    assert drops[DropReason.NOT_VRRP_PROTOCOL] == 1
    assert drops[DropReason.TTL_NOT_255] == 1
    assert drops.total == 2


# --- IPv4 raw-socket framing --------------------------------------------------------------


def framing_drop(packet: bytes) -> DropReason:
    with pytest.raises(AdvertDropError) as dropped:
        split_ipv4_packet(packet)
    return dropped.value.reason


def test_split_ipv4_packet_returns_addresses_ttl_and_payload() -> None:
    payload = v2_message()
    datagram = split_ipv4_packet(ipv4_packet(payload, ttl=200))
    assert datagram == VrrpDatagram(SOURCE_V4, VRRP_MULTICAST_IPV4, 200, payload)


def test_split_ipv4_packet_skips_ip_options() -> None:
    payload = v2_message()
    packet = ipv4_packet(payload, options=bytes([0x94, 4, 0, 0]))  # router alert
    assert split_ipv4_packet(packet).payload == payload


def test_split_ipv4_packet_drops_a_bad_header() -> None:
    good = ipv4_packet(v2_message())
    assert framing_drop(good[:19]) is DropReason.IPV4_HEADER_INVALID
    assert framing_drop(bytes([0x65]) + good[1:]) is DropReason.IPV4_HEADER_INVALID
    assert framing_drop(bytes([0x44]) + good[1:]) is DropReason.IPV4_HEADER_INVALID
    assert framing_drop(bytes([0x4F]) + good[1:40]) is DropReason.IPV4_HEADER_INVALID


def test_split_ipv4_packet_drops_a_length_mismatch() -> None:
    good = ipv4_packet(v2_message())
    assert framing_drop(good[:-1]) is DropReason.IPV4_LENGTH_MISMATCH
    assert framing_drop(good + b"\0") is DropReason.IPV4_LENGTH_MISMATCH


def test_split_ipv4_packet_drops_other_protocols() -> None:
    assert framing_drop(ipv4_packet(v2_message(), protocol=51)) is DropReason.NOT_VRRP_PROTOCOL


# --- IPv6 ancillary data ------------------------------------------------------------------


def ipv6_ancillary(hop_limit: int | None, destination: IPv6Address | None) -> list[Any]:
    items: list[Any] = []
    if hop_limit is not None:
        items.append(
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, hop_limit.to_bytes(4, sys.byteorder))
        )
    if destination is not None:
        pktinfo = struct.pack("=16sI", destination.packed, 2)
        items.append((socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo))
    return items


def test_ipv6_datagram_reads_hop_limit_and_destination_from_ancillary_data() -> None:
    payload = v3_message(family=6, addresses=VIP_V6.packed)
    source = IPv6Address("fe80::1%veth0")
    datagram = ipv6_datagram(payload, source, ipv6_ancillary(255, VRRP_MULTICAST_IPV6))
    assert datagram == v6_datagram(payload)
    assert decode_advert(datagram).advert.addresses == (VIP_V6,)


def test_ipv6_datagram_needs_both_ancillary_items() -> None:
    with pytest.raises(ValueError, match="IPV6_RECVHOPLIMIT"):
        ipv6_datagram(b"", SOURCE_V6, ipv6_ancillary(None, VRRP_MULTICAST_IPV6))
    with pytest.raises(ValueError, match="IPV6_RECVPKTINFO"):
        ipv6_datagram(b"", SOURCE_V6, ipv6_ancillary(255, None))


# --- checks against the receiving instance ------------------------------------------------

V2_INSTANCE = ReceivingInstance(
    vrid=9,
    version=VrrpVersion.V2,
    advert_interval=1,
    virtual_addresses=frozenset({VIP_V4}),
    auth_type=AuthType.SIMPLE_PASSWORD,
    auth_password=b"s3cret",
)
V2_ADVERT = Advert(VrrpVersion.V2, 9, 100, 1, (VIP_V4,), AuthType.SIMPLE_PASSWORD, b"s3cret")
V3_INSTANCE = ReceivingInstance(
    vrid=9, version=VrrpVersion.V3, advert_interval=100, virtual_addresses=frozenset({VIP_V6})
)
V3_ADVERT = Advert(VrrpVersion.V3, 9, 100, 100, (VIP_V6,))


def received(advert: Advert) -> ReceivedAdvert:
    source: IpAddress = SOURCE_V4 if advert.version is VrrpVersion.V2 else SOURCE_V6
    destination: IpAddress = (
        VRRP_MULTICAST_IPV4 if advert.version is VrrpVersion.V2 else VRRP_MULTICAST_IPV6
    )
    return ReceivedAdvert(source, destination, advert, 0)


def instance_drop(advert: Advert, instance: ReceivingInstance) -> DropReason:
    with pytest.raises(AdvertDropError) as dropped:
        check_advert_for_instance(received(advert), instance)
    return dropped.value.reason


def test_matching_adverts_pass_the_instance_check() -> None:
    check_advert_for_instance(received(V2_ADVERT), V2_INSTANCE)
    check_advert_for_instance(received(V3_ADVERT), V3_INSTANCE)


@pytest.mark.parametrize(
    ("advert", "instance", "reason"),
    [
        pytest.param(replace(V2_ADVERT, vrid=10), V2_INSTANCE, DropReason.VRID_MISMATCH,
                     id="vrid"),
        pytest.param(V2_ADVERT, replace(V2_INSTANCE, version=VrrpVersion.V3),
                     DropReason.VERSION_MISMATCH, id="v2-advert-v3-instance"),
        pytest.param(V2_ADVERT, replace(V2_INSTANCE, address_owner=True),
                     DropReason.LOCAL_ADDRESS_OWNER, id="we-own-the-addresses"),
        pytest.param(replace(V2_ADVERT, auth_type=AuthType.NONE, auth_data=b""), V2_INSTANCE,
                     DropReason.AUTH_TYPE_MISMATCH, id="no-auth-when-pass-configured"),
        pytest.param(V2_ADVERT, replace(V2_INSTANCE, auth_type=AuthType.NONE, auth_password=b""),
                     DropReason.AUTH_TYPE_MISMATCH, id="pass-when-none-configured"),
        pytest.param(replace(V2_ADVERT, auth_data=b"s3cre"), V2_INSTANCE,
                     DropReason.AUTH_PASSWORD_MISMATCH, id="password-prefix"),
        pytest.param(replace(V2_ADVERT, auth_data=b"S3cret"), V2_INSTANCE,
                     DropReason.AUTH_PASSWORD_MISMATCH, id="password-case"),
        pytest.param(replace(V2_ADVERT, advert_interval=2), V2_INSTANCE,
                     DropReason.ADVERT_INTERVAL_MISMATCH, id="v2-interval"),
    ],
)  # fmt: skip
def test_instance_check_drops(
    advert: Advert, instance: ReceivingInstance, reason: DropReason
) -> None:
    assert instance_drop(advert, instance) is reason


def test_an_address_owner_may_advertise_a_different_address_list() -> None:
    owner_advert = replace(V3_ADVERT, priority=255, addresses=(IPv6Address("2001:db8::7"),))
    check_advert_for_instance(received(owner_advert), V3_INSTANCE)
    assert address_list_difference(owner_advert, V3_INSTANCE) is None


def test_a_different_address_list_is_reported_but_not_dropped() -> None:
    # RFC 5798 7.1 makes the check a MAY; keepalived (outside strict mode) takes such adverts,
    # and so must lvsha, or a VIP added to one director of a pair by a reload would make the
    # other take over before it is reloaded too (issue 10).
    extra = replace(V2_ADVERT, addresses=(VIP_V4, SOURCE_V4))
    check_advert_for_instance(received(extra), V2_INSTANCE)
    assert address_list_difference(extra, V2_INSTANCE) == (
        f"virtual addresses differ: only theirs {SOURCE_V4}, only ours none"
    )
    missing = replace(V3_ADVERT, addresses=())
    check_advert_for_instance(received(missing), V3_INSTANCE)
    assert address_list_difference(missing, V3_INSTANCE) is not None
    assert address_list_difference(V3_ADVERT, V3_INSTANCE) is None


def test_v3_interval_may_differ_from_ours() -> None:
    # RFC 5798 dropped the v2 interval check: backups learn the master's interval.
    check_advert_for_instance(received(replace(V3_ADVERT, advert_interval=7)), V3_INSTANCE)


# --- advert invariants --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"vrid": 0}, "vrid 0", id="vrid-0"),
        pytest.param({"priority": 256}, "priority 256", id="priority-256"),
        pytest.param({"advert_interval": 256}, "outside 1-255", id="v2-interval-256"),
        pytest.param({"advert_interval": 0}, "outside 1-255", id="interval-0"),
        pytest.param({"addresses": (VIP_V6,)}, "IPv4 addresses only", id="v2-ipv6"),
        pytest.param({"addresses": (VIP_V4,) * 256}, "at most 255", id="256-addresses"),
        pytest.param({"auth_type": AuthType.IP_AH}, "auth type 2", id="ah"),
        pytest.param({"auth_data": b"pw"}, "NONE carries no auth data", id="none-with-data"),
        pytest.param({"auth_type": AuthType.SIMPLE_PASSWORD, "auth_data": b"123456789"},
                     "at most 8", id="password-9"),
        pytest.param({"auth_type": AuthType.SIMPLE_PASSWORD, "auth_data": b"pw\0"},
                     "zero byte", id="padded-password"),
    ],
)  # fmt: skip
def test_v2_advert_refuses_impossible_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(Advert(VrrpVersion.V2, 1, 100, 1, (VIP_V4,)), **fields)


def test_v3_advert_refuses_impossible_fields() -> None:
    base = Advert(VrrpVersion.V3, 1, 100, 100, (VIP_V4,))
    with pytest.raises(ValueError, match="outside 1-4095"):
        replace(base, advert_interval=4096)
    with pytest.raises(ValueError, match="no authentication"):
        replace(base, auth_type=AuthType.SIMPLE_PASSWORD, auth_data=b"pw")
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        replace(base, addresses=(VIP_V4, VIP_V6))


def test_encode_refuses_a_family_mismatch() -> None:
    v3 = Advert(VrrpVersion.V3, 1, 100, 100, (VIP_V4,))
    with pytest.raises(ValueError, match="not IPv6"):
        encode_advert(v3, SOURCE_V6, VRRP_MULTICAST_IPV6)
    with pytest.raises(ValueError, match="differ in family"):
        encode_advert(v3, SOURCE_V4, VRRP_MULTICAST_IPV6)
    v2_empty = Advert(VrrpVersion.V2, 1, 100, 1, ())
    with pytest.raises(ValueError, match="IPv4 only"):
        encode_advert(v2_empty, SOURCE_V6, VRRP_MULTICAST_IPV6)


# --- golden fixtures captured from keepalived ---------------------------------------------


def load_fixture(name: str) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads((FIXTURE_DIR / f"{name}.json").read_text())
    return fixture


def test_every_expected_fixture_is_present() -> None:
    assert sorted(path.stem for path in FIXTURE_DIR.glob("*.json")) == sorted(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_keepalived_fixture_decodes_to_its_recorded_fields(name: str) -> None:
    fixture = load_fixture(name)
    fields = fixture["fields"]
    assert fixture["keepalived_version"].startswith("Keepalived v2.2.7")
    payload = bytes.fromhex(fixture["vrrp_payload_hex"])
    datagram = VrrpDatagram(
        ip_address(fixture["source"]), ip_address(fixture["destination"]), fixture["ttl"], payload
    )
    received = decode_advert(datagram)
    advert = received.advert
    assert advert.version == fields["version"]
    assert advert.vrid == fields["vrid"]
    assert advert.priority == fields["priority"]
    assert len(advert.addresses) == fields["address_count"]
    assert [str(address) for address in advert.addresses] == fields["addresses"]
    assert advert.advert_interval == fields["advert_interval"]
    assert advert.advert_interval_seconds == fields["advert_interval_seconds"]
    assert received.checksum == fields["checksum"]
    if advert.version is VrrpVersion.V2:
        assert advert.auth_type == fields["auth_type"]
        padded = advert.auth_data.ljust(8, b"\0") if advert.auth_type else bytes(8)
        assert padded.hex() == fields["auth_data_hex"]
    assert str(received.source) == fixture["source"]
    assert str(received.destination) == fixture["destination"]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_encoder_reproduces_keepalived_bytes(name: str) -> None:
    fixture = load_fixture(name)
    fields = fixture["fields"]
    advert = Advert(
        version=VrrpVersion(fields["version"]),
        vrid=fields["vrid"],
        priority=fields["priority"],
        advert_interval=fields["advert_interval"],
        addresses=tuple(ip_address(address) for address in fields["addresses"]),
        auth_type=AuthType(fields.get("auth_type", 0)),
        auth_data=bytes.fromhex(fields.get("auth_data_hex", "")).rstrip(b"\0"),
    )
    source, destination = ip_address(fixture["source"]), ip_address(fixture["destination"])
    encoded = encode_advert(advert, source, destination)
    assert encoded.hex() == fixture["vrrp_payload_hex"]


def test_keepalived_pass_fixture_passes_a_matching_instance_check() -> None:
    fixture = load_fixture("v2_ipv4_auth_pass")
    datagram = VrrpDatagram(
        ip_address(fixture["source"]),
        ip_address(fixture["destination"]),
        fixture["ttl"],
        bytes.fromhex(fixture["vrrp_payload_hex"]),
    )
    instance = ReceivingInstance(
        vrid=52,
        version=VrrpVersion.V2,
        advert_interval=1,
        virtual_addresses=frozenset({IPv4Address("192.0.2.20"), IPv4Address("192.0.2.21")}),
        auth_type=AuthType.SIMPLE_PASSWORD,
        auth_password=b"s3cret",
    )
    check_advert_for_instance(decode_advert(datagram), instance)
    wrong_password = replace(instance, auth_password=b"s3cret!")
    with pytest.raises(AdvertDropError) as dropped:
        check_advert_for_instance(decode_advert(datagram), wrong_password)
    assert dropped.value.reason is DropReason.AUTH_PASSWORD_MISMATCH
