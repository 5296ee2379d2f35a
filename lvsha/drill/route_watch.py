"""When a host's kernel changes its route to one prefix, and to which nexthops (the ECMP set).

A thread listens in the host's namespace to rtnetlink's IPv4 route and nexthop groups; after
each burst of notifications it dumps the routing table and records the gateways of the route
to exactly the watched prefix, whenever they differ from the last ones recorded. That is the
set the kernel forwards by, whether zebra installed the route with nexthop objects (`nhid`) or
plain multipath attributes: a dump carries the nexthops in both cases. Times are the drill's
monotonic clock when the thread woke to the notification.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from lvsha.drill.lab import Host

# linux/netlink.h, linux/rtnetlink.h
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_NEXTHOP = 32
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTA_DST = 1
RTA_GATEWAY = 5
RTA_MULTIPATH = 9
RTA_TABLE = 15
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_RTNEXTHOP = struct.Struct("=HBBi")
_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class RouteChange:
    at: float
    nexthops: frozenset[str]
    """The route's gateways after the change; empty when the route is gone."""


def _align(length: int) -> int:
    return (length + 3) & ~3


def _attributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, data[offset + _RTATTR.size : offset + length]
        offset += _align(length)


def _route(payload: bytes) -> tuple[IPv4Network, frozenset[str]] | None:
    """The destination and gateways of one RTM_NEWROUTE payload (rtmsg and attributes); None
    when it is not an IPv4 unicast route of the main table."""
    family, dst_len, _, _, table, _, _, kind, _ = _RTMSG.unpack_from(payload)
    if family != socket.AF_INET or kind != RTN_UNICAST:
        return None
    found: set[str] = set()
    destination = "0.0.0.0"
    for attribute, value in _attributes(payload, _RTMSG.size, len(payload)):
        if attribute == RTA_TABLE:
            (table,) = struct.unpack("=I", value[:4])
        elif attribute == RTA_DST:
            destination = socket.inet_ntoa(value[:4])
        elif attribute == RTA_GATEWAY:
            found.add(socket.inet_ntoa(value[:4]))
        elif attribute == RTA_MULTIPATH:
            offset = 0
            while offset + _RTNEXTHOP.size <= len(value):
                length, _, _, _ = _RTNEXTHOP.unpack_from(value, offset)
                if length < _RTNEXTHOP.size:
                    break
                for inner, data in _attributes(value, offset + _RTNEXTHOP.size, offset + length):
                    if inner == RTA_GATEWAY:
                        found.add(socket.inet_ntoa(data[:4]))
                offset += _align(length)
    if table != RT_TABLE_MAIN:
        return None
    return IPv4Network(f"{destination}/{dst_len}"), frozenset(found)


def parse_route_dump(messages: bytes, prefix: IPv4Network) -> tuple[frozenset[str] | None, bool]:
    """(gateways of the route to exactly `prefix` in these dump messages, or None when none of
    them is that route; whether the dump ended)."""
    offset = 0
    found: frozenset[str] | None = None
    done = False
    while offset + _NLMSGHDR.size <= len(messages):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(messages, offset)
        if length < _NLMSGHDR.size:
            break
        payload = messages[offset + _NLMSGHDR.size : offset + length]
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", payload)
            if error:
                raise OSError(-error, "route dump refused")
            done = True
        elif kind == RTM_NEWROUTE:
            route = _route(payload)
            if route is not None and route[0] == prefix:
                found = route[1]
        offset += _align(length)
    return found, done


class RouteWatcher:
    """The kernel's nexthops for `prefix` in `host`, and every change of them, timed."""

    def __init__(self, host: Host, prefix: str) -> None:
        self.host = host
        self.prefix = IPv4Network(prefix)
        self._events, self._dumps = host.call(self._open)
        self._changes: list[RouteChange] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop_read, self._stop_write = socket.socketpair()
        self._failure: BaseException | None = None
        self._sequence = 0
        # The first state, before any notification.
        self._record(time.monotonic())
        self._thread = threading.Thread(target=self._run, name=f"routes-{host.name}", daemon=True)
        self._thread.start()

    @staticmethod
    def _open() -> tuple[socket.socket, socket.socket]:
        # Opened in the host's namespace; netlink sockets stay bound to it.
        events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        events.bind((0, 0))
        for group in (RTNLGRP_IPV4_ROUTE, RTNLGRP_NEXTHOP):
            events.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        dumps = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        dumps.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        dumps.bind((0, 0))
        return events, dumps

    def _dump(self) -> frozenset[str]:
        self._sequence += 1
        request = _NLMSGHDR.pack(
            _NLMSGHDR.size + _RTMSG.size,
            RTM_GETROUTE,
            NLM_F_REQUEST | NLM_F_DUMP,
            self._sequence,
            0,
        ) + _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        self._dumps.send(request)
        found: frozenset[str] | None = None
        while True:
            part, done = parse_route_dump(self._dumps.recv(_BUFFER), self.prefix)
            if part is not None:
                found = part
            if done:
                return found or frozenset()

    def _record(self, at: float) -> None:
        nexthops = self._dump()
        with self._lock:
            if not self._changes or self._changes[-1].nexthops != nexthops:
                self._changes.append(RouteChange(at, nexthops))
                self._changed.notify_all()

    def _run(self) -> None:
        try:
            while True:
                readable, _, _ = select.select([self._events, self._stop_read], [], [])
                if self._stop_read in readable:
                    return
                at = time.monotonic()
                # Drain the burst (zebra sends nexthops, groups and the route one by one).
                while True:
                    try:
                        self._events.recv(_BUFFER, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    except OSError:  # ENOBUFS: notifications lost; the dump still tells
                        break
                self._record(at)
        except BaseException as exc:
            with self._lock:
                self._failure = exc
                self._changed.notify_all()

    def _check(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"route watcher in {self.host.name} failed") from self._failure

    def current(self) -> frozenset[str]:
        with self._lock:
            self._check()
            return self._changes[-1].nexthops

    def changes_since(self, since: float) -> list[RouteChange]:
        with self._lock:
            self._check()
            return self._changes[bisect_right(self._changes, since, key=_change_at) :]

    def wait_for(
        self, wanted: Callable[[frozenset[str]], bool], since: float, timeout: float
    ) -> RouteChange | None:
        """The first change after `since` to nexthops that satisfy `wanted` (waiting up to
        `timeout` s for it); None when none came in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._check()
                start = bisect_right(self._changes, since, key=_change_at)
                for change in self._changes[start:]:
                    if wanted(change.nexthops):
                        return change
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def wait_current(self, wanted: Callable[[frozenset[str]], bool], timeout: float) -> bool:
        """Wait up to `timeout` s until the current nexthops satisfy `wanted`; whether they do."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._check()
                if wanted(self._changes[-1].nexthops):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def stop(self) -> None:
        self._stop_write.send(b"x")
        self._thread.join(timeout=5)
        for sock in (self._events, self._dumps, self._stop_read, self._stop_write):
            sock.close()


def _change_at(change: RouteChange) -> float:
    return change.at


def gateway_set(*addresses: IPv4Address | str) -> frozenset[str]:
    return frozenset(str(address) for address in addresses)
