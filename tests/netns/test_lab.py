"""The namespace lab builds what it says and removes all of it."""

from __future__ import annotations

import socket
import subprocess

import pytest

from lvsha.drill.lab import Lab, in_namespace, wait_until

pytestmark = pytest.mark.netns


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_hosts_reach_each_other_and_everything_is_removed(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    assert {lab.switch, a.namespace, b.namespace} <= namespaces()
    a.run("ping", "-c1", "-W2", "192.0.2.2")
    a.run("ping", "-6", "-c1", "-W2", "2001:db8::2")
    lab.close()
    assert not {lab.switch, a.namespace, b.namespace} & namespaces()


def test_cut_cable_takes_carrier_down(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    a.link_up(False)
    wait_until(lambda: "NO-CARRIER" in a.ip("link", "show", "eth0"), 5, what="carrier down")
    a.link_up(True)
    wait_until(lambda: "NO-CARRIER" not in a.ip("link", "show", "eth0"), 5, what="carrier up")


def test_sockets_opened_in_a_namespace_stay_there(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")

    def bind_there() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("192.0.2.1", 0))  # only exists inside the namespace
        return sock

    sock = in_namespace(a.namespace, bind_there)
    try:
        assert sock.getsockname()[0] == "192.0.2.1"
    finally:
        sock.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as here, pytest.raises(OSError):
        here.bind(("192.0.2.1", 0))


def test_processes_started_in_the_lab_end_with_it(lab: Lab) -> None:
    a = lab.add_host("a")
    process = a.popen("sleep", "600")
    lab.close()
    assert process.poll() is not None
