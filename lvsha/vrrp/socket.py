"""The VRRP socket edge: one raw IP-protocol-112 socket per (interface, family) for asyncio.

It sends encoded adverts to the VRRP group (or to each unicast peer) from a pinned source
address with TTL/hop limit 255, and hands every advert that decodes to a callback. Decoding
and the checks that need only the packet are the wire module's; the checks that need an
instance's configuration are the caller's (`check_advert_for_instance`).

Packets are input, never a bug: nothing a packet causes, in decoding or in the callback,
escapes the reader into the event loop; it is counted as a drop and logged instead.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from lvsha.vrrp.wire import (
    ANCILLARY_BUFFER_SIZE,
    IPPROTO_VRRP,
    VRRP_MULTICAST_IPV4,
    VRRP_MULTICAST_IPV6,
    VRRP_TTL,
    Advert,
    DropCounter,
    DropReason,
    IpAddress,
    ReceivedAdvert,
    encode_advert,
    ipv6_datagram,
    receive_advert,
    receive_ipv4_packet,
)

AdvertHandler = Callable[[ReceivedAdvert], None]
DropHandler = Callable[["DropReason | SocketDropReason", IpAddress | None, str], None]
"""Told of every drop the socket sees, wire and socket reasons alike (see receive.DropLog)."""

log = logging.getLogger("lvsha.vrrp")

# Linux values the socket module of Python 3.11 does not export (linux/in.h, linux/in6.h).
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
IPTOS_PREC_INTERNETCONTROL = 0xC0
"""keepalived sends VRRP with this TOS (IPv4) and traffic class (IPv6): DSCP CS6."""

IF_NAMESIZE = 16
"""Linux interface names are at most 15 bytes plus the terminating zero."""
RECEIVE_BUFFER_SIZE = 65535
MAX_READS_PER_WAKEUP = 64
"""Bounds one reader callback so a flood of packets cannot starve the event loop."""

_IP_MREQN = struct.Struct("=4s4si")
_IN_PKTINFO = struct.Struct("=i4s4s")
_Packet: TypeAlias = tuple[bytes, tuple[int, int, bytes], tuple[object, ...]]
"""(payload, IP_PKTINFO / IPV6_PKTINFO ancillary data, destination) of one advert."""
_ENCODED_KEPT = 8
SO_TIMESTAMPNS = 35  # asm-generic/socket.h; also SCM_TIMESTAMPNS
_TIMESPEC = struct.Struct("=qq")
_TIMESTAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def arrival_time(ancillary: Iterable[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time (SCM_TIMESTAMPNS, wall clock) on the monotonic clock the event
    loop and the VRRP machines use; None when the packet carries none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            wall: float = seconds + nanoseconds / 1e9
            return wall - (time.time() - time.monotonic())
    return None


_IPV6_MREQ = struct.Struct("=16si")
_IN6_PKTINFO = struct.Struct("=16si")


class SocketDropReason(enum.Enum):
    """Why the socket edge ignored an advert that decoded cleanly."""

    OWN_ADVERT = "own_advert"
    NOT_A_UNICAST_PEER = "not_a_unicast_peer"
    UNICAST_ON_MULTICAST_SOCKET = "unicast_on_multicast_socket"
    MULTICAST_ON_UNICAST_SOCKET = "multicast_on_unicast_socket"


@dataclass(frozen=True, slots=True)
class VrrpSocketSettings:
    """Where and how one socket talks VRRP.

    `source` is the interface's primary IPv4 address, or its IPv6 link-local address
    (RFC 5798 5.1.2.1); it also picks the family. With `unicast_peers` the socket sends to
    each peer instead of the group and accepts adverts only from them. `multicast_group`
    replaces the VRRP group (global.vrrp.mcast_group4 / mcast_group6).
    """

    interface: str
    source: IpAddress
    unicast_peers: tuple[IpAddress, ...] = ()
    multicast_group: IpAddress | None = None
    send_interface: str | None = None
    """Send from this interface instead (VMAC with vmac_xmit_base: the VMAC's base
    interface); the socket still receives on `interface`."""

    def __post_init__(self) -> None:
        for name in (self.interface, self.send_interface):
            if name is not None and (not name or len(name.encode()) >= IF_NAMESIZE):
                raise ValueError(f"interface name {name!r} is not a valid Linux name")
        if self.source.is_multicast or self.source.is_unspecified:
            raise ValueError(f"source {self.source} is not a unicast address")
        if isinstance(self.source, IPv6Address) and not self.source.is_link_local:
            raise ValueError(f"IPv6 source {self.source} must be the link-local address")
        if isinstance(self.source, IPv6Address) and self.source.scope_id:
            raise ValueError(f"give the source {self.source} without a %scope")
        for peer in self.unicast_peers:
            if peer.version != self.source.version:
                raise ValueError(f"unicast peer {peer} is not IPv{self.source.version}")
            if peer.is_multicast:
                raise ValueError(f"unicast peer {peer} is a multicast address")
        group = self.multicast_group
        if group is not None and (group.version != self.source.version or not group.is_multicast):
            raise ValueError(f"group {group} is not an IPv{self.source.version} multicast address")

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET if self.source.version == 4 else socket.AF_INET6

    @property
    def group(self) -> IpAddress:
        if self.multicast_group is not None:
            return self.multicast_group
        return VRRP_MULTICAST_IPV4 if self.source.version == 4 else VRRP_MULTICAST_IPV6

    @property
    def destinations(self) -> tuple[IpAddress, ...]:
        return self.unicast_peers or (self.group,)


class VrrpSocket:
    """A configured raw VRRP socket; `open` it (in the right namespace), then `start` it.

    `open` needs no event loop, so a test can open the socket inside another network
    namespace's thread and use it from its own loop; `start` registers the reader on the
    running loop.
    """

    def __init__(
        self,
        sock: socket.socket,
        settings: VrrpSocketSettings,
        ifindex: int,
        send_ifindex: int | None = None,
    ) -> None:
        self.settings = settings
        self.ifindex = ifindex
        self.send_ifindex = ifindex if send_ifindex is None else send_ifindex
        """Where adverts leave: `ifindex`, or the send_interface's."""
        self.drops = DropCounter()
        """Packets the wire module rejected, by reason."""
        self.ignored: Counter[SocketDropReason] = Counter()
        """Valid adverts this socket does not deliver, by reason."""
        self.adverts_not_sent = 0
        self._encoded: dict[Advert, list[_Packet]] = {}
        """Adverts lost because the send buffer was full; VRRP tolerates a lost advert."""
        self.receive_errors = 0
        """Reads or callbacks that raised; each is also a `RECEIVE_ERROR` drop."""
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_advert: AdvertHandler | None = None
        self._on_drop: DropHandler | None = None
        self._unicast_peers = frozenset(settings.unicast_peers)

    @classmethod
    def open(cls, settings: VrrpSocketSettings) -> VrrpSocket:
        """Create and configure the socket in the calling thread's network namespace."""
        ifindex = socket.if_nametoindex(settings.interface)
        send_ifindex = (
            ifindex
            if settings.send_interface is None
            else socket.if_nametoindex(settings.send_interface)
        )
        sock = socket.socket(settings.family, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, settings.interface.encode())
            # The kernel's arrival time of each advert: Master_Down runs from when the advert
            # came, not from when this process got round to reading it.
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if settings.family == socket.AF_INET:
                _configure_ipv4(sock, settings, ifindex)
            else:
                _configure_ipv6(sock, settings, ifindex)
        except BaseException:
            sock.close()
            raise
        return cls(sock, settings, ifindex, send_ifindex)

    def fileno(self) -> int:
        return self._sock.fileno()

    def start(self, on_advert: AdvertHandler, on_drop: DropHandler | None = None) -> None:
        """Deliver every accepted advert to `on_advert`, from the running event loop, and
        tell `on_drop` of every packet dropped (the caller's drops in `drops` included)."""
        if self._loop is not None:
            raise RuntimeError("VrrpSocket already started")
        self._loop = asyncio.get_running_loop()
        self._on_advert = on_advert
        self._on_drop = on_drop
        self.drops.listener = on_drop
        self._loop.add_reader(self._sock.fileno(), self._read_pending)

    def send(self, advert: Advert) -> None:
        """Send `advert` to the group or to every unicast peer.

        Other send errors (ENETDOWN, EADDRNOTAVAIL when the source went away) are raised for
        the caller to act on; a full send buffer only counts in `adverts_not_sent`.
        """
        packets = self._encoded.get(advert)
        if packets is None:
            packets = self._encode(advert)
        for payload, pktinfo, address in packets:
            try:
                # An IPv4 raw socket bound to an address stops receiving the group's packets,
                # so the source is pinned per packet instead (ipi_spec_dst / ipi6_addr).
                self._sock.sendmsg([payload], [pktinfo], 0, address)
            except BlockingIOError:
                self.adverts_not_sent += 1

    def _encode(self, advert: Advert) -> list[_Packet]:
        """The packets of `advert`, kept for the next time: a master sends the same advert
        over and over, and a takeover's first advert was built by the last one."""
        source = self.settings.source
        packets: list[_Packet] = []
        for destination in self.settings.destinations:
            payload = encode_advert(advert, source, destination)
            if isinstance(source, IPv4Address):
                address: tuple[object, ...] = (str(destination), 0)
                pktinfo = (
                    socket.IPPROTO_IP,
                    IP_PKTINFO,
                    _IN_PKTINFO.pack(self.send_ifindex, source.packed, bytes(4)),
                )
            else:
                address = (str(destination), 0, 0, self.send_ifindex)
                pktinfo = (
                    socket.IPPROTO_IPV6,
                    socket.IPV6_PKTINFO,
                    _IN6_PKTINFO.pack(source.packed, self.send_ifindex),
                )
            packets.append((payload, pktinfo, address))
        if len(self._encoded) >= _ENCODED_KEPT:
            self._encoded.clear()  # priorities move with tracking; a handful are in use
        self._encoded[advert] = packets
        return packets

    def prepare(self, advert: Advert) -> None:
        """Encode `advert` now (a backup's first advert as master), not at takeover."""
        if advert not in self._encoded:
            self._encode(advert)

    def ignored_snapshot(self) -> Mapping[SocketDropReason, int]:
        """Every reason, zeros included, for a stable metric label set."""
        return {reason: self.ignored[reason] for reason in SocketDropReason}

    def close(self) -> None:
        """Stop reading and close the socket; closing twice is harmless."""
        if self._sock.fileno() == -1:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def __enter__(self) -> VrrpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_pending(self) -> None:
        """Read and deliver what is waiting now, without waiting for the loop's callback."""
        if self._on_advert is not None and self._sock.fileno() != -1:
            self._read_pending()

    def _read_pending(self) -> None:
        # The reader callback: whatever a packet causes stays here (counted and logged), as
        # an exception out of it would be logged by asyncio for every packet of a flood.
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                received = self._receive_one()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # A pending socket error is reported once; the next wakeup reads on.
                self._receive_failed(None, f"receive failed: {exc}", exc)
                return
            except Exception as exc:
                self._receive_failed(None, f"decoding failed: {exc!r}", exc)
                continue
            if received is None:
                continue
            assert self._on_advert is not None
            try:
                if self._accepts(received):
                    self._on_advert(received)
            except Exception as exc:
                self._receive_failed(received.source, f"handling failed: {exc!r}", exc)

    def _receive_failed(self, source: IpAddress | None, detail: str, exc: Exception) -> None:
        self.receive_errors += 1
        if self.receive_errors == 1 and not isinstance(exc, OSError):
            # A bug: one traceback to find it by; the rest are counted and rate-limited.
            log.error(
                "VRRP socket on %s: an advert raised (counted as %s from now on)",
                self.settings.interface,
                DropReason.RECEIVE_ERROR.value,
                exc_info=exc,
            )
        self.drops.record(DropReason.RECEIVE_ERROR, source, detail)

    def _receive_one(self) -> ReceivedAdvert | None:
        if self.settings.family == socket.AF_INET:
            packet, ancillary, _flags, _address = self._sock.recvmsg(
                RECEIVE_BUFFER_SIZE, _TIMESTAMP_SPACE
            )
            received = receive_ipv4_packet(packet, self.drops)
        else:
            payload, ancillary, _flags, address = self._sock.recvmsg(
                RECEIVE_BUFFER_SIZE, ANCILLARY_BUFFER_SIZE + _TIMESTAMP_SPACE
            )
            datagram = ipv6_datagram(payload, IPv6Address(address[0]), ancillary)
            received = receive_advert(datagram, self.drops)
        if received is None:
            return None
        arrived = arrival_time(ancillary)
        return received if arrived is None else replace(received, received_at=arrived)

    def _accepts(self, received: ReceivedAdvert) -> bool:
        reason: SocketDropReason | None = None
        if received.source == self.settings.source:
            reason = SocketDropReason.OWN_ADVERT
        elif self._unicast_peers:
            if received.destination.is_multicast:
                reason = SocketDropReason.MULTICAST_ON_UNICAST_SOCKET
            elif received.source not in self._unicast_peers:
                reason = SocketDropReason.NOT_A_UNICAST_PEER
        elif received.destination != self.settings.group:
            reason = SocketDropReason.UNICAST_ON_MULTICAST_SOCKET
        if reason is None:
            return True
        self.ignored[reason] += 1
        if self._on_drop is not None:
            self._on_drop(reason, received.source, _IGNORED_DETAIL[reason])
        return False


