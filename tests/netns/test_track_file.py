"""`lvsha run` end to end with tracked files (keepalived's track_file): a number written to the
master's file moves mastership; with weight 0 a non-zero number puts the instance in FAULT."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import REPO, Director
from tests.tools import api_schema

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"


def config(priority: int, track_file: Path | None = None, weight: int = -10) -> str:
    text = ""
    track = ""
    if track_file is not None:
        text = (
            "vrrp_track_files:\n"
            "  prio:\n"
            f"    file: {track_file}\n"
            f"    weight: {weight}\n"
            "    init: 0\n"
        )
        track = "    track_files: [prio]\n"
    return text + (
        "vrrp_instances:\n"
        "  VI:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 42\n"
        f"    priority: {priority}\n"
        "    version: 3\n"
        "    advert_interval: 100ms\n"
        f"    virtual_ipaddresses: ['{VIP}']\n"
        "    garp: {delay: 0}\n" + track
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lvsha-trackfile-") as tmp:
        yield Path(tmp)


def pair(lab: Lab) -> tuple[Host, Host]:
    return lab.add_host("a", "192.0.2.11/24"), lab.add_host("b", "192.0.2.12/24")


def run(host: Host, text: str) -> Director:
    director = Director(host, text, VIP)
    director.start()
    return director


def tracker(director: Director) -> dict[str, Any] | None:
    """The tracked file as `lvsha status --json` shows it; None before the VRRP process
    reports."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lvsha",
            "status",
            "--json",
            "--run-dir",
            str(director.workdir / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        return None
    answer = json.loads(done.stdout)
    api_schema.check("status", answer)
    if not answer.get("vrrp"):
        return None
    (instance,) = answer["vrrp"]["instances"]
    (found,) = instance["trackers"]
    assert isinstance(found, dict)
    return found


def write(path: Path, text: str) -> None:
    """As an operator's `echo N > file` does: written in place."""
    path.write_text(text)


def test_a_number_in_the_masters_file_hands_mastership_over(lab: Lab, scratch: Path) -> None:
    a_host, b_host = pair(lab)
    prio = scratch / "prio"
    a = run(a_host, config(150, prio))
    b = run(b_host, config(100))
    try:
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="a master")
        assert prio.read_text() == "0\n"  # init wrote the missing file
        write(prio, "6\n")  # 150 - 6 x 10 = 90, below b's 100: b preempts
        wait_until(lambda: b.holds_vip() and not a.holds_vip(), 5, what="b takes over")
        wait_until(lambda: (tracker(a) or {}).get("value") == 6, 5, what="status shows 6")
        assert tracker(a) == {
            "tracker": "file prio",
            "healthy": True,
            "weight": -10,
            "effect": -60,
            "value": 6,
            "reverse": False,
        }
        # Replaced by a rename, as editors and `mv` do: read again too.
        staged = scratch / "prio.new"
        staged.write_text("0\n")
        staged.rename(prio)
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 5, what="a takes back")
        assert "track file prio" in a.log()
    finally:
        a.crash()
        b.crash()


def test_weight_zero_and_a_non_zero_number_is_fault(lab: Lab, scratch: Path) -> None:
    a_host, b_host = pair(lab)
    maint = scratch / "maint"
    a = run(a_host, config(150, maint, weight=0))
    b = run(b_host, config(100))
    try:
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="a master")
        write(maint, "1\n")
        wait_until(lambda: b.holds_vip() and not a.holds_vip(), 5, what="b takes over")
        assert "MASTER -> FAULT" in a.log()
        shown = tracker(a)
        assert shown is not None and shown["healthy"] is False and shown["value"] == 1
        write(maint, "0\n")
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 5, what="a back")
        assert "FAULT -> BACKUP" in a.log()
    finally:
        a.crash()
        b.crash()
