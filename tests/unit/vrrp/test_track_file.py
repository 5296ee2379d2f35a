"""Tracked files (keepalived's track_file): reading the number, its effect, the watcher, and
an engine whose priority and FAULT follow the file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from lvsha.vrrp.engine import VrrpEngine
from lvsha.vrrp.events import PriorityChanged, TrackingFault, VrrpState
from lvsha.vrrp.track_file import TrackFileWatcher, parse_value, read_value, write_initial
from lvsha.vrrp.tracking import FileTracker, Tracker, TrackingState, file_effect
from tests.tools import api_schema
from tests.unit.vrrp.engine_harness import Harness, config, instance, vip, wait_for


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"10", 10),
        (b"10\n", 10),
        (b"  -20\n", -20),
        (b"+7 apples", 7),
        (b"0x1F", 31),  # strtol base 0: hexadecimal
        (b"010", 8),  # ... and octal, as keepalived reads it
        (b"0x", 0),
        (b"09", 0),  # octal stops at the 9
        (b"abc", 0),  # no number: 0
        (b"", 0),
        (b"\n", 0),
        (b"2147483648", 2147483648),  # keepalived's bound is INT32_MAX + 1
        (b"2147483649", None),  # out of range: ignored
        (b"-2147483649", None),
    ],
)
def test_the_number_is_read_as_keepalived_reads_it(data: bytes, value: int | None) -> None:
    assert parse_value(data) == value


def test_a_missing_or_empty_file_reads_as_zero(tmp_path: Path) -> None:
    assert read_value(str(tmp_path / "absent")) == 0
    (tmp_path / "empty").write_text("")
    assert read_value(str(tmp_path / "empty")) == 0
    (tmp_path / "big").write_text("5" + " " * 200 + "9")  # only the first 127 bytes count
    assert read_value(str(tmp_path / "big")) == 5


@pytest.mark.parametrize(
    ("value", "weight", "reverse", "effect"),
    [
        (0, 0, False, 0),
        (3, 0, False, None),  # weight 0: non-zero is a failure
        (-1, 0, False, None),
        (0, 0, True, None),  # reverse: zero is the failure
        (5, 0, True, 0),
        (10, -5, False, -50),
        (10, -5, True, 50),
        (2, 1, False, 2),
        (300, 1, False, 253),  # capped at 253
        (-253, 1, False, -253),
        (-254, 1, False, None),  # -254 and below: FAULT
        (30, -10, False, None),
        (1, 254, True, None),
    ],
)
def test_a_files_effect_follows_keepalived(
    value: int, weight: int, reverse: bool, effect: int | None
) -> None:
    assert file_effect(value, weight, reverse) == effect


def test_tracking_adds_the_file_effect_and_faults_on_it() -> None:
    files = [FileTracker("file:prio", -10), FileTracker("file:maint", 0)]
    state = TrackingState(
        100, [*files, Tracker("script:s", 5)], {"file:prio": 0, "file:maint": 0, "script:s": True}
    )
    assert (state.verdict.priority, state.verdict.fault) == (105, False)
    assert state.set_health("file:prio", 3) == [PriorityChanged(75)]
    assert state.effect("file:prio") == -30
    assert state.set_health("file:maint", 1) == [TrackingFault(active=True)]
    assert state.effect("file:maint") is None
    assert state.set_health("file:maint", 0) == [TrackingFault(active=False)]
    assert state.set_health("file:prio", -100) == [PriorityChanged(254)]  # capped at 254
    # -300: FAULT, and its number no longer counts in the priority (keepalived takes it off).
    assert state.set_health("file:prio", 30) == [PriorityChanged(105), TrackingFault(active=True)]


def test_an_initial_value_is_written_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "prio"
    assert write_initial(str(path), 7, overwrite=False) is None
    assert path.read_text() == "7\n"
    path.write_text("3\n")
    assert write_initial(str(path), 7, overwrite=False) is None
    assert path.read_text() == "3\n"
    assert write_initial(str(path), -2, overwrite=True) is None
    assert path.read_text() == "-2\n"
    (tmp_path / "dir").mkdir()
    problem = write_initial(str(tmp_path / "dir"), 1, overwrite=True)
    assert problem is not None and "not a regular file" in problem
    problem = write_initial(str(tmp_path / "none" / "prio"), 1, overwrite=False)
    assert problem is not None and "No such file" in problem


class Seen:
    def __init__(self) -> None:
        self.values: list[tuple[str, int]] = []

    def __call__(self, name: str, value: int) -> None:
        self.values.append((name, value))


async def test_the_watcher_sees_writes_renames_and_deletions(tmp_path: Path) -> None:
    seen = Seen()
    watcher = TrackFileWatcher(seen)
    path = tmp_path / "prio"
    path.write_text("4\n")
    watcher.set_files({"prio": str(path)})
    try:
        assert watcher.values == {"prio": 4}
        loop = asyncio.get_running_loop()
        started = loop.time()
        path.write_text("9\n")
        await wait_for(lambda: seen.values == [("prio", 9)], 2.0)
        assert loop.time() - started < 0.1
        replacement = tmp_path / ".prio.new"
        replacement.write_text("-3\n")
        os.rename(replacement, path)
        await wait_for(lambda: seen.values[-1:] == [("prio", -3)], 2.0)
        path.unlink()
        await wait_for(lambda: seen.values[-1:] == [("prio", 0)], 2.0)
        path.write_text("0x10")
        await wait_for(lambda: seen.values[-1:] == [("prio", 16)], 2.0)
        path.write_text("99999999999")  # out of range: ignored
        (tmp_path / "other").write_text("1")  # not tracked
        path.write_text("16 again")  # same number: no call
        path.write_text("2")
        await wait_for(lambda: seen.values[-1:] == [("prio", 2)], 2.0)
        assert seen.values == [("prio", 9), ("prio", -3), ("prio", 0), ("prio", 16), ("prio", 2)]
    finally:
        watcher.close()


async def test_a_directory_made_later_is_watched_then(tmp_path: Path) -> None:
    seen = Seen()
    watcher = TrackFileWatcher(seen)
    path = tmp_path / "later" / "prio"
    watcher.set_files({"prio": str(path)})
    try:
        assert watcher.values == {"prio": 0}
        path.parent.mkdir()
        path.write_text("5")
        await wait_for(lambda: seen.values[-1:] == [("prio", 5)], 3.0)
        path.write_text("6")
        await wait_for(lambda: seen.values[-1:] == [("prio", 6)], 2.0)
    finally:
        watcher.close()


def _files_config(path: Path, own_weight: int, **ref: Any) -> Any:
    return config(
        {"VI_1": instance(1, vip(10), priority=100, track_files=[{"file": "prio", **ref}])},
        vrrp_track_files={"prio": {"file": str(path), "weight": own_weight, "init": 0}},
    )


def _priority(engine: VrrpEngine) -> int:
    return engine.instances["VI_1"].runner.machine.priority


async def test_an_engine_follows_its_tracked_file(lab: Harness, tmp_path: Path) -> None:
    path = tmp_path / "prio"
    engine = await lab.start(_files_config(path, -10))
    assert path.read_text() == "0\n"  # init writes a missing file
    await wait_for(lambda: lab.state("VI_1") is VrrpState.MASTER)
    path.write_text("3\n")
    await wait_for(lambda: _priority(engine) == 70, 1.0)
    (status,) = engine.status()
    api_schema.check_def("status", "vrrp_instance", status)
    assert status["trackers"] == [
        {
            "tracker": "file prio",
            "healthy": True,
            "weight": -10,
            "effect": -30,
            "value": 3,
            "reverse": False,
        }
    ]
    path.write_text("26\n")  # -260: FAULT
    await wait_for(lambda: lab.state("VI_1") is VrrpState.FAULT, 1.0)
    assert engine.status()[0]["trackers"][0]["healthy"] is False
    path.write_text("0\n")
    await wait_for(lambda: lab.state("VI_1") is VrrpState.MASTER, 2.0)
    assert _priority(engine) == 100


async def test_weight_zero_faults_on_a_non_zero_number(lab: Harness, tmp_path: Path) -> None:
    path = tmp_path / "maint"
    path.write_text("1\n")  # already set at start-up: init does not overwrite it
    await lab.start(_files_config(path, 5, weight=0))
    await wait_for(lambda: lab.state("VI_1") is VrrpState.FAULT)
    path.write_text("0\n")
    await wait_for(lambda: lab.state("VI_1") is VrrpState.MASTER, 2.0)


async def test_a_reload_moves_the_file_and_its_weight(lab: Harness, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("2")
    second.write_text("5")
    engine = await lab.start(_files_config(first, -10))
    await wait_for(lambda: _priority(engine) == 80)
    outcome = await engine.apply(_files_config(second, -2))
    assert outcome.ok, outcome
    assert second.read_text() == "5"  # a reload writes no init value
    assert _priority(engine) == 90
    second.write_text("1")
    await wait_for(lambda: _priority(engine) == 98, 1.0)
    first.write_text("50")  # no longer watched
    await asyncio.sleep(0)
    outcome = await engine.apply(config({"VI_1": instance(1, vip(10), priority=100)}))
    assert outcome.ok, outcome
    assert _priority(engine) == 100
    assert engine.track_file_values == {}


async def test_a_linked_file_is_watched_where_the_link_leads(tmp_path: Path) -> None:
    seen = Seen()
    watcher = TrackFileWatcher(seen)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "prio"
    target.write_text("1")
    link = tmp_path / "prio"
    link.symlink_to(target)
    watcher.set_files({"prio": str(link)})
    try:
        assert watcher.values == {"prio": 1}
        target.write_text("7")
        await wait_for(lambda: seen.values[-1:] == [("prio", 7)], 2.0)
    finally:
        watcher.close()


def test_the_priorities_keepalived_2_2_7_set_for_the_same_writes() -> None:
    # keepalived 2.2.7, priority 150, track_file weight -10, run in a namespace with these
    # written in turn; its log said "Changing effective priority from ... to" each of these
    # (None: "tracked file prio now FAULT state").
    seen_from_keepalived = [
        (b"0\n", 150),
        (b"6\n", 90),
        (b"0x3\n", 120),
        (b"010\n", 70),
        (b"abc\n", 150),
        (b"-30\n", 254),
        (b"26\n", None),
        (b"300\n", None),
        (b"-5\n", 200),
    ]
    state = TrackingState(150, [FileTracker("file:prio", -10)], {"file:prio": 0})
    for data, expected in seen_from_keepalived:
        value = parse_value(data)
        assert value is not None
        state.set_health("file:prio", value)
        verdict = state.verdict
        assert (None if verdict.fault else verdict.priority) == expected, data


async def test_without_inotify_the_files_are_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(self: TrackFileWatcher) -> None:
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(TrackFileWatcher, "_open", refused)
    monkeypatch.setattr("lvsha.vrrp.track_file.RETRY_INTERVAL", 0.05)
    seen = Seen()
    watcher = TrackFileWatcher(seen)
    path = tmp_path / "prio"
    path.write_text("2")
    watcher.set_files({"prio": str(path)})
    try:
        assert watcher.values == {"prio": 2}
        assert "no inotify" in caplog.text
        path.write_text("5")
        await wait_for(lambda: seen.values[-1:] == [("prio", 5)], 2.0)
    finally:
        watcher.close()
