"""configured_services(): from the normalized configuration to virtual service specs."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest

from lvsha.checks.targets import check_plan
from lvsha.checks.verdict import Health, Verdict
from lvsha.config import load_file, load_text
from lvsha.ipvs.desired import RealServerSpec, SorryServerSpec, desired_service
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    FwmarkKey,
    Persistence,
    ServiceFlags,
    ServiceOptions,
    TransportProtocol,
)
from lvsha.ipvs.specs import configured_services

CONF = Path(__file__).resolve().parents[3] / "conf"


def test_nat_example_becomes_its_specs() -> None:
    config = load_file(CONF / "nat-master.yaml")
    web, dns = configured_services(config)

    assert web.name == "web"
    assert web.key == AddressKey(TransportProtocol.TCP, ip_address("203.0.113.10"), 80)
    assert web.spec.options == ServiceOptions(scheduler="wlc")
    assert web.spec.real_servers == (
        RealServerSpec(
            Destination(ip_address("10.0.10.11"), 8080, weight=2, forwarding=Forwarding.MASQUERADE),
            inhibit_on_failure=False,
        ),
        RealServerSpec(
            Destination(ip_address("10.0.10.12"), 8080, weight=1, forwarding=Forwarding.MASQUERADE),
            inhibit_on_failure=False,
        ),
    )
    assert (web.spec.quorum, web.spec.hysteresis) == (2, 1)
    # The sorry server's forwarding comes from the virtual server.
    assert web.spec.sorry_server == SorryServerSpec(
        Destination(ip_address("10.0.10.250"), 8080, weight=1, forwarding=Forwarding.MASQUERADE)
    )

    assert dns.key == AddressKey(TransportProtocol.UDP, ip_address("203.0.113.10"), 53)
    assert dns.spec.options.scheduler == "rr"
    assert dns.spec.inhibit_on_failure is True
    # Real servers without a port take the virtual server's; inhibit is inherited.
    assert [rs.destination.port for rs in dns.spec.real_servers] == [53, 53]
    assert all(rs.inhibit_on_failure is True for rs in dns.spec.real_servers)


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.yaml")))
def test_real_server_ids_match_the_check_pools(name: str) -> None:
    config = load_file(CONF / name)
    services = configured_services(config)
    # A group's members share their real servers' ids: each is one real server to the pool.
    ids = list(dict.fromkeys(rs.id for service in services for rs in service.real_servers))
    assert ids == list(check_plan(config).real_servers)
    for service in services:
        for real_server, spec in zip(service.real_servers, service.spec.real_servers, strict=True):
            assert real_server.destination == spec.key
            assert real_server.destination == DestinationKey(
                ip_address(real_server.id.address), real_server.id.port
            )


def test_tun_example_flags_and_families() -> None:
    api4, api6, syslog = configured_services(load_file(CONF / "tun-master.yaml"))
    assert api4.spec.options == ServiceOptions(scheduler="mh", flags=ServiceFlags.SCHED2)
    assert all(rs.destination.forwarding is Forwarding.TUNNEL for rs in api4.spec.real_servers)
    assert api6.key.family is Family.INET6
    assert syslog.spec.options.flags == ServiceFlags.ONE_PACKET


CONFIG = """
virtual_servers:
  - address: 192.0.2.10
    port: 0
    protocol: TCP
    scheduler: sh
    scheduler_flags: [sh-fallback, sh-port]
    persistence_timeout: 300
    persistence_granularity: 24
    forwarding: DR
    quorum: 3
    hysteresis: 1
    sorry_server: {address: 10.0.9.9, port: 8080, weight: 4, forwarding: NAT}
    real_servers:
      - address: 10.0.0.1
        weight: 5
        upper_threshold: 100
        lower_threshold: 50
        inhibit_on_failure: true
        checks:
          - {type: tcp, port: 80, interval: 2s, timeout: 1s, rise: 3, warmup: 0.5s, alpha: true}
          - {type: icmp, interval: 10s, timeout: 2s}
      - address: 10.0.0.2
        weight: 0
  - fwmark: 7
    family: ipv6
    persistence_timeout: 60
    real_servers:
      - {address: "2001:db8::1", port: 443, forwarding: TUN}
"""


def test_every_key_reaches_the_spec() -> None:
    marked, fwmark = configured_services(load_text(CONFIG))
    assert marked.key == AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 0)
    assert marked.spec.options == ServiceOptions(
        scheduler="sh",
        flags=ServiceFlags.SCHED1 | ServiceFlags.SCHED2,
        persistence=Persistence(300, 24),
    )
    first, second = marked.spec.real_servers
    assert first.destination == Destination(
        ip_address("10.0.0.1"),
        0,
        weight=5,
        forwarding=Forwarding.DIRECT_ROUTE,
        upper_threshold=100,
        lower_threshold=50,
    )
    assert first.inhibit_on_failure is True
    assert second.destination.weight == 0
    assert second.inhibit_on_failure is False
    assert marked.spec.sorry_server == SorryServerSpec(
        Destination(ip_address("10.0.9.9"), 8080, weight=4, forwarding=Forwarding.MASQUERADE)
    )
    # Settle time: the slowest check, warm-up + rise rounds + a timeout; none without checks.
    assert [rs.settle_time for rs in marked.real_servers] == [
        pytest.approx(max(0.5 + 3 * 2 + 1, 10 + 1 * 10 + 2)),
        0.0,
    ]

    assert fwmark.key == FwmarkKey(7, Family.INET6)
    # Default granularity for IPv6 is a full prefix.
    assert fwmark.spec.options.persistence == Persistence(60, 128)
    (tunnelled,) = fwmark.spec.real_servers
    assert tunnelled.destination.forwarding is Forwarding.TUNNEL


def test_specs_feed_desired_service() -> None:
    marked, _ = configured_services(load_text(CONFIG))
    healthy = Verdict(Health.HEALTHY)
    verdicts = {rs.key: healthy for rs in marked.spec.real_servers}
    result = desired_service(marked.spec, verdicts, None)
    # Healthy weight 5 reaches quorum 3 + hysteresis 1: real servers in, no sorry server.
    assert result.quorum.up
    assert [d.weight for d in result.service.destinations] == [5, 0]