_IGNORED_DETAIL = {
    SocketDropReason.OWN_ADVERT: "our own advert looped back",
    SocketDropReason.NOT_A_UNICAST_PEER: "not one of our unicast peers",
    SocketDropReason.UNICAST_ON_MULTICAST_SOCKET: "sent by unicast, we use multicast",
    SocketDropReason.MULTICAST_ON_UNICAST_SOCKET: "sent to the multicast group, we use unicast",
}


def _configure_ipv4(sock: socket.socket, settings: VrrpSocketSettings, ifindex: int) -> None:
    # RFC 5798 5.1.1.3: TTL 255 always, so receivers can tell the packet crossed no router.
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IPTOS_PREC_INTERNETCONTROL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    # Otherwise a raw socket also receives groups that other sockets on the host joined.
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    interface_request = _IP_MREQN.pack(bytes(4), bytes(4), ifindex)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface_request)
    if not settings.unicast_peers:
        membership = _IP_MREQN.pack(settings.group.packed, bytes(4), ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)


def _configure_ipv6(sock: socket.socket, settings: VrrpSocketSettings, ifindex: int) -> None:
    # RFC 5798 5.1.2.3: hop limit 255.
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, IPTOS_PREC_INTERNETCONTROL)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    # The kernel strips the IPv6 header: the hop limit (7.1 check) and the destination (which
    # the v3 checksum covers) come as ancillary data.
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    if not settings.unicast_peers:
        membership = _IPV6_MREQ.pack(settings.group.packed, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, membership)
