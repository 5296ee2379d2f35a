"""Rate-limited logging: a condition that recurs is logged at most once per interval, with a count.

A flood of the same warning (a refused client, a dropped packet) tells an operator nothing the
first line did not, and can fill a disk. `LogRateLimit` is the pure core: fed the time of each
occurrence, it says whether a line is due and how many occurrences that line stands for.
`RateLimitedLog` is the edge that writes the lines; when occurrences were held back and the
condition then goes quiet, it writes one more line after the interval, so no count is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 60.0
"""One line a minute: a flood costs at most 60 lines an hour per condition."""


class LogRateLimit:
    """Allows one report per `interval` seconds and counts the occurrences in between.

    The first occurrence is reported at once, so a new condition shows without delay. Time is
    whatever monotonic clock the caller reads; the core never reads one itself.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self._last_report: float | None = None
        self._held = 0

    @property
    def held(self) -> int:
        """Occurrences since the last report, which no report has stood for yet."""
        return self._held

    def occurred(self, now: float) -> int:
        """Count one occurrence at `now`. Returns how many occurrences a line written now
        stands for (this one and those held back), or 0 if the line must be held back."""
        self._held += 1
        if self._last_report is not None and now < self._last_report + self.interval:
            return 0
        return self._report(now)

    def due_at(self) -> float | None:
        """When the held-back occurrences may be reported; None when nothing is held back."""
        if not self._held or self._last_report is None:
            return None
        return self._last_report + self.interval

    def flush(self, now: float, *, force: bool = False) -> int:
        """Report what is held back if it is due (or `force`d, e.g. at shutdown): returns the
        count the line stands for, or 0 when there is nothing to write now."""
        due = self.due_at()
        if due is None or (now < due and not force):
            return 0
        return self._report(now)

    def _report(self, now: float) -> int:
        count, self._held = self._held, 0
        self._last_report = now
        return count


class RateLimitedLog:
    """Writes one kind of log line at most once per `interval`, saying how often it happened.

    `log(msg, *args)` takes the same arguments as `logging.Logger.log` without the level. A line
    that stands for several occurrences is the latest one with " (N times since the last
    report)" appended. Held-back occurrences are written after the interval by a timer on the
    running event loop (if there is one), or at the next occurrence, or by `flush()`.
    """

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self._limit = LogRateLimit(interval)
        self._clock = clock
        self._latest: tuple[str, tuple[object, ...]] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        return self._limit.held

    def log(self, msg: str, *args: object) -> None:
        count = self._limit.occurred(self._clock())
        if count:
            self._write(count, msg, args)
            return
        self._latest = (msg, args)
        self._arm_timer()

    def flush(self) -> None:
        """Write what is held back now, interval or not; for shutdown."""
        self._cancel_timer()
        count = self._limit.flush(self._clock(), force=True)
        if count and self._latest is not None:
            self._write(count, *self._latest)

    def _write(self, count: int, msg: str, args: tuple[object, ...]) -> None:
        self._latest = None
        if count > 1:
            msg += " (%d times since the last report)"
            args = (*args, count)
        self.logger.log(self.level, msg, *args)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next occurrence or flush() writes the count
        due = self._limit.due_at()
        assert due is not None  # something was just held back
        self._timer = loop.call_later(max(0.0, due - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        count = self._limit.flush(self._clock())
        if count and self._latest is not None:
            self._write(count, *self._latest)
        elif self._limit.held:
            self._arm_timer()  # woke a little early by our clock: try again when due

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
