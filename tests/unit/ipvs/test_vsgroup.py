"""A virtual server group in the IPVS layer: one service per member, the real servers checked
once under the group's identity, every member given the same pool, one quorum for all, and a
reload that adds or removes a member touching only that member's service."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from ipaddress import ip_address

import pytest

from lvsha.checks.targets import check_plan
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict, Verdict
from lvsha.config import load_text
from lvsha.ipvs.model import (
    AddressKey,
    Family,
    FwmarkKey,
    Service,
    ServiceKey,
    TransportProtocol,
)
from lvsha.ipvs.plan import AddDestination, AddService, DeleteDestination, DeleteService
from lvsha.ipvs.specs import ConfiguredService, configured_services
from lvsha.ipvs.syncer import IpvsSyncer, QuorumChange, desired_table
from tests.unit.ipvs.test_syncer import RecordingPort, eventually, port, syncers

__all__ = ["port", "syncers"]  # fixtures, imported for pytest

CONFIG = """
virtual_server_groups:
  web:
    members: [192.0.2.10:80, 192.0.2.20-21:80, fwmark 7]
virtual_servers:
  - group: web
    protocol: TCP
    scheduler: wrr
    forwarding: DR
    persistence_timeout: 60
    quorum: 2
    sorry_server: {address: 10.0.9.9}
    real_servers:
      - {address: 10.0.0.1, port: 80, weight: 2, checks: [{type: tcp}]}
      - {address: 10.0.0.2, port: 80, weight: 1, checks: [{type: tcp}]}
  - name: mail
    address: 192.0.2.10
    port: 25
    protocol: TCP
    real_servers:
      - {address: 10.0.0.21}
