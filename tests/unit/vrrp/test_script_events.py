"""`script_refused` events: a track script or notify hook refused is told to the parent once per
refusal episode (until it runs again or a new configuration is in force), never blocking."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from lvsha.messages import ChildEvent, Message, decode, encode
from lvsha.scripts import ScriptCommand
from lvsha.vrrp.notify import (
    HookRun,
    Notifier,
    NotifyHooks,
    NotifyState,
    Transition,
    hook_runs,
)
from lvsha.vrrp.script_events import ScriptRefusals
from lvsha.vrrp.track_script import TrackScriptParams, TrackScriptRunner
from tests.unit.vrrp.engine_harness import Harness, config, instance, vip, wait_for


class Parent:
    """What the parent receives, through the codec as on the wire."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(decode(encode(message)))

    def events(self) -> list[dict[str, Any]]:
        found = []
        for message in self.messages:
            assert isinstance(message, ChildEvent) and message.type == "script_refused"
            fields = json.loads(message.fields)
            assert isinstance(fields, dict)
            found.append(fields)
        return found


def hook_run(
    argv: tuple[str, ...], hook: str = "any", state: NotifyState = NotifyState.MASTER
) -> HookRun:
    command = ScriptCommand(argv)
    hooks = NotifyHooks(any=command) if hook == "any" else NotifyHooks(master=command)
    (run,) = hook_runs(hooks, Transition.instance("VI_1", state, 100))
    return run


def test_one_event_per_episode() -> None:
    parent = Parent()
    refusals = ScriptRefusals(parent.send)
    refusals.track_script("chk", "script not found in /usr/bin: chk")
    refusals.track_script("chk", "script not found in /usr/bin: chk")
    refusals.track_script("chk", "another reason, same episode")
    assert parent.events() == [
        {"process": "vrrp", "script": "chk", "reason": "script not found in /usr/bin: chk"}
    ]
    assert refusals.refused == {"chk"}
    refusals.track_script("chk", None)  # it ran
    assert refusals.refused == frozenset()
    refusals.track_script("chk", "script security: insecure")
    assert [e["reason"] for e in parent.events()] == [
        "script not found in /usr/bin: chk",
        "script security: insecure",
    ]
    refusals.reset()  # a new configuration in force
    refusals.track_script("chk", "script security: insecure")
    assert len(parent.events()) == 3
    assert refusals.sent == 3


def test_a_track_script_and_a_hook_of_the_same_name_are_apart() -> None:
    parent = Parent()
    refusals = ScriptRefusals(parent.send)
    refusals.track_script("/etc/hook", "refused")
    refusals.notify_hook(hook_run(("/etc/hook",), "master"), "refused")
    assert [e["script"] for e in parent.events()] == ["/etc/hook", "/etc/hook"]


def test_a_hook_is_named_by_its_command_as_configured() -> None:
    parent = Parent()
    refusals = ScriptRefusals(parent.send)
    run = hook_run(("/etc/lvsha/notify", "--to", "ops team"))
    assert run.command.argv[-4:] == ("INSTANCE", "VI_1", "MASTER", "100")
    refusals.notify_hook(run, "script security: /etc/lvsha is writable by group staff")
    # Another transition of the same hook: the same script, the same episode.
    backup = hook_run(("/etc/lvsha/notify", "--to", "ops team"), state=NotifyState.BACKUP)
    refusals.notify_hook(backup, "script security: /etc/lvsha is writable by group staff")
    assert parent.events() == [
        {
            "process": "vrrp",
            "script": "/etc/lvsha/notify --to 'ops team'",
            "reason": "script security: /etc/lvsha is writable by group staff",
        }
    ]


def test_a_failing_send_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(message: Message) -> None:
        raise RuntimeError("channel bug")

    refusals = ScriptRefusals(broken)
    refusals.track_script("chk", "refused")
    assert "cannot tell the parent that chk was refused" in caplog.text
    assert refusals.sent == 0


async def test_a_track_script_refused_each_run_is_told_once_until_it_runs(tmp_path: Path) -> None:
    parent = Parent()
    refusals = ScriptRefusals(parent.send)
    outcomes: list[str | None] = []

    def on_run(name: str, refusal: str | None) -> None:
        outcomes.append(refusal)
        refusals.track_script(name, refusal)

    script = tmp_path / "check.sh"
    command = ScriptCommand((str(script),), script_security=False)
    params = TrackScriptParams(interval=0.02, timeout=2.0)
    runner = TrackScriptRunner("chk", command, params, lambda *_: None, on_run=on_run)
    runner.start()
    try:
        await wait_for(lambda: len(outcomes) >= 3)  # missing: refused every run
        assert all(outcomes) and len(parent.events()) == 1
        assert parent.events()[0]["reason"] == f"script is not an executable file: {script}"
        script.write_text("#!/bin/sh\nexit 1\n")  # runs (and fails): the episode ends
        script.chmod(0o755)
        await wait_for(lambda: outcomes[-1] is None)
        assert len(parent.events()) == 1
        script.unlink()
        await wait_for(lambda: len(parent.events()) == 2)
    finally:
        await runner.close()


async def test_the_engine_reports_track_scripts_again_after_a_reload(
    lab: Harness, tmp_path: Path
) -> None:
    parent = Parent()
    runs: list[str | None] = []

    class Counting(ScriptRefusals):
        def track_script(self, name: str, refusal: str | None) -> None:
            runs.append(refusal)
            super().track_script(name, refusal)

    script = tmp_path / "check.sh"  # under /tmp, world-writable: script security refuses it
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    scripts = {"chk": {"command": str(script), "interval": 0.02, "weight": 10}}

    def cfg(priority: int) -> Any:
        tracked = instance(1, vip(10), priority=priority, track_scripts=["chk"])
        return config({"VI_1": tracked}, vrrp_scripts=scripts)

    engine = await lab.start(cfg(100), script_refusals=Counting(parent.send))
    await wait_for(lambda: len(runs) >= 3)
    assert len(parent.events()) == 1
    event = parent.events()[0]
    assert event["script"] == "chk" and event["process"] == "vrrp"
    assert event["reason"].startswith("script security: /tmp is world-writable")
    assert (await engine.apply(cfg(100))).ok  # nothing of VRRP changed: the same episode
    before = len(runs)
    await wait_for(lambda: len(runs) >= before + 3)
    assert len(parent.events()) == 1
    assert (await engine.apply(cfg(110))).ok  # a change: told once more
    await wait_for(lambda: len(parent.events()) == 2)
    before = len(runs)
    await wait_for(lambda: len(runs) >= before + 3)
    assert len(parent.events()) == 2


async def test_a_refused_notify_hook_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    parent = Parent()
    refusals = ScriptRefusals(parent.send)
    notifier = Notifier(on_run=refusals.notify_hook)
    script = tmp_path / "to-master.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    hooks = NotifyHooks(master=ScriptCommand((str(script), "vip")))
    for _ in range(3):
        notifier.notify(hooks, Transition.instance("VI_1", NotifyState.MASTER, 100))
    await notifier.close()
    assert len(parent.events()) == 1
    assert parent.events()[0]["script"] == f"{script} vip"
    assert "not run: script security" in caplog.text
