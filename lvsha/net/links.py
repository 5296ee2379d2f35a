"""Link state of named interfaces, from rtnetlink link notifications (RTMGRP_LINK).

A link is up when it is administratively up and passes traffic: IFF_UP and IFF_RUNNING. The
kernel sets IFF_RUNNING for operstate UP and for UNKNOWN (loopback, dummy and other devices
that report no carrier), so one flag test covers both. An interface that does not exist is down.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

# linux/if.h
IFF_UP = 0x1
IFF_RUNNING = 0x40
_RTMGRP_LINK = 0x1


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


def _errno(exc: Exception) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else getattr(exc, "errno", None)


def _is_link_message(message: Any) -> bool:
    # Bridge ports also get RTM_NEWLINK/RTM_DELLINK with family AF_BRIDGE; a DELLINK of that
    # kind only means the port left its bridge.
    return bool(message.get("family") == socket.AF_UNSPEC)


class LinkMonitor:
    """Reports `LinkChanged` for the named interfaces, from netlink; only changes.

    `start()` subscribes to link notifications, then reads every link's state, so no change
    falls between the two; the state it read is `states`. Iterating yields changes after that.
    The netlink socket lives in the network namespace of the thread that calls `start()`.
    """

    def __init__(self, interfaces: Iterable[str]) -> None:
        self._table = LinkTable(interfaces)
        self._ipr: Any = None
        self._ready: list[LinkChanged] = []

    @property
    def states(self) -> Mapping[str, bool]:
        return self._table.states

    async def start(self) -> Mapping[str, bool]:
        await self._subscribe_and_read()
        return self.states

    async def _subscribe_and_read(self) -> list[LinkChanged]:
        self._ipr = AsyncIPRoute(groups=0)
        await self._ipr.bind(groups=_RTMGRP_LINK)
        links = [
            (int(message["index"]), str(message.get("ifname")), int(message["flags"]))
            async for message in await self._ipr.link("dump")
            if _is_link_message(message)
        ]
        return self._table.resync(links)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def __aenter__(self) -> LinkMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[LinkChanged]:
        return self

    async def __anext__(self) -> LinkChanged:
        if self._ipr is None:
            raise RuntimeError("LinkMonitor is not started (or closed)")
        while not self._ready:
            received = False
            try:
                async for message in self._ipr.get():
                    received = True
                    self._ready += self._on_message(message)
            except (NetlinkError, OSError) as exc:
                if _errno(exc) != errno.ENOBUFS:
                    raise
                # The kernel dropped notifications, and pyroute2's socket is unusable after
                # that: start over on a new one, and learn what was missed from a fresh dump.
                log.warning("link notifications overflowed; reading every link again")
                self.close()
                self._ready += await self._subscribe_and_read()
                continue
            if not received or self._ipr is None:
                # pyroute2 ends a read with nothing in it only when its socket is closed.
                raise StopAsyncIteration
        return self._ready.pop(0)

    def _on_message(self, message: Any) -> list[LinkChanged]:
        if not _is_link_message(message):
            return []
        event = message.get("event")
        index = int(message["index"])
        if event == "RTM_NEWLINK":
            return self._table.link_seen(index, str(message.get("ifname")), int(message["flags"]))
        if event == "RTM_DELLINK":
            return self._table.link_gone(index)
        return []
