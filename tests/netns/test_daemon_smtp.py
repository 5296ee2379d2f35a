"""`lvsha run --dry-run` with SMTP checks (keepalived's SMTP_CHECK): real servers running an
SMTP server in lab hosts enter the (in-memory) IPVS table, one whose server stops leaves it,
and the probes are counted under the `smtp` check type."""

from __future__ import annotations

import pytest

from lvsha.drill.lab import Lab, wait_until
from tests.netns import servers
from tests.netns.director import Director
from tests.netns.test_daemon_checker import metric, start_dry_run

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"

CONFIG = """\
global:
  check_defaults: {interval: 200ms, timeout: 500ms, retries: 0, rise: 1, fall: 2}
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 42
    priority: 150
    version: 3
    advert_interval: 100ms
    virtual_ipaddresses: ['192.0.2.100/24']
virtual_servers:
  - name: mail
    address: 192.0.2.100
    port: 25
    protocol: TCP
    real_servers:
      - {address: 192.0.2.21, checks: [{type: smtp, helo_name: lb1.lvsha.test}]}
      - {address: 192.0.2.22, checks: [{type: smtp, port: 2525}]}
"""


def test_smtp_checks_put_real_servers_in_and_take_a_stopped_one_out(lab: Lab) -> None:
    director_host = lab.add_host("d", "192.0.2.11/24")
    rs1 = lab.add_host("rs1", "192.0.2.21/24")
    rs2 = lab.add_host("rs2", "192.0.2.22/24")
    mx1 = servers.start(rs1, "smtp", "--address", "192.0.2.21", "--port", "25")
    mx2 = servers.start(rs2, "smtp", "--address", "192.0.2.22", "--port", "2525")
    director = Director(director_host, CONFIG, VIP)
    start_dry_run(director)
    healthy = 'lvsha_real_servers{health="healthy"}'
    try:
        wait_until(lambda: metric(director, healthy) == 2.0, 20, what="both SMTP servers up")
        assert metric(director, 'lvsha_ipvs_operations_total{operation="AddDestination"}') == 2.0
        # rs1 heard the configured HELO name; rs2 keepalived's default
        assert mx1.stdout is not None and mx2.stdout is not None
        assert mx1.stdout.readline().strip() == b"HELO lb1.lvsha.test"
        assert mx2.stdout.readline().strip() == b"HELO smtpchecker.keepalived.org"
        count = 'lvsha_check_duration_seconds_count{type="smtp"}'
        wait_until(lambda: (metric(director, count) or 0) >= 2, 10, what="smtp probe durations")

        servers.stop(mx1)
        wait_until(lambda: metric(director, healthy) == 1.0, 5, what="rs1 down")
        wait_until(
            lambda: (
                metric(director, 'lvsha_ipvs_operations_total{operation="DeleteDestination"}')
                == 1.0
            ),
            5,
            what="rs1 removed from the table",
        )
        assert "smtp connect refused" in director.log()
    finally:
        director.crash()
        servers.stop(mx2)
        if mx1.poll() is None:
            servers.stop(mx1)
