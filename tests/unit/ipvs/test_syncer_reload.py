"""A reload of the IPVS syncer: only changed entries get operations (issue 10).

Counted on the recording in-memory port: unchanged destinations get no operation at all;
changes are edits; new real servers enter as their verdicts say; removed ones drain when
`drain_removed` says so; a kernel refusal halfway is reported, and going back to the old
services (what the checker does) puts the table back as it was.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import ip_address

from lvsha.checks.verdict import Health, RealServerVerdict
from lvsha.config import load_text
from lvsha.ipvs.model import AddressKey, DestinationKey, Forwarding, TransportProtocol
from lvsha.ipvs.plan import (
    AddDestination,
    AddService,
    DeleteDestination,
    DeleteService,
    EditDestination,
    Operation,
)
from lvsha.ipvs.port import InvalidRequestError, IpvsError
from lvsha.ipvs.specs import ConfiguredService, configured_services
from lvsha.ipvs.syncer import IpvsSyncer
from tests.unit.ipvs.test_syncer import (
    VIP,
    RecordingPort,
    dest,
    eventually,
    next_passes,
    port,
    syncers,
)

__all__ = ["port", "syncers"]  # fixtures, imported for pytest

WEB = AddressKey(TransportProtocol.TCP, VIP, 80)
DNS = AddressKey(TransportProtocol.UDP, VIP, 53)
MAIL = AddressKey(TransportProtocol.TCP, VIP, 25)
API = AddressKey(TransportProtocol.TCP, VIP, 443)

BEFORE = """
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: TCP
    scheduler: wrr
    forwarding: DR
    real_servers:
      - {address: 10.0.0.1, weight: 2, checks: [{type: tcp}]}
      - {address: 10.0.0.2, weight: 1, checks: [{type: tcp}]}
      - {address: 10.0.0.3, weight: 1, checks: [{type: tcp}]}
  - name: dns
    address: 192.0.2.10
    port: 53
    protocol: UDP
    scheduler: rr
    real_servers:
      - {address: 10.0.0.11, weight: 3}
      - {address: 10.0.0.12, weight: 3}
  - name: mail
    address: 192.0.2.10
    port: 25
    protocol: TCP
    real_servers:
      - {address: 10.0.0.21, weight: 1}
"""

AFTER = """
virtual_servers:
  - name: api
    address: 192.0.2.10
    port: 443
    protocol: TCP
    real_servers:
      - {address: 10.0.0.31, weight: 1}
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: TCP
    scheduler: wrr
    forwarding: DR
    real_servers:
      - {address: 10.0.0.1, weight: 5, checks: [{type: tcp}]}
      - {address: 10.0.0.2, weight: 1, checks: [{type: tcp}]}
      - {address: 10.0.0.4, weight: 1, checks: [{type: tcp, alpha: true}]}
  - name: dns
    address: 192.0.2.10
    port: 53
    protocol: UDP
    scheduler: rr
    real_servers:
      - {address: 10.0.0.11, weight: 3}
      - {address: 10.0.0.12, weight: 3}
