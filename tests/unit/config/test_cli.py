"""The command line: help texts, exit codes, and all errors at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lvsha.cli import main

THREE_MISTAKES = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 500
    virtual_ipaddresses: [192.0.2.10/24]
    preempt: yes
virtual_servers:
  - address: 192.0.2.10
    port: 80
    protocol: TCP
    schedular: rr
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsha", *args], capture_output=True, text=True, check=False
    )


def test_three_mistakes_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(THREE_MISTAKES)
    done = run("check-config", str(path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines == [
        f"{path}:4:24: vrrp_instances.VI_1.virtual_router_id: must be at most 255, got 500",
        f"{path}:6:14: vrrp_instances.VI_1.preempt: expected true or false, got the string "
        "'yes': write true or false",
        f"{path}:11:5: virtual_servers[0].schedular: unknown key 'schedular': did you mean "
        "'scheduler'?",
        f"{path}: 3 errors",
    ]
    assert done.stdout == ""


def test_good_and_bad_files_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = Path(__file__).resolve().parents[3] / "conf" / "lab" / "director-a.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(THREE_MISTAKES)
    assert main(["check-config", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: OK")
    assert f"{bad}: 3 errors" in captured.err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope.yaml'}:1:1: (top level): cannot read the file: No such file" in err


def test_help_reads_well() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert "High-availability supervisor for Linux Virtual Server" in done.stdout
    assert "check-config" in done.stdout and "validate configuration files" in done.stdout
    sub = run("check-config", "--help")
    assert sub.returncode == 0
    usage = " ".join(sub.stdout.split("\n\n")[0].split())
    assert (
        usage == "usage: lvsha check-config [-h] [--json] [--max-config-size BYTES] FILE [FILE ...]"
    )
    assert "FILE:LINE:COL" in sub.stdout and "--json" in sub.stdout


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    assert run("check-config").returncode == 2
    assert run("no-such-command").returncode == 2
