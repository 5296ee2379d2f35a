from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsha.checks.script import ScriptCommand
from lvsha.vrrp.track_script import (
    HealthChanged,
    RunPhase,
    ScriptHealth,
    TrackScriptParams,
    TrackScriptRunner,
    TrackScriptState,
    TrackScriptTransitionError,
)
from tests.unit.checks.orphans import script_outlives_its_starter

# Pure state, with a hand-stepped clock.


def state(
    rise: int = 1, fall: int = 1, interval: float = 2.0, now: float = 100.0
) -> TrackScriptState:
    return TrackScriptState("chk", TrackScriptParams(interval=interval, rise=rise, fall=fall), now)


def one_run(
    script: TrackScriptState, ok: bool, at: float, took: float = 0.1
) -> list[HealthChanged]:
    script.run_started(at)
    return script.run_finished(ok, f"exit {0 if ok else 1}", at + took)


def test_starts_in_init_and_runs_at_once() -> None:
    script = state(now=100.0)
    assert script.health is ScriptHealth.INIT
    assert script.healthy is None
    assert script.next_run_at == 100.0
    assert script.reason == "no run yet"


@pytest.mark.parametrize("ok", [True, False])
def test_first_result_settles_init_without_rise_or_fall_grace(ok: bool) -> None:
    script = state(rise=3, fall=3)
    changes = one_run(script, ok, 100.0)
    assert changes == [HealthChanged("chk", ok, f"exit {0 if ok else 1}", 100.1)]
    assert script.healthy is ok


def test_fall_failures_in_a_row_make_a_healthy_script_fail() -> None:
    script = state(fall=3)
    one_run(script, True, 100.0)
    assert one_run(script, False, 102.0) == []
    assert one_run(script, False, 104.0) == []
    # A success in between starts the count again.
    assert one_run(script, True, 106.0) == []
    assert one_run(script, False, 108.0) == []
    assert one_run(script, False, 110.0) == []
    assert script.consecutive_failures == 2
    assert one_run(script, False, 112.0) == [HealthChanged("chk", False, "exit 1", 112.1)]
    assert script.health is ScriptHealth.FAILED
    assert one_run(script, False, 114.0) == []


def test_rise_successes_in_a_row_make_a_failed_script_healthy() -> None:
    script = state(rise=2)
    one_run(script, False, 100.0)
    assert one_run(script, True, 102.0) == []
    assert one_run(script, False, 104.0) == []
    assert one_run(script, True, 106.0) == []
    assert script.consecutive_successes == 1
    assert one_run(script, True, 108.0) == [HealthChanged("chk", True, "exit 0", 108.1)]
    assert script.healthy is True
    assert one_run(script, True, 110.0) == []


def test_runs_follow_a_fixed_grid_from_the_first_run() -> None:
    script = state(interval=2.0, now=100.0)
    script.run_started(100.3)  # a late wake-up does not shift the grid
    phase_while_running = script.phase
    assert script.next_run_at is None
    script.run_finished(True, "exit 0", 100.5)
    assert (phase_while_running, script.phase) == (RunPhase.RUNNING, RunPhase.IDLE)
    assert script.next_run_at == 102.0


def test_ticks_during_a_long_run_are_skipped() -> None:
    script = state(interval=2.0, now=100.0)
    script.run_started(100.0)
    script.run_finished(False, "script timeout after 5.0 s", 105.0)
    assert script.next_run_at == 106.0
    script.run_started(106.0)
    script.run_finished(False, "slow", 108.0)  # ended exactly on a tick: that tick is gone too
    assert script.next_run_at == 110.0


def test_inputs_the_phase_cannot_take_raise() -> None:
    script = state()
    with pytest.raises(TrackScriptTransitionError, match="RunFinished while IDLE"):
        script.run_finished(True, "exit 0", 100.0)
    script.run_started(100.0)
    with pytest.raises(TrackScriptTransitionError, match="RunStarted while RUNNING"):
        script.run_started(100.1)
    with pytest.raises(ValueError, match="time went backwards"):
        script.run_finished(True, "exit 0", 99.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"interval": 0.0},
        {"timeout": -1.0},
        {"rise": 0},
        {"fall": 0},
    ],
)
def test_params_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrackScriptParams(**bad)  # type: ignore[arg-type]


# The runner, with real processes.


async def wait_until(condition: Callable[[], bool], deadline: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline
    while not condition():
        if loop.time() > give_up_at:
            return False
        await asyncio.sleep(0.01)
    return True


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def our_zombies() -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry))
    return zombies


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool, str]] = []

    def __call__(self, name: str, healthy: bool, reason: str) -> None:
        self.changes.append((name, healthy, reason))