"""


def services(text: str) -> tuple[ConfiguredService, ...]:
    return configured_services(load_text(text))


def healthy(configured: tuple[ConfiguredService, ...]) -> list[RealServerVerdict]:
    return [
        RealServerVerdict(rs.id, Health.HEALTHY, None, "test", None, 0.0)
        for service in configured
        for rs in service.real_servers
    ]


def key(address: str, port: int) -> DestinationKey:
    return DestinationKey(ip_address(address), port)


async def started(
    port: RecordingPort, syncers: list[IpvsSyncer], *, drain_removed: float = 0.0
) -> IpvsSyncer:
    configured = services(BEFORE)
    syncer = IpvsSyncer(port, configured, drain_removed=drain_removed)
    syncers.append(syncer)
    await syncer.start(healthy(configured))
    port.log.clear()
    return syncer


async def test_a_reload_issues_operations_only_for_changed_entries(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    before = dict(syncer.operations)
    new = services(AFTER)
    refusals = await syncer.apply_config(new, verdicts=healthy(new))
    assert refusals == []
    expected: list[Operation] = [
        AddService(API, new[0].spec.options),
        AddDestination(API, dest("10.0.0.31", 443, 1, Forwarding.MASQUERADE)),
        AddDestination(WEB, dest("10.0.0.4", 80, 1)),
        EditDestination(WEB, dest("10.0.0.1", 80, 5)),
        DeleteDestination(WEB, key("10.0.0.3", 80)),
        DeleteDestination(MAIL, key("10.0.0.21", 25)),
        DeleteService(MAIL),
    ]
    assert sorted(map(repr, port.log)) == sorted(map(repr, expected))
    # Nothing on DNS, nothing on 10.0.0.2: unchanged entries get no operation at all.
    assert not [op for op in port.log if getattr(op, "service", getattr(op, "key", None)) == DNS]
    counted = Counter(syncer.operations)
    counted.subtract(before)
    assert +counted == Counter(type(op).__name__ for op in expected)
    assert port.weights(WEB) == {"10.0.0.1": 5, "10.0.0.2": 1, "10.0.0.4": 1}
    assert MAIL not in port.snapshot()


async def test_a_virtual_server_inserted_before_the_others_changes_nothing_else(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    # Real servers are identified by service, not by the index of their virtual server: one
    # inserted first shifts every index, and nobody is judged again or touched.
    syncer = await started(port, syncers)
    inserted = BEFORE.replace(
        "virtual_servers:\n",
        "virtual_servers:\n  - {address: 192.0.2.10, port: 443, protocol: TCP,"
        " real_servers: [{address: 10.0.0.31}]}\n",
    )
    new = services(inserted)
    syncer.reconfigure(new)
    syncer.on_verdict(healthy(new)[0])
    await next_passes(syncer)
    assert port.log == [
        AddService(API, new[0].spec.options),
        AddDestination(API, dest("10.0.0.31", 443, 1, Forwarding.MASQUERADE)),
    ]


async def test_new_real_servers_enter_per_their_verdicts(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    new = services(AFTER)
    # As the check pool says at a reload: no probe yet; the alpha check starts Down.
    verdicts = healthy(new)
    newcomer = next(v for v in verdicts if v.real_server.address == "10.0.0.4")
    down = RealServerVerdict(newcomer.real_server, Health.UNHEALTHY, None, "alpha", None, 0.0)
    verdicts = [down if v is newcomer else v for v in verdicts]
    assert await syncer.apply_config(new, verdicts=verdicts) == []
    assert "10.0.0.4" not in port.weights(WEB)
    syncer.on_verdict(RealServerVerdict(newcomer.real_server, Health.HEALTHY, None, "up", "t", 1))
    await eventually(lambda: port.weights(WEB).get("10.0.0.4") == 1, "10.0.0.4 in after rise")


async def test_a_removed_real_server_drains_first_when_configured(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    without = services(
        BEFORE.replace("      - {address: 10.0.0.3, weight: 1, checks: [{type: tcp}]}\n", "")
    )
    assert await syncer.apply_config(without, drain_removed=0.3) == []
    assert port.log == [EditDestination(WEB, dest("10.0.0.3", 80, 0))]
    assert list(syncer.draining[WEB]) == [key("10.0.0.3", 80)]
    await eventually(lambda: "10.0.0.3" not in port.weights(WEB), "deleted after the drain")
    assert port.log[1:] == [DeleteDestination(WEB, key("10.0.0.3", 80))]
    assert syncer.draining == {}


async def test_a_draining_real_server_put_back_by_a_reload_is_edited_back(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers, drain_removed=60.0)
    original = services(BEFORE)
    without = services(
        BEFORE.replace("      - {address: 10.0.0.3, weight: 1, checks: [{type: tcp}]}\n", "")
    )
    assert await syncer.apply_config(without) == []
    assert await syncer.apply_config(original, verdicts=healthy(original)) == []
    assert port.log == [
        EditDestination(WEB, dest("10.0.0.3", 80, 0)),
        EditDestination(WEB, dest("10.0.0.3", 80, 1)),
    ]
    assert syncer.draining == {}


async def test_a_refusal_halfway_is_reported_and_going_back_restores_the_table(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    old = syncer.services
    table = port.snapshot()
    new = services(AFTER)

    def refuse(operation: Operation) -> IpvsError | None:
        if isinstance(operation, AddDestination) and operation.destination.port == 443:
            return InvalidRequestError("refused for the test")
        return None

    port.refuse = refuse
    refusals = await syncer.apply_config(new, verdicts=healthy(new))
    assert [(r.service, r.text) for r in refusals] == [
        (API, "add destination 10.0.0.31:443 to service TCP 192.0.2.10:443 (weight 1, masquerade)")
    ]
    assert port.snapshot() != table  # the rest went through
    port.refuse = lambda operation: None
    # The checker goes back with the check pool's verdicts (its stopped checks revived).
    assert await syncer.apply_config(old, verdicts=healthy(old)) == []
    assert port.snapshot() == table


async def test_a_refused_rollback_names_what_it_left(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await started(port, syncers)
    old = syncer.services
    new = services(AFTER)
    assert await syncer.apply_config(new, verdicts=healthy(new)) == []
    port.refuse = lambda op: InvalidRequestError("no") if isinstance(op, AddService) else None
    refusals = await syncer.apply_config(old, verdicts=healthy(old))
    assert [r.service for r in refusals] == [MAIL, MAIL]  # the service, and its destination
    assert "add service TCP 192.0.2.10:25" in str(refusals[0])
