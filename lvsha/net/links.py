"""Link state of named interfaces, from rtnetlink link notifications (RTNLGRP_LINK).

A link is up when it is administratively up and passes traffic: IFF_UP and IFF_RUNNING. The
kernel sets IFF_RUNNING for operstate UP and for UNKNOWN (loopback, dummy and other devices
that report no carrier), so one flag test covers both. An interface that does not exist is down.

The monitor reads a plain NETLINK_ROUTE socket from a reader on the asyncio loop (no pyroute2:
issue 11, start-up cost of the VRRP process).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from lvsha.net.nlmsg import (
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
    SOL_NETLINK,
    RefusedError,
    ReplyFormatError,
    error_code,
    replies,
)
from lvsha.net.rtnl import REPLY_TIMEOUT, route_socket
from lvsha.net.rtnl_dump import (
    RECEIVE_SIZE,
    RTM_DELLINK,
    RTM_NEWLINK,
    RTNLGRP_LINK,
    Link,
    decode_link,
    link_dump_request,
)

log = logging.getLogger(__name__)

# linux/if.h
IFF_UP = 0x1
IFF_RUNNING = 0x40
# linux/netlink.h
NETLINK_ADD_MEMBERSHIP = 1
_RECEIVE_BUFFER = 1 << 20
"""Bytes of notifications the socket may hold (as pyroute2 asked; the kernel caps it at
net.core.rmem_max). Past that the kernel drops them and says so with ENOBUFS."""


@dataclass(frozen=True, slots=True)
class LinkChanged:
    interface: str
    up: bool


def is_up(flags: int) -> bool:
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


class LinkTable:
    """The watched interfaces' state, fed with what rtnetlink says about every link (pure)."""

    def __init__(self, interfaces: Iterable[str]) -> None:
        self._up: dict[str, bool] = dict.fromkeys(interfaces, False)
        self._names: dict[int, str] = {}
        """Link index to name, for every link seen: RTM_DELLINK and renames need it."""
        self._flags: dict[int, int] = {}

    @property
    def states(self) -> Mapping[str, bool]:
        return dict(self._up)

    def _recompute(self) -> list[LinkChanged]:
        now_up = dict.fromkeys(self._up, False)
        for index, name in self._names.items():
            if name in now_up:
                now_up[name] = now_up[name] or is_up(self._flags[index])
        changes = [LinkChanged(name, up) for name, up in now_up.items() if up != self._up[name]]
        self._up = now_up
        return changes

    def link_seen(self, index: int, name: str, flags: int) -> list[LinkChanged]:
        """RTM_NEWLINK: a link exists with this name and these flags."""
        self._names[index] = name
        self._flags[index] = flags
        return self._recompute()

    def link_gone(self, index: int) -> list[LinkChanged]:
        """RTM_DELLINK: the link no longer exists."""
        self._names.pop(index, None)
        self._flags.pop(index, None)
        return self._recompute()

    def resync(self, links: Iterable[tuple[int, str, int]]) -> list[LinkChanged]:
        """A full dump of (index, name, flags) replaces everything known."""
        self._names.clear()
        self._flags.clear()
        for index, name, flags in links:
            self._names[index] = name
            self._flags[index] = flags
        return self._recompute()


def _is_link_message(link: Link) -> bool:
    # Bridge ports also get RTM_NEWLINK/RTM_DELLINK with family AF_BRIDGE; a DELLINK of that
    # kind only means the port left its bridge.
    return link.family == socket.AF_UNSPEC


