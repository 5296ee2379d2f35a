"""Alerts, the Prometheus endpoint and the systemd watchdog of a running `lvsha run`.

A director in a lab host sends its alerts to real servers the test starts in the same
namespace (tests/tools/alert_receivers.py): an SMTP server, a webhook receiver and an
Alertmanager stand-in, and the broken kinds (an SMTP server that never answers, a webhook that
hangs). The IPVS table is the in-memory one (`--dry-run`); checks, VRRP and the endpoint are
real.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns import servers
from tests.netns.director import Director
from tests.tools.alert_receivers import Receivers
from tests.tools.exposition import promtool_accepts

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
METRICS_PORT = 9650
SECRET = b"lab-secret"


def config(receivers: Receivers, secret_file: Path, *, broken: bool = False) -> str:
    if broken:
        sinks = f"""\
      - {{type: smtp, name: mail, server: 127.0.0.1, port: {receivers.blackhole_port}, tls: off,
          from: lvsha@lab.test, to: [ops@lab.test], timeout: 0.5, retries: 1, gather: 0.1,
          min_interval: 0.2}}
      - {{type: webhook, name: hook, url: "http://127.0.0.1:{receivers.hanging_port}/hook",
          timeout: 0.5, retries: 1, gather: 0.1, min_interval: 0.2}}
"""
    else:
        sinks = f"""\
      - {{type: smtp, name: mail, server: 127.0.0.1, port: {receivers.smtp_port},
          from: lvsha@lab.test, to: [ops@lab.test], gather: 0.2, min_interval: 0.5}}
      - {{type: webhook, name: hook, url: "http://127.0.0.1:{receivers.webhook_port}/hook",
          secret_file: {secret_file}, gather: 0.2, min_interval: 0.2}}
      - {{type: alertmanager, name: am, url: "http://127.0.0.1:{receivers.alertmanager_port}",
          resend_interval: 1, gather: 0.2, min_interval: 0.2}}
"""
    return f"""\
global:
  router_id: lab-d
  check_defaults: {{interval: 200ms, timeout: 150ms, retries: 0, rise: 1, fall: 2}}
  metrics: {{listen: "127.0.0.1:{METRICS_PORT}", keepalived_names: true}}
  notification:
    sinks:
{sinks}
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 42
    priority: 150
    version: 3
    advert_interval: 100ms
    virtual_ipaddresses: ['{VIP}']
virtual_servers:
  - name: web
    address: 192.0.2.100
    port: 80
    protocol: TCP
    real_servers:
      - {{address: 192.0.2.21, port: 8080, checks: [{{type: tcp}}]}}
"""


def real_server(host: Host) -> subprocess.Popen[bytes]:
    """A TCP server on the real server's address and port, once it listens."""
    return servers.start(host, "tcp", "--address", "192.0.2.21", "--port", "8080")


def start(director: Director, *extra: str, env: dict[str, str] | None = None) -> None:
    director.process = director.host.popen(
        sys.executable, "-m", "lvsha", "run", str(director.config_path),
        "--run-dir", str(director.workdir / "run"),
        "--state-dir", str(director.workdir / "state"), "--dry-run", *extra,
        stdout=director.log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        env=env,
    )  # fmt: skip


def scrape(host: Host) -> str:
    code = (
        "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen("
        f"'http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())"
    )
    return host.run(sys.executable, "-c", code).stdout


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.fixture
def setup(lab: Lab, tmp_path: Path) -> Iterator[tuple[Host, Host, Receivers, Path]]:
    host = lab.add_host("d", "192.0.2.11/24")
    rs = lab.add_host("rs", "192.0.2.21/24")
    secret_file = tmp_path / "hook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    with Receivers(host.call) as receivers:
        yield host, rs, receivers, secret_file


def test_alerts_reach_smtp_webhook_and_alertmanager_and_metrics_parse(
    setup: tuple[Host, Host, Receivers, Path],
) -> None:
    host, rs, receivers, secret_file = setup
    got = receivers.received
    server = real_server(rs)
    director = Director(host, config(receivers, secret_file), VIP)
    start(director)
    try:
        # A VRRP transition: a mail, a signed webhook, and the instance away from its
        # preferred state (BACKUP) fires at Alertmanager.
        wait_until(
            lambda: (
                any("BACKUP -> MASTER" in mail.subject for mail in got.mails)
                or any("BACKUP -> MASTER" in mail.body for mail in got.mails)
            ),
            20,
            what="the transition mailed",
        )
        mail = got.mails[0]
        assert mail.recipients == ["ops@lab.test"]
        assert "lab-d" in mail.subject
        wait_until(
            lambda: any(
                e["type"] == "vrrp_state" and e["new"] == "MASTER"
                for post in got.hooks
                for e in post.json()["events"]
            ),
            10,
            what="the transition POSTed",
        )
        assert got.hooks and all(post.signed_with(SECRET) for post in got.hooks)
        assert not got.hooks[0].signed_with(b"another secret")
        assert got.hooks[0].json()["router_id"] == "lab-d"

        # The endpoint: every family parses, promtool finds nothing to say.
        wait_until(
            lambda: (
                value(scrape(host), "lvsha_real_server_up", real_server="192.0.2.21:8080") == 1.0
            ),
            20,
            what="the real server up in /metrics",
        )
        text = scrape(host)
        families = {family.name for family in text_string_to_metric_families(text)}
        promtool_accepts(text)
        for name in (
            "lvsha_build_info",
            "lvsha_config_generation",
            "lvsha_vrrp_state",
            "lvsha_event_loop_lag_seconds",
            "lvsha_check_duration_seconds",
            "lvsha_alerts_sent",  # the parser names counter families without _total
            "keepalived_vrrp_state",
        ):
            assert name in families, (name, sorted(families))
        assert (value(text, "lvsha_alerts_sent_total", sink="mail") or 0) >= 1
        # The VRRP process writes its file every second.
        wait_until(
            lambda: value(scrape(host), "lvsha_vrrp_state", instance="VI", state="MASTER") == 1.0,
            5,
            what="MASTER in /metrics",
        )

        # A real server down: the mail says why; Alertmanager sees it fire, then resolve.
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        wait_until(
            lambda: any("192.0.2.21:8080" in m.body and "unhealthy" in m.body for m in got.mails),
            20,
            what="the real server's failure mailed",
        )
        down = next(m for m in got.mails if "192.0.2.21:8080" in m.body)
        assert "refused" in down.body.lower(), down.body  # the check's reason

        def alert_posts(resolved: bool) -> list[dict[str, Any]]:
            now = datetime.datetime.now(datetime.UTC)
            out = []
            for alert in receivers.alerts():
                if alert["labels"].get("alertname") != "LvshaRealServerDown":
                    continue
                ends = datetime.datetime.fromisoformat(str(alert["endsAt"]).replace("Z", "+00:00"))
                if (ends <= now) == resolved:
                    out.append(alert)
            return out

        wait_until(lambda: len(alert_posts(False)) >= 2, 20, what="the alert fired and re-sent")
        firing = alert_posts(False)[0]
        assert firing["labels"]["router_id"] == "lab-d"
        server = real_server(rs)
        wait_until(lambda: bool(alert_posts(True)), 20, what="the alert resolved")
        assert any(
            a["labels"].get("alertname") == "LvshaVrrpNotPreferred" for a in receivers.alerts()
        )
    finally:
        director.crash()
        server.kill()