def controlled(tmp_path: Path) -> ScriptCommand:
    """A script that logs each run and exits with the status written in tmp_path/status."""
    (tmp_path / "status").write_text("0")
    body = 'echo "$LVSHA_VRRP_SCRIPT $LVSHA_TIMEOUT" >> "$1/runs"; exit "$(cat "$1/status")"'
    return ScriptCommand(("sh", "-c", body, "sh", str(tmp_path)), script_security=False)


async def test_reports_changes_only(tmp_path: Path) -> None:
    recorder = Recorder()
    params = TrackScriptParams(interval=0.05, timeout=2.0, rise=1, fall=2)
    runner = TrackScriptRunner("chk_haproxy", controlled(tmp_path), params, recorder)
    runner.start()
    try:
        assert await wait_until(lambda: len(lines(tmp_path / "runs")) >= 3)
        assert recorder.changes == [("chk_haproxy", True, "script exit status 0")]
        assert lines(tmp_path / "runs")[0] == "chk_haproxy 2.0"
        (tmp_path / "status").write_text("1")
        assert await wait_until(lambda: len(recorder.changes) == 2)
        assert recorder.changes[1] == ("chk_haproxy", False, "script exit status 1")
        assert runner.state is not None
        assert runner.state.consecutive_failures >= 2
        runs_when_failed = len(lines(tmp_path / "runs"))
        assert await wait_until(lambda: len(lines(tmp_path / "runs")) >= runs_when_failed + 3)
        assert len(recorder.changes) == 2
        (tmp_path / "status").write_text("0")
        assert await wait_until(lambda: len(recorder.changes) == 3)
        assert recorder.changes[2] == ("chk_haproxy", True, "script exit status 0")
    finally:
        await runner.close()


async def test_timeout_is_a_failure_and_the_script_is_killed(tmp_path: Path) -> None:
    recorder = Recorder()
    body = "trap '' TERM; echo $$ >> \"$1/pids\"; sleep 30 & wait"
    command = ScriptCommand(("sh", "-c", body, "sh", str(tmp_path)), script_security=False)
    runner = TrackScriptRunner(
        "hang", command, TrackScriptParams(interval=5.0, timeout=0.2), recorder
    )
    runner.start()
    try:
        assert await wait_until(lambda: len(recorder.changes) == 1)
        assert recorder.changes == [("hang", False, "script timeout after 0.2 s")]
        pid = int(lines(tmp_path / "pids")[0])
        assert await wait_until(lambda: not alive(pid))
        assert await wait_until(lambda: not our_zombies()), our_zombies()
    finally:
        await runner.close()


async def test_an_insecure_script_is_refused_with_its_reason(tmp_path: Path) -> None:
    recorder = Recorder()
    script = tmp_path / "check.sh"
    script.write_text(f'#!/bin/sh\ntouch "{tmp_path}/ran"\nexit 0\n')
    script.chmod(0o755)
    runner = TrackScriptRunner(
        "insecure", ScriptCommand((str(script),)), TrackScriptParams(interval=5.0), recorder
    )
    runner.start()
    try:
        assert await wait_until(lambda: len(recorder.changes) == 1)
        reason = (
            f"script security: /tmp is world-writable, on the path of {script}; "
            f"fix: move {script} to a directory only root can write"
        )
        assert recorder.changes == [("insecure", False, reason)]
        assert not (tmp_path / "ran").exists()
    finally:
        await runner.close()


async def test_close_kills_a_running_script(tmp_path: Path) -> None:
    body = 'echo $$ >> "$1/pids"; exec sleep 30'
    command = ScriptCommand(("sh", "-c", body, "sh", str(tmp_path)), script_security=False)
    runner = TrackScriptRunner("slow", command, TrackScriptParams(timeout=30.0), Recorder())
    runner.start()
    assert await wait_until(lambda: bool(lines(tmp_path / "pids")))
    pid = int(lines(tmp_path / "pids")[0])
    await runner.close()
    assert await wait_until(lambda: not alive(pid))
    assert await wait_until(lambda: not our_zombies()), our_zombies()


async def test_a_failing_callback_does_not_stop_the_script(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[bool] = []

    def broken(name: str, healthy: bool, reason: str) -> None:
        calls.append(healthy)
        raise RuntimeError("callback bug")

    params = TrackScriptParams(interval=0.05, timeout=2.0)
    runner = TrackScriptRunner("chk", controlled(tmp_path), params, broken)
    runner.start()
    try:
        assert await wait_until(lambda: calls == [True])
        (tmp_path / "status").write_text("1")
        assert await wait_until(lambda: calls == [True, False])
        assert "vrrp script chk: on_change callback failed" in caplog.text
    finally:
        await runner.close()


async def test_start_twice_is_refused(tmp_path: Path) -> None:
    runner = TrackScriptRunner("chk", controlled(tmp_path), TrackScriptParams(), Recorder())
    runner.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            runner.start()
    finally:
        await runner.close()


def test_a_track_script_dies_when_its_vrrp_process_is_killed() -> None:
    assert script_outlives_its_starter("track_script") == []
