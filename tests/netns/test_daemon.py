"""`lvsha run` in namespaces: elections, handovers, restarts, readiness and the event stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha.drill.lab import Lab, wait_until
from tests.netns.director import Director, vrrp_config

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"


def masters(directors: list[Director]) -> list[str]:
    return [d.host.name for d in directors if d.holds_vip()]


@pytest.fixture
def trio(lab: Lab) -> Iterator[list[Director]]:
    directors = []
    for name, number, priority in (("a", 11, 150), ("b", 12, 120), ("c", 13, 100)):
        host = lab.add_host(name, f"192.0.2.{number}/24")
        config = vrrp_config(vrid=42, priority=priority, vip=VIP)
        directors.append(Director(host, config, VIP))
    yield directors
    for director in directors:
        if director.running():
            director.crash()


def test_three_directors_elect_one_master_and_reelect_as_each_dies(trio: list[Director]) -> None:
    for director in trio:
        director.start()
    wait_until(lambda: masters(trio) == ["a"], 10, what="a alone master")
    # steady state: exactly one master, sampled for a while
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert masters(trio) == ["a"]
        time.sleep(0.02)
    trio[0].crash()
    wait_until(lambda: masters(trio) == ["b"], 5, what="b takes over from a")
    trio[1].crash()
    wait_until(lambda: masters(trio) == ["c"], 5, what="c takes over from b")
    assert "MASTER" in trio[2].log()


def test_graceful_stop_hands_over_and_exits_cleanly(trio: list[Director]) -> None:
    a, b, _ = trio
    a.start()
    b.start()
    wait_until(lambda: masters([a, b]) == ["a"], 10, what="a master")
    assert a.stop() == 0
    assert masters([a, b]) == ["b"]  # a kept the VIP until b was master, then let go
    log = a.log()
    assert "stopping: releasing mastership" in log
    assert "MASTER -> RELEASING" in log
    assert "RELEASING -> INITIALIZE" in log
    assert "Traceback" not in log


def test_a_returning_higher_priority_director_preempts(trio: list[Director]) -> None:
    a, b, _ = trio
    b.start()
    wait_until(lambda: masters([a, b]) == ["b"], 10, what="b master alone")
    a.start()
    wait_until(lambda: masters([a, b]) == ["a"], 10, what="a preempts b")


def test_nopreempt_keeps_the_running_master(lab: Lab) -> None:
    a_host = lab.add_host("a", "192.0.2.11/24")
    b_host = lab.add_host("b", "192.0.2.12/24")
    a = Director(a_host, vrrp_config(vrid=5, priority=150, vip=VIP, preempt=False), VIP)
    b = Director(b_host, vrrp_config(vrid=5, priority=100, vip=VIP, preempt=False), VIP)
    try:
        b.start()
        wait_until(lambda: masters([a, b]) == ["b"], 10, what="b master alone")
        a.start()
        wait_until(lambda: "INITIALIZE -> BACKUP" in a.log(), 10, what="a running")
        time.sleep(1.0)  # ten advert intervals: a must not take over
        assert masters([a, b]) == ["b"]
    finally:
        for d in (a, b):
            if d.running():
                d.crash()


def test_crashed_vrrp_child_is_restarted(trio: list[Director]) -> None:
    a = trio[0]
    a.start()
    wait_until(a.holds_vip, 10, what="a master")
    child = int(a.log().split("vrrp child started (pid ")[1].split(")")[0])
    os.kill(child, signal.SIGKILL)
    wait_until(
        lambda: "exited with signal SIGKILL" in a.log() and a.log().count("child started") == 2,
        10,
        what="restart logged",
    )
    wait_until(lambda: a.log().count("BACKUP -> MASTER") >= 2, 10, what="master again")
    # The new child took off the VIP its predecessor left, and adds it again as master.
    assert "an earlier lvsha process added it" in a.log()
    wait_until(a.holds_vip, 5, what="the VIP back")


def test_ready_is_reported_to_systemd(lab: Lab) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    director = Director(host, vrrp_config(vrid=9, priority=100, vip=VIP), VIP)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(path)
            notify.settimeout(15)
            os.environ["NOTIFY_SOCKET"] = path
            try:
                director.start()
            finally:
                del os.environ["NOTIFY_SOCKET"]
            assert notify.recv(4096) == b"READY=1"
            director.stop()
            assert notify.recv(4096) == b"STOPPING=1"


def test_event_stream_shows_state_changes_in_order(lab: Lab) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    director = Director(host, vrrp_config(vrid=9, priority=100, vip=VIP), VIP)
    director.start()
    try:
        wait_until(director.holds_vip, 10, what="master")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(director.workdir / "run" / "events.sock"))
            data = b""
            while data.count(b"\n") < 2:
                data += client.recv(4096)
        events = [json.loads(line) for line in data.splitlines()[:2]]
        assert [(e["type"], e["old"], e["new"]) for e in events] == [
            ("vrrp_state", "INITIALIZE", "BACKUP"),
            ("vrrp_state", "BACKUP", "MASTER"),
        ]
        assert events[1]["seq"] == events[0]["seq"] + 1
        assert events[1]["instance"] == "VI"
    finally:
        director.crash()


def test_invalid_config_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("vrrp_instances:\n  VI:\n    interface: eth0\n")
    done = subprocess.run(
        [sys.executable, "-m", "lvsha", "run", str(bad), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 1
    assert "missing required key 'virtual_router_id'" in done.stderr
    assert "not starting: 2 configuration error(s)" in done.stderr
