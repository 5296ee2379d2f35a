"""The control API and its CLI against two running directors (issue 12).

Two `lvsha run --dry-run` directors (VRRP for real, the IPVS table in memory) with real servers
served by lab hosts. Every verb goes through the real CLI, as an operator types it: `status`
is compared with `ip addr`, with the peer's view and with the in-memory table's weights;
drain, maint and ready change that table; `handover` moves the VIP while a client probes it
every 10 ms; the overrides survive a restart; a member of the read group may look, not touch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.drill.probe import Probe, VipProber, answered_in_time
from tests.netns.director import REPO, Director
from tests.tools import api_schema

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
READ_GID = 64111
REPLY_TIMEOUT = 0.2
"""A probe answered later than this counts as lost."""
NOBODY = 65534

CONFIG = """\
global:
  control: {{read_group: {read_gid}}}
  check_defaults: {{interval: 200ms, timeout: 150ms, retries: 0, rise: 1, fall: 1}}
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 73
    priority: {priority}
    version: 3
    advert_interval: 50ms
    virtual_ipaddresses: ['192.0.2.100/24']
    garp: {{delay: 0}}
virtual_servers:
  - name: web
    address: 192.0.2.100
    port: 80
    protocol: TCP
    real_servers:
      - {{address: 192.0.2.21, port: 8080, weight: 3, checks: [{{type: tcp}}]}}
      - {{address: 192.0.2.22, port: 8080, weight: 2, checks: [{{type: tcp}}]}}
  - name: alt
    address: 192.0.2.100
    port: 81
    protocol: TCP
    real_servers:
      - {{address: 192.0.2.21, port: 8080, weight: 1, checks: [{{type: tcp}}]}}
