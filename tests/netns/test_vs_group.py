"""A virtual server group in the daemon: `lvsha run --dry-run` with one virtual server serving a
group of three members (one a two-address range, one a firewall mark), two real servers with
tcp checks, in lab hosts.

Every member gets both real servers; one real server stops and leaves every member (or stays
at weight 0 in each with inhibit_on_failure); and the real servers count the connections the
checks make: one check per round, not one per member. The IPVS table is the in-memory port
(this kernel has no ip_vs); `lvsha status --json` reads it through the control socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import REPO, Director

pytestmark = pytest.mark.netns

INTERVAL = 0.2
CONFIG = f"""\
global:
  check_defaults: {{interval: {INTERVAL}, timeout: 150ms, retries: 0, rise: 1, fall: 2}}
virtual_server_groups:
  web:
    members: [192.0.2.100:80, 192.0.2.101-102:80, fwmark 7]
virtual_servers:
  - group: web
    protocol: TCP
    scheduler: rr
    real_servers:
      - {{address: 192.0.2.21, port: 8080, checks: [{{type: tcp}}]}}
      - {{address: 192.0.2.22, port: 8080, checks: [{{type: tcp}}]}}
"""
MEMBERS = ["192.0.2.100:80/tcp", "192.0.2.101:80/tcp", "192.0.2.102:80/tcp", "fwmark 7/ipv4"]

# A TCP server that appends a line to a file for every connection it accepts: the checks'
# probes, counted at the real server.
COUNTING_SERVER = """\
import socket, sys
address, port, count_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, port))
listener.listen(128)
print("ready", flush=True)
with open(count_file, "a", buffering=1) as counted:
    while True:
        connection, _ = listener.accept()
        connection.close()
        counted.write("x\\n")
"""


def counting_server(host: Host, address: str, count_file: Path) -> subprocess.Popen[bytes]:
    process = host.popen(
        sys.executable, "-c", COUNTING_SERVER, address, "8080", str(count_file),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process


def connections(count_file: Path) -> int:
    return count_file.read_text().count("\n") if count_file.exists() else 0


def status(director: Director) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "lvsha", "status", "--json", "--run-dir", str(run_dir(director))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        return {}
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def run_dir(director: Director) -> Path:
    return director.workdir / "run"


def kernel_weights(director: Director) -> dict[str, dict[str, int | None]]:
    """Each service's real servers and their weight in the (in-memory) kernel table."""
    services = status(director).get("services") or {}
    return {
        vs["service"]: {rs["address"]: rs["kernel_weight"] for rs in vs["real_servers"]}
        for vs in services.get("virtual_servers") or []
        if vs["in_kernel"]
    }


