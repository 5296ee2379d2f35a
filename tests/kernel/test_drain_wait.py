"""`lvsha drain --wait` on the real IPVS (issue 12): it returns when the kernel reports no
active connection to the real server, or at its timeout saying how many are left.

A NAT director (tests/kernel/nat_lab.py) runs `lvsha run` with one real server behind it; the
client holds one long-lived TCP connection through IPVS to that real server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.kernel.nat_lab import build_nat_lab
from tests.netns.director import REPO, Director

pytestmark = pytest.mark.kernel

VIP = "192.0.2.100"
REAL_SERVER = "10.0.0.21"
PORT = 8080
SETTLE = 240.0
"""Start-up waits: the one-vCPU TCG VM takes tens of seconds to import lvsha's children."""
CLI_TIMEOUT = 120.0
"""A CLI run in the VM (Python start-up alone takes seconds there)."""
WAIT = 3.0

CONFIG = f"""\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 52
    priority: 150
    version: 3
    advert_interval: 100ms
    virtual_ipaddresses: ['{VIP}/24']
    garp: {{delay: 0}}
virtual_servers:
  - name: web
    address: {VIP}
    port: 80
    protocol: TCP
    scheduler: rr
    forwarding: NAT
    real_servers:
      - address: {REAL_SERVER}
        port: {PORT}
        checks: [{{type: tcp, interval: 1s, timeout: 1s, retries: 0, rise: 1, fall: 2}}]
"""

HOLD_SERVER = """\
import socket, threading
listener = socket.create_server(("0.0.0.0", {port}), backlog=16)
def serve(connection):
    with connection:
        while connection.recv(4096):
            pass
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
"""


@pytest.fixture
def director(lab: Lab, tmp_path: Path) -> Iterator[tuple[Director, Host]]:
    build_nat_lab(lab, {"rs1": REAL_SERVER})
    lab.hosts["rs1"].popen(sys.executable, "-c", HOLD_SERVER.format(port=PORT))
    director = Director(lab.hosts["dir"], CONFIG, f"{VIP}/24")
    with director.log_path.open("ab") as log:
        director.process = director.host.popen(
            sys.executable, "-m", "lvsha", "run", str(director.config_path),
            "--run-dir", str(director.workdir / "run"),
            "--state-dir", str(director.workdir / "state"),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO,
        )  # fmt: skip
    try:
        yield director, lab.hosts["client"]
    finally:
        if director.running():
            director.crash()


def active_connections(director: Director) -> int | None:
    done = director.host.run("ipvsadm", "-Ln", "-t", f"{VIP}:80", check=False)
    for line in done.stdout.splitlines():
        words = line.split()
        if words[:2] == ["->", f"{REAL_SERVER}:{PORT}"]:
            return int(words[4])
    return None


def drain(director: Director, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "lvsha", "drain", "web", f"{REAL_SERVER}:{PORT}", "--json",
        "--run-dir", str(director.workdir / "run"), *args,
    ]  # fmt: skip


def test_drain_wait_returns_when_the_last_connection_closes(
    director: tuple[Director, Host],
) -> None:
    lvsha, client = director
    wait_until(lambda: active_connections(lvsha) == 0, SETTLE, interval=0.5, what="rs1 in IPVS")
    held = client.call(lambda: socket.create_connection((VIP, 80), timeout=10))
    try:
        held.sendall(b"hello\n")
        wait_until(lambda: active_connections(lvsha) == 1, 30, interval=0.2, what="1 active")

        # Within the timeout, saying one connection is left.
        done = subprocess.run(
            drain(lvsha, "--wait", "--timeout", str(WAIT + 1)),
            capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=REPO, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        waited = json.loads(done.stdout)["waited"]
        assert waited["done"] is False and waited["left"] == 1
        assert WAIT - 0.5 <= waited["seconds"] <= WAIT + 0.5
        assert active_connections(lvsha) == 1  # drained: weight 0, the connection goes on
        held.sendall(b"still here\n")

        # And returning only once the connection has closed.
        waiting = subprocess.Popen(
            drain(lvsha, "--wait", "--timeout", "600"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        try:
            wait_until(
                lambda: lvsha.log().count("waiting up to") >= 2,
                CLI_TIMEOUT,
                interval=0.2,
                what="the second drain --wait is waiting",
            )
            assert waiting.poll() is None, "drain --wait returned with a connection open"
        finally:
            closed_at = time.monotonic()
            held.close()
        out, err = waiting.communicate(timeout=CLI_TIMEOUT)
        assert waiting.returncode == 0, out + err
        answer = json.loads(out)
        assert answer["waited"]["done"] is True and answer["waited"]["left"] == 0
        assert time.monotonic() > closed_at
        assert active_connections(lvsha) == 0
    finally:
        held.close()
