"""The supervisor with stand-in children: nothing outlives a child, and a child that fails the
same way at every start stops lvsha (issue 9, findings 2 and 9).

Each supervisor runs in a process of its own: it makes itself a child subreaper and handles
SIGCHLD, which must not leak into the test runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HARNESS = """
import asyncio, json, logging, sys
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.supervisor import ChildSpec, Supervisor

setup_logging("main")
children = [
    ChildSpec(name, argv, stop_timeout=2.0, start_after=after[0] if after else None)
    for name, argv, *after in json.loads(sys.argv[1])
]
Supervisor.RESTART_BACKOFF_FIRST = 0.05
Supervisor.RESTART_BACKOFF_MAX = 0.1
sys.exit(asyncio.run(Supervisor(children).run()))
"""

REPO = Path(__file__).resolve().parents[3]
Children = list[tuple[str, list[str]] | tuple[str, list[str], str]]
Supervise = Callable[[Children], "subprocess.Popen[str]"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in "ZX"


@pytest.fixture
def supervise() -> Iterator[Supervise]:
    """Start a supervisor of [name, argv] or [name, argv, start_after] children."""
    started: list[subprocess.Popen[str]] = []

    def start(children: Children) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HARNESS, json.dumps(children)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_child_failing_the_same_way_at_every_start_stops_lvsha(
    supervise: Supervise,
) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    process = supervise([("vrrp", failing)])
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1, output
    assert output.count("exited with status 3") == 5
    assert "5 times in a row: giving up" in output
    assert "Traceback" not in output


def test_a_crash_after_ready_restarts_without_counting_towards_giving_up(
    supervise: Supervise,
    tmp_path: Path,
) -> None:
    # Says it is ready, then dies: seven times, more than the give-up count, then stays up.
    runs = tmp_path / "runs"
    child = (
        "import os, socket, sys, time\n"
        "from pathlib import Path\n"
        "from lvsha.daemon.channel import ParentChannel\n"
        "from lvsha.messages import ChildReady, encode\n"
        "sock = socket.socket(fileno=int(os.environ['LVSHA_CHANNEL_FD']))\n"
        "sock.sendall(encode(ChildReady()))\n"
        f"runs = Path({str(runs)!r})\n"
        "count = int(runs.read_text()) if runs.exists() else 0\n"
        "runs.write_text(str(count + 1))\n"
        "if count < 7:\n"
        "    time.sleep(0.1)\n"
        "    sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    process = supervise([("vrrp", [sys.executable, "-c", child])])
    wait_for(lambda: runs.exists() and runs.read_text() == "8", 20, "the eighth run")
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert "giving up" not in output
    # A child that was up comes back at once the first time (a director without VRRP until
    # then), and with backoff after that while it keeps crashing.
    restarts = [line for line in output.splitlines() if "restarting" in line]
    assert len(restarts) == 7, output
    assert restarts[0].endswith("restarting now")
    assert all("restarting in " in line for line in restarts[1:])


def test_the_checker_starts_once_the_vrrp_child_is_ready(
    supervise: Supervise,
    tmp_path: Path,
) -> None:
    # Two Python start-ups at once would each take longer: VRRP's comes first.
    journal = tmp_path / "journal"
    vrrp = (
        "import os, socket, time\n"
        "from lvsha.messages import ChildReady, encode\n"
        "time.sleep(0.5)  # a slow start\n"
        f"open({str(journal)!r}, 'a').write('vrrp ready\\n')\n"
        "socket.socket(fileno=int(os.environ['LVSHA_CHANNEL_FD'])).sendall(encode(ChildReady()))\n"
        "time.sleep(60)\n"
    )
    checker = (
        f"open({str(journal)!r}, 'a').write('checker started\\n'); import time; time.sleep(60)"
    )
    process = supervise(
        [
            ("vrrp", [sys.executable, "-c", vrrp]),
            ("checker", [sys.executable, "-c", checker], "vrrp"),
        ]
    )
    wait_for(lambda: journal.exists() and len(journal.read_text().splitlines()) == 2, 20, "both")
    assert journal.read_text().splitlines() == ["vrrp ready", "checker started"]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output


def test_nothing_a_dead_child_started_survives_it(
    supervise: Supervise,
    tmp_path: Path,
) -> None:
    # The child starts a script in its own group and one that leaves its session (as a
    # daemonising script does), records their pids, and is then killed.
    pids = tmp_path / "pids"
    child = (
        "import subprocess, sys, time\n"
        "from pathlib import Path\n"
        "a = subprocess.Popen(['sleep', '1000'])\n"
        "b = subprocess.Popen(['sleep', '1001'], start_new_session=True)\n"
        f"Path({str(pids)!r}).write_text(f'{{a.pid}} {{b.pid}}')\n"
        "time.sleep(1000)\n"
    )
    process = supervise([("vrrp", [sys.executable, "-c", child])])
    wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1, 10, "the scripts")
    first, second = (int(p) for p in pids.read_text().split())
    child_pid = int(Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(child_pid, signal.SIGKILL)
    wait_for(lambda: not alive(first) and not alive(second), 10, "the scripts gone")
    pids.unlink()
    wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1, 10, "a restart")
    third, fourth = (int(p) for p in pids.read_text().split())
    # And on lvsha's own stop.
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    wait_for(lambda: not alive(third) and not alive(fourth), 5, "the scripts gone at stop")
