"""PacketAnnouncer frames as another host on the segment sees them, and what that host learns."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from typing import Any, TypeVar

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.net.addresses import NetlinkAddresses
from lvsha.net.announce import AnnounceError, PacketAnnouncer

pytestmark = pytest.mark.netns
T = TypeVar("T")

VIP4 = IPv4Interface("192.0.2.10/24")
VIP6 = IPv6Interface("2001:db8::10/64")
ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35  # linux/asm-generic/socket.h; the socket module lacks it
STALE_MAC = "02:00:00:00:00:99"


def run_in(host: Host, scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()

    return host.call(lambda: asyncio.run(main()))


def mac_of(host: Host) -> str:
    (link,) = json.loads(host.ip("-j", "link", "show", "dev", "eth0"))
    return str(link["address"])


class Capture:
    """Every frame arriving at a host's eth0, with the kernel's receive time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def frames(self, keep: Callable[[Ether], bool], count: int) -> list[tuple[Ether, float]]:
        kept: list[tuple[Ether, float]] = []
        deadline = time.monotonic() + 5
        while len(kept) < count:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data, ancillary, _, address = self.sock.recvmsg(4096, 256)
            except TimeoutError:
                raise TimeoutError(f"captured {len(kept)} of {count} frames in 5 s") from None
            if address[2] == socket.PACKET_OUTGOING:
                continue
            seconds, nanoseconds = struct.unpack("qq", ancillary[0][2][:16])
            frame = Ether(data)
            if keep(frame):
                kept.append((frame, seconds + nanoseconds / 1e9))
        return kept


