"""The receive path of one instance: a raw read in, a machine event (or a counted drop) out.

Every drop is counted by reason (the drops metric) and explained in the log, rate-limited:
the first drop of each (reason, sender) at once with what differed, then at most one line a
minute saying how many more there were (RFC 5798 7.1: the receiver SHOULD log the event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lvsha.vrrp.events import AdvertReceived, VrrpState
from lvsha.vrrp.socket import SocketDropReason
from lvsha.vrrp.wire import (
    AdvertDropError,
    DropCounter,
    DropReason,
    IpAddress,
    ReceivedAdvert,
    ReceivingInstance,
    address_list_difference,
    check_advert_for_instance,
)

log = logging.getLogger("lvsha.vrrp")

K = TypeVar("K", bound=Hashable)


def advert_event(
    received: ReceivedAdvert,
    instance: ReceivingInstance,
    own_addresses: frozenset[object],
    drops: DropCounter,
    *,
    state: VrrpState,
) -> AdvertReceived | None:
    """The machine event for a decoded advert, or None when it is not for us (counted).

    `own_addresses` are this router's source addresses: a multicast group loops our own
    adverts back on some setups, and they must not be taken for a peer's. `state` is the
    instance's machine state: in Initialize the machine takes no adverts, and the socket is
    open before Startup and after Shutdown, so what arrives then is dropped here.
    """
    source = received.source
    if state is VrrpState.INITIALIZE:
        drops.record(DropReason.INSTANCE_NOT_RUNNING, source, "the instance is not running")
        return None
    if source in own_addresses:
        drops.record(DropReason.OWN_ADVERT, source, "our own advert looped back")
        return None
    try:
        check_advert_for_instance(received, instance)
    except AdvertDropError as drop:
        drops.record(drop.reason, source, drop.detail)
        return None
    difference = address_list_difference(received.advert, instance)
    if difference is not None:
        # Taken all the same (see address_list_difference): counted and logged, not dropped.
        drops.record(DropReason.ADDRESS_LIST_MISMATCH, source, difference)
    if source.version != next(iter(instance.virtual_addresses)).version:
        drops.record(
            DropReason.FAMILY_MISMATCH,
            source,
            f"an IPv{source.version} advert for an IPv{6 if source.version == 4 else 4} instance",
        )
        return None
    return AdvertReceived(
        source=source,
        priority=received.advert.priority,
        advert_interval=received.advert.advert_interval_seconds,
    )


@dataclass(slots=True)
class _Window:
    opened: float
    suppressed: int = 0


class RateLimiter(Generic[K]):
    """At most one log line per key per `period`: the first hit at once, then a count.

    Pure: every call takes `now`. `hit` says whether to log now (and how many hits went
    unlogged before it); `due` hands out the counts owed for periods that have ended, so a
    burst that stops is still reported once. Keys idle for a whole period are forgotten.
    """

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ValueError(f"rate limit period {period} s is not positive")
        self.period = period
        # In order of `opened`: a window is moved to the end whenever it reopens.
        self._windows: dict[K, _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, key: object) -> bool:
        return key in self._windows

    def hit(self, key: K, now: float) -> int | None:
        """None: stay quiet (counted). Otherwise log now; the int is how many hits of `key`
        were suppressed since its last line and not yet handed out by `due`."""
        window = self._windows.get(key)
        if window is not None and now < window.opened + self.period:
            window.suppressed += 1
            return None
        owed = 0
        if window is not None:
            owed = window.suppressed
            del self._windows[key]
        self._windows[key] = _Window(now)
        return owed

    def due(self, now: float) -> list[tuple[K, int]]:
        """The (key, suppressed count) of every period ended by `now` with hits suppressed;
        each such report starts a new period for its key."""
        reports: list[tuple[K, int]] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now < window.opened + self.period:
                break
            del self._windows[key]
            if window.suppressed:
                reports.append((key, window.suppressed))
                self._windows[key] = _Window(now)
        return reports

    def next_deadline(self) -> float | None:
        """When the earliest period with suppressed hits ends (when `due` has work)."""
        ends = [w.opened + self.period for w in self._windows.values() if w.suppressed]
        return min(ends) if ends else None


AnyDropReason = DropReason | SocketDropReason

QUIET_REASONS: frozenset[AnyDropReason] = frozenset(
    {
        # Another virtual router on the same link: normal, and one socket per instance
        # hears every instance's adverts.
        DropReason.VRID_MISMATCH,
        DropReason.OWN_ADVERT,
        SocketDropReason.OWN_ADVERT,
        # Start-up and shut-down windows.
        DropReason.INSTANCE_NOT_RUNNING,
    }
)
"""Drops that are routine: logged at debug level only."""

INFO_REASONS: frozenset[AnyDropReason] = frozenset(
    {
        # The owner hears the backup that stood in for it until the owner's first advert.
        DropReason.LOCAL_ADDRESS_OWNER,
    }
)

ACCEPTED_REASONS: frozenset[AnyDropReason] = frozenset({DropReason.ADDRESS_LIST_MISMATCH})
"""Counted and logged like drops, but the advert is taken (lvsha.vrrp.wire)."""

MAX_KEYS = 32
"""(reason, sender) pairs tracked at once per instance; senders past this (a spoofed flood)
share one key per reason, so memory and log lines stay bounded whatever arrives."""

UNKNOWN_SOURCE = "an unknown sender"
OTHER_SOURCES = "other senders"

Schedule = Callable[[float, Callable[[], None]], object]
"""`loop.call_at`: run a callback at a time on `clock`'s scale."""


