from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from lvsha.ratelimit import LogRateLimit, RateLimitedLog

LOGGER = "lvsha.test.ratelimit"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_occurrence_is_reported_at_once() -> None:
    limit = LogRateLimit(60.0)
    assert limit.due_at() is None
    assert limit.occurred(0.0) == 1
    assert limit.held == 0
    assert limit.due_at() is None


def test_occurrences_within_the_interval_are_held_and_counted_in_the_next_report() -> None:
    limit = LogRateLimit(60.0)
    assert limit.occurred(0.0) == 1
    assert [limit.occurred(t) for t in (1.0, 30.0, 59.9)] == [0, 0, 0]
    assert limit.held == 3
    assert limit.due_at() == 60.0
    # The next occurrence after the interval stands for itself and the three held back.
    assert limit.occurred(60.0) == 4
    assert limit.held == 0
    assert limit.occurred(61.0) == 0
    assert limit.due_at() == 120.0


def test_flush_reports_held_occurrences_only_when_due_unless_forced() -> None:
    limit = LogRateLimit(10.0)
    assert limit.flush(0.0) == 0  # nothing at all
    limit.occurred(0.0)
    limit.occurred(1.0)
    limit.occurred(2.0)
    assert limit.flush(9.0) == 0
    assert limit.flush(10.0) == 2
    # A flush is a report: the next occurrence waits a full interval after it.
    assert limit.occurred(15.0) == 0
    assert limit.flush(15.0, force=True) == 1
    assert limit.flush(100.0, force=True) == 0


def test_at_most_one_report_per_interval_however_many_occurrences() -> None:
    limit = LogRateLimit(60.0)
    reports = []
    for step in range(60_000):  # ten minutes at 100 a second
        now = step / 100
        count = limit.occurred(now) or limit.flush(now)
        if count:
            reports.append((now, count))
    assert len(reports) == 10
    assert sum(count for _, count in reports) + limit.held == 60_000
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(reports)]
    assert min(gaps) >= 60.0


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval must be > 0"):
        LogRateLimit(0.0)


def test_the_log_writes_the_first_line_then_one_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=60.0, clock=clock)
    log.log("client %s refused", "a")
    for name in "bcd":
        clock.now += 1
        log.log("client %s refused", name)
    assert log.held == 3
    clock.now += 60
    log.log("client %s refused", "e")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "client a refused"),
        (logging.WARNING, "client e refused (4 times since the last report)"),
    ]


def test_flush_writes_what_is_held_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, clock=clock)
    log.log("one")
    log.flush()  # nothing held back: no line
    log.log("two")
    log.log("three")
    log.flush()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "one"),
        (logging.INFO, "three (2 times since the last report)"),
    ]


async def test_a_timer_reports_held_occurrences_when_the_condition_goes_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    loop = asyncio.get_running_loop()
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=0.05, clock=loop.time)
    for number in range(5):
        log.log("dropped %d", number)
    assert len(caplog.records) == 1
    deadline = loop.time() + 5.0
    while len(caplog.records) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0",
        "dropped 4 (4 times since the last report)",
    ]
    assert log.held == 0
    log.flush()  # cancels nothing, writes nothing
    assert len(caplog.records) == 2