@contextmanager
def capture_on(host: Host) -> Iterator[Capture]:
    def opened() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("eth0", 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return sock

    sock = host.call(opened)
    try:
        yield Capture(sock)
    finally:
        sock.close()


def is_garp_for(address: IPv4Address) -> Callable[[Ether], bool]:
    return lambda frame: ARP in frame and bool(frame[ARP].psrc == str(address))


def is_na_for(address: IPv6Address) -> Callable[[Ether], bool]:
    return lambda frame: ICMPv6ND_NA in frame and bool(frame[ICMPv6ND_NA].tgt == str(address))


def icmpv6_checksum_ok(packet: IPv6) -> bool:
    """Sum the pseudo-header and the ICMPv6 message ourselves (RFC 4443 2.3)."""
    payload = bytes(packet.payload)
    data = (
        ip_address(packet.src).packed
        + ip_address(packet.dst).packed
        + struct.pack("!I3xB", len(payload), 58)
        + payload
    )
    data += b"\0" * (len(data) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return bool(total == 0xFFFF)


def test_garp_and_na_on_the_wire(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    mac = mac_of(a)
    announcer = PacketAnnouncer()

    async def announce() -> None:
        await announcer.announce("eth0", [VIP4, VIP6.ip])

    with capture_on(b) as capture:
        try:
            run_in(a, announce)
        finally:
            announcer.close()
        ((garp, _),) = capture.frames(is_garp_for(VIP4.ip), 1)
        ((na, _),) = capture.frames(is_na_for(VIP6.ip), 1)

    assert (garp.dst, garp.src, garp.type) == ("ff:ff:ff:ff:ff:ff", mac, 0x0806)
    arp = garp[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)
    assert arp.op == 1  # a request, as keepalived sends
    assert (arp.hwsrc, arp.psrc) == (mac, "192.0.2.10")
    assert (arp.hwdst, arp.pdst) == ("ff:ff:ff:ff:ff:ff", "192.0.2.10")

    assert (na.dst, na.src, na.type) == ("33:33:00:00:00:01", mac, 0x86DD)
    ipv6 = na[IPv6]
    assert (ipv6.version, ipv6.nh, ipv6.hlim, ipv6.plen) == (6, 58, 255, 32)
    assert (ipv6.src, ipv6.dst) == ("2001:db8::10", "ff02::1")
    advert = na[ICMPv6ND_NA]
    assert (advert.type, advert.code) == (136, 0)
    assert (advert.R, advert.S, advert.O) == (0, 0, 1)  # the lab host does not forward
    assert advert.tgt == "2001:db8::10"
    option = na[ICMPv6NDOptDstLLAddr]
    assert (option.type, option.len, option.lladdr) == (2, 1, mac)
    assert icmpv6_checksum_ok(ipv6)


def neighbour(host: Host, address: str) -> dict[str, Any] | None:
    entries = json.loads(host.ip("-j", "neigh", "show", address, "dev", "eth0") or "[]")
    return entries[0] if entries else None


def test_neighbours_learn_the_new_mac(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    mac = mac_of(a)
    for address in ("192.0.2.10", "2001:db8::10"):
        b.ip("neigh", "replace", address, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale")
        entry = neighbour(b, address)
        assert entry is not None
        assert entry["lladdr"] == STALE_MAC
    announcer = PacketAnnouncer()

    async def take_over() -> None:
        async with NetlinkAddresses() as addresses:
            for vip in (VIP4, VIP6):
                await addresses.add_vip("eth0", vip)
            await announcer.announce("eth0", [VIP4, VIP6])

    try:
        run_in(a, take_over)
    finally:
        announcer.close()
    for address in ("192.0.2.10", "2001:db8::10"):
        wait_until(
            lambda address=address: (neighbour(b, address) or {}).get("lladdr") == mac,  # type: ignore[misc]
            5,
            what=f"b learns {address} is at {mac}",
        )


def test_frames_follow_a_mac_change(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    b = lab.add_host("b", "192.0.2.2/24")
    announcer = PacketAnnouncer()
    new_mac = "02:00:00:00:0a:0a"

    async def announce_twice() -> None:
        await announcer.announce("eth0", [VIP4])
        a.ip("link", "set", "eth0", "address", new_mac)
        await announcer.announce("eth0", [VIP4])

    with capture_on(b) as capture:
        try:
            run_in(a, announce_twice)
        finally:
            announcer.close()
        (first, _), (second, _) = capture.frames(is_garp_for(VIP4.ip), 2)
    assert first[ARP].hwsrc != new_mac
    assert (second.src, second[ARP].hwsrc) == (new_mac, new_mac)


def test_errors_name_the_interface(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    announcer = PacketAnnouncer()

    async def scenario() -> None:
        with pytest.raises(AnnounceError, match="'eth7' does not exist"):
            await announcer.announce("eth7", [VIP4])
        with pytest.raises(AnnounceError, match="lo is not Ethernet"):
            await announcer.announce("lo", [VIP4])
        await announcer.announce("eth0", [VIP4])
        a.ip("link", "set", "eth0", "down")
        with pytest.raises(AnnounceError, match=r"192\.0\.2\.10 on eth0: Network is down"):
            await announcer.announce("eth0", [VIP4])
        a.ip("link", "set", "eth0", "up")
        await announcer.announce("eth0", [VIP4])

    try:
        run_in(a, scenario)
    finally:
        announcer.close()


def test_time_from_announce_to_the_wire(lab: Lab) -> None:
    """Not a benchmark: prints the figure, and fails only far beyond the 1 ms target."""
    a = lab.add_host("a", "192.0.2.1/24")
    b = lab.add_host("b", "192.0.2.2/24")
    announcer = PacketAnnouncer()
    rounds = 50

    async def announce_repeatedly() -> list[tuple[float, float]]:
        announcer.prepare("eth0", [VIP4])
        await announcer.announce("eth0", [VIP4])
        calls = []
        for _ in range(rounds):
            started, counter = time.time(), time.perf_counter()
            await announcer.announce("eth0", [VIP4])
            calls.append((started, time.perf_counter() - counter))
        return calls

    with capture_on(b) as capture:
        try:
            calls = run_in(a, announce_repeatedly)
        finally:
            announcer.close()
        received = capture.frames(is_garp_for(VIP4.ip), rounds + 1)[1:]
    to_wire = [
        arrived - started for (started, _), (_, arrived) in zip(calls, received, strict=True)
    ]
    in_call = [duration for _, duration in calls]
    print(
        f"\nannounce() -> frame received on the other host: median "
        f"{statistics.median(to_wire) * 1e6:.0f} us, max {max(to_wire) * 1e6:.0f} us; "
        f"time inside announce(): median {statistics.median(in_call) * 1e6:.0f} us"
    )
    assert statistics.median(to_wire) < 1e-3


def test_na_router_flag_follows_ipv6_forwarding(lab: Lab) -> None:
    a = lab.add_host("a", "2001:db8::1/64")
    b = lab.add_host("b", "2001:db8::2/64")
    a.run("sysctl", "-qw", "net.ipv6.conf.eth0.forwarding=1")
    announcer = PacketAnnouncer()

    async def announce() -> None:
        await announcer.announce("eth0", [VIP6])

    with capture_on(b) as capture:
        try:
            run_in(a, announce)
        finally:
            announcer.close()
        ((na, _),) = capture.frames(is_na_for(VIP6.ip), 1)
    assert (na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (1, 0, 1)
