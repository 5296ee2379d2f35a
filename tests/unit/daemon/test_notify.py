from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsha.checks.script import ScriptCommand
from lvsha.vrrp.notify import (
    Notifier,
    NotifyHooks,
    NotifyState,
    NotifySubject,
    Transition,
    hook_runs,
)
from tests.unit.checks.orphans import script_outlives_its_starter

MASTER, BACKUP, FAULT, STOP = (
    NotifyState.MASTER,
    NotifyState.BACKUP,
    NotifyState.FAULT,
    NotifyState.STOP,
)


def shell(script: str, *args: str) -> ScriptCommand:
    return ScriptCommand(("sh", "-c", script, "sh", *args), script_security=False)


def appender(log: Path, label: str, delay: str = "0") -> ScriptCommand:
    """A hook that sleeps `delay` seconds, then appends its label and arguments to `log`."""
    return shell(f'sleep {delay}; echo "{label} $*" >> "{log}"')


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


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


async def idle(notifier: Notifier, deadline: float = 10.0) -> None:
    await asyncio.wait_for(notifier.wait_idle(), deadline)


# Which hooks run, with which arguments: pure.


def test_own_hook_first_with_its_argv_then_any_with_keepalived_arguments() -> None:
    master = ScriptCommand(("/etc/lvsha/to-master", "vip-web"))
    any_state = ScriptCommand(("/etc/lvsha/notify", "--verbose"))
    hooks = NotifyHooks(master=master, any=any_state, timeout=3.0)
    runs = hook_runs(hooks, Transition.instance("VI_1", MASTER, 150))
    assert [(run.hook, run.command.argv, run.timeout) for run in runs] == [
        ("master", ("/etc/lvsha/to-master", "vip-web"), 3.0),
        ("any", ("/etc/lvsha/notify", "--verbose", "INSTANCE", "VI_1", "MASTER", "150"), 3.0),
    ]


def test_a_group_passes_priority_zero() -> None:
    hooks = NotifyHooks(any=ScriptCommand(("/etc/lvsha/notify",)))
    (run,) = hook_runs(hooks, Transition.group("SG_web", FAULT))
    assert run.command.argv == ("/etc/lvsha/notify", "GROUP", "SG_web", "FAULT", "0")
    with pytest.raises(ValueError, match="always 0"):
        Transition(NotifySubject.GROUP, "SG_web", FAULT, 100)


@pytest.mark.parametrize("state", list(NotifyState))
def test_each_state_runs_its_own_hook(state: NotifyState) -> None:
    hooks = NotifyHooks(
        master=ScriptCommand(("m",)),
        backup=ScriptCommand(("b",)),
        fault=ScriptCommand(("f",)),
        stop=ScriptCommand(("s",)),
    )
    (run,) = hook_runs(hooks, Transition.instance("VI_1", state, 100))
    assert run.hook == state.value.lower()
    assert run.command.argv == (state.value[0].lower(),)


def test_no_hook_for_the_state_means_nothing_to_run() -> None:
    hooks = NotifyHooks(master=ScriptCommand(("m",)))
    assert hook_runs(hooks, Transition.instance("VI_1", BACKUP, 100)) == []


def test_validation() -> None:
    with pytest.raises(ValueError):
        Transition.instance("VI_1", MASTER, 256)
    with pytest.raises(ValueError):
        NotifyHooks(timeout=0.0)
    with pytest.raises(ValueError):
        Notifier(queue_limit=0)


# Running them.


async def test_arguments_exactly_as_keepalived_passes_them(tmp_path: Path) -> None:
    record = tmp_path / "args"
    report = f'for arg in "$@"; do echo "[$arg]" >> "{record}"; done; echo --- >> "{record}"'
    hooks = NotifyHooks(master=shell(report, "own arg"), any=shell(report, "configured"))
    notifier = Notifier()
    notifier.notify(hooks, Transition.instance("VI 1", MASTER, 150))
    await idle(notifier)
    assert lines(record) == [
        "[own arg]",
        "---",
        "[configured]",
        "[INSTANCE]",
        "[VI 1]",
        "[MASTER]",
        "[150]",
        "---",
    ]
    await notifier.close()


