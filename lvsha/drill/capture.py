"""What the client hears of the election: VRRP adverts and gratuitous ARPs, with receipt times;
and when a director's kernel gains or loses an IPv4 address.

An AF_PACKET socket on the client's interface sees every frame the switch floods to it, so the
drill observes the directors from outside, as a router or client on the segment would. Adverts
are decoded and checked with the daemon's own codec; each record carries the drill's monotonic
receipt time. An rtnetlink socket opened in a director's namespace hears the kernel announce
address changes there, independently of whatever daemon made them.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from lvsha.drill.lab import Host
from lvsha.drill.probe import format_mac
from lvsha.drill.reader import ReaderThread
from lvsha.vrrp.wire import (
    IPPROTO_VRRP,
    AdvertDropError,
    VrrpVersion,
    decode_advert,
    split_ipv4_packet,
)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
_ETHERNET = struct.Struct("!6s6sH")
_ARP_IPV4 = struct.Struct("!HHBBH6s4s6s4s")
_PACKET_OUTGOING = 4
# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h
NETLINK_ROUTE = 0
RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR = 20
RTM_DELADDR = 21
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_ADDRESS_SOCKET_BUFFER = 1 << 20
_STAMPER_START_TIMEOUT = 10.0
# asm-generic/socket.h: SO_TIMESTAMPNS_OLD; the control message has the same number.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")


@dataclass(frozen=True, slots=True)
class AdvertSeen:
    at: float
    source: IPv4Address
    source_mac: str
    vrid: int
    priority: int
    version: VrrpVersion
    advert_interval: float
    """Seconds, whatever the version's wire unit."""


@dataclass(frozen=True, slots=True)
class GarpSeen:
    """A gratuitous ARP: sender and target protocol address are both `address`."""

    at: float
    address: IPv4Address
    sender_mac: str
    operation: int
    """1 request, 2 reply; both are used for announcements."""


def parse_frame(frame: bytes, at: float) -> AdvertSeen | GarpSeen | None:
    """A valid VRRP advert or a gratuitous ARP in `frame`, else None."""
    if len(frame) < _ETHERNET.size:
        return None
    _destination, source_mac, ethertype = _ETHERNET.unpack_from(frame)
    body = frame[_ETHERNET.size :]
    if ethertype == ETH_P_IP:
        if len(body) < 20 or body[9] != IPPROTO_VRRP:
            return None
        # Ethernet pads short frames: cut the packet to its IPv4 total length.
        total_length = int.from_bytes(body[2:4], "big")
        try:
            received = decode_advert(split_ipv4_packet(body[:total_length]))
        except AdvertDropError:
            return None
        if not isinstance(received.source, IPv4Address):
            return None
        advert = received.advert
        return AdvertSeen(
            at,
            received.source,
            format_mac(source_mac),
            advert.vrid,
            advert.priority,
            advert.version,
            advert.advert_interval_seconds,
        )
    if ethertype == ETH_P_ARP and len(body) >= _ARP_IPV4.size:
        (hardware, protocol, hardware_length, protocol_length, operation, sender_mac, sender, _,
         target) = _ARP_IPV4.unpack_from(body)  # fmt: skip
        if (hardware, protocol, hardware_length, protocol_length) != (1, ETH_P_IP, 6, 4):
            return None
        if sender != target or operation not in (1, 2):
            return None
        return GarpSeen(at, IPv4Address(sender), format_mac(sender_mac), operation)
    return None


def first_advert(
    adverts: Iterable[AdvertSeen], source: IPv4Address, vrid: int, after: float
) -> AdvertSeen | None:
    """The first advert from `source` at or after `after` with a priority above 0."""
    for advert in adverts:
        if (
            advert.at >= after
            and advert.priority > 0
            and (advert.source, advert.vrid)
            == (
                source,
                vrid,
            )
        ):
            return advert
    return None


