"""Log lines for changes that may flap: the first change of a subject at once, then one summary.

A real server that flaps every second would otherwise write a line (or two: its verdict and
the IPVS operation) every second; 200 of them wrote 16 MB in 10 minutes. `ChangeCoalescer` is
the pure core, fed the time of each change: a subject's first change is reported at once;
further changes within `window` seconds of that report are held, and one summary stands for
them when the window ends ("flapped N times in the last 60 s, now ..."); a subject quiet for a
whole window starts afresh. Across all subjects at most `max_lines` reports go out per window;
the rest are counted into one line for the window. `CoalescingLog` is the asyncio edge: it
formats and writes the reports and wakes on the loop when a summary is due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")

DEFAULT_WINDOW = 60.0
DEFAULT_MAX_LINES = 100
"""Reports per window across all subjects: 200 flapping real servers write about 100 lines a
minute, not 12,000."""


@dataclass(frozen=True, slots=True)
class Report(Generic[K, T]):
    """One line about one subject: a single change, or a summary of several."""

    key: K
    latest: T
    """The latest change, as the caller described it."""
    changes: int
    """Changes the line stands for: 1 for a change reported as it happened."""
    span: float
    """Seconds the count covers (0 for a single change)."""


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Reports the global cap held back in one window, counted into one line."""

    changes: int
    subjects: int
    span: float


@dataclass(slots=True)
class _Subject(Generic[T]):
    reported_at: float
    held: int = 0
    latest: T | None = None


class ChangeCoalescer(Generic[K, T]):
    """Decides which changes become lines (see the module docstring). Pure: time comes in."""

    def __init__(self, window: float = DEFAULT_WINDOW, max_lines: int = DEFAULT_MAX_LINES):
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window}")
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        self.window = window
        self.max_lines = max_lines
        self._subjects: dict[K, _Subject[T]] = {}
        self._due: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self._cap_started: float | None = None
        self._cap_lines = 0
        self._suppressed_changes = 0
        self._suppressed_subjects: set[K] = set()

    def changed(self, key: K, latest: T, now: float) -> list[Report[K, T] | Suppressed]:
        """Count a change of `key`; returns the lines to write now (possibly none)."""
        lines = self._close_cap_window(now)
        subject = self._subjects.get(key)
        if subject is None or now >= subject.reported_at + self.window:
            changes = 1 if subject is None else subject.held + 1
            span = 0.0 if subject is None or changes == 1 else now - subject.reported_at
            subject = self._subjects[key] = _Subject(now)
            lines += self._admit(Report(key, latest, changes, span), now)
            return lines
        if not subject.held:
            heapq.heappush(
                self._due, (subject.reported_at + self.window, next(self._sequence), key)
            )
        subject.held += 1
        subject.latest = latest
        return lines

    def due_at(self) -> float | None:
        """When `flush` next has something to write; None: nothing until the next change."""
        dues = [self._due[0][0]] if self._due else []
        if self._suppressed_changes and self._cap_started is not None:
            dues.append(self._cap_started + self.window)
        return min(dues, default=None)

    def flush(self, now: float, *, force: bool = False) -> list[Report[K, T] | Suppressed]:
        """The summaries due by `now` (every held one if `force`, e.g. at shutdown)."""
        lines: list[Report[K, T] | Suppressed] = []
        while self._due and (force or self._due[0][0] <= now):
            due, _, key = heapq.heappop(self._due)
            subject = self._subjects[key]
            if not subject.held or due != subject.reported_at + self.window:
                continue  # a stale entry: the subject was reported since
            assert subject.latest is not None
            report = Report(key, subject.latest, subject.held, now - subject.reported_at)
            # A summary opens a new window: a subject still flapping gets one line per window.
            self._subjects[key] = _Subject(now)
            lines += self._close_cap_window(now)
            lines += self._admit(report, now)
        lines += self._close_cap_window(now, force=force)
        return lines

    def _admit(self, report: Report[K, T], now: float) -> list[Report[K, T] | Suppressed]:
        if self._cap_started is None:
            self._cap_started, self._cap_lines = now, 0
        if self._cap_lines < self.max_lines:
            self._cap_lines += 1
            return [report]
        self._suppressed_changes += report.changes
        self._suppressed_subjects.add(report.key)
        return []

    def _close_cap_window(
        self, now: float, *, force: bool = False
    ) -> list[Report[K, T] | Suppressed]:
        started = self._cap_started
        if started is None or (now < started + self.window and not force):
            return []
        self._cap_started = None
        if not self._suppressed_changes:
            return []
        line = Suppressed(self._suppressed_changes, len(self._suppressed_subjects), now - started)
        self._suppressed_changes = 0
        self._suppressed_subjects = set()
        return [line]


class CoalescingLog(Generic[K, T]):
    """Writes a `ChangeCoalescer`'s lines to `logger`, waking on the running loop for summaries.

    `single(key, latest)` formats a change reported as it happened, `summary(key, latest,
    changes, span)` one standing for several, `suppressed(changes, subjects, span)` the line for
    what the cap held back.
    """

    def __init__(
        self,
        logger: logging.Logger,
        single: Callable[[K, T], str],
        summary: Callable[[K, T, int, float], str],
        suppressed: Callable[[int, int, float], str],
        *,
        level: int = logging.INFO,
        window: float = DEFAULT_WINDOW,
        max_lines: int = DEFAULT_MAX_LINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.core: ChangeCoalescer[K, T] = ChangeCoalescer(window, max_lines)
        self._single = single
        self._summary = summary
        self._suppressed = suppressed
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def changed(self, key: K, latest: T) -> None:
        self._write(self.core.changed(key, latest, self._clock()))
        self._arm()

    def flush(self) -> None:
        """Write every held summary now; for shutdown."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self._write(self.core.flush(self._clock(), force=True))

    def _write(self, lines: list[Report[K, T] | Suppressed]) -> None:
        for line in lines:
            if isinstance(line, Suppressed):
                text = self._suppressed(line.changes, line.subjects, line.span)
                self.logger.log(max(self.level, logging.WARNING), "%s", text)
            elif line.changes == 1:
                self.logger.log(self.level, "%s", self._single(line.key, line.latest))
            else:
                text = self._summary(line.key, line.latest, line.changes, line.span)
                self.logger.log(self.level, "%s", text)

    def _arm(self) -> None:
        due = self.core.due_at()
        if due is None or due == self._timer_at:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next change or flush() writes what is held
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = loop.call_later(max(0.0, due - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._write(self.core.flush(self._clock()))
        self._arm()
