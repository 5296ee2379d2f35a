"""`lvsha run --dry-run` with virtual servers: checks, syncer, sync daemon and maintenance.

The IPVS table is the in-memory port (this kernel has no ip_vs; the real one is tested in
the VM); everything else is real: HTTP servers in lab hosts, the check probes, the VRRP role
relayed by the parent to the checker, and the metrics the checker exports.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import Director

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"

CONFIG = """\
global:
  lvs_sync_daemon: {interface: eth0, vrrp_instance: VI}
  check_defaults: {interval: 200ms, timeout: 150ms, retries: 0, rise: 1, fall: 2}
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 42
    priority: 150
    version: 3
    advert_interval: 100ms
    virtual_ipaddresses: ['192.0.2.100/24']
virtual_servers:
  - name: web
    address: 192.0.2.100
    port: 80
    protocol: TCP
    real_servers:
      - {address: 192.0.2.21, port: 8080, checks: [{type: http, path: /}]}
      - {address: 192.0.2.22, port: 8080, checks: [{type: http, path: /}]}
"""


def metric(director: Director, name: str) -> float | None:
    path = director.workdir / "run" / "metrics-checker.prom"
    if not path.exists():
        return None
    match = re.search(rf"^{re.escape(name)} (\S+)$", path.read_text(), re.MULTILINE)
    return float(match.group(1)) if match else None


def web_server(host: Host, directory: Path) -> None:
    host.popen(
        sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0",
        "--directory", str(directory),
    )  # fmt: skip


def test_checker_follows_real_servers_and_the_vrrp_role(lab: Lab, tmp_path: Path) -> None:
    director_host = lab.add_host("d", "192.0.2.11/24")
    rs1 = lab.add_host("rs1", "192.0.2.21/24")
    rs2 = lab.add_host("rs2", "192.0.2.22/24")
    (tmp_path / "index.html").write_text("ok\n")
    web_server(rs1, tmp_path)
    web_server(rs2, tmp_path)
    director = Director(director_host, CONFIG, VIP)
    director.process = director_host.popen(
        sys.executable, "-m", "lvsha", "run", str(director.config_path),
        "--run-dir", str(director.workdir / "run"), "--dry-run",
        stdout=director.log_path.open("ab"), stderr=-2, start_new_session=True,
    )  # fmt: skip
    healthy = 'lvsha_real_servers{health="healthy"}'
    try:
        wait_until(lambda: metric(director, healthy) == 2.0, 20, what="both real servers up")
        assert metric(director, 'lvsha_ipvs_operations_total{operation="AddService"}') == 1.0
        assert metric(director, 'lvsha_ipvs_operations_total{operation="AddDestination"}') == 2.0
        # the parent relayed VRRP's MASTER to the checker, which started the master sync daemon
        wait_until(lambda: "start the master sync daemon" in director.log(), 10, what="syncd")

        # rs1's service stops: after `fall` failed rounds it leaves the table
        rs1_server = lab.processes[0]
        rs1_server.kill()
        wait_until(lambda: metric(director, healthy) == 1.0, 5, what="rs1 down")
        wait_until(
            lambda: (
                metric(director, 'lvsha_ipvs_operations_total{operation="DeleteDestination"}')
                == 1.0
            ),
            5,
            what="rs1 removed from the table",
        )

        # draining rs2 by a file flag keeps it at weight 0 (an edit, not a removal)
        (director.workdir / "run" / "maintenance").mkdir(exist_ok=True)
        (director.workdir / "run" / "maintenance" / "192.0.2.22_8080").write_text("upgrade\n")
        wait_until(
            lambda: (
                metric(director, 'lvsha_ipvs_operations_total{operation="EditDestination"}') == 1.0
            ),
            5,
            what="rs2 drained",
        )
        assert metric(director, 'lvsha_event_loop_lag_max_seconds{process="checker"}') is not None
    finally:
        director.crash()
    log = director.log()
    assert "checker child started" in log and "vrrp child started" in log


def child_pids(log: str, name: str) -> list[int]:
    return [int(pid) for pid in re.findall(rf"{name} child started \(pid (\d+)\)", log)]


def test_children_do_not_outlive_a_killed_parent(lab: Lab, tmp_path: Path) -> None:
    host = lab.add_host("d", "192.0.2.11/24")
    director = Director(host, CONFIG, VIP)
    director.process = host.popen(
        sys.executable, "-m", "lvsha", "run", str(director.config_path),
        "--run-dir", str(director.workdir / "run"), "--dry-run",
        stdout=director.log_path.open("ab"), stderr=-2, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: "main info lvsha.supervisor: ready" in director.log(), 20, what="up")
        children = child_pids(director.log(), "vrrp") + child_pids(director.log(), "checker")
        assert len(children) == 2
        director.process.kill()  # the parent alone, as a crash of lvsha run would
        director.process.wait(timeout=10)
        wait_until(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
            15,
            what="both children gone",
        )
    finally:
        if director.running():
            director.crash()


def start_dry_run(director: Director) -> None:
    director.process = director.host.popen(
        sys.executable, "-m", "lvsha", "run", str(director.config_path),
        "--run-dir", str(director.workdir / "run"), "--dry-run",
        stdout=director.log_path.open("ab"), stderr=-2, start_new_session=True,
    )  # fmt: skip


def syncd_lines(log: str) -> list[str]:
    return re.findall(r"lvsha\.ipvs\.syncd: (VI .*sync daemon.*)", log)


def test_a_restarted_checker_on_the_master_starts_the_master_sync_daemon(lab: Lab) -> None:
    """Issue 9, finding 10a: it used to start the backup daemon ("no role yet") and keep it
    until the next VRRP transition."""
    host = lab.add_host("d", "192.0.2.11/24")
    director = Director(host, CONFIG, VIP)
    start_dry_run(director)
    try:
        wait_until(director.holds_vip, 20, what="master")
        wait_until(
            lambda: any(
                "start the master sync daemon" in line for line in syncd_lines(director.log())
            ),
            10,
            what="the first checker's master sync daemon",
        )
        checker = director.child_pid("lvsha.daemon.checker_process")
        assert checker is not None
        before = len(syncd_lines(director.log()))
        os.kill(checker, signal.SIGKILL)
        wait_until(
            lambda: len(child_pids(director.log(), "checker")) == 2, 15, what="checker restarted"
        )
        wait_until(
            lambda: len(syncd_lines(director.log())) > before, 10, what="the new checker's daemon"
        )
        assert director.holds_vip()
        after = syncd_lines(director.log())[before:]
        assert after[0].startswith("VI MASTER: start the master sync daemon"), after
        assert not any("backup" in line for line in after), after
    finally:
        director.crash()


def test_a_fifo_in_the_maintenance_directory_stops_no_check(lab: Lab, tmp_path: Path) -> None:
    """Issue 9, finding 4: the checker opened a FIFO named for a real server in its event loop
    and waited for a writer, with every health check stopped meanwhile."""
    director_host = lab.add_host("d", "192.0.2.11/24")
    rs1 = lab.add_host("rs1", "192.0.2.21/24")
    rs2 = lab.add_host("rs2", "192.0.2.22/24")
    (tmp_path / "index.html").write_text("ok\n")
    web_server(rs1, tmp_path)
    web_server(rs2, tmp_path)
    director = Director(director_host, CONFIG, VIP)
    maintenance = director.workdir / "run" / "maintenance"
    maintenance.mkdir(parents=True)
    os.mkfifo(maintenance / "192.0.2.21_8080")  # names rs1: not a regular file, ignored
    (maintenance / "192.0.2.22_8080").write_text("upgrade\n")  # drains rs2
    start_dry_run(director)
    healthy = 'lvsha_real_servers{health="healthy"}'
    try:
        # rs1 by name: the count alone also reads 1 while rs2 passes its first check before the
        # first look at the maintenance directory drains it (and rs1 has not passed yet)
        rs1_up = 'lvsha_real_server_up{real_server="192.0.2.21:8080",virtual_server="web"}'
        rs2_up = 'lvsha_real_server_up{real_server="192.0.2.22:8080",virtual_server="web"}'
        wait_until(
            lambda: (
                metric(director, healthy) == 1.0
                and metric(director, rs1_up) == 1.0
                and metric(director, rs2_up) == 0.0
            ),
            20,
            what="rs1 up, rs2 drained",
        )
        assert metric(director, 'lvsha_ipvs_operations_total{operation="AddDestination"}') == 2.0
        # the checks keep running: rs1's service stops and it leaves the table
        lab.processes[0].kill()
        wait_until(lambda: metric(director, healthy) == 0.0, 5, what="rs1 down")
        wait_until(
            lambda: (
                metric(director, 'lvsha_ipvs_operations_total{operation="DeleteDestination"}')
                == 1.0
            ),
            5,
            what="rs1 removed from the table",
        )
    finally:
        director.crash()
    log = director.log()
    assert log.count("is a FIFO, not a regular file: ignored") == 1
    assert "maintenance file" in log and "upgrade" in log
