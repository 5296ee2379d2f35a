"""lvsha announcing a virtual server over BGP through a real FRR, seen from a router's FRR.

A router namespace runs FRR (zebra, bgpd, bfdd); the director runs FRR and `lvsha run
--dry-run` (the in-memory IPVS table: this kernel has no ip_vs), with a bgp: section whose
vtysh reaches the director's FRR; two real servers run HTTP servers. What the router's routing
table holds is what the tests read.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsha.drill.lab import Lab, wait_until
from tests.netns import frr as harness
from tests.netns.director import Director
from tests.netns.frr import Frr, FrrPool

pytestmark = pytest.mark.netns
frrs = harness.frrs

VIP = "198.51.100.10"
ROUTE = f"{VIP}/32"
ROUTER, DIRECTOR = "192.0.2.1", "192.0.2.11"
INTERVAL, TIMEOUT, FALL = 0.2, 0.15, 2
GRACEFUL = 2.0


def config(frr: Frr) -> str:
    return f"""\
global:
  check_defaults: {{interval: {INTERVAL}, timeout: {TIMEOUT}, retries: 0, rise: 1, fall: {FALL}}}
virtual_servers:
  - name: web
    address: {VIP}
    port: 8080
    protocol: TCP
    scheduler: mh
    scheduler_flags: [mh-port]
    forwarding: DR
    real_servers:
      - {{address: 192.0.2.21, port: 8080, checks: [{{type: tcp}}]}}
      - {{address: 192.0.2.22, port: 8080, checks: [{{type: tcp}}]}}
bgp:
  asn: 65001
  router_id: {DIRECTOR}
  peers: [{{address: {ROUTER}, asn: 65000}}]
  announce: [web]
  bfd: {{transmit_interval: 100ms, receive_interval: 100ms, multiplier: 3}}
  graceful_shutdown: {GRACEFUL}
  poll_interval: 200ms
  vtysh: {json.dumps(frr.vtysh_argv)}
"""


class Site:
    """The router, the director (its FRR and lvsha) and two real servers."""

    def __init__(self, lab: Lab, frrs: FrrPool, tmp_path: Path) -> None:
        self.router = frrs.start(lab.add_host("r", f"{ROUTER}/24"))
        self.host = lab.add_host("d", f"{DIRECTOR}/24")
        self.frr = frrs.start(self.host)
        self.real_servers = [lab.add_host(f"rs{n}", f"192.0.2.2{n}/24") for n in (1, 2)]
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.lab = lab
        self.router.router(65000, ROUTER, {DIRECTOR: 65001}, bfd=True)
        self.director = Director(self.host, config(self.frr), "192.0.2.100/24")
        self.state_dir = tmp_path / "state"

    def serve(self, up: bool) -> None:
        for host in self.real_servers:
            if up and host.name not in self.servers:
                process = host.popen(sys.executable, "-m", "http.server", "8080")
                self.lab.processes.remove(process)
                self.servers[host.name] = process
            elif not up and host.name in self.servers:
                process = self.servers.pop(host.name)
                process.kill()
                process.wait()

    def start(self) -> None:
        director = self.director
        director.process = self.host.popen(
            sys.executable, "-m", "lvsha", "run", str(director.config_path),
            "--run-dir", str(director.workdir / "run"), "--dry-run",
            "--state-dir", str(self.state_dir),
            stdout=director.log_path.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def lvsha(self, *args: str) -> subprocess.Popen[str]:
        run_dir = str(self.director.workdir / "run")
        return subprocess.Popen(
            [sys.executable, "-m", "lvsha", *args, "--run-dir", run_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def status(self) -> dict[str, Any]:
        """`lvsha status --json`'s bgp part."""
        output = self.lvsha("status", "--json").communicate(timeout=20)[0]
        answer: dict[str, Any] = json.loads(output)["bgp"]
        return answer

    def announced(self) -> bool:
        return self.router.nexthops(ROUTE) == {DIRECTOR}

    def close(self) -> None:
        self.serve(False)
        if self.director.running():
            self.director.crash()
        print(f"--- lvsha log:\n{self.director.log()}")


@pytest.fixture
def site(lab: Lab, frrs: FrrPool, tmp_path: Path) -> Iterator[Site]:
    built = Site(lab, frrs, tmp_path)
    try:
        yield built
    finally:
        built.close()


def routed_within(site: Site, seconds: float, wanted: bool) -> float:
    began = time.monotonic()
    what = "route announced" if wanted else "route withdrawn"
    wait_until(lambda: site.announced() == wanted, seconds, interval=0.005, what=what)
    return time.monotonic() - began