class LinkMonitor:
    """Reports `LinkChanged` for the named interfaces, from netlink; only changes.

    `start()` subscribes to link notifications, then reads every link's state, so no change
    falls between the two; the state it read is `states`. Iterating yields changes after that.
    The netlink socket lives in the network namespace of the thread that calls `start()`.

    A reader on the loop drains the socket as messages come, so the kernel's buffer fills only
    while the loop is blocked. When it overflowed (ENOBUFS), the monitor starts over on a new
    socket and learns what it missed from a fresh dump. Messages are taken in the order the
    kernel queued them, dump parts and notifications alike: a notification queued during a dump
    is newer than the parts before it, so it is folded into the dump's result, not laid over it.
    """

    def __init__(self, interfaces: Iterable[str]) -> None:
        self._table = LinkTable(interfaces)
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: list[LinkChanged] = []
        self._sequence = 0
        self._dumping: dict[int, tuple[str, int]] | None = None
        """The links of the dump under way (index: name, flags), None when there is none."""
        self._started: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._failure: OSError | None = None

    @property
    def states(self) -> Mapping[str, bool]:
        return self._table.states

    async def start(self) -> Mapping[str, bool]:
        loop = self._loop = asyncio.get_running_loop()
        started = self._started = loop.create_future()
        try:
            self._subscribe_and_dump()
            async with asyncio.timeout(REPLY_TIMEOUT):
                await started
        except TimeoutError:
            self.close()
            raise OSError(errno.ETIMEDOUT, "the kernel did not answer a link dump") from None
        except BaseException:
            self.close()
            raise
        return self.states

    def _subscribe_and_dump(self) -> None:
        """A new socket joined to RTNLGRP_LINK, then a dump of every link on it."""
        assert self._loop is not None
        netlink = route_socket(None)
        try:
            netlink.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_LINK)
            with contextlib.suppress(OSError):
                netlink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            self._sequence += 1
            netlink.send(link_dump_request(self._sequence))
            self._loop.add_reader(netlink.fileno(), self._on_readable)
        except BaseException:
            netlink.close()
            raise
        self._socket = netlink
        self._dumping = {}

    def close(self) -> None:
        self._release()
        self._wake()
        if self._started is not None and not self._started.done():
            self._started.set_result(None)

    def _release(self) -> None:
        netlink, self._socket = self._socket, None
        self._dumping = None
        if netlink is not None:
            if self._loop is not None:
                self._loop.remove_reader(netlink.fileno())
            netlink.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aenter__(self) -> LinkMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[LinkChanged]:
        return self

    async def __anext__(self) -> LinkChanged:
        if self._loop is None or (self._socket is None and self._failure is None):
            raise RuntimeError("LinkMonitor is not started (or closed)")
        while not self._ready:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._socket is None:
                raise StopAsyncIteration  # closed while waiting
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._ready.pop(0)

    def _on_readable(self) -> None:
        """Take everything the socket holds (the loop's reader: never raises)."""
        netlink = self._socket
        while netlink is not None and netlink is self._socket:
            try:
                data, _, flags, _ = netlink.recvmsg(RECEIVE_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    log.warning("link notifications overflowed; reading every link again")
                    self._release()
                    try:
                        self._subscribe_and_dump()
                    except OSError as reopening:
                        self._fail(reopening)
                else:
                    self._fail(exc)
                break
            try:
                if flags & socket.MSG_TRUNC:
                    raise ReplyFormatError(f"a link message longer than {RECEIVE_SIZE} bytes")
                self._on_data(data)
            except ReplyFormatError as exc:
                log.warning("unreadable link message dropped: %s", exc)
            except RefusedError as exc:
                self._fail(exc)
                break
        self._wake()

    def _fail(self, failure: OSError) -> None:
        """The socket broke: `start()` or the next `__anext__` raises `failure`."""
        self._release()
        if self._started is not None and not self._started.done():
            self._started.set_exception(failure)
        else:
            self._failure = failure

    def _on_data(self, data: bytes) -> None:
        for kind, flags, sequence, payload in replies(data):
            ours = sequence == self._sequence and self._dumping is not None
            if ours and kind in (NLMSG_DONE, NLMSG_ERROR):
                code = error_code(payload)
                if code:
                    raise RefusedError(code, f"link dump: {errno.errorcode.get(code, code)}")
                self._dump_done()
            elif kind == NLMSG_OVERRUN:
                raise ReplyFormatError("NLMSG_OVERRUN")
            elif kind in (RTM_NEWLINK, RTM_DELLINK):
                link = decode_link(payload)
                if _is_link_message(link):
                    self._on_link(kind, link, dump_part=ours and bool(flags & NLM_F_MULTI))

    def _on_link(self, kind: int, link: Link, dump_part: bool) -> None:
        dumping = self._dumping
        if dumping is not None:
            if kind == RTM_NEWLINK:
                dumping[link.index] = (str(link.name), link.flags)
            elif not dump_part:
                dumping.pop(link.index, None)
        elif kind == RTM_NEWLINK:
            self._ready += self._table.link_seen(link.index, str(link.name), link.flags)
        else:
            self._ready += self._table.link_gone(link.index)

    def _dump_done(self) -> None:
        assert self._dumping is not None
        links = [(index, name, flags) for index, (name, flags) in self._dumping.items()]
        self._dumping = None
        changes = self._table.resync(links)
        if self._started is not None and not self._started.done():
            self._started.set_result(None)  # what start() read is `states`, not changes
        else:
            self._ready += changes