"""


def key(address: str, port: int = 80) -> AddressKey:
    return AddressKey(TransportProtocol.TCP, ip_address(address), port)


MEMBERS: list[ServiceKey] = [
    key("192.0.2.10"),
    key("192.0.2.20"),
    key("192.0.2.21"),
    FwmarkKey(7, Family.INET),
]
MAIL = key("192.0.2.10", 25)
A = RealServerId("group web", "10.0.0.1", 80)
B = RealServerId("group web", "10.0.0.2", 80)


def services(text: str = CONFIG) -> tuple[ConfiguredService, ...]:
    return configured_services(load_text(text))


def verdict(real_server: RealServerId, health: Health) -> RealServerVerdict:
    return RealServerVerdict(real_server, health, None, "test", "tcp", 0.0)


def healthy(configured: tuple[ConfiguredService, ...]) -> list[RealServerVerdict]:
    ids = dict.fromkeys(rs.id for service in configured for rs in service.real_servers)
    return [verdict(real_server, Health.HEALTHY) for real_server in ids]


def test_a_group_is_one_service_per_member_with_one_set_of_real_servers() -> None:
    config = load_text(CONFIG)
    configured = configured_services(config)
    grouped = [service for service in configured if service.group == "web"]
    assert [service.key for service in grouped] == MEMBERS
    first = grouped[0]
    for service in grouped:
        assert service.name == "web"
        assert service.real_servers == first.real_servers
        assert service.spec.options == first.spec.options
        assert service.spec.options.scheduler == "wrr"
        assert service.spec.options.persistence is not None
        assert service.spec.real_servers == first.spec.real_servers
        assert (service.spec.quorum, service.spec.sorry_server) == (2, first.spec.sorry_server)
    assert [rs.id for rs in first.real_servers] == [A, B]
    # The check pool runs each real server's check once, not once per member.
    plan = check_plan(config)
    assert [target.real_server for target in plan.targets] == [A, B]
    assert plan.real_servers == (A, B, MAIL_ID)
    assert str(first) == "web (group web)"


MAIL_ID = RealServerId("192.0.2.10:25/tcp", "10.0.0.21", 25)


def pools(table: Mapping[ServiceKey, Service]) -> dict[ServiceKey, dict[str, int]]:
    return {
        k: {str(d.address): d.weight for d in service.destinations} for k, service in table.items()
    }


def test_a_verdict_changes_the_server_on_every_member() -> None:
    configured = services()
    verdicts = {A: Verdict(Health.HEALTHY), B: Verdict(Health.UNHEALTHY)}
    verdicts[MAIL_ID] = Verdict(Health.HEALTHY)
    desired = desired_table(configured, verdicts, holds={}, observed={}, quorum={}, now=0.0)
    for member in MEMBERS:
        assert pools(desired.services)[member] == {"10.0.0.1": 2}
        assert desired.quorum[member].up
    # With inhibit_on_failure the failed server stays at weight 0 in every member.
    inhibited = services(CONFIG.replace("    quorum: 2\n", "    inhibit_on_failure: true\n"))
    desired = desired_table(inhibited, verdicts, holds={}, observed={}, quorum={}, now=0.0)
    for member in MEMBERS:
        assert pools(desired.services)[member] == {"10.0.0.1": 2, "10.0.0.2": 0}


def test_quorum_and_the_sorry_server_are_the_groups() -> None:
    configured = services()
    verdicts = {A: Verdict(Health.UNHEALTHY), B: Verdict(Health.HEALTHY)}
    verdicts[MAIL_ID] = Verdict(Health.HEALTHY)
    desired = desired_table(configured, verdicts, holds={}, observed={}, quorum={}, now=0.0)
    # Healthy weight 1 is below quorum 2: the sorry server serves every member.
    assert desired.sorry_active == frozenset(MEMBERS)
    for member in MEMBERS:
        assert pools(desired.services)[member] == {"10.0.9.9": 1}
        assert not desired.quorum[member].up
    # A member planned alone (new in a reload) takes the quorum its siblings hold.
    held = {member: desired.quorum[member] for member in MEMBERS[1:]}
    verdicts[A] = Verdict(Health.HEALTHY)
    again = desired_table(configured, verdicts, holds={}, observed={}, quorum=held, now=0.0)
    assert all(again.quorum[member].up for member in MEMBERS)


async def started(port: RecordingPort, syncers: list[IpvsSyncer]) -> IpvsSyncer:
    configured = services()
    syncer = IpvsSyncer(port, configured)
    syncers.append(syncer)
    await syncer.start(healthy(configured))
    port.log.clear()
    return syncer


async def test_the_syncer_moves_every_member_and_reports_quorum_once(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    both = {"10.0.0.1": 2, "10.0.0.2": 1}
    for member in MEMBERS:
        assert port.weights(member) == both
    changes: list[QuorumChange] = []
    syncer.subscribe_quorum(changes.append)
    syncer.on_verdict(verdict(B, Health.UNHEALTHY))
    await eventually(
        lambda: all(port.weights(member) == {"10.0.0.1": 2} for member in MEMBERS),
        "10.0.0.2 out of every member",
    )
    assert syncer.service_of(B) == MEMBERS[0]
    syncer.on_verdict(verdict(A, Health.UNHEALTHY))
    await eventually(
        lambda: all(port.weights(member) == {"10.0.9.9": 1} for member in MEMBERS),
        "the sorry server in every member",
    )
    assert syncer.sorry_active == frozenset(MEMBERS)
    assert len(changes) == 1, changes
    (change,) = changes
    assert (change.service.group, change.quorum.up, change.sorry_active) == ("web", False, True)
    # The other virtual server was never touched.
    touched = {getattr(op, "service", getattr(op, "key", None)) for op in port.log}
    assert MAIL not in touched


async def test_a_reload_adds_or_removes_only_that_members_service(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    added = services(CONFIG.replace("fwmark 7]", "fwmark 7, 192.0.2.30:80]"))
    assert await syncer.apply_config(added, verdicts=healthy(added)) == []
    new = key("192.0.2.30")
    assert {type(op) for op in port.log} == {AddService, AddDestination}
    assert {getattr(op, "service", getattr(op, "key", None)) for op in port.log} == {new}
    assert port.weights(new) == {"10.0.0.1": 2, "10.0.0.2": 1}
    port.log.clear()
    removed = services(CONFIG.replace("192.0.2.20-21:80, ", ""))
    assert await syncer.apply_config(removed, verdicts=healthy(removed)) == []
    gone = {key("192.0.2.20"), key("192.0.2.21"), new}
    assert {type(op) for op in port.log} <= {DeleteService, DeleteDestination}
    assert {getattr(op, "service", getattr(op, "key", None)) for op in port.log} == gone
    assert set(port.snapshot()) == {MEMBERS[0], MEMBERS[3], MAIL}


async def test_a_member_new_in_a_reload_joins_the_groups_quorum_state(
    port: RecordingPort, syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lvsha.ipvs.syncer")
    syncer = await started(port, syncers)
    changes: list[QuorumChange] = []
    syncer.subscribe_quorum(changes.append)
    syncer.on_verdict(verdict(A, Health.UNHEALTHY))
    await eventually(lambda: len(changes) == 1, "quorum lost")
    # A member placed first: the group's state is its siblings', so no news, and the sorry
    # server serves the new member at once.
    first = services(CONFIG.replace("members: [", "members: [192.0.2.5:80, "))
    assert await syncer.apply_config(first, verdicts=healthy(first)) == []
    new = key("192.0.2.5")
    assert port.weights(new) == {"10.0.9.9": 1}
    assert len(changes) == 1
    assert caplog.text.count("quorum lost") == 1, caplog.text
    syncer.on_verdict(verdict(A, Health.HEALTHY))
    members = [new, *MEMBERS]
    await eventually(
        lambda: all(port.weights(m) == {"10.0.0.1": 2, "10.0.0.2": 1} for m in members),
        "quorum regained in every member",
    )
    assert [(c.service.key, c.quorum.up) for c in changes] == [(MEMBERS[0], False), (new, True)]
    assert caplog.text.count("web (group web): quorum regained") == 1, caplog.text


def test_an_ipv6_group_keys_its_members_in_ipv6() -> None:
    configured = services(
        """
virtual_server_groups:
  api:
    members: ['[2001:db8::10-11]:443', fwmark 9]
virtual_servers:
  - group: api
    protocol: TCP
    persistence_timeout: 300
    real_servers:
      - {address: '2001:db8:1::1', port: 443}
"""
    )
    assert [service.key for service in configured] == [
        AddressKey(TransportProtocol.TCP, ip_address("2001:db8::10"), 443),
        AddressKey(TransportProtocol.TCP, ip_address("2001:db8::11"), 443),
        FwmarkKey(9, Family.INET6),
    ]
    for service in configured:
        persistence = service.spec.options.persistence
        assert persistence is not None
        assert (persistence.timeout, persistence.prefix_length) == (300, 128)
