"""Omitted keys take their meaning from the enclosing level, and --json shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lvsha.cli import main
from lvsha.config import load_text
from lvsha.config.checks import HttpsCheck, TcpCheck

CONFIG = """\
global:
  check_defaults:
    interval: 7s
    timeout: 2s
    rise: 3
  vrrp:
    version: 3
    garp: {burst: 2, delay: 0}
  lvs_sync_daemon: {interface: eth0, vrrp_instance: V4}
vrrp_scripts:
  s:
    command: /bin/true
    interval: 4
vrrp_instances:
  V4:
    interface: eth0
    virtual_router_id: 9
    advert_interval: 250ms
    virtual_ipaddresses: [192.0.2.1]
    garp: {burst: 4}
  V6:
    interface: eth0
    virtual_router_id: 9
    virtual_ipaddresses: ['2001:db8::1/64']
virtual_servers:
  - address: 192.0.2.1
    port: 443
    protocol: tcp
    forwarding: dr
    persistence_timeout: 300
    virtualhost: www.example.com
    check_defaults: {interval: 3s}
    sorry_server: {address: 192.0.2.99}
    real_servers:
      - address: 192.0.2.10
        checks:
          - type: tcp
          - type: https
            timeout: 1s
      - address: 192.0.2.11
        port: 443
        forwarding: TUN
        inhibit_on_failure: true
"""


def test_checks_inherit_from_their_service_then_global() -> None:
    config = load_text(CONFIG)
    tcp, https = config.virtual_servers[0].real_servers[0].checks
    assert isinstance(tcp, TcpCheck) and isinstance(https, HttpsCheck)
    assert (tcp.interval, tcp.timeout, tcp.rise, tcp.fall) == (3.0, 2.0, 3, 1)
    assert (https.interval, https.timeout) == (3.0, 1.0)
    assert tcp.warmup == 3.0  # default warm-up spreads first rounds over one interval
    assert https.virtualhost == "www.example.com"
    assert https.sni == "www.example.com"


def test_real_servers_inherit_from_their_service() -> None:
    vs = load_text(CONFIG).virtual_servers[0]
    first, second = vs.real_servers
    assert (first.port, first.forwarding, first.inhibit_on_failure) == (443, "DR", False)
    assert (second.port, second.forwarding, second.inhibit_on_failure) == (443, "TUN", True)
    assert vs.sorry_server is not None
    assert (vs.sorry_server.port, vs.sorry_server.forwarding) == (443, "DR")
    assert vs.family == "ipv4"
    assert vs.persistence_granularity == 32
    assert vs.protocol == "TCP"


def test_instances_infer_family_and_version_and_merge_garp() -> None:
    config = load_text(CONFIG)
    v4, v6 = config.vrrp_instances["V4"], config.vrrp_instances["V6"]
    assert (v4.family, v4.version, v4.advert_interval) == ("ipv4", 3, 0.25)
    assert (v6.family, v6.version) == ("ipv6", 3)
    assert (v4.garp.burst, v4.garp.delay) == (4, 0.0)
    assert (v6.garp.burst, v6.garp.delay, v6.garp.refresh) == (2, 0.0, 0.0)
    assert str(v4.virtual_ipaddresses[0].address) == "192.0.2.1/32"


def test_derived_defaults() -> None:
    config = load_text(CONFIG)
    assert config.vrrp_scripts["s"].timeout == 4.0
    sync = config.global_.lvs_sync_daemon
    assert sync is not None and sync.sync_id == 9


def test_ipv4_instances_follow_the_global_version() -> None:
    text = CONFIG.replace("    version: 3\n", "").replace(
        "advert_interval: 250ms", "advert_interval: 2"
    )
    assert load_text(text).vrrp_instances["V4"].version == 2
    assert load_text(text).vrrp_instances["V6"].version == 3


def test_json_prints_every_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    assert main(["check-config", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    rs = data["virtual_servers"][0]["real_servers"][0]
    assert rs["checks"][0]["interval"] == 3.0
    assert rs["checks"][1]["status"] == ["200-299"]
    assert data["vrrp_instances"]["V6"]["version"] == 3
    assert data["vrrp_instances"]["V4"]["preempt"] is True
    assert data["global"]["notification"]["smtp_port"] == 25
    assert data["vrrp_instances"]["V4"]["virtual_ipaddresses"][0]["address"] == "192.0.2.1/32"


def test_normalized_config_is_frozen() -> None:
    config = load_text(CONFIG)
    with pytest.raises(ValidationError):
        config.vrrp_instances["V4"].priority = 1  # type: ignore[misc]
