"""Frames the capture records (adverts, gratuitous ARPs) and the queries over its records."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from lvsha.drill.capture import (
    AdvertSeen,
    GarpSeen,
    first_advert,
    first_garp,
    last_advert,
    parse_frame,
)
from lvsha.vrrp.wire import VRRP_MULTICAST_IPV4, Advert, VrrpVersion, encode_advert

A = IPv4Address("192.0.2.11")
B = IPv4Address("192.0.2.12")
VIP = IPv4Address("192.0.2.100")
MAC_A = bytes.fromhex("02000000000a")
VRRP_MAC = bytes.fromhex("01005e000012")


def advert_frame(advert: Advert, source: IPv4Address = A, ttl: int = 255, pad: int = 0) -> bytes:
    payload = encode_advert(advert, source, VRRP_MULTICAST_IPV4)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 0, 0, ttl, 112, 0, source.packed, VRRP_MULTICAST_IPV4.packed,
    )  # fmt: skip
    return VRRP_MAC + MAC_A + b"\x08\x00" + header + payload + bytes(pad)


def arp_frame(operation: int, sender: IPv4Address, target: IPv4Address) -> bytes:
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, operation, MAC_A, sender.packed, bytes(6), target.packed
    )
    return b"\xff" * 6 + MAC_A + b"\x08\x06" + arp + bytes(18)


def test_v3_advert_fields_and_receipt_time() -> None:
    frame = advert_frame(Advert(VrrpVersion.V3, 42, 150, 10, (VIP,)), pad=6)
    seen = parse_frame(frame, 12.5)
    assert seen == AdvertSeen(12.5, A, "02:00:00:00:00:0a", 42, 150, VrrpVersion.V3, 0.1)


def test_v2_advert_interval_is_in_seconds() -> None:
    seen = parse_frame(advert_frame(Advert(VrrpVersion.V2, 7, 100, 1, (VIP,))), 1.0)
    assert isinstance(seen, AdvertSeen)
    assert (seen.version, seen.advert_interval, seen.priority) == (VrrpVersion.V2, 1.0, 100)


def test_invalid_adverts_are_not_recorded() -> None:
    frame = advert_frame(Advert(VrrpVersion.V3, 42, 150, 10, (VIP,)), ttl=64)
    assert parse_frame(frame, 1.0) is None
    corrupt = bytearray(advert_frame(Advert(VrrpVersion.V3, 42, 150, 10, (VIP,))))
    corrupt[-1] ^= 0xFF
    assert parse_frame(bytes(corrupt), 1.0) is None


@pytest.mark.parametrize("operation", [1, 2])
def test_gratuitous_arp_request_or_reply(operation: int) -> None:
    seen = parse_frame(arp_frame(operation, VIP, VIP), 3.0)
    assert seen == GarpSeen(3.0, VIP, "02:00:00:00:00:0a", operation)


def test_an_ordinary_arp_request_is_not_gratuitous() -> None:
    assert parse_frame(arp_frame(1, A, VIP), 3.0) is None


def adverts() -> list[AdvertSeen]:
    def seen(at: float, source: IPv4Address, priority: int, vrid: int = 42) -> AdvertSeen:
        return AdvertSeen(at, source, "m", vrid, priority, VrrpVersion.V3, 0.1)

    return [
        seen(1.0, A, 150),
        seen(1.1, A, 150),
        seen(1.15, B, 100, vrid=7),  # another virtual router
        seen(1.2, A, 0),
        seen(1.3, B, 100),
        seen(1.4, B, 100),
    ]


def test_first_advert_skips_priority_zero_and_other_vrids() -> None:
    found = first_advert(adverts(), B, 42, after=1.0)
    assert found is not None and found.at == 1.3
    assert first_advert(adverts(), A, 42, after=1.15) is None


def test_last_advert_counts_the_priority_zero_one() -> None:
    found = last_advert(adverts(), A, 42, before=1.3)
    assert found is not None and (found.at, found.priority) == (1.2, 0)
    assert last_advert(adverts(), B, 42, before=1.25) is None


def test_first_garp_matches_address_and_sender() -> None:
    garps = [
        GarpSeen(1.0, VIP, "a", 1),
        GarpSeen(2.0, A, "b", 1),
        GarpSeen(3.0, VIP, "b", 1),
        GarpSeen(3.1, VIP, "b", 1),
    ]
    found = first_garp(garps, VIP, "b", after=0.5)
    assert found is not None and found.at == 3.0
    assert first_garp(garps, VIP, "a", after=1.5) is None
