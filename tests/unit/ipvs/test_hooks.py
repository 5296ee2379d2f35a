"""Real-server and quorum hooks (`lvsha.ipvs.hooks`): the lanes that run them, and the checker
that queues them, on the in-memory IPVS table with TCP checks against a loopback listener the
test opens and closes. Each hook appends a line to a file the test reads."""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsha.checks.verdict import Health
from lvsha.daemon.checker_process import Checker
from lvsha.ipvs.hooks import HookLanes, HookRun
from lvsha.scripts import ScriptCommand
from tests.unit.daemon.test_checker_events import WEB_A, Setup, check, wait_for
from tests.unit.daemon.test_checker_reload import message


def recorder(log_file: Path, tag: str) -> str:
    """A hook command (YAML flow list) that appends `tag` and what its environment says."""
    code = (
        f'echo "{tag} $LVSHA_NOTIFY_TYPE $LVSHA_NOTIFY_STATE $LVSHA_VS $LVSHA_RS_ADDRESS '
        f'$LVSHA_RS_PORT" >> {shlex.quote(str(log_file))}'
    )
    return f"[/bin/sh, -c, {shlex.quote(code)}]"


def lines(log_file: Path) -> list[str]:
    return log_file.read_text().splitlines() if log_file.exists() else []


def hooked_config(
    port: int,
    log_file: Path,
    *,
    alpha: bool = False,
    omega: bool = False,
    security: bool = False,
    rs_extra: str = "",
) -> str:
    timing = check(port).rstrip("}") + (", alpha: true}" if alpha else "}")
    return (
        f"global: {{enable_script_security: {'true' if security else 'false'}}}\n"
        "virtual_servers:\n"
        "  - {name: web, address: 192.0.2.10, port: 80, protocol: TCP, forwarding: NAT,\n"
        f"     quorum_up: {recorder(log_file, 'quorum_up')},\n"
        f"     quorum_down: {recorder(log_file, 'quorum_down')},\n"
        f"     omega: {'true' if omega else 'false'},\n"
        f"     real_servers: [{{address: 10.0.0.1, weight: 3, checks: [{timing}],\n"
        f"       notify_up: {recorder(log_file, 'up')},\n"
        f"       notify_down: {recorder(log_file, 'down')}{rs_extra}}}]}}\n"
    )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    setup = Setup(tmp_path)
    yield setup
    for checker in setup.checkers:
        await checker.stop()
    await setup.listener.close()


async def probed(checker: Checker, count: int = 1) -> None:
    await wait_for(
        lambda: checker.pool.durations.by_type()["tcp"].count >= count, f"{count} probes"
    )


async def hooks_idle(checker: Checker) -> None:
    await wait_for(lambda: not checker.hooks.lanes.busy, "the hooks to finish")


RS_DOWN = "down REAL_SERVER DOWN 192.0.2.10:80/tcp 10.0.0.1 80"
RS_UP = "up REAL_SERVER UP 192.0.2.10:80/tcp 10.0.0.1 80"
Q_DOWN = "quorum_down VIRTUAL_SERVER DOWN 192.0.2.10:80/tcp  "  # no real server
Q_UP = "quorum_up VIRTUAL_SERVER UP 192.0.2.10:80/tcp  "


