"""Crash safety of `lvsha run` in namespaces: a crashed VRRP child never leaves a VIP on a
backup, a restarted child runs the parent's configuration (not the file on disk), and no
local client of the event stream can starve VRRP (issue 9, findings 1 and 3)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from lvsha.drill.lab import Lab, wait_until
from tests.netns.director import Director, vrrp_config

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VRRP_CHILD = "lvsha.daemon.vrrp_process"


@pytest.fixture
def pair(lab: Lab) -> Iterator[tuple[Director, Director]]:
    """a (150, nopreempt) and b (100), not started; crashed at the end if still running."""
    a_host = lab.add_host("a", "192.0.2.11/24")
    b_host = lab.add_host("b", "192.0.2.12/24")
    a = Director(a_host, vrrp_config(vrid=42, priority=150, vip=VIP, preempt=False), VIP)
    b = Director(b_host, vrrp_config(vrid=42, priority=100, vip=VIP), VIP)
    yield a, b
    for director in (a, b):
        if director.running():
            director.crash()


def holders(directors: tuple[Director, ...], address: str = "192.0.2.100") -> list[str]:
    return [d.host.name for d in directors if d.holds(address)]


def start_pair(pair: tuple[Director, Director]) -> tuple[Director, Director]:
    """a master first, then b as its backup."""
    a, b = pair
    a.start()
    wait_until(lambda: holders(pair) == ["a"], 10, what="a master")
    b.start()
    wait_until(lambda: "-> BACKUP" in b.log(), 10, what="b backup")
    return a, b


def kill_vrrp_child(director: Director) -> int:
    pid = director.child_pid(VRRP_CHILD)
    assert pid is not None, "no VRRP child"
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_for_new_child(director: Director, old: int) -> None:
    def restarted() -> bool:
        pid = director.child_pid(VRRP_CHILD)
        return pid is not None and pid != old

    wait_until(restarted, 10, what="the VRRP child restarted")
    wait_until(lambda: director.log().count("VRRP running") >= 2, 10, what="it runs")


def assert_only(directors: tuple[Director, ...], holder: str, seconds: float) -> None:
    """Sample for `seconds`: the VIP is on `holder` alone the whole time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = holders(directors)
        assert found == [holder], "\n".join(d.log()[-4000:] for d in directors)
        time.sleep(0.05)


def test_a_restarted_vrrp_child_takes_off_the_vip_its_predecessor_left(
    pair: tuple[Director, Director],
) -> None:
    a, _ = start_pair(pair)
    old = kill_vrrp_child(a)
    # b takes over; a's new child comes up as a backup (nopreempt) and must let go.
    wait_for_new_child(a, old)
    wait_until(lambda: holders(pair) == ["b"], 10, what="b alone holds the VIP")
    assert "an earlier lvsha process added it" in a.log()
    assert_only(pair, "b", 1.0)


def test_a_restarted_child_runs_the_parents_configuration_not_the_edited_file(
    pair: tuple[Director, Director],
) -> None:
    a, b = start_pair(pair)
    # Edited on disk, not reloaded: a new VIP.
    edited = a.config_path.read_text().replace(
        "virtual_ipaddresses: ['192.0.2.100/24']",
        "virtual_ipaddresses: ['192.0.2.100/24', '192.0.2.101/24', '192.0.2.102/24']",
    )
    assert edited != a.config_path.read_text()
    a.config_path.write_text(edited)
    wait_for_new_child(a, kill_vrrp_child(a))
    wait_until(lambda: holders(pair) == ["b"], 10, what="b alone holds the VIP")
    assert_only(pair, "b", 0.5)
    # b goes: a takes over with the configuration it started with.
    assert b.stop() == 0
    wait_until(lambda: holders(pair) == ["a"], 10, what="a master again")
    assert not a.holds("192.0.2.101") and not a.holds("192.0.2.102")


def test_a_broken_file_on_disk_does_not_stop_a_crashed_child_from_restarting(
    pair: tuple[Director, Director],
) -> None:
    a, b = start_pair(pair)
    a.config_path.write_text("vrrp_instances: [this is: not valid\n")
    wait_for_new_child(a, kill_vrrp_child(a))
    wait_until(lambda: holders(pair) == ["b"], 10, what="b alone holds the VIP")
    assert_only(pair, "b", 0.5)
    assert b.stop() == 0
    wait_until(lambda: holders(pair) == ["a"], 10, what="a takes over")


def _connect(path: str) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(path)
    return client


def test_event_stream_clients_cannot_starve_vrrp(lab: Lab) -> None:
    """1,000 clients that never read, then 20,000 connect/close cycles, against a master
    limited to 1,024 descriptors: it stays master, b never takes over (the adverts stay on
    time), its track script keeps running, and the log stays short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip("needs a descriptor limit of at least 4096 for the clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    script = (
        "vrrp_scripts:\n"
        "  chk:\n"
        "    command: [/bin/true]\n"
        "    interval: 100ms\n"
        "    timeout: 100ms\n"
        "    weight: -100\n"
    )
    a_config = script + vrrp_config(vrid=42, priority=150, vip=VIP).replace(
        "    garp: {delay: 0}\n", "    garp: {delay: 0}\n    track_scripts: [chk]\n"
    )
    a = Director(lab.add_host("a", "192.0.2.11/24"), a_config, VIP)
    b = Director(
        lab.add_host("b", "192.0.2.12/24"), vrrp_config(vrid=42, priority=100, vip=VIP), VIP
    )
    clients: list[socket.socket] = []
    try:
        a.start()
        assert a.process is not None
        # As under systemd's LimitNOFILE=1024; the children inherit it.
        resource.prlimit(a.process.pid, resource.RLIMIT_NOFILE, (1024, 1024))
        wait_until(a.holds_vip, 10, what="a master")
        b.start()
        wait_until(lambda: "-> BACKUP" in b.log(), 10, what="b backup")
        lines_before = a.log().count("\n")
        path = str(a.workdir / "run" / "events.sock")
        for _ in range(1000):
            with contextlib.suppress(OSError):
                clients.append(_connect(path))
        opened = list(clients)
        for _ in range(20_000):
            with contextlib.suppress(OSError):
                _connect(path).close()
        # Once the idle clients leave, a reading client gets the stream again (the replay
        # shows a's MASTER): the bound protected the parent without wedging it.
        for client in clients:
            client.close()
        clients.clear()

        def replayed() -> bool:
            with _connect(path) as reader:
                reader.settimeout(2)
                return b'"new": "MASTER"' in reader.recv(65536)

        wait_until(replayed, 10, interval=0.1, what="a reading client gets the replay")
        assert a.holds_vip() and not b.holds_vip()
        log = a.log()
        assert "-> FAULT" not in log and "Traceback" not in log
        assert "MASTER" not in b.log().split("-> BACKUP", 1)[1]
        added = log.count("\n") - lines_before
        assert added < 100, f"{added} log lines:\n{log[-3000:]}"
        print(
            f"event stream: {len(opened)} clients connected and never read, then 20,000 "
            "connect/close cycles; "
            f"a stayed MASTER, b BACKUP; {added} log lines"
        )
    finally:
        for client in clients:
            client.close()
        for director in (a, b):
            if director.running():
                director.crash()
