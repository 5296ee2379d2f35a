"""Ctrl-C, once or twice, and a director that will not start: the drill leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from lvsha.drill.lab import wait_until
from lvsha.drill.main import DrillOptions, run_drill
from lvsha.drill.scenarios import Scenario
from tests.netns.drill_helpers import STANDIN_COMMAND, namespaces_with, processes_mentioning

pytestmark = pytest.mark.netns


@pytest.fixture
def prefix() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    return f"lv{secrets.token_hex(3)}"


class DrillProcess:
    """`python -m lvsha.drill.main` against the stand-in, its stderr collected by a thread."""

    def __init__(self, prefix: str) -> None:
        command = [
            sys.executable, "-m", "lvsha.drill.main",
            "--lab-prefix", prefix, "--repetitions", "50",
            "--director-command", " ".join(STANDIN_COMMAND),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=5)


@pytest.fixture
def drill(prefix: str) -> Iterator[DrillProcess]:
    running = DrillProcess(prefix)
    try:
        yield running
    finally:
        running.finish()


def assert_nothing_left(prefix: str) -> None:
    assert namespaces_with(prefix) == []
    assert processes_mentioning(f"lvsha-drill-{prefix}") == []


def test_ctrl_c_mid_run_removes_the_lab(prefix: str, drill: DrillProcess) -> None:
    wait_until(lambda: drill.said("kill run 1:"), 60, what="the first scenario measured")
    assert namespaces_with(prefix), "the lab should exist mid-run"
    drill.interrupt()
    assert drill.finish() == 130
    assert drill.said("interrupted; the lab has been removed")
    assert_nothing_left(prefix)


def test_a_second_ctrl_c_does_not_cut_the_removal_short(prefix: str, drill: DrillProcess) -> None:
    wait_until(lambda: drill.said("reset: restarting"), 60, what="the directors starting")
    drill.interrupt()
    wait_until(lambda: drill.said("interrupted: stopping"), 10, what="the first interrupt taken")
    still_running = drill.process.poll() is None
    drill.interrupt()
    assert drill.finish() == 130
    if still_running:
        assert drill.said("still removing the lab")
    assert_nothing_left(prefix)


def test_a_director_that_does_not_start_fails_every_scenario_quickly(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = (sys.executable, "-c", "import sys; sys.exit(3)", "{config}")
    options = DrillOptions(
        director_command=command, lab_prefix=prefix, scenarios=(Scenario.KILL, Scenario.LINK_CUT)
    )
    assert run_drill(options) == 1
    out, err = capsys.readouterr()
    assert "kill run 1 failed: director " in out and "exit status 3" in out
    assert "link-cut run 1 failed" in out
    assert namespaces_with(prefix) == []
    kept = err.split("director logs are in ")[1].split()[0]
    assert any(name.endswith(".log") for name in os.listdir(kept))
    shutil.rmtree(kept)
