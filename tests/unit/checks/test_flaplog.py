"""Coalesced change lines: the pure core on a hand-stepped clock, and the logging edge."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lvsha.checks.flaplog import ChangeCoalescer, CoalescingLog, Report, Suppressed


def single(key: str, latest: str) -> str:
    return f"{key}: {latest}"


def summary(key: str, latest: str, changes: int, span: float) -> str:
    return f"{key}: flapped {changes} times in the last {span:.0f} s, now {latest}"


def suppressed(changes: int, subjects: int, span: float) -> str:
    return f"{changes} more changes of {subjects} real servers in the last {span:.0f} s"


def text(line: Report[str, str] | Suppressed) -> str:
    if isinstance(line, Suppressed):
        return suppressed(line.changes, line.subjects, line.span)
    if line.changes == 1:
        return single(line.key, line.latest)
    return summary(line.key, line.latest, line.changes, line.span)


def state(flip: int) -> str:
    return "DOWN: connection refused" if flip % 2 == 0 else "UP: HTTP 200"


def test_a_single_change_is_reported_at_once_with_its_reason() -> None:
    core: ChangeCoalescer[str, str] = ChangeCoalescer()
    assert core.changed("web 10.0.0.5:80", "healthy -> unhealthy (refused)", 100.0) == [
        Report("web 10.0.0.5:80", "healthy -> unhealthy (refused)", 1, 0.0)
    ]
    assert core.due_at() is None
    assert core.flush(1000.0) == []
    # quiet for a whole window: the next change is news again, reported at once
    assert core.changed("web 10.0.0.5:80", "unhealthy -> healthy", 1000.0) == [
        Report("web 10.0.0.5:80", "unhealthy -> healthy", 1, 0.0)
    ]


def test_a_flapping_subject_gets_one_summary_per_window() -> None:
    core: ChangeCoalescer[str, str] = ChangeCoalescer(window=60.0)
    lines = core.changed("rs", state(0), 0.0)
    for second in range(1, 60):
        lines += core.changed("rs", state(second), float(second))
    assert [text(line) for line in lines] == ["rs: DOWN: connection refused"]
    assert core.due_at() == 60.0
    assert core.flush(59.9) == []
    assert [text(line) for line in core.flush(60.0)] == [
        "rs: flapped 59 times in the last 60 s, now UP: HTTP 200"
    ]
    # it stops flapping: the last window's changes are summarised, then nothing more
    lines = core.changed("rs", state(60), 60.5)
    assert lines == []
    # one held change is written as a change (late, at the window's end)
    assert core.flush(120.0) == [Report("rs", state(60), 1, 60.0)]
    assert core.due_at() is None


def test_200_flapping_servers_for_10_minutes_stay_within_bounds() -> None:
    core: ChangeCoalescer[str, str] = ChangeCoalescer(window=60.0, max_lines=100)
    lines: list[tuple[float, Report[str, str] | Suppressed]] = []
    servers = [f"web_front 10.0.{index // 250}.{index % 250}:8080" for index in range(200)]
    changes = 0
    for second in range(600):
        now = float(second)
        for index, server in enumerate(servers):
            at = now + index / 1000  # spread over the second, as probes are
            lines += [(at, line) for line in core.changed(server, state(second), at)]
            changes += 1
        # the edge's timer, woken when a summary is due
        while (due := core.due_at()) is not None and due < now + 1.0:
            lines += [(due, line) for line in core.flush(due)]
    lines += [(600.0, line) for line in core.flush(600.0, force=True)]
    texts = [text(line) for _, line in lines]
    size = sum(len(line) + 60 for line in texts)  # with a journald-style prefix per line
    assert changes == 120_000
    assert len(texts) < 2_000, len(texts)
    assert size < 500_000, size  # 16.4 MB before
    # every change is counted, in one line or another
    assert sum(line.changes for _, line in lines) == changes
    # no minute has more than the cap and its one overflow line
    per_minute: dict[int, int] = {}
    for at, _ in lines:
        per_minute[int(at // 60)] = per_minute.get(int(at // 60), 0) + 1
    assert max(per_minute.values()) <= 2 * (100 + 1), per_minute
    assert sum(isinstance(line, Suppressed) for _, line in lines) >= 9


def test_the_cap_counts_the_rest_into_one_line_per_window() -> None:
    core: ChangeCoalescer[str, str] = ChangeCoalescer(window=60.0, max_lines=3)
    lines = []
    for index in range(5):
        lines += core.changed(f"rs{index}", "DOWN", 1.0)
    assert [line.key for line in lines if isinstance(line, Report)] == ["rs0", "rs1", "rs2"]
    assert core.due_at() == 61.0
    assert core.flush(61.0) == [Suppressed(changes=2, subjects=2, span=60.0)]
    # a new window: single changes go out at once again
    assert core.changed("rs9", "DOWN", 70.0) == [Report("rs9", "DOWN", 1, 0.0)]


@pytest.mark.parametrize(("window", "max_lines"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_parameters_are_refused(window: float, max_lines: int) -> None:
    with pytest.raises(ValueError):
        ChangeCoalescer[str, str](window, max_lines)


async def test_the_edge_writes_the_first_change_at_once_and_a_summary_on_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.flaplog")
    changes = CoalescingLog(logger, single, summary, suppressed, window=0.2)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.INFO, logger="test.flaplog"):
        changes.changed("rs", "DOWN: connection refused")
        assert [r.getMessage() for r in caplog.records] == ["rs: DOWN: connection refused"]
        changes.changed("rs", "UP: HTTP 200")
        changes.changed("rs", "DOWN: timeout")
        deadline = loop.time() + 2.0
        while len(caplog.records) < 2:
            assert loop.time() < deadline, "the summary never came"
            await asyncio.sleep(0.01)
    assert caplog.records[1].getMessage().startswith("rs: flapped 2 times in the last 0 s")
    assert caplog.records[1].getMessage().endswith("now DOWN: timeout")


def test_the_edge_flushes_what_is_held_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.flaplog")
    changes = CoalescingLog(logger, single, summary, suppressed, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.flaplog"):
        changes.changed("rs", "DOWN")
        now[0] = 5.0
        changes.changed("rs", "UP")
        changes.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "rs: DOWN",
        "rs: UP",
    ]