async def test_hooks_also_see_the_transition_in_their_environment(tmp_path: Path) -> None:
    record = tmp_path / "env"
    report = (
        'echo "$LVSHA_NOTIFY_TYPE|$LVSHA_NOTIFY_NAME|$LVSHA_NOTIFY_STATE|$LVSHA_NOTIFY_PRIORITY'
        f'|$PATH" > "{record}"'
    )
    notifier = Notifier()
    notifier.notify(NotifyHooks(backup=shell(report)), Transition.group("SG_1", BACKUP))
    await idle(notifier)
    assert lines(record) == [
        "GROUP|SG_1|BACKUP|0|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    await notifier.close()


async def test_order_is_kept_under_rapid_transitions(tmp_path: Path) -> None:
    log = tmp_path / "hooks"
    # Earlier hooks take longer: run concurrently, they would finish out of order.
    states = [MASTER, BACKUP, FAULT] * 5
    notifier = Notifier()
    for index, state in enumerate(states):
        delay = f"0.0{len(states) - index:02d}"
        hooks = NotifyHooks(
            **{state.value.lower(): appender(log, f"{index}:own", delay)},  # type: ignore[arg-type]
            any=appender(log, f"{index}:any"),
        )
        notifier.notify(hooks, Transition.instance("VI_1", state, 100 + index))
    await idle(notifier)
    expected = []
    for index, state in enumerate(states):
        expected += [f"{index}:own ", f"{index}:any INSTANCE VI_1 {state.value} {100 + index}"]
    assert lines(log) == expected
    await notifier.close()


async def test_notify_returns_at_once(tmp_path: Path) -> None:
    started = tmp_path / "started"
    notifier = Notifier()
    hanging = shell(f'touch "{started}"; exec sleep 30')
    before = time.monotonic()
    notifier.notify(NotifyHooks(master=hanging, timeout=30.0), Transition.instance("V", MASTER, 1))
    assert time.monotonic() - before < 0.05
    assert not started.exists()
    assert await wait_until(started.exists)
    close = asyncio.create_task(notifier.close())
    await asyncio.sleep(0)
    close.cancel()
    with pytest.raises(asyncio.CancelledError):
        await close


async def test_a_hanging_hook_is_killed_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsha.vrrp.notify")
    pids, log = tmp_path / "pids", tmp_path / "hooks"
    hanging = shell(f"trap '' TERM; echo $$ > \"{pids}\"; sleep 30 & wait")
    notifier = Notifier()
    notifier.notify(NotifyHooks(fault=hanging, timeout=0.2), Transition.instance("VI_1", FAULT, 90))
    notifier.notify(
        NotifyHooks(backup=appender(log, "next")), Transition.instance("VI_1", BACKUP, 90)
    )
    await idle(notifier)
    assert lines(log) == ["next "]
    assert await wait_until(lambda: not alive(int(pids.read_text())))
    assert "notify fault hook for INSTANCE VI_1 FAULT 90: script timeout after 0.2 s" in caplog.text
    await notifier.close()


async def test_exit_status_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lvsha.vrrp.notify")
    notifier = Notifier()
    hooks = NotifyHooks(master=shell("echo 'vip add failed' >&2; exit 3"), any=shell("exit 0"))
    notifier.notify(hooks, Transition.instance("VI_1", MASTER, 150))
    await idle(notifier)
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(records) == 2
    assert records[0][0] == logging.WARNING
    assert records[0][1].startswith(
        "notify master hook for INSTANCE VI_1 MASTER 150: "
        "script exit status 3: vip add failed after"
    )
    assert records[1][0] == logging.INFO
    assert records[1][1].startswith(
        "notify any hook for INSTANCE VI_1 MASTER 150: script exit status 0 after"
    )
    await notifier.close()


async def test_a_refused_hook_is_logged_and_the_queue_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "to-master.sh"
    script.write_text(f'#!/bin/sh\ntouch "{tmp_path}/ran"\n')
    script.chmod(0o755)
    log = tmp_path / "hooks"
    notifier = Notifier()
    hooks = NotifyHooks(master=ScriptCommand((str(script),)), any=appender(log, "any"))
    notifier.notify(hooks, Transition.instance("VI_1", MASTER, 150))
    await idle(notifier)
    assert not (tmp_path / "ran").exists()
    assert lines(log) == ["any INSTANCE VI_1 MASTER 150"]
    assert (
        "notify master hook for INSTANCE VI_1 MASTER 150 not run: "
        f"script security: /tmp is world-writable, on the path of {script}; "
        f"fix: move {script} to a directory only root can write"
    ) in caplog.text
    await notifier.close()


async def test_overflow_drops_the_oldest_waiting_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    go, started, log = tmp_path / "go", tmp_path / "started", tmp_path / "hooks"
    gate = shell(f'touch "{started}"; while [ ! -e "{go}" ]; do sleep 0.01; done')
    notifier = Notifier(queue_limit=3)
    notifier.notify(NotifyHooks(master=gate), Transition.instance("VI_1", MASTER, 100))
    assert await wait_until(started.exists)
    for priority in range(1, 6):
        notifier.notify(
            NotifyHooks(backup=appender(log, str(priority))),
            Transition.instance("VI_1", BACKUP, priority),
        )
    assert notifier.waiting == 3
    go.touch()
    await idle(notifier)
    assert lines(log) == ["3 ", "4 ", "5 "]
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert dropped == [
        "notify queue full (3 waiting): dropped the oldest, the notify backup hook for "
        f"INSTANCE VI_1 BACKUP {priority}"
        for priority in (1, 2)
    ]
    await notifier.close()


async def test_close_runs_what_is_queued_then_refuses_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "hooks"
    notifier = Notifier()
    notifier.notify(
        NotifyHooks(backup=appender(log, "backup", "0.05")), Transition.instance("V", BACKUP, 1)
    )
    notifier.notify(NotifyHooks(stop=appender(log, "stop")), Transition.instance("V", STOP, 1))
    await asyncio.wait_for(notifier.close(), 10.0)
    assert lines(log) == ["backup ", "stop "]
    notifier.notify(NotifyHooks(stop=appender(log, "late")), Transition.instance("V", STOP, 1))
    await asyncio.sleep(0)
    assert (
        "notify hooks for INSTANCE V STOP 1 not run: the notifier is shutting down" in caplog.text
    )
    assert lines(log) == ["backup ", "stop "]


async def test_cancelled_close_kills_the_running_hook(tmp_path: Path) -> None:
    pids, log = tmp_path / "pids", tmp_path / "hooks"
    notifier = Notifier()
    hanging = shell(f'echo $$ > "{pids}"; exec sleep 30')
    notifier.notify(NotifyHooks(stop=hanging, timeout=30.0), Transition.instance("V", STOP, 1))
    notifier.notify(NotifyHooks(stop=appender(log, "after")), Transition.instance("W", STOP, 1))
    assert await wait_until(lambda: pids.exists() and pids.read_text().strip() != "")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(notifier.close(), 0.2)
    assert await wait_until(lambda: not alive(int(pids.read_text())))
    assert not log.exists()


def test_a_notify_hook_dies_when_its_process_is_killed() -> None:
    assert script_outlives_its_starter("notify") == []
