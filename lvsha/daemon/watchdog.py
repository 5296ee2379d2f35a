"""systemd's watchdog, fed only while the children's event loops answer.

Under `WatchdogSec=`, systemd passes `WATCHDOG_USEC` (and `WATCHDOG_PID`) and restarts the
service when no `WATCHDOG=1` arrives for that long. The parent is not what can wedge: the VRRP
child is (a loop stuck in a callback, a process stopped), and then the director neither sends
adverts nor gives up its VIPs cleanly. So the parent pings each child over its channel and feeds
the watchdog, every half interval as systemd advises, only while

- the VRRP child answered every ping older than `bound` (global.watchdog_bound), and
- the checker answered every ping older than the watchdog interval itself (its loop may be busy
  for a while with a big reload; a checker silent for the whole interval is wedged).

A child that is not running (between a crash and its restart) does not hold the feeding back:
the supervisor restarts it, and gives up (stopping lvsha) when it keeps failing. A child that
just started has `bound` to answer its first ping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsha.daemon.sdnotify import sd_notify
from lvsha.messages import Ping

log = logging.getLogger("lvsha.watchdog")

PINGS_PER_BOUND = 4
"""Pings sent per `bound` (one at a time: the next once the last is answered): a stall is seen
within a quarter of the bound after it passes."""


def interval_from_env(environ: dict[str, str] | None = None) -> float | None:
    """systemd's watchdog interval in seconds, when it asks this process to feed it."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


@dataclass
class _Child:
    name: str
    bound: float
    unanswered: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)
    """(serial, sent at) of the pings sent and not answered yet, oldest first."""
    stalled: bool = False


class Watchdog:
    """Pings the children and feeds systemd's watchdog while they answer."""

    def __init__(
        self,
        interval: float,
        bound: float,
        *,
        send: Callable[[str, Ping], bool],
        alive: Callable[[str], bool],
        notify: Callable[[str], bool] = sd_notify,
    ) -> None:
        self.interval = interval
        self.send = send
        self.alive = alive
        self.notify = notify
        self._children = {
            "vrrp": _Child("vrrp", bound),
            "checker": _Child("checker", max(bound, interval)),
        }
        self._serial = 0
        self.fed_total = 0
        self.withheld_total = 0

    def set_bound(self, bound: float) -> None:
        """A reload changed global.watchdog_bound."""
        self._children["vrrp"].bound = bound
        self._children["checker"].bound = max(bound, self.interval)

    def started(self, name: str) -> None:
        """A child (re)started: what its predecessor left unanswered is not its fault."""
        child = self._children.get(name)
        if child is not None:
            child.unanswered.clear()

    def pong(self, name: str, serial: int) -> None:
        child = self._children.get(name)
        if child is None:
            return
        while child.unanswered and child.unanswered[0][0] <= serial:
            child.unanswered.popleft()
        if child.stalled and not self._late(child, asyncio.get_running_loop().time()):
            child.stalled = False
            log.warning("watchdog: the %s process answers again", name)

    def _late(self, child: _Child, now: float) -> bool:
        return bool(child.unanswered) and now - child.unanswered[0][1] > child.bound

    def healthy(self, now: float) -> bool:
        healthy = True
        for child in self._children.values():
            if not self.alive(child.name):
                child.unanswered.clear()
                continue
            if self._late(child, now):
                healthy = False
                if not child.stalled:
                    child.stalled = True
                    log.error(
                        "watchdog: the %s process has not answered for %.1f s (bound %.1f s): "
                        "no longer feeding systemd's watchdog, which restarts lvsha after "
                        "%.1f s without it",
                        child.name,
                        now - child.unanswered[0][1],
                        child.bound,
                        self.interval,
                    )
        return healthy

    def _ping(self, now: float) -> None:
        for child in self._children.values():
            if not self.alive(child.name) or child.unanswered:
                # One ping in flight at a time: a stopped child's channel does not fill up.
                continue
            self._serial += 1
            if self.send(child.name, Ping(self._serial)):
                child.unanswered.append((self._serial, now))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ping_every = min(c.bound for c in self._children.values()) / PINGS_PER_BOUND
        feed_every = self.interval / 2
        next_feed = loop.time()
        while True:
            now = loop.time()
            self._ping(now)
            if now >= next_feed:
                next_feed = now + feed_every
                if self.healthy(now):
                    self.fed_total += 1
                    with contextlib.suppress(OSError):
                        self.notify("WATCHDOG=1")
                else:
                    self.withheld_total += 1
            ping_every = min(c.bound for c in self._children.values()) / PINGS_PER_BOUND
            await asyncio.sleep(max(0.01, min(ping_every, next_feed - loop.time())))