def test_the_route_follows_quorum_a_handover_and_a_stop(site: Site) -> None:
    site.serve(True)
    site.start()
    wait_until(site.announced, 20, what="the VIP announced once the service has quorum")
    assert site.frr.bgp_established(ROUTER)
    fall_time = FALL * INTERVAL + TIMEOUT

    # The real servers fail: the route leaves within the checks' fall time plus one second.
    site.serve(False)
    took = routed_within(site, fall_time + 1.0, wanted=False)
    print(f"withdrawn {took * 1000:.0f} ms after the real servers failed")
    (route,) = site.status()["routes"]
    assert (route["announced"], route["reason"]) == (False, "no quorum: web")
    wait_until(
        lambda: (
            [(p["address"], p["state"], p["bfd"]) for p in site.status()["peers"]]
            == [(ROUTER, "Established", "up")]
        ),
        10,
        interval=0.2,
        what="lvsha status: the peer established, BFD up",
    )

    site.serve(True)
    took = routed_within(site, 5, wanted=True)
    print(f"announced again {took * 1000:.0f} ms after the real servers came back")

    # A handover: GRACEFUL_SHUTDOWN at the router first, the withdrawal after the wait.
    began = time.monotonic()
    handover = site.lvsha("handover")
    wait_until(
        lambda: site.router.communities(ROUTE) == [["gracefulShutdown"]],
        5,
        interval=0.02,
        what="GRACEFUL_SHUTDOWN at the router",
    )
    marked = time.monotonic() - began
    assert site.announced()
    withdrawn = routed_within(site, GRACEFUL + 3, wanted=False) + marked
    output = handover.communicate(timeout=20)[0]
    assert handover.returncode == 0, output
    print(f"handover: GRACEFUL_SHUTDOWN at {marked * 1000:.0f} ms, gone at {withdrawn:.2f} s")
    assert withdrawn >= GRACEFUL - 0.2
    cancel = site.lvsha("handover", "--cancel")
    assert cancel.wait(timeout=20) == 0
    routed_within(site, 5, wanted=True)
    assert site.router.communities(ROUTE) == [[]]

    # A stop is a planned drain too; the session stays configured in FRR.
    assert site.director.process is not None
    began = time.monotonic()
    site.director.process.send_signal(signal.SIGTERM)
    wait_until(
        lambda: site.router.communities(ROUTE) == [["gracefulShutdown"]],
        5,
        interval=0.02,
        what="GRACEFUL_SHUTDOWN at the router after SIGTERM",
    )
    took = routed_within(site, GRACEFUL + 1.0, wanted=False) + time.monotonic() - began
    assert site.director.process.wait(timeout=20) == 0
    print(f"stop: withdrawn {time.monotonic() - began:.2f} s after SIGTERM")
    assert site.frr.bgp_established(ROUTER)
    log = site.director.log()
    assert "BGP: 198.51.100.10/32 withdrawn (no quorum: web)" in log
    assert "BGP: 198.51.100.10/32 announced with GRACEFUL_SHUTDOWN" in log


def test_a_crashed_lvsha_route_is_withdrawn_by_the_next_and_a_dead_director_by_bfd(
    site: Site,
) -> None:
    site.serve(True)
    site.start()
    wait_until(site.announced, 20, what="the VIP announced")
    director = site.director
    assert director.process is not None
    director.crash()  # SIGKILL: FRR keeps announcing what lvsha wrote
    site.serve(False)
    assert site.announced()
    # The next lvsha finds the route in its ledger and withdraws it: no quorum.
    site.start()
    routed_within(site, 20, wanted=False)
    assert "a previous lvsha announced 198.51.100.10/32" in director.log()
    site.serve(True)
    routed_within(site, 5, wanted=True)

    # The director dies (link cut, FRR and lvsha killed): BFD at 100 ms x 3 tells the router.
    wait_until(lambda: site.router.bfd_up(DIRECTOR), 5, what="BFD up")
    site.host.link_up(False)
    site.frr.kill()
    took = routed_within(site, 2, wanted=False)
    print(f"dead director's route gone from the router {took * 1000:.0f} ms after the cut")
    assert took < 0.5


def test_a_reload_adds_changes_and_removes_the_announcements(site: Site) -> None:
    site.serve(True)
    path = site.director.config_path
    # A VRRP instance beside the announcements: both run on one director.
    vrrp = (
        "vrrp_instances:\n  VI:\n    interface: eth0\n    virtual_router_id: 51\n"
        "    priority: 150\n    version: 3\n    advert_interval: 100ms\n"
        "    virtual_ipaddresses: ['192.0.2.100/24']\n"
    )
    announcing = path.read_text() + vrrp
    without = announcing.replace(
        announcing[announcing.index("bgp:") : announcing.index("vrrp_")], ""
    )
    path.write_text(without)
    site.start()
    wait_until(site.director.holds_vip, 20, what="the VRRP instance master")

    def reload() -> str:
        process = site.lvsha("reload")
        output = process.communicate(timeout=30)[0]
        assert process.returncode == 0, output
        return output

    path.write_text(announcing)
    assert "bgp" in reload()
    routed_within(site, 10, wanted=True)
    # A changed drain wait moves nothing: the route stays, no withdrawal is logged.
    path.write_text(announcing.replace(f"graceful_shutdown: {GRACEFUL}", "graceful_shutdown: 0"))
    assert "graceful_shutdown: 2 -> 0: applies to the next handover or stop" in reload()
    assert site.announced()
    assert "withdrawn" not in site.director.log()
    # Without bgp: the route leaves at once (graceful_shutdown is 0 now); the session stays.
    path.write_text(without)
    reload()
    routed_within(site, 5, wanted=False)
    assert "BGP: 198.51.100.10/32 withdrawn (drained)" in site.director.log()
    assert site.frr.bgp_established(ROUTER)
    assert site.director.holds_vip()
    assert "-> MASTER" in site.director.log() and "MASTER ->" not in site.director.log()
    assert "GRACEFUL_SHUTDOWN" not in site.director.log()
    # bgp: back without a drain wait: a stop withdraws within the checks' fall time plus 1 s.
    path.write_text(announcing.replace(f"graceful_shutdown: {GRACEFUL}", "graceful_shutdown: 0"))
    reload()
    routed_within(site, 10, wanted=True)
    assert site.director.process is not None
    site.director.process.send_signal(signal.SIGTERM)
    took = routed_within(site, FALL * INTERVAL + TIMEOUT + 1.0, wanted=False)
    print(f"stop without a drain wait: withdrawn {took * 1000:.0f} ms after SIGTERM")
    assert site.director.process.wait(timeout=20) == 0
