"""Removing a killed director's VIP over netlink, in its own namespace only, and the drill's
crash doing it without starting any process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from lvsha.drill.capture import Capture
from lvsha.drill.lab import Host, Lab
from lvsha.drill.main import DEFAULT_CONFIGS, CommandLauncher, InterruptGuard
from lvsha.drill.probe import VipProber
from lvsha.drill.scenarios import Director, Drill, Election, Timing
from lvsha.drill.vip_removal import VipRemover
from tests.netns.drill_helpers import STANDIN_COMMAND

pytestmark = pytest.mark.netns

VIP = IPv4Interface("192.0.2.100/24")


def holds(host: Host, address: IPv4Interface = VIP) -> bool:
    return f" {address.ip}/" in host.ip("-4", "-o", "addr", "show", "dev", "eth0")


def test_the_vip_goes_from_its_own_namespace_only(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.11/24", str(VIP))
    b = lab.add_host("b", "192.0.2.12/24", str(VIP))
    remover = VipRemover(a, "eth0", VIP)
    try:
        assert remover.remove() is True
        assert not holds(a)  # gone when remove() returns, no waiting
        assert holds(a, IPv4Interface("192.0.2.11/24"))
        assert holds(b)
        assert remover.remove() is False  # already gone: nothing to remove
    finally:
        remover.close()


def test_an_unknown_interface_is_refused_when_the_remover_is_made(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.11/24")
    with pytest.raises(OSError):
        VipRemover(a, "eth9", VIP)


@pytest.fixture
def standin_drill(lab: Lab, tmp_path: Path) -> Iterator[Drill]:
    """The drill's parts as `lvsha drill` assembles them, with the stand-in as director."""
    client = lab.add_host("client", "192.0.2.1/24")
    directors = []
    for name, number, priority, config in (("a", 11, 150, 0), ("b", 12, 100, 1)):
        host = lab.add_host(name, f"192.0.2.{number}/24")
        address = IPv4Address(f"192.0.2.{number}")
        mac = json.loads(host.ip("-j", "link", "show", "dev", "eth0"))[0]["address"]
        directors.append(Director(name, host, DEFAULT_CONFIGS[config], address, mac, priority))
    prober = VipProber(client, VIP.ip)
    capture = Capture(client)
    removers = {d.name: VipRemover(d.host, "eth0", VIP) for d in directors}
    prober.start()
    capture.start()
    try:
        yield Drill(
            Election(42, VIP, "eth0", 0.1),
            master=directors[0],
            backup=directors[1],
            prober=prober,
            capture=capture,
            launcher=CommandLauncher(STANDIN_COMMAND, tmp_path, InterruptGuard()),
            timing=Timing(start_timeout=10.0),
            log=lambda message: None,
            vip_removers=removers,
        )
    finally:
        prober.stop()
        capture.stop()
        for remover in removers.values():
            remover.close()


def test_a_crash_takes_the_vip_without_starting_a_process(
    standin_drill: Drill, monkeypatch: pytest.MonkeyPatch
) -> None:
    drill = standin_drill
    drill.reset()
    master = drill.master
    assert holds(master.host)
    process = master.process
    assert process is not None

    def no_process(*args: object, **kwargs: object) -> None:
        # A process started between the kill and the VIP going lets the dead host answer.
        raise AssertionError(f"a process was started during the crash: {args}")

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "run", no_process)
        patch.setattr(subprocess, "Popen", no_process)
        drill.crash(master)
    assert process.returncode is not None
    assert not holds(master.host)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # the whole group died, not just the leader