"""


class Operator:
    """One director, started with its own state directory, driven through the CLI."""

    def __init__(self, host: Host, priority: int) -> None:
        self.director = Director(host, CONFIG.format(priority=priority, read_gid=READ_GID), VIP)
        self.priority = priority
        os.chmod(self.director.workdir, 0o755)  # the read-group user reaches the socket
        self.run_dir = self.director.workdir / "run"
        self.state_dir = self.director.workdir / "state"

    def start(self) -> None:
        with self.director.log_path.open("ab") as log:
            self.director.process = self.director.host.popen(
                sys.executable, "-m", "lvsha", "run", str(self.director.config_path),
                "--run-dir", str(self.run_dir), "--dry-run",
                "--state-dir", str(self.state_dir),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=REPO,
            )  # fmt: skip

    def cli(
        self, *args: str, user: int | None = None, groups: Sequence[int] = ()
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lvsha", *args, "--run-dir", str(self.run_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
            user=user,
            group=None if user is None else user,
            extra_groups=None if user is None else list(groups),
        )

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        api_schema.check("status", answer)
        return answer

    def instance(self) -> dict[str, Any]:
        vrrp = self.status()["vrrp"]
        assert vrrp is not None
        (instance,) = vrrp["instances"]
        return dict(instance)

    def real_servers(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        services = self.status()["services"]
        assert services is not None and services["error"] is None, services
        return {
            (vs["name"], rs["address"], rs["port"]): rs
            for vs in services["virtual_servers"]
            for rs in vs["real_servers"]
        }

    def weights(self) -> dict[tuple[str, str, int], int | None]:
        """The in-memory IPVS table as status reads it: each real server's kernel weight
        (None: not in the table)."""
        return {key: rs["kernel_weight"] for key, rs in self.real_servers().items()}

    def up(self) -> bool:
        try:
            return self.status()["vrrp"]["updated_at"] is not None
        except (AssertionError, json.JSONDecodeError):
            return False


WEB21, WEB22, ALT21 = (
    ("web", "192.0.2.21", 8080),
    ("web", "192.0.2.22", 8080),
    ("alt", "192.0.2.21", 8080),
)
ALL_UP = {WEB21: 3, WEB22: 2, ALT21: 1}


@pytest.fixture
def pair(lab: Lab) -> Iterator[tuple[Operator, Operator, Host]]:
    client = lab.add_host("client", "192.0.2.1/24")
    hosts = [
        lab.add_host(name, address)
        for name, address in (("a", "192.0.2.11/24"), ("b", "192.0.2.12/24"))
    ]
    for name, address in (("rs1", "192.0.2.21/24"), ("rs2", "192.0.2.22/24")):
        lab.add_host(name, address).popen(
            sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0",
            "--directory", "/nonexistent-lvsha-test",
        )  # fmt: skip
    a, b = Operator(hosts[0], 150), Operator(hosts[1], 100)
    try:
        a.start()
        b.start()
        wait_until(a.up, 60, interval=0.2, what="director a answers status")
        wait_until(b.up, 60, interval=0.2, what="director b answers status")
        wait_until(a.director.holds_vip, 30, what="a holds the VIP")
        yield a, b, client
    finally:
        for operator in (a, b):
            if operator.director.running():
                operator.director.crash()


def test_status_and_the_real_server_verbs(pair: tuple[Operator, Operator, Host]) -> None:
    a, b, _ = pair

    # status agrees with ip addr and with the peer's view.
    wait_until(lambda: a.instance()["state"] == "MASTER", 10, what="a MASTER in status")
    wait_until(lambda: b.instance()["state"] == "BACKUP", 10, what="b BACKUP in status")
    assert a.director.holds_vip() and not b.director.holds_vip()
    mine, theirs = a.instance(), b.instance()
    assert mine["master"]["self"] is True and mine["effective_priority"] == 150
    assert mine["vips"] == [VIP] and mine["adverts_sent"] > 0
    heard = theirs["master"]
    assert (heard["address"], heard["priority"], heard["self"]) == ("192.0.2.11", 150, False)
    assert heard["advert_interval"] == pytest.approx(0.05)
    assert theirs["adverts_received"] > 0
    # The in-memory table: every real server in, at its configured weight, checks passing.
    wait_until(lambda: a.weights() == ALL_UP, 20, interval=0.2, what="all real servers in")
    rs = a.real_servers()[WEB21]
    assert (rs["health"], rs["admin"], rs["configured_weight"]) == ("healthy", "ready", 3)
    assert rs["checks"][0]["ok"] is True and rs["checks"][0]["latency"] is not None
    text = a.cli("status")
    assert text.returncode == 0, text.stderr
    assert "\033[" not in text.stdout  # a pipe gets no colour
    assert "-> 192.0.2.21:8080" in text.stdout and "MASTER" in text.stdout

    # drain: weight 0, the checks keep running.
    done = a.cli("drain", "web", "192.0.2.21:8080", "--reason", "kernel update")
    assert done.returncode == 0, done.stderr
    assert "web 192.0.2.21:8080: drained" in done.stdout
    assert a.weights() == {**ALL_UP, WEB21: 0}
    drained = a.real_servers()[WEB21]
    assert (drained["health"], drained["admin"], drained["admin_source"]) == (
        "disabled", "drain", "api",
    )  # fmt: skip
    assert "kernel update" in (drained["admin_reason"] or "")
    probed_at = drained["checks"][0]["at"]
    wait_until(
        lambda: a.real_servers()[WEB21]["checks"][0]["at"] > probed_at, 5, what="checks go on"
    )
    again = a.cli("drain", "web", "192.0.2.21:8080")
    assert again.returncode == 0 and "already drained" in again.stdout  # idempotent

    # maint: out of the table, checks paused; by address alone: in every virtual server.
    done = a.cli("maint", "192.0.2.21")
    assert done.returncode == 0, done.stderr
    assert a.weights() == {**ALL_UP, WEB21: None, ALT21: None}
    paused = a.real_servers()[ALT21]
    assert (paused["health"], paused["admin"]) == ("maintenance", "maint")
    assert paused["checks"][0]["status"] == "paused"

    # ready: back to what the checks decide.
    done = a.cli("ready", "alt", "192.0.2.21:8080")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: a.weights()[ALT21] == 1, 5, interval=0.1, what="alt's rs back")
    assert a.weights()[WEB21] is None  # still in maintenance in web

    # A maintenance file shows up the same way, and ready says it still drains.
    (a.run_dir / "maintenance").mkdir(exist_ok=True)
    (a.run_dir / "maintenance" / "192.0.2.22_8080").write_text("rack move\n")
    wait_until(lambda: a.weights()[WEB22] == 0, 5, interval=0.1, what="file drain")
    assert a.real_servers()[WEB22]["admin_source"] == "file"
    note = a.cli("ready", "web", "192.0.2.22:8080")
    assert note.returncode == 0 and "maintenance file" in note.stdout, note.stdout

    # Mistakes get a clear error and change nothing.
    for args, message in (
        (("drain", "web", "192.0.2.99:8080"), "no real server 192.0.2.99:8080 in web"),
        (("drain", "nosuch", "192.0.2.21"), "no virtual server 'nosuch'"),
        (("maint", "web1"), "'web1' is not a real server"),
        (("handover", "VI_9"), "no VRRP instance 'VI_9'"),
    ):
        done = a.cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, done.stderr
    assert a.weights() == {**ALL_UP, WEB21: None, WEB22: 0}

    # The overrides survive a reload, and apply to what the new file changes.
    config = a.director.config_path
    config.write_text(config.read_text().replace("weight: 1,", "weight: 4,"))
    reloaded = a.cli("reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert a.weights() == {**ALL_UP, WEB21: None, WEB22: 0, ALT21: 4}
    assert a.status()["generation"] == 2

    # The events: the transitions, and a followed stream gets the next one.
    events = a.cli("events", "--json")
    assert events.returncode == 0, events.stderr
    kinds = [json.loads(line)["type"] for line in events.stdout.splitlines()]
    assert "vrrp_state" in kinds and "config_applied" in kinds
    follower = subprocess.Popen(
        [sys.executable, "-m", "lvsha", "events", "--follow", "--json",
         "--run-dir", str(a.run_dir)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    followed: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: followed.extend(json.loads(line) for line in follower.stdout or ()),
        daemon=True,
    )
    reader.start()
    try:
        wait_until(lambda: len(followed) >= len(kinds), 20, what="the replay")
        assert a.cli("reload").returncode == 0
        wait_until(lambda: any(e.get("generation") == 3 for e in followed), 20, what="a new event")
    finally:
        follower.terminate()
        follower.wait(10)

    # reload --plan lists the overrides in force.
    plan = a.cli("reload", "--plan")
    assert plan.returncode == 0, plan.stderr
    # (maint of 192.0.2.21 everywhere, narrowed by the ready of alt's to web's alone)
    assert "maint 192.0.2.21:8080 in web (selects 1 real server)" in plan.stdout

    # The read group may look, not touch; anyone else may not even look.
    looked = a.cli("status", "--json", user=NOBODY, groups=[READ_GID])
    assert looked.returncode == 0, looked.stderr
    touched = a.cli("drain", "192.0.2.22", user=NOBODY, groups=[READ_GID])
    assert touched.returncode == 2 and "may read but not change" in touched.stderr
    outside = a.cli("status", user=NOBODY)
    assert outside.returncode == 3 and "Permission denied" in outside.stderr
    assert a.weights() == {**ALL_UP, WEB21: None, WEB22: 0, ALT21: 4}

    # The overrides survive a restart: the table comes back as they say.
    assert a.director.stop() == 0
    a.start()
    wait_until(a.up, 60, interval=0.2, what="a answers again")
    wait_until(
        lambda: a.weights() == {**ALL_UP, WEB21: None, WEB22: 0, ALT21: 4}, 20, interval=0.2,
        what="the overrides applied after the restart",
    )  # fmt: skip
    assert [o["mode"] for o in a.status()["overrides"]] == ["maint"]


def test_handover_moves_the_vip_with_no_probe_lost(
    pair: tuple[Operator, Operator, Host],
) -> None:
    a, b, client = pair
    wait_until(lambda: b.instance()["state"] == "BACKUP", 10, what="b BACKUP")
    with VipProber(client, IPv4Address(VIP.split("/", maxsplit=1)[0]), 0.01) as prober:
        wait_until(
            lambda: sum(1 for p in prober.probes_since(0) if p.answered_at) >= 50,
            10,
            what="probes answered before the handover",
        )
        began = time.monotonic()
        done = a.cli("handover")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "VI: BACKUP (handed over)" in done.stdout
        ended = time.monotonic()
        wait_until(b.director.holds_vip, 5, what="b holds the VIP")

        def judged() -> list[Probe]:
            window = [p for p in prober.probes_since(began - 0.5) if p.sent_at < ended + 0.1]
            now = time.monotonic()
            if any(p.answered_at is None and now - p.sent_at < REPLY_TIMEOUT for p in window):
                return []
            return window

        wait_until(lambda: bool(judged()), 5, what="every probe answered or timed out")
        probes = judged()
    lost = [p for p in probes if not answered_in_time(p, REPLY_TIMEOUT)]
    assert len(probes) > 50 and lost == []
    # a lets the VIP go once b's announcements have landed (the handover grace).
    wait_until(lambda: not a.director.holds_vip(), 5, what="a lets the VIP go")
    mine = a.instance()
    assert (mine["state"], mine["handed_over"]) == ("BACKUP", True)
    assert b.instance()["state"] == "MASTER"
    assert a.status()["handover"].keys() == {"VI"}
    # Idempotent.
    again = a.cli("handover", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False

    # It stays backup across a restart, though it has the higher priority.
    assert a.director.stop() == 0
    a.start()
    wait_until(a.up, 60, interval=0.2, what="a answers again")
    wait_until(lambda: a.instance()["state"] == "BACKUP", 10, what="a BACKUP after restart")
    # Twenty of b's adverts heard: a preempting a would have taken over long before.
    wait_until(lambda: a.instance()["adverts_received"] >= 20, 10, what="a hears b")
    assert a.instance()["handed_over"] is True and not a.director.holds_vip()
    assert a.instance()["state"] == "BACKUP"

    # Cancelled: normal VRRP again, and a (priority 150) preempts.
    done = a.cli("handover", "--cancel")
    assert done.returncode == 0, done.stderr
    wait_until(a.director.holds_vip, 10, what="a preempts after the cancel")
    assert a.instance()["handed_over"] is False
    assert a.status()["handover"] == {}