def test_broken_sinks_count_drops_and_disturb_nothing(
    setup: tuple[Host, Host, Receivers, Path],
) -> None:
    host, rs, receivers, secret_file = setup
    server = real_server(rs)
    director = Director(host, config(receivers, secret_file, broken=True), VIP)
    start(director)
    try:
        wait_until(director.holds_vip, 20, what="master")
        # Events while the sinks hang: the real server fails and comes back, twice.
        for _ in range(2):
            wait_until(
                lambda: (
                    value(scrape(host), "lvsha_real_server_up", real_server="192.0.2.21:8080")
                    == 1.0
                ),
                20,
                what="the real server up",
            )
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            wait_until(
                lambda: (
                    value(scrape(host), "lvsha_real_server_up", real_server="192.0.2.21:8080")
                    == 0.0
                ),
                20,
                what="the real server down",
            )
            server = real_server(rs)

        def dropped(sink: str) -> float:
            text = scrape(host)
            return sum(
                float(s.value)
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "lvsha_alerts_dropped_total" and s.labels.get("sink") == sink
            )

        wait_until(lambda: dropped("mail") > 0 and dropped("hook") > 0, 30, what="drops counted")
        assert receivers.received.hung > 0  # the webhook was tried, and hung
        text = scrape(host)
        promtool_accepts(text)
        # VRRP went on as if nothing happened: one transition to MASTER, none since.
        assert director.log().count("BACKUP -> MASTER") == 1
        assert value(text, "lvsha_vrrp_state", instance="VI", state="MASTER") == 1.0
        lateness = value(text, "lvsha_check_lateness_seconds", quantile="0.99")
        assert lateness is not None and lateness < 0.1, lateness
    finally:
        director.crash()
        server.kill()


def test_the_watchdog_is_fed_while_vrrp_answers_and_not_once_it_is_stopped(lab: Lab) -> None:
    host = lab.add_host("d", "192.0.2.11/24")
    text = f"""\
global: {{watchdog_bound: 0.5}}
vrrp_instances:
  VI: {{interface: eth0, virtual_router_id: 42, priority: 150, version: 3,
        advert_interval: 100ms, virtual_ipaddresses: ['{VIP}']}}
"""
    director = Director(host, text, VIP)
    with (
        tempfile.TemporaryDirectory() as tmp,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd,
    ):
        path = str(Path(tmp) / "notify.sock")
        sd.bind(path)
        sd.settimeout(0.1)
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
        start(director, env=env)
        vrrp: int | None = None
        try:
            notes: list[tuple[float, bytes]] = []

            def receive(until: float) -> None:
                while time.monotonic() < until:
                    with contextlib.suppress(TimeoutError):
                        notes.append((time.monotonic(), sd.recv(4096)))

            deadline = time.monotonic() + 20
            while not any(n == b"READY=1" for _, n in notes):
                assert time.monotonic() < deadline, "not ready"
                receive(time.monotonic() + 0.1)
            receive(time.monotonic() + 3.0)
            fed = [t for t, n in notes if n == b"WATCHDOG=1"]
            # WatchdogSec=1s: fed every half second.
            assert 5 <= len(fed) <= 8, fed
            vrrp = director.child_pid("lvsha.daemon.vrrp_process")
            assert vrrp is not None
            os.kill(vrrp, signal.SIGSTOP)
            stopped_at = time.monotonic()
            notes.clear()
            receive(stopped_at + 3.0)
            fed = [t - stopped_at for t, n in notes if n == b"WATCHDOG=1"]
            # At most what was due before the bound (0.5 s) ran out: the ping in flight, the
            # bound, one feeding period.
            assert all(t <= 0.5 / 4 + 0.5 + 0.5 + 0.1 for t in fed), fed
            assert "the vrrp process has not answered" in director.log()
            os.kill(vrrp, signal.SIGCONT)
            notes.clear()
            receive(time.monotonic() + 1.5)
            assert any(n == b"WATCHDOG=1" for _, n in notes), "feeding did not resume"
        finally:
            if vrrp is not None:
                os.kill(vrrp, signal.SIGCONT)
            director.crash()
