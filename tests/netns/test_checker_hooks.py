"""`lvsha run --dry-run` runs real-server and quorum hooks (keepalived's notify_up / notify_down,
quorum_up / quorum_down, omega): TCP servers in lab hosts stop and start again, and each hook
appends a line to a file the test reads. Script security is on (the default): the hooks are
`/bin/sh -c` with inline code, which it accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from lvsha.drill.lab import Lab, wait_until
from tests.netns import servers
from tests.netns.director import Director
from tests.netns.test_daemon_checker import metric, start_dry_run

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"


def hook(ran: Path, what: str) -> str:
    code = f'echo "{what} $LVSHA_NOTIFY_STATE $LVSHA_RS_ADDRESS" >> {shlex.quote(str(ran))}'
    return f"[/bin/sh, -c, {shlex.quote(code)}]"


def config(ran: Path) -> str:
    real_servers = "\n".join(
        f"      - {{address: {address}, port: 8080, checks: [{{type: tcp}}],\n"
        f"         notify_up: {hook(ran, 'notify_up')}, notify_down: {hook(ran, 'notify_down')}}}"
        for address in ("192.0.2.21", "192.0.2.22")
    )
    return f"""\
global:
  check_defaults: {{interval: 200ms, timeout: 150ms, retries: 0, rise: 1, fall: 2}}
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
    quorum: 2
    omega: true
    quorum_up: {hook(ran, "quorum_up")}
    quorum_down: {hook(ran, "quorum_down")}
    real_servers:
{real_servers}
"""


def lines(ran: Path) -> list[str]:
    return ran.read_text().splitlines() if ran.exists() else []


def test_hooks_run_on_real_server_and_quorum_transitions_and_at_stop(lab: Lab) -> None:
    director_host = lab.add_host("d", "192.0.2.11/24")
    rs1 = lab.add_host("rs1", "192.0.2.21/24")
    rs2 = lab.add_host("rs2", "192.0.2.22/24")
    web1 = servers.start(rs1, "tcp", "--address", "192.0.2.21", "--port", "8080")
    web2 = servers.start(rs2, "tcp", "--address", "192.0.2.22", "--port", "8080")
    director = Director(director_host, "", VIP)
    ran = director.workdir / "hooks-ran"
    director.config_path.write_text(config(ran))
    start_dry_run(director)
    healthy = 'lvsha_real_servers{health="healthy"}'
    try:
        wait_until(lambda: metric(director, healthy) == 2.0, 20, what="both real servers up")

        # rs1 fails: its notify_down, and web (quorum 2) loses quorum
        servers.stop(web1)
        wait_until(lambda: len(lines(ran)) == 2, 10, what="notify_down and quorum_down")
        assert sorted(lines(ran)) == ["notify_down DOWN 192.0.2.21", "quorum_down DOWN "]

        # rs1 returns: its notify_up, and quorum is back
        web1 = servers.start(rs1, "tcp", "--address", "192.0.2.21", "--port", "8080")
        wait_until(lambda: len(lines(ran)) == 4, 10, what="notify_up and quorum_up")
        assert sorted(lines(ran)[2:]) == ["notify_up UP 192.0.2.21", "quorum_up UP "]

        # omega: stopping lvsha runs the down hooks of what is up
        assert director.stop() == 0
        assert sorted(lines(ran)[4:]) == [
            "notify_down DOWN 192.0.2.21",
            "notify_down DOWN 192.0.2.22",
            "quorum_down DOWN ",
        ]
        assert "hook of" in director.log()
    finally:
        if director.running():
            director.crash()
        servers.stop(web1)
        servers.stop(web2)