def last_advert(
    adverts: Sequence[AdvertSeen], source: IPv4Address, vrid: int, before: float
) -> AdvertSeen | None:
    """The last advert from `source` at or before `before`, priority 0 (stepping down) included."""
    for advert in reversed(adverts):
        if advert.at <= before and advert.source == source and advert.vrid == vrid:
            return advert
    return None


def first_garp(
    garps: Iterable[GarpSeen], address: IPv4Address, sender_mac: str, after: float
) -> GarpSeen | None:
    for garp in garps:
        if garp.at >= after and garp.address == address and garp.sender_mac == sender_mac:
            return garp
    return None


def last_first_garp(
    garps: Iterable[GarpSeen], addresses: Sequence[IPv4Address], sender_mac: str, after: float
) -> GarpSeen | None:
    """Of each address's first GARP from `sender_mac` at or after `after`, the latest: when
    every address had been announced once. None when one of them was not announced."""
    firsts: dict[IPv4Address, GarpSeen] = {}
    wanted = set(addresses)
    for garp in garps:
        if (
            garp.at >= after
            and garp.sender_mac == sender_mac
            and garp.address in wanted
            and garp.address not in firsts
        ):
            firsts[garp.address] = garp
    if not wanted or len(firsts) < len(wanted):
        return None
    return max(firsts.values(), key=_at)


@dataclass(frozen=True, slots=True)
class AddressEvent:
    """The kernel added (RTM_NEWADDR) or removed (RTM_DELADDR) an IPv4 address."""

    at: float
    added: bool
    address: IPv4Interface
    interface_index: int
    label: str | None


def _align(length: int) -> int:
    return (length + 3) & ~3


def parse_address_messages(data: bytes, at: float) -> list[AddressEvent]:
    """The IPv4 address events in one rtnetlink datagram; other messages are skipped."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        body = data[offset + _NLMSGHDR.size : offset + length]
        offset += _align(length)
        if kind not in (RTM_NEWADDR, RTM_DELADDR) or len(body) < _IFADDRMSG.size:
            continue
        family, prefix_length, _ifa_flags, _scope, index = _IFADDRMSG.unpack_from(body)
        if family != socket.AF_INET:
            continue
        attributes = _attributes(body[_IFADDRMSG.size :])
        # IFA_LOCAL is the interface's own address; IFA_ADDRESS differs only on point-to-point.
        raw = attributes.get(IFA_LOCAL, attributes.get(IFA_ADDRESS))
        if raw is None or len(raw) != 4:
            continue
        label = attributes.get(IFA_LABEL)
        events.append(
            AddressEvent(
                at,
                kind == RTM_NEWADDR,
                IPv4Interface((IPv4Address(raw), prefix_length)),
                index,
                None if label is None else label.rstrip(b"\0").decode(errors="replace"),
            )
        )
    return events


def _attributes(data: bytes) -> dict[int, bytes]:
    found = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            break
        found[kind] = data[offset + _RTATTR.size : offset + length]
        offset += _align(length)
    return found


def first_address_added(
    events: Iterable[AddressEvent], address: IPv4Address, after: float
) -> AddressEvent | None:
    for event in events:
        if event.at >= after and event.added and event.address.ip == address:
            return event
    return None


def last_first_address_added(
    events: Iterable[AddressEvent], addresses: Sequence[IPv4Address], after: float
) -> AddressEvent | None:
    """Of each address's first addition at or after `after`, the latest: when the kernel held
    them all. None when one of them was not added."""
    firsts: dict[IPv4Address, AddressEvent] = {}
    wanted = set(addresses)
    for event in events:
        ip = event.address.ip
        if event.at >= after and event.added and ip in wanted and ip not in firsts:
            firsts[ip] = event
    if not wanted or len(firsts) < len(wanted):
        return None
    return max(firsts.values(), key=_event_at)


def open_address_socket() -> socket.socket:
    """A socket that hears IPv4 address notifications in the calling thread's namespace."""
    listener = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _ADDRESS_SOCKET_BUFFER)
        listener.bind((0, RTMGRP_IPV4_IFADDR))
    except BaseException:
        listener.close()
        raise
    return listener


