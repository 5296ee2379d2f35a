"""Is a script left running when the process that started it is SIGKILLed?

A helper Python process starts `sleep <marker>` through lvsha (run_script, a track-script runner
or the notifier) and waits; the test finds the script by its unique argument, SIGKILLs the
helper and waits, with a deadline, for the script to be gone.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

_PRELUDE = """
import asyncio
from lvsha.checks.script import ScriptCommand
command = ScriptCommand(("/bin/sh", "-c", "exec sleep {marker}"), user={user!r})
"""

STARTERS = {
    "run_script": """
from lvsha.checks.script import SCRIPT_PATH, run_script
asyncio.run(run_script(command, {"PATH": SCRIPT_PATH}, 1000.0))
""",
    "track_script": """
from lvsha.vrrp.track_script import TrackScriptParams, TrackScriptRunner
async def main() -> None:
    params = TrackScriptParams(interval=1000.0, timeout=1000.0)
    TrackScriptRunner("orphan", command, params, lambda *change: None).start()
    await asyncio.Event().wait()
asyncio.run(main())
""",
    "notify": """
from lvsha.vrrp.notify import Notifier, NotifyHooks, NotifyState, Transition
async def main() -> None:
    hooks = NotifyHooks(master=command, timeout=1000.0)
    Notifier().notify(hooks, Transition.instance("VI", NotifyState.MASTER, 100))
    await asyncio.Event().wait()
asyncio.run(main())
""",
}


def unique_sleep() -> str:
    """A `sleep` duration no other process on the machine uses, to find the script by."""
    return f"1000.{secrets.randbelow(10**9):09d}"


def live_processes(argv: list[str]) -> list[int]:
    """Pids whose command line is exactly `argv`, zombies left out (they are dead)."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/cmdline").read_bytes() != wanted:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry))
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for(condition: Callable[[], bool], deadline: float) -> bool:
    give_up_at = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > give_up_at:
            return False
        time.sleep(0.01)
    return True


def script_outlives_its_starter(starter: str, user: str | None = None) -> list[int]:
    """Start a script through `starter`, SIGKILL the starter: the script pids still alive."""
    marker = unique_sleep()
    script = ["sleep", marker]
    code = _PRELUDE.format(marker=marker, user=user) + STARTERS[starter]
    helper = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: bool(live_processes(script)), 10.0), "the script never started"
        (pid,) = live_processes(script)
        assert parent_of(pid) == helper.pid
        helper.send_signal(signal.SIGKILL)
        helper.wait(timeout=10)
        wait_for(lambda: not live_processes(script), 5.0)
        return live_processes(script)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait(timeout=10)
        for pid in live_processes(script):  # the test started it: end it by pid
            os.kill(pid, signal.SIGKILL)