class DropLog:
    """Explains one instance's dropped adverts in the log, rate-limited per (reason, sender).

    Hand it to `VrrpSocket.start` as `on_drop`. `clock` and `schedule` are injected so tests
    can step time by hand; `schedule` lets the per-minute summary of a burst that stopped
    come out on time (without it, it comes with the next drop).
    """

    def __init__(
        self,
        instance: str,
        *,
        clock: Callable[[], float],
        schedule: Schedule | None = None,
        period: float = 60.0,
        logger: logging.Logger = log,
    ) -> None:
        self.instance = instance
        self._clock = clock
        self._schedule = schedule
        self._limiter: RateLimiter[tuple[AnyDropReason, str]] = RateLimiter(period)
        self._log = logger
        self._armed = False

    @classmethod
    def on_running_loop(cls, instance: str) -> DropLog:
        loop = asyncio.get_running_loop()
        return cls(instance, clock=loop.time, schedule=loop.call_at)

    def __call__(self, reason: AnyDropReason, source: IpAddress | None, detail: str) -> None:
        level = _level(reason)
        if not self._log.isEnabledFor(level):
            return
        now = self._clock()
        self._report_due(now)
        sender = UNKNOWN_SOURCE if source is None else str(source)
        key = (reason, sender)
        if key not in self._limiter and len(self._limiter) >= MAX_KEYS:
            key = (reason, OTHER_SOURCES)
        owed = self._limiter.hit(key, now)
        if owed is None:
            self._arm()
            return
        more = f" ({owed} more like it not logged)" if owed else ""
        self._log.log(
            level,
            "%s: advert from %s taken, but %s%s; reload the other director too"
            if reason in ACCEPTED_REASONS
            else "%s: advert from %s dropped: %s%s",
            self.instance,
            key[1],
            detail or reason.value,
            more,
        )

    def flush(self) -> None:
        """Log the counts owed for periods that have ended (the scheduled callback)."""
        self._armed = False
        self._report_due(self._clock())
        self._arm()

    def _report_due(self, now: float) -> None:
        for (reason, sender), count in self._limiter.due(now):
            self._log.log(
                _level(reason),
                "%s: %d more adverts from %s %s in the last %g s (%s)",
                self.instance,
                count,
                sender,
                "taken with a mismatch" if reason in ACCEPTED_REASONS else "dropped",
                self._limiter.period,
                reason.value,
            )

    def _arm(self) -> None:
        if self._armed or self._schedule is None:
            return
        deadline = self._limiter.next_deadline()
        if deadline is not None:
            self._armed = True
            self._schedule(deadline, self.flush)


def _level(reason: AnyDropReason) -> int:
    if reason in QUIET_REASONS:
        return logging.DEBUG
    if reason in INFO_REASONS:
        return logging.INFO
    if reason is DropReason.RECEIVE_ERROR:
        return logging.ERROR
    return logging.WARNING