class AddressWatcher(ReaderThread):
    """IPv4 address events in `host`'s namespace, with the times the kernel announced them.

    The stamps come from `lvsha.drill.address_stamper`, a real-time process started in the
    host's namespace; a thread here collects its lines for as long as the watcher runs.
    """

    what = "address watcher"

    def __init__(self, host: Host) -> None:
        self._stamper = host.popen(
            sys.executable,
            "-m",
            "lvsha.drill.address_stamper",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert self._stamper.stdout is not None
        self._lines = self._stamper.stdout
        try:
            self._await_ready()
        except BaseException:
            self._end_stamper()
            raise
        super().__init__(f"addresses-{host.name}", self._lines)
        self._events: list[AddressEvent] = []

    def _await_ready(self) -> None:
        readable, _, _ = select.select([self._lines], [], [], _STAMPER_START_TIMEOUT)
        line = self._lines.readline() if readable else b""
        if line != b"ready\n":
            raise RuntimeError(
                f"the address stamper did not start within {_STAMPER_START_TIMEOUT} s "
                f"(it said {line!r}, exit code {self._stamper.poll()})"
            )

    def events_since(self, since: float) -> list[AddressEvent]:
        self._raise_if_failed()
        with self._lock:
            return self._events[bisect_left(self._events, since, key=_event_at) :]

    def stop(self) -> None:
        self._end_stamper()
        super().stop()

    def _end_stamper(self) -> None:
        if self._stamper.poll() is None:
            self._stamper.kill()
        self._stamper.wait(timeout=5)

    def _run(self) -> None:
        for line in self._lines:
            at, _, data = line.decode().partition(" ")
            events = parse_address_messages(bytes.fromhex(data.strip()), float(at))
            if events:
                with self._lock:
                    self._events.extend(events)


def _event_at(event: AddressEvent) -> float:
    return event.at


def _open_sniffer(interface: str) -> socket.socket:
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sniffer.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sniffer.bind((interface, ETH_P_ALL))
    except BaseException:
        sniffer.close()
        raise
    return sniffer


class Capture(ReaderThread):
    """Adverts and gratuitous ARPs heard on `host`'s `interface`, recorded by a thread."""

    what = "capture"
    outgoing = False
    """Which frames to record: those the host receives, or (True) those it sends."""

    def __init__(self, host: Host, interface: str = "eth0") -> None:
        self._sniffer = host.call(lambda: _open_sniffer(interface))
        super().__init__("capture", self._sniffer)
        self._adverts: list[AdvertSeen] = []
        self._garps: list[GarpSeen] = []

    def adverts_since(self, since: float) -> list[AdvertSeen]:
        self._raise_if_failed()
        with self._lock:
            return self._adverts[bisect_left(self._adverts, since, key=_at) :]

    def garps_since(self, since: float) -> list[GarpSeen]:
        self._raise_if_failed()
        with self._lock:
            return self._garps[bisect_left(self._garps, since, key=_at) :]

    def _run(self) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._sniffer], [], [], 0.05)
            if not readable:
                continue
            frame, ancillary, _flags, address = self._sniffer.recvmsg(65535, 64)
            received_at = kernel_receipt_time(ancillary)
            if (address[2] == _PACKET_OUTGOING) != self.outgoing:
                continue
            seen = parse_frame(frame, received_at)
            if isinstance(seen, AdvertSeen):
                with self._lock:
                    self._adverts.append(seen)
            elif isinstance(seen, GarpSeen):
                with self._lock:
                    self._garps.append(seen)


def kernel_receipt_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the kernel received the frame, on the monotonic clock; now if it did not say."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            # The stamp is on the realtime clock: move it by the clocks' current difference.
            realtime: float = seconds + nanoseconds / 1e9
            return realtime - (time.time() - time.monotonic())
    return time.monotonic()


def _at(record: AdvertSeen | GarpSeen) -> float:
    return record.at
