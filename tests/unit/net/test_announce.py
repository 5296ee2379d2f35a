"""Announcement frames, checked byte by byte, and the recording announcer."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface

from lvsha.net.announce import Announcement, RecordingAnnouncer, gratuitous_arp, unsolicited_na

MAC = "02:00:5e:00:01:07"
MAC_BYTES = bytes.fromhex("02005e000107")


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_gratuitous_arp_is_a_broadcast_request_for_the_vip() -> None:
    frame = gratuitous_arp(MAC, IPv4Address("192.0.2.10"))
    vip = bytes([192, 0, 2, 10])
    assert frame == (
        b"\xff" * 6 + MAC_BYTES + b"\x08\x06"  # Ethernet: broadcast, from us, ARP
        + b"\x00\x01\x08\x00\x06\x04\x00\x01"  # Ethernet/IPv4, lengths 6/4, op 1 (request)
        + MAC_BYTES + vip  # sender: our MAC, the VIP
        + b"\xff" * 6 + vip  # target: broadcast (as keepalived), the VIP
    )  # fmt: skip


def test_unsolicited_na_fields_and_checksum() -> None:
    vip = IPv6Address("2001:db8::10")
    frame = unsolicited_na(MAC, vip, router=False)
    ethernet, ipv6, icmp = frame[:14], frame[14:54], frame[54:]
    assert ethernet == bytes.fromhex("333300000001") + MAC_BYTES + b"\x86\xdd"
    version_class_flow, payload_length, next_header, hop_limit = struct.unpack("!IHBB", ipv6[:8])
    assert version_class_flow >> 28 == 6
    assert (payload_length, next_header, hop_limit) == (32, 58, 255)
    assert ipv6[8:24] == vip.packed
    assert ipv6[24:40] == ip_address("ff02::1").packed
    assert len(icmp) == payload_length
    icmp_type, code, _checksum, flags = struct.unpack("!BBHI", icmp[:8])
    assert (icmp_type, code) == (136, 0)
    assert flags == 0x2000_0000  # override only: not a router, not solicited (RFC 4861 4.4)
    assert icmp[8:24] == vip.packed
    assert icmp[24:32] == b"\x02\x01" + MAC_BYTES  # target link-layer address option
    pseudo_header = ipv6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert ones_complement_sum(pseudo_header + icmp) == 0xFFFF


def test_router_flag_follows_forwarding() -> None:
    frame = unsolicited_na(MAC, IPv6Address("2001:db8::10"), router=True)
    assert struct.unpack("!I", frame[58:62])[0] == 0xA000_0000  # router and override


async def test_recording_announcer_keeps_calls_with_times() -> None:
    now = [10.0]
    recorder = RecordingAnnouncer(clock=lambda: now[0])
    await recorder.announce("eth0", [ip_interface("192.0.2.10/24"), ip_address("2001:db8::10")])
    now[0] = 11.5
    await recorder.announce("eth1", [])
    assert recorder.announcements == [
        Announcement(10.0, "eth0", (IPv4Address("192.0.2.10"), IPv6Address("2001:db8::10"))),
        Announcement(11.5, "eth1", ()),
    ]


def test_recording_announcer_remembers_what_was_prepared() -> None:
    recorder = RecordingAnnouncer()
    recorder.prepare("eth0", [ip_interface("192.0.2.10/24")])
    assert recorder.prepared == {("eth0", IPv4Address("192.0.2.10"))}
    assert recorder.announcements == []


def test_frames_are_byte_for_byte_what_scapy_builds() -> None:
    # scapy builds the reference frames (the VRRP process no longer imports it).
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6  # noqa: PLC0415
    from scapy.layers.l2 import ARP, Ether  # noqa: PLC0415

    for mac in (MAC, "aa:bb:cc:dd:ee:ff", "00:00:00:00:00:01"):
        for address in ("192.0.2.10", "10.255.0.1", "0.0.0.0"):
            expected = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(
                op="who-has", hwsrc=mac, psrc=address, hwdst="ff:ff:ff:ff:ff:ff", pdst=address
            )
            assert gratuitous_arp(mac, IPv4Address(address)) == bytes(expected)
        for address in ("2001:db8::10", "fe80::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"):
            for router in (False, True):
                expected = (
                    Ether(dst="33:33:00:00:00:01", src=mac)
                    / IPv6(src=address, dst="ff02::1", hlim=255)
                    / ICMPv6ND_NA(tgt=address, R=int(router), S=0, O=1)
                    / ICMPv6NDOptDstLLAddr(lladdr=mac)
                )
                assert unsolicited_na(mac, IPv6Address(address), router) == bytes(expected)