@pytest.mark.parametrize("inhibit", [False, True], ids=["removed", "inhibit_on_failure"])
def test_a_group_follows_its_real_servers_checked_once(
    lab: Lab, tmp_path: Path, inhibit: bool
) -> None:
    director_host = lab.add_host("d", "192.0.2.11/24")
    rs1 = lab.add_host("rs1", "192.0.2.21/24")
    rs2 = lab.add_host("rs2", "192.0.2.22/24")
    counts = {"192.0.2.21": tmp_path / "rs1.count", "192.0.2.22": tmp_path / "rs2.count"}
    counting_server(rs1, "192.0.2.21", counts["192.0.2.21"])
    rs2_server = counting_server(rs2, "192.0.2.22", counts["192.0.2.22"])
    config = CONFIG
    if inhibit:
        config = config.replace(
            "    scheduler: rr\n", "    scheduler: rr\n    inhibit_on_failure: true\n"
        )
    director = Director(director_host, config, "192.0.2.100/24")
    director.process = director_host.popen(
        sys.executable, "-m", "lvsha", "run", str(director.config_path),
        "--run-dir", str(run_dir(director)), "--dry-run",
        "--state-dir", str(director.workdir / "state"),
        stdout=director.log_path.open("ab"), stderr=-2, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    both = {"192.0.2.21": 1, "192.0.2.22": 1}
    try:
        wait_until(
            lambda: kernel_weights(director) == dict.fromkeys(MEMBERS, both),
            30,
            interval=0.2,
            what="both real servers in every member",
        )
        # The probes each real server gets in a few seconds: one per round, where one check
        # per member would make four.
        before = {address: connections(path) for address, path in counts.items()}
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started >= 3.0, 5, what="three seconds of checks")
        elapsed = time.monotonic() - started
        rounds = elapsed / INTERVAL
        for address, path in counts.items():
            probes = connections(path) - before[address]
            assert rounds * 0.5 <= probes <= rounds + 2, (address, probes, rounds)

        rs2_server.kill()
        rs2_server.wait(timeout=10)
        gone = (
            {"192.0.2.21": 1, "192.0.2.22": 0} if inhibit else {"192.0.2.21": 1, "192.0.2.22": None}
        )
        wait_until(
            lambda: kernel_weights(director) == dict.fromkeys(MEMBERS, gone),
            15,
            interval=0.2,
            what="192.0.2.22 out of every member",
        )
        answer = status(director)
        names = {vs["name"] for vs in answer["services"]["virtual_servers"]}
        assert names == {"web"}
        # One verdict for the group's real server, not one per member.
        assert director.log().count("web 192.0.2.22:8080: healthy -> unhealthy") == 1
    finally:
        director.crash()


def test_a_reload_adds_and_removes_members_and_nothing_else(lab: Lab, tmp_path: Path) -> None:
    director_host = lab.add_host("d", "192.0.2.11/24")
    for n, address in enumerate(("192.0.2.21", "192.0.2.22"), 1):
        host = lab.add_host(f"rs{n}", f"{address}/24")
        counting_server(host, address, tmp_path / f"rs{n}.count")
    director = Director(director_host, CONFIG, "192.0.2.100/24")
    director.process = director_host.popen(
        sys.executable, "-m", "lvsha", "run", str(director.config_path),
        "--run-dir", str(run_dir(director)), "--dry-run",
        "--state-dir", str(director.workdir / "state"),
        stdout=director.log_path.open("ab"), stderr=-2, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    both = {"192.0.2.21": 1, "192.0.2.22": 1}
    try:
        wait_until(
            lambda: kernel_weights(director) == dict.fromkeys(MEMBERS, both),
            30,
            interval=0.2,
            what="both real servers in every member",
        )
        director.config_path.write_text(
            CONFIG.replace("192.0.2.101-102:80, fwmark 7]", "192.0.2.101-102:80, 192.0.2.103:80]")
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lvsha",
                "reload",
                "--json",
                "--run-dir",
                str(run_dir(director)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        plan = json.loads(done.stdout)["plan"]["changes"]
        assert [(c["area"], c["action"], c["subject"], c["cost"]) for c in plan] == [
            ("virtual_service", "add", "TCP 192.0.2.103:80", "hitless"),
            ("virtual_service", "remove", "FWM 7 INET", "connection reset"),
        ]
        members = [*MEMBERS[:3], "192.0.2.103:80/tcp"]
        wait_until(
            lambda: kernel_weights(director) == dict.fromkeys(members, both),
            10,
            interval=0.2,
            what="the new member with both real servers, the fwmark gone",
        )
        # The operations of the reload: the new member's service and destinations, the removed
        # member's; none on the members that stay.
        applied = [line for line in director.log().splitlines() if "applied: checks" in line]
        assert len(applied) == 1, applied
        assert (
            "checks: 2 kept, 0 started, 0 revived, 0 stopped; real servers: 0 added, 0 removed, "
            "0 with other checks; IPVS operations: 2 AddDestination, 1 AddService, "
            "2 DeleteDestination, 1 DeleteService (in "
        ) in applied[0]
    finally:
        director.crash()