async def test_down_and_up_run_notify_and_quorum_hooks_in_order(
    setup: Setup, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    await setup.listener.open()
    checker = await setup.checker(hooked_config(setup.listener.port, ran))
    await probed(checker, 2)
    await hooks_idle(checker)
    assert lines(ran) == []  # up from the start, as guessed: nothing to tell

    await setup.listener.close()
    await wait_for(lambda: len(lines(ran)) == 2, "notify_down and quorum_down")
    assert sorted(lines(ran)) == sorted([RS_DOWN, Q_DOWN])

    await setup.listener.open()
    await wait_for(lambda: len(lines(ran)) == 4, "notify_up and quorum_up")
    assert sorted(lines(ran)[2:]) == sorted([RS_UP, Q_UP])


async def test_an_alpha_server_found_down_runs_notify_down_once_then_up(
    setup: Setup, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    checker = await setup.checker(hooked_config(setup.listener.port, ran, alpha=True))
    await wait_for(lambda: lines(ran) == [RS_DOWN], "notify_down after the first failed round")
    await probed(checker, checker.pool.durations.by_type()["tcp"].count + 3)
    await hooks_idle(checker)
    assert lines(ran) == [RS_DOWN]  # further failed rounds are no transition

    await setup.listener.open()
    # quorum was never held since the start: gaining it runs quorum_up, as keepalived does
    await wait_for(lambda: len(lines(ran)) == 3, "notify_up and quorum_up")
    assert sorted(lines(ran)[1:]) == sorted([RS_UP, Q_UP])


async def test_a_drain_runs_no_hook_and_its_end_runs_what_the_checks_say(
    setup: Setup, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    await setup.listener.open()
    checker = await setup.checker(hooked_config(setup.listener.port, ran))
    await probed(checker)
    checker.pool.disable(WEB_A, "swap a disk")
    await setup.listener.close()
    await probed(checker, checker.pool.durations.by_type()["tcp"].count + 2)
    await hooks_idle(checker)
    assert "down" not in [line.split()[0] for line in lines(ran)]

    checker.pool.enable(WEB_A, "disk swapped")
    await wait_for(lambda: RS_DOWN in lines(ran), "notify_down once the drain ends")


async def test_a_refused_hook_is_one_script_refused_event(setup: Setup, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    hook = tmp_path / "rs-down.sh"  # under /tmp, which anyone can write: refused
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    text = hooked_config(setup.listener.port, ran, security=True).replace(
        recorder(ran, "down"), f"[{hook}]"
    )
    checker = await setup.checker(text)
    await wait_for(lambda: len(setup.channel.events("script_refused")) == 1, "the refusal")
    (refused,) = setup.channel.events("script_refused")
    assert refused["process"] == "checker" and refused["script"] == str(hook)
    assert "world-writable" in refused["reason"], refused["reason"]
    assert checker.pool.verdicts()[WEB_A].health is Health.UNHEALTHY


async def test_a_reload_removing_a_server_that_is_up_runs_its_notify_down(
    setup: Setup, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    await setup.listener.open()
    text = hooked_config(setup.listener.port, ran)
    checker = await setup.checker(text)
    await probed(checker)
    # the real server moves to another port: the old one leaves, the new one enters
    moved = text.replace("{address: 10.0.0.1, weight: 3", "{address: 10.0.0.1, port: 81, weight: 3")
    answer = await checker.on_message(message(2, moved))
    assert answer.ok, answer.errors
    await wait_for(lambda: RS_DOWN in lines(ran), "the removed server's notify_down")
    await hooks_idle(checker)
    assert lines(ran) == [RS_DOWN]


async def test_a_changed_hook_runs_from_the_next_transition(setup: Setup, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    await setup.listener.open()
    text = hooked_config(setup.listener.port, ran)
    checker = await setup.checker(text)
    await probed(checker)
    changed = text.replace(recorder(ran, "down"), recorder(ran, "new-down"))
    assert (await checker.on_message(message(2, changed))).ok

    await setup.listener.close()
    await wait_for(lambda: any(line.startswith("new-down ") for line in lines(ran)), "new hook")
    assert not any(line.startswith("down ") for line in lines(ran))


@pytest.mark.parametrize("omega", [True, False])
async def test_omega_runs_the_down_hooks_when_the_checker_stops(
    setup: Setup, tmp_path: Path, omega: bool
) -> None:
    ran = tmp_path / "ran"
    await setup.listener.open()
    checker = await setup.checker(hooked_config(setup.listener.port, ran, omega=omega))
    await probed(checker)
    await wait_for(lambda: bool(checker.syncer.quorum), "the first IPVS pass")
    setup.checkers.remove(checker)
    await checker.stop()
    assert sorted(lines(ran)) == (sorted([RS_DOWN, Q_DOWN]) if omega else [])


def grouped(text: str) -> str:
    """`hooked_config`'s virtual server serving a group of three members instead."""
    return (
        text.replace("address: 192.0.2.10, port: 80, protocol: TCP", "group: web, protocol: TCP")
        + "virtual_server_groups:\n  web: {members: ['192.0.2.10:80', '192.0.2.11-12:80']}\n"
    )


async def test_a_group_runs_each_hook_once_not_once_per_member(
    setup: Setup, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    await setup.listener.open()
    checker = await setup.checker(grouped(hooked_config(setup.listener.port, ran, omega=True)))
    await probed(checker)
    await wait_for(lambda: len(checker.syncer.quorum) == 3, "the three members' quorum")
    await setup.listener.close()
    await wait_for(lambda: len(lines(ran)) >= 2, "notify_down and quorum_down")
    await setup.listener.open()
    await wait_for(lambda: len(lines(ran)) >= 4, "notify_up and quorum_up")
    setup.checkers.remove(checker)
    await checker.stop()  # omega: the down hooks once more, once each
    kinds = sorted(line.split()[0] for line in lines(ran))
    assert kinds == ["down", "down", "quorum_down", "quorum_down", "quorum_up", "up"], lines(ran)


# --- the lanes ------------------------------------------------------------------------------


def marker_run(log_file: Path, tag: str, pause: float = 0.0, timeout: float = 5.0) -> HookRun:
    target = shlex.quote(str(log_file))
    code = f"echo {tag} start >> {target}; sleep {pause}; echo {tag} end >> {target}"
    command = ScriptCommand(("/bin/sh", "-c", code), script_security=False)
    return HookRun("notify_down", command, (("PATH", "/usr/bin:/bin"),), tag, timeout)


async def test_a_lane_runs_one_hook_at_a_time_in_order_lanes_side_by_side(
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    lanes = HookLanes()
    lanes.submit("a", marker_run(one, "a1", 0.2))
    lanes.submit("a", marker_run(one, "a2"))
    lanes.submit("a", marker_run(one, "a3"))
    lanes.submit("b", marker_run(two, "b1", 0.2))
    await wait_for(lambda: len(lines(two)) == 1 and len(lines(one)) == 1, "both lanes started")
    await wait_for(lambda: not lanes.busy, "every hook")
    assert lines(one) == ["a1 start", "a1 end", "a2 start", "a2 end", "a3 start", "a3 end"]
    assert lines(two) == ["b1 start", "b1 end"]


async def test_a_hanging_hook_is_killed_at_its_timeout_without_stalling_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"
    lanes = HookLanes()
    loop = asyncio.get_running_loop()
    began = loop.time()
    lanes.submit("a", marker_run(ran, "hangs", pause=30, timeout=0.3))
    lanes.submit("a", marker_run(ran, "next"))
    assert loop.time() - began < 0.05  # queuing never waits
    with caplog.at_level(logging.WARNING, logger="lvsha.ipvs.hooks"):
        await wait_for(lambda: not lanes.busy, "the lane", timeout=5.0)
    assert lines(ran) == ["hangs start", "next start", "next end"]
    assert "notify_down hook of hangs: script timeout after 0.3 s" in caplog.text


async def test_a_full_lane_drops_its_oldest_waiting_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"
    lanes = HookLanes(lane_limit=2)
    lanes.submit("a", marker_run(ran, "first", 0.2))  # starts at once
    await asyncio.sleep(0)  # the worker takes it
    for tag in ("second", "third", "fourth"):
        lanes.submit("a", marker_run(ran, tag))
    await wait_for(lambda: not lanes.busy, "the lane")
    assert [line.split()[0] for line in lines(ran)][::2] == ["first", "third", "fourth"]
    assert "dropped the oldest, the notify_down hook of second" in caplog.text


async def test_closing_kills_what_outlasts_the_budget(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    lanes = HookLanes()
    lanes.submit("a", marker_run(ran, "slow", pause=30))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await lanes.close(budget=0.3)
    assert loop.time() - began < 2.0
    assert lines(ran) == ["slow start"]
    lanes.submit("a", marker_run(ran, "late"))  # closed: not run
    assert not lanes.busy
