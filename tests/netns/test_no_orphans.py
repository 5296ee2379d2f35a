"""No script outlives the lvsha process that started it (issue 9, finding 2).

A real `lvsha run` tracks a script that execs `sleep <unique>`; its VRRP child is SIGKILLed three
times, then lvsha is stopped. The script of a dead child must die with it, the restarted child
must run its own, and nothing must be left once lvsha has stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha.checks.script import insecure_path_reason
from lvsha.drill.lab import Lab, wait_until
from tests.netns.director import Director
from tests.unit.checks.orphans import live_processes, parent_of, unique_sleep

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VRRP_CHILD = "lvsha.daemon.vrrp_process"


@pytest.fixture
def script_dir() -> Iterator[Path]:
    """Root-owned and writable only by root, so script security lets the track script run."""
    path = Path(tempfile.mkdtemp(prefix="lvsha-test-orphans-", dir="/run"))
    try:
        path.chmod(0o755)
        if insecure_path_reason(str(path)) is not None:
            pytest.skip(f"/run is not secure here: {insecure_path_reason(str(path))}")
        yield path
    finally:
        shutil.rmtree(path)


def config(script: Path) -> str:
    # A long interval and timeout: each VRRP child runs the script once, at its start, and the
    # run lasts until something kills it.
    return (
        "vrrp_scripts:\n"
        "  hold:\n"
        f"    command: ['{script}']\n"
        "    interval: 1000\n"
        "    timeout: 1000\n"
        "    weight: -10\n"
        "vrrp_instances:\n"
        "  VI:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 42\n"
        "    priority: 150\n"
        "    version: 3\n"
        "    advert_interval: 100ms\n"
        f"    virtual_ipaddresses: ['{VIP}']\n"
        "    garp: {delay: 0}\n"
        "    track_scripts: [hold]\n"
    )


def vrrp_child_of(director: Director) -> int | None:
    """The running child of the director's parent that runs the VRRP process."""
    assert director.process is not None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if VRRP_CHILD.encode() in cmdline and parent_of(int(entry)) == director.process.pid:
                return int(entry)
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_no_track_script_outlives_its_vrrp_child_or_lvsha(lab: Lab, script_dir: Path) -> None:
    marker = unique_sleep()
    sleeper = ["sleep", marker]
    script = script_dir / "hold.sh"
    script.write_text(f"#!/bin/sh\nexec sleep {marker}\n")
    script.chmod(0o755)
    director = Director(lab.add_host("a", "192.0.2.11/24"), config(script), VIP)

    def running_script_of(child: int | None) -> int | None:
        """The one live script, if it is `child`'s; fails on any other left over."""
        scripts = live_processes(sleeper)
        assert len(scripts) <= 1, f"scripts left over: {scripts}\n{director.log()[-3000:]}"
        if child is not None and scripts and parent_of(scripts[0]) == child:
            return scripts[0]
        return None

    def child_with_its_script() -> int:
        """Wait for a VRRP child and for the track script it started; the child's pid."""
        wait_until(lambda: vrrp_child_of(director) is not None, 15, what="a VRRP child")
        child = vrrp_child_of(director)
        assert child is not None
        wait_until(lambda: running_script_of(child) is not None, 15, what="its track script")
        return child

    try:
        director.start()
        for crash in range(1, 4):
            os.kill(child_with_its_script(), signal.SIGKILL)
            try:
                wait_until(lambda: not live_processes(sleeper), 5, what="the script dies")
            except TimeoutError:
                pytest.fail(f"after crash {crash}, scripts left: {live_processes(sleeper)}")
        child_with_its_script()
        assert director.stop() == 0
        try:
            wait_until(lambda: not live_processes(sleeper), 5, what="no script after stop")
        except TimeoutError:
            pytest.fail(f"after lvsha stopped, scripts left: {live_processes(sleeper)}")
    finally:
        if director.running():
            director.crash()
        for pid in live_processes(sleeper):  # this test's scripts, by pid
            os.kill(pid, signal.SIGKILL)
