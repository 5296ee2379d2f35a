"""The IPVS syncer on the in-memory port, with verdicts stepped by hand.

The configuration is loaded from YAML, so real-server ids are the ones the check pool uses.
Waiting is on conditions with a deadline (`eventually`), or on the syncer's pass counter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_address

import pytest

from lvsha.checks.state import Presumption
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict, Verdict
from lvsha.config import load_text
from lvsha.ipvs.desired import QuorumState
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Forwarding,
    IpvsTable,
    Service,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
)
from lvsha.ipvs.plan import (
    AddDestination,
    AddService,
    DeleteDestination,
    DeleteService,
    EditDestination,
    EditService,
    Operation,
    plan,
)
from lvsha.ipvs.port import IpvsError, UnknownModuleError, apply_operation
from lvsha.ipvs.specs import ConfiguredService, configured_services
from lvsha.ipvs.syncer import (
    IpvsSyncer,
    LatencyStats,
    OnStop,
    adopted_quorum,
    adoption_holds,
    apply_all_to_table,
    apply_to_table,
    describe_drift,
    describe_operation,
    desired_table,
    presumptions,
)

CONFIG = """
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: TCP
    scheduler: wrr
    forwarding: DR
    real_servers:
      - address: 10.0.0.1
        weight: 2
        checks: [{type: tcp, alpha: true, rise: 2, interval: 1s, timeout: 1s, warmup: 1s}]
      - address: 10.0.0.2
        weight: 1
  - name: dns
    address: 192.0.2.10
    port: 53
    protocol: UDP
    scheduler: rr
    inhibit_on_failure: true
    real_servers:
      - {address: 10.0.0.11, weight: 3, checks: [{type: udp, alpha: true}]}
      - {address: 10.0.0.12, weight: 3, checks: [{type: udp, alpha: true}]}
  - name: mail
    address: 192.0.2.10
    port: 25
    protocol: TCP
    forwarding: NAT
    quorum: 2
    hysteresis: 1
    sorry_server: {address: 10.0.9.9, port: 2525}
    real_servers:
      - {address: 10.0.0.21, weight: 1, checks: [{type: tcp, alpha: true}]}
      - {address: 10.0.0.22, weight: 1, checks: [{type: tcp, alpha: true}]}
      - {address: 10.0.0.23, weight: 1, checks: [{type: tcp, alpha: true}]}
"""

VIP = ip_address("192.0.2.10")
WEB = AddressKey(TransportProtocol.TCP, VIP, 80)
DNS = AddressKey(TransportProtocol.UDP, VIP, 53)
MAIL = AddressKey(TransportProtocol.TCP, VIP, 25)
OTHER = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.99"), 80)
"""A service lvsha does not manage."""
DR = Forwarding.DIRECT_ROUTE
NAT = Forwarding.MASQUERADE


def services(text: str = CONFIG) -> tuple[ConfiguredService, ...]:
    return configured_services(load_text(text))


SERVICES = services()
ALL_IDS = [rs.id for service in SERVICES for rs in service.real_servers]


def rid(address: str, port: int) -> RealServerId:
    (found,) = [i for i in ALL_IDS if (i.address, i.port) == (address, port)]
    return found


WEB_A, WEB_B = rid("10.0.0.1", 80), rid("10.0.0.2", 80)
DNS_A, DNS_B = rid("10.0.0.11", 53), rid("10.0.0.12", 53)
MAIL_A, MAIL_B, MAIL_C = rid("10.0.0.21", 25), rid("10.0.0.22", 25), rid("10.0.0.23", 25)


def verdict(
    real_server: RealServerId,
    health: Health,
    *,
    weight: int | None = None,
    probed: bool = True,
) -> RealServerVerdict:
    check = f"tcp {real_server.address}:{real_server.port}" if probed else None
    reason = "probe result" if probed else "no probe yet"
    return RealServerVerdict(real_server, health, weight, reason, check, 0.0)


def all_healthy(probed: bool = False) -> list[RealServerVerdict]:
    return [verdict(i, Health.HEALTHY, probed=probed) for i in ALL_IDS]


def restart_verdicts() -> list[RealServerVerdict]:
    """What the check pool says at start before any probe: alpha checks Down, none Up."""
    with_checks = {rs.id for service in SERVICES for rs in service.real_servers if rs.settle_time}
    return [
        verdict(i, Health.UNHEALTHY if i in with_checks else Health.HEALTHY, probed=False)
        for i in ALL_IDS
    ]


def dest(address: str, port: int, weight: int, forwarding: Forwarding = DR) -> Destination:
    return Destination(ip_address(address), port, weight=weight, forwarding=forwarding)


HEALTHY_TABLE: dict[ServiceKey, Service] = {
    WEB: Service(WEB, ServiceOptions("wrr"), (dest("10.0.0.1", 80, 2), dest("10.0.0.2", 80, 1))),
    DNS: Service(
        DNS,
        ServiceOptions("rr"),
        (dest("10.0.0.11", 53, 3, NAT), dest("10.0.0.12", 53, 3, NAT)),
    ),
    MAIL: Service(
        MAIL,
        ServiceOptions("wlc"),
        tuple(dest(f"10.0.0.2{n}", 25, 1, NAT) for n in (1, 2, 3)),
    ),
}
UNMANAGED = Service(OTHER, ServiceOptions("rr"), (dest("10.1.0.1", 80, 7),))


class RecordingPort(MemoryIpvsTable):
    """The in-memory table, remembering every change made through the port."""

    def __init__(self, services: IpvsTable | None = None) -> None:
        super().__init__(() if services is None else services.values())
        self.log: list[Operation] = []
        self.reads = 0
        self.refuse: Callable[[Operation], IpvsError | None] = lambda operation: None

    async def list_services(self) -> dict[ServiceKey, Service]:
        self.reads += 1
        return await super().list_services()

    async def _record(self, operation: Operation) -> None:
        refusal = self.refuse(operation)
        if refusal is not None:
            raise refusal
        self.log.append(operation)

    async def add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        await self._record(AddService(key, options))
        await super().add_service(key, options)

    async def edit_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        await self._record(EditService(key, options))
        await super().edit_service(key, options)

    async def delete_service(self, key: ServiceKey) -> None:
        await self._record(DeleteService(key))
        await super().delete_service(key)

    async def add_destination(self, service: ServiceKey, destination: Destination) -> None:
        await self._record(AddDestination(service, destination))
        await super().add_destination(service, destination)

    async def edit_destination(self, service: ServiceKey, destination: Destination) -> None:
        await self._record(EditDestination(service, destination))
        await super().edit_destination(service, destination)

    async def delete_destination(self, service: ServiceKey, destination: DestinationKey) -> None:
        await self._record(DeleteDestination(service, destination))
        await super().delete_destination(service, destination)

    def by_hand(self) -> MemoryIpvsTable:
        """The same table, changed behind the syncer's back (not recorded)."""
        return super()  # type: ignore[return-value]

    def weights(self, key: ServiceKey) -> dict[str, int]:
        service = self.snapshot()[key]
        return {str(d.address): d.weight for d in service.destinations}


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)
    assert predicate(), what


async def next_passes(syncer: IpvsSyncer, count: int = 1) -> None:
    """Wait until `count` more passes have completed."""
    target = syncer.passes + count
    await eventually(lambda: syncer.passes >= target, f"{count} more passes")


@pytest.fixture
def port() -> RecordingPort:
    return RecordingPort()


@pytest.fixture
async def syncers() -> AsyncIterator[list[IpvsSyncer]]:
    """Syncers a test starts; stopped at the end."""
    started: list[IpvsSyncer] = []
    yield started
    for syncer in started:
        await syncer.stop()


async def start(
    port: RecordingPort,
    syncers: list[IpvsSyncer],
    verdicts: list[RealServerVerdict] | None = None,
    *,
    configured: tuple[ConfiguredService, ...] = SERVICES,
    **options: object,
) -> IpvsSyncer:
    syncer = IpvsSyncer(port, configured, **options)  # type: ignore[arg-type]
    syncers.append(syncer)
    await syncer.start(all_healthy() if verdicts is None else verdicts)
    return syncer


# Start and verdicts.


async def test_start_builds_the_table(port: RecordingPort, syncers: list[IpvsSyncer]) -> None:
    await start(port, syncers)
    assert port.snapshot() == HEALTHY_TABLE


async def test_down_removes_and_up_brings_back(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(WEB) == {"10.0.0.2": 1}, "10.0.0.1 removed")
    assert port.log[-1] == DeleteDestination(WEB, DestinationKey(ip_address("10.0.0.1"), 80))

    syncer.on_verdict(verdict(WEB_A, Health.HEALTHY))
    await eventually(lambda: port.weights(WEB) == {"10.0.0.1": 2, "10.0.0.2": 1}, "back")
    assert port.log[-1:] == [AddDestination(WEB, dest("10.0.0.1", 80, 2))]


async def test_down_with_inhibit_drops_to_weight_zero(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    syncer.on_verdict(verdict(DNS_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(DNS) == {"10.0.0.11": 0, "10.0.0.12": 3}, "weight 0")
    syncer.on_verdict(verdict(DNS_A, Health.HEALTHY, weight=7))
    await eventually(lambda: port.weights(DNS) == {"10.0.0.11": 7, "10.0.0.12": 3}, "dynamic")
    assert not any(isinstance(op, DeleteDestination) for op in port.log)


async def test_disabled_keeps_weight_zero(port: RecordingPort, syncers: list[IpvsSyncer]) -> None:
    syncer = await start(port, syncers)
    syncer.on_verdict(verdict(WEB_B, Health.DISABLED, probed=False))
    await eventually(lambda: port.weights(WEB) == {"10.0.0.1": 2, "10.0.0.2": 0}, "drained")


async def test_a_verdict_storm_makes_one_plan(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    passes = syncer.passes
    for _ in range(50):
        for i in ALL_IDS:
            syncer.on_verdict(verdict(i, Health.UNHEALTHY))
        for i in ALL_IDS:
            syncer.on_verdict(verdict(i, Health.HEALTHY))
    for i in (WEB_A, DNS_A):
        syncer.on_verdict(verdict(i, Health.UNHEALTHY))
    await next_passes(syncer)
    assert syncer.passes == passes + 1
    before = len(port.log)
    assert port.weights(WEB) == {"10.0.0.2": 1}
    assert port.weights(DNS) == {"10.0.0.11": 0, "10.0.0.12": 3}
    # The flapping in between never reached the kernel: two operations, one per real server.
    assert port.log[-2:] == [
        DeleteDestination(WEB, DestinationKey(ip_address("10.0.0.1"), 80)),
        EditDestination(DNS, dest("10.0.0.11", 53, 0, NAT)),
    ]
    assert len(port.log) == before


async def test_passes_that_replan_only_changed_services_reach_the_full_plan(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    """Each pass plans only the services whose verdicts changed; after any sequence of
    verdicts the kernel must hold what planning every service from scratch gives."""
    syncer = await start(port, syncers, resync_interval=3600.0)
    rng = random.Random(7)
    current = {i: Verdict(Health.HEALTHY) for i in ALL_IDS}
    healths = [Health.HEALTHY, Health.UNHEALTHY, Health.DISABLED]
    for _ in range(60):
        for real_server in rng.sample(ALL_IDS, rng.randint(1, 3)):
            health = rng.choice(healths)
            weight = rng.choice([None, 0, 5]) if health is Health.HEALTHY else None
            current[real_server] = Verdict(health, weight)
            syncer.on_verdict(verdict(real_server, health, weight=weight))
        await next_passes(syncer)
        # Quorum has hysteresis, so a from-scratch decision can differ inside the band; the
        # syncer's own quorum states are the reference for the sorry server.
        expected = desired_table(
            SERVICES,
            current,
            holds={},
            observed=port.snapshot(),
            quorum=syncer.quorum,
            now=0.0,
        )
        assert port.snapshot() == expected.services
        assert syncer.sorry_active == expected.sorry_active
    assert syncer.drift == 0


async def test_a_verdict_waiting_when_the_reread_is_due_goes_first(
    syncers: list[IpvsSyncer],
) -> None:
    journal: list[str] = []

    class JournalPort(RecordingPort):
        async def list_services(self) -> dict[ServiceKey, Service]:
            journal.append("read")
            return await super().list_services()

        async def _record(self, operation: Operation) -> None:
            journal.append(type(operation).__name__)
            await super()._record(operation)

    port = JournalPort()
    syncer = await start(port, syncers, resync_interval=0.05)
    await asyncio.sleep(0)
    journal.clear()
    # Hold the loop past the re-read's due time, so the verdict is waiting when the pass starts.
    time.sleep(0.06)
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: "read" in journal, "the periodic re-read")
    assert journal[:2] == ["DeleteDestination", "read"]


async def test_latency_is_measured_to_the_acknowledgement(syncers: list[IpvsSyncer]) -> None:
    class SlowPort(RecordingPort):
        async def delete_destination(self, service: ServiceKey, key: DestinationKey) -> None:
            await asyncio.sleep(0.02)  # the kernel taking its time to acknowledge
            await super().delete_destination(service, key)

    port = SlowPort()
    syncer = await start(port, syncers)
    assert syncer.latency.count == 0  # the initial verdicts were not detections
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: syncer.latency.count == 1, "one latency sample")
    assert 0.02 <= syncer.latency.p50 < 1.0
    # A verdict that changes nothing in the kernel gives no sample.
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY, weight=5))
    await next_passes(syncer)
    assert syncer.latency.count == 1


# Quorum and sorry server.


async def test_quorum_lost_swaps_in_the_sorry_server(
    port: RecordingPort, syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    syncer = await start(port, syncers)
    sorry = {"10.0.9.9": 1}
    # Healthy weight 3 -> 2: still at least quorum 2 - hysteresis 1.
    syncer.on_verdict(verdict(MAIL_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(MAIL) == {"10.0.0.22": 1, "10.0.0.23": 1}, "one out")
    assert syncer.sorry_active == frozenset()
    with caplog.at_level(logging.WARNING, logger="lvsha.ipvs.syncer"):
        syncer.on_verdict(verdict(MAIL_B, Health.UNHEALTHY))
        syncer.on_verdict(verdict(MAIL_C, Health.UNHEALTHY))
        await eventually(lambda: port.weights(MAIL) == sorry, "sorry server alone")
    assert syncer.sorry_active == frozenset({MAIL})
    assert "mail (TCP 192.0.2.10:25): quorum lost" in caplog.text
    # Weight 2 is below quorum 2 + hysteresis 1: the sorry server stays.
    syncer.on_verdict(verdict(MAIL_A, Health.HEALTHY))
    syncer.on_verdict(verdict(MAIL_B, Health.HEALTHY))
    await next_passes(syncer)
    assert port.weights(MAIL) == sorry
    syncer.on_verdict(verdict(MAIL_C, Health.HEALTHY))
    await eventually(lambda: port.weights(MAIL) == HEALTHY_WEIGHTS_MAIL, "real servers back")
    assert syncer.sorry_active == frozenset()


HEALTHY_WEIGHTS_MAIL = {"10.0.0.21": 1, "10.0.0.22": 1, "10.0.0.23": 1}


# Drift.


async def test_drift_is_corrected_and_logged(
    port: RecordingPort, syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    syncer = await start(port, syncers)
    hand = port.by_hand()
    await hand.delete_service(WEB)
    await hand.add_destination(DNS, dest("10.0.0.99", 53, 4, NAT))
    await hand.edit_destination(MAIL, dest("10.0.0.22", 25, 5, NAT))
    with caplog.at_level(logging.INFO, logger="lvsha.ipvs.syncer"):
        syncer.request_resync()
        await eventually(lambda: port.snapshot() == HEALTHY_TABLE, "corrected")
    assert "IPVS drift: service TCP 192.0.2.10:80 missing; correcting" in caplog.text
    assert (
        "IPVS drift: service UDP 192.0.2.10:53 destination 10.0.0.99:53 added by someone else "
        "(weight 4)"
    ) in caplog.text
    assert (
        "IPVS drift: service TCP 192.0.2.10:25 destination 10.0.0.22:25 weight 5, want 1"
    ) in caplog.text
    assert "IPVS: add service TCP 192.0.2.10:80 (scheduler wrr)" in caplog.text
    assert "IPVS: edit destination 10.0.0.22:25 of service TCP 192.0.2.10:25: weight 5, want 1" in (
        caplog.text
    )
    assert syncer.drift == 3


async def test_drift_is_found_by_the_periodic_reread(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers, resync_interval=0.05)
    await port.by_hand().delete_service(DNS)
    await eventually(lambda: port.snapshot() == HEALTHY_TABLE, "re-added", timeout=2.0)
    assert syncer.drift == 1


async def test_unmanaged_services_are_never_touched(
    syncers: list[IpvsSyncer],
) -> None:
    port = RecordingPort({OTHER: UNMANAGED})
    syncer = await start(port, syncers, on_stop=OnStop.REMOVE)
    # Hand changes inside it are not drift: it is not lvsha's.
    await port.by_hand().add_destination(OTHER, dest("10.1.0.2", 80, 1))
    syncer.request_resync()
    await next_passes(syncer)
    assert syncer.drift == 0
    assert all(operation_service(op) != OTHER for op in port.log)
    await syncer.stop()
    assert port.snapshot() == {
        OTHER: Service(OTHER, UNMANAGED.options, (*UNMANAGED.destinations, dest("10.1.0.2", 80, 1)))
    }


def operation_service(operation: Operation) -> ServiceKey:
    match operation:
        case AddService(key) | EditService(key) | DeleteService(key):
            return key
        case AddDestination(key) | EditDestination(key) | DeleteDestination(key):
            return key
    raise AssertionError(operation)


# Adoption after a crash.


async def test_adoption_leaves_a_healthy_table_alone(syncers: list[IpvsSyncer]) -> None:
    """A restart with alpha checks: every verdict starts Unhealthy, nothing proven yet."""
    port = RecordingPort(HEALTHY_TABLE)
    syncer = await start(port, syncers, restart_verdicts())
    assert port.log == []
    assert syncer.held == frozenset(ALL_IDS) - {WEB_B}  # it has no checks: Up at once
    # Checks prove the servers healthy one by one: still nothing to do.
    for i in ALL_IDS:
        syncer.on_verdict(verdict(i, Health.HEALTHY))
    await next_passes(syncer)
    assert port.log == []
    assert syncer.held == frozenset()
    assert port.snapshot() == HEALTHY_TABLE


async def test_adopted_destination_follows_its_first_probed_verdict(
    syncers: list[IpvsSyncer],
) -> None:
    port = RecordingPort(HEALTHY_TABLE)
    syncer = await start(port, syncers, restart_verdicts())
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(WEB) == {"10.0.0.2": 1}, "removed once proven down")
    assert port.log == [DeleteDestination(WEB, DestinationKey(ip_address("10.0.0.1"), 80))]


async def test_adoption_hold_ends_after_the_settle_time(syncers: list[IpvsSyncer]) -> None:
    quick = CONFIG.replace(
        "checks: [{type: tcp, alpha: true, rise: 2, interval: 1s, timeout: 1s, warmup: 1s}]",
        "checks: [{type: tcp, alpha: true, rise: 1, interval: 50ms, timeout: 50ms, warmup: 0s}]",
    )
    configured = services(quick)
    port = RecordingPort(HEALTHY_TABLE)
    unproven = [verdict(i, Health.UNHEALTHY, probed=False) for i in ALL_IDS[:1]]
    rest = [verdict(i, Health.HEALTHY, probed=False) for i in ALL_IDS[1:]]
    syncer = await start(port, syncers, unproven + rest, configured=configured)
    assert port.log == []
    # A down server with alpha never publishes another verdict: the hold has to end by itself.
    await eventually(lambda: port.weights(WEB) == {"10.0.0.2": 1}, "removed after settle time")
    assert syncer.held == frozenset(ALL_IDS) - {WEB_A, WEB_B}


async def test_adoption_keeps_quorum_within_the_hysteresis_band(
    syncers: list[IpvsSyncer],
) -> None:
    # Two of three mail servers were in: weight 2, within quorum 2 +- hysteresis 1. Deciding
    # afresh (2 < 3) would swap the sorry server in at restart.
    table = dict(HEALTHY_TABLE)
    table[MAIL] = Service(
        MAIL, ServiceOptions("wlc"), tuple(dest(f"10.0.0.2{n}", 25, 1, NAT) for n in (1, 2))
    )
    port = RecordingPort(table)
    verdicts = all_healthy()
    verdicts[ALL_IDS.index(MAIL_C)] = verdict(MAIL_C, Health.UNHEALTHY)
    syncer = await start(port, syncers, verdicts)
    assert port.log == []
    assert syncer.sorry_active == frozenset()


async def test_adoption_keeps_the_sorry_server_in(syncers: list[IpvsSyncer]) -> None:
    table = dict(HEALTHY_TABLE)
    table[MAIL] = Service(MAIL, ServiceOptions("wlc"), (dest("10.0.9.9", 2525, 1, NAT),))
    port = RecordingPort(table)
    verdicts = all_healthy()
    for i in (MAIL_A, MAIL_B):
        verdicts[ALL_IDS.index(i)] = verdict(i, Health.HEALTHY)
    verdicts[ALL_IDS.index(MAIL_C)] = verdict(MAIL_C, Health.UNHEALTHY)
    syncer = await start(port, syncers, verdicts)
    # Healthy weight 2 is below 2 + 1: quorum stays lost, as it was.
    assert port.log == []
    assert syncer.sorry_active == frozenset({MAIL})


# Configuration changes.


async def test_config_change_edits_and_removes_once(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    port.log.clear()
    changed = CONFIG.replace("scheduler: rr", "scheduler: wrr").replace(
        "{address: 10.0.0.12, weight: 3,", "{address: 10.0.0.12, weight: 6,"
    )
    without_mail = changed[: changed.index("  - name: mail")]
    syncer.reconfigure(services(without_mail))
    await eventually(lambda: MAIL not in port.snapshot(), "mail removed")
    assert port.log == [
        EditService(DNS, ServiceOptions("wrr")),
        EditDestination(DNS, dest("10.0.0.12", 53, 6, NAT)),
        *(
            DeleteDestination(MAIL, DestinationKey(ip_address(f"10.0.0.2{n}"), 25))
            for n in (1, 2, 3)
        ),
        DeleteService(MAIL),
    ]
    # Once removed it is no longer lvsha's: put back by hand, it stays.
    await port.by_hand().add_service(MAIL, ServiceOptions("rr"))
    syncer.request_resync()
    await next_passes(syncer)
    assert MAIL in port.snapshot()
    assert syncer.managed() == {WEB, DNS}


async def test_new_config_adopts_new_real_servers_found_in_the_kernel(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    await port.by_hand().add_destination(WEB, dest("10.0.0.3", 80, 1))
    extra = CONFIG.replace(
        "      - address: 10.0.0.2\n        weight: 1\n",
        "      - address: 10.0.0.2\n        weight: 1\n"
        "      - address: 10.0.0.3\n        checks: [{type: tcp, alpha: true}]\n",
    )
    configured = services(extra)
    port.log.clear()
    syncer.reconfigure(configured)
    await next_passes(syncer)
    # No verdict yet for the new real server; it is in the kernel, so it is left as it is.
    assert port.log == []
    assert port.weights(WEB) == {"10.0.0.1": 2, "10.0.0.2": 1, "10.0.0.3": 1}


# Stop.


async def test_stop_keep_leaves_the_table(port: RecordingPort, syncers: list[IpvsSyncer]) -> None:
    syncer = await start(port, syncers, on_stop=OnStop.KEEP)
    await syncer.stop()
    assert port.snapshot() == HEALTHY_TABLE
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))  # after stop: ignored
    await asyncio.sleep(0)
    assert port.snapshot() == HEALTHY_TABLE


async def test_stop_remove_deletes_what_lvsha_manages(syncers: list[IpvsSyncer]) -> None:
    port = RecordingPort({OTHER: UNMANAGED})
    syncer = await start(port, syncers, on_stop=OnStop.REMOVE)
    assert port.snapshot().keys() == {OTHER, WEB, DNS, MAIL}
    await syncer.stop()
    assert port.snapshot() == {OTHER: UNMANAGED}


# Errors.


async def test_a_refused_operation_is_logged_and_the_rest_goes_on(
    syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    port = RecordingPort()
    module_missing = True

    def no_wrr(operation: Operation) -> IpvsError | None:
        if module_missing and isinstance(operation, AddService) and operation.key == WEB:
            return UnknownModuleError("scheduler module ip_vs_wrr not found")
        return None

    port.refuse = no_wrr
    with caplog.at_level(logging.INFO, logger="lvsha.ipvs.syncer"):
        syncer = await start(port, syncers, error_retry_delay=0.01)
        await next_passes(syncer, 3)
    assert port.snapshot().keys() == {DNS, MAIL}
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    # Logged once with the operation, then retried quietly; its destinations, sent in the same
    # batch, fail with it and are neither logged as errors nor counted.
    assert len(refusals) == 1
    assert refusals[0].getMessage() == (
        "IPVS: add service TCP 192.0.2.10:80 (scheduler wrr) refused by the kernel: "
        "scheduler module ip_vs_wrr not found"
    )
    # One error per pass (one pass may be under way), not one per refused destination too.
    assert 3 <= syncer.errors <= syncer.passes + 1
    module_missing = False
    await eventually(lambda: port.snapshot() == HEALTHY_TABLE, "added once the module is there")


async def test_a_refusal_triggers_a_reread_and_replan(syncers: list[IpvsSyncer]) -> None:
    port = RecordingPort()
    syncer = await start(port, syncers, error_retry_delay=0.01)
    refused: list[Operation] = []

    def once(operation: Operation) -> IpvsError | None:
        if isinstance(operation, DeleteDestination) and not refused:
            refused.append(operation)
            return IpvsError("pretend the kernel said no")
        return None

    port.refuse = once
    reads = port.reads
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(WEB) == {"10.0.0.2": 1}, "removed on the retry")
    assert refused
    assert port.reads > reads
    assert syncer.latency.count == 1  # counted once, when the retry was acknowledged


async def test_a_failing_pass_does_not_kill_the_task(
    port: RecordingPort, syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    syncer = await start(port, syncers, error_retry_delay=0.01)
    real_list = port.list_services
    failures: list[int] = []

    async def broken() -> dict[ServiceKey, Service]:
        if not failures:
            failures.append(1)
            raise OSError("netlink socket went away")
        return await real_list()

    port.list_services = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="lvsha.ipvs.syncer"):
        syncer.request_resync()
        await next_passes(syncer)
    assert "IPVS sync pass failed" in caplog.text
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(WEB) == {"10.0.0.2": 1}, "still syncing")


# The pure parts.


async def test_apply_to_table_matches_the_memory_port() -> None:
    start_table: dict[ServiceKey, Service] = {OTHER: UNMANAGED, WEB: HEALTHY_TABLE[WEB]}
    target = dict(HEALTHY_TABLE)
    target[WEB] = Service(WEB, ServiceOptions("rr"), (dest("10.0.0.2", 80, 4),))
    port = MemoryIpvsTable(start_table.values())
    believed = dict(start_table)
    operations = plan(target, start_table, managed={WEB, DNS, MAIL, OTHER})
    assert {type(op) for op in operations} == {
        AddService,
        EditService,
        DeleteService,
        AddDestination,
        EditDestination,
        DeleteDestination,
    }
    for operation in operations:
        await apply_operation(port, operation)
        apply_to_table(believed, operation)
        assert believed == port.snapshot()
    assert believed == target  # OTHER was in `managed`, so it went
    # The batched form, which the syncer uses, gives the same table.
    batched = dict(start_table)
    apply_all_to_table(batched, operations)
    assert batched == target


def test_apply_all_to_table_takes_runs_of_destination_operations_in_order() -> None:
    table: dict[ServiceKey, Service] = {}
    operations: list[Operation] = [
        AddService(WEB, ServiceOptions("rr")),
        *(AddDestination(WEB, dest(f"10.0.{i // 250}.{i % 250 + 1}", 80, 1)) for i in range(500)),
        EditDestination(WEB, dest("10.0.0.1", 80, 7)),
        DeleteDestination(WEB, dest("10.0.0.2", 80, 1).key),
        EditService(WEB, ServiceOptions("wlc")),
        AddDestination(WEB, dest("10.0.0.2", 80, 3)),
    ]
    one_by_one: dict[ServiceKey, Service] = {}
    for operation in operations:
        apply_to_table(one_by_one, operation)
    apply_all_to_table(table, operations)
    assert table == one_by_one
    assert table[WEB].options == ServiceOptions("wlc")
    assert len(table[WEB].destinations) == 500


def test_describe_drift_names_each_difference() -> None:
    expected: dict[ServiceKey, Service] = {WEB: HEALTHY_TABLE[WEB], DNS: HEALTHY_TABLE[DNS]}
    found: dict[ServiceKey, Service] = {
        WEB: Service(WEB, ServiceOptions("rr"), (dest("10.0.0.1", 80, 2, NAT),)),
        OTHER: UNMANAGED,
        MAIL: HEALTHY_TABLE[MAIL],
    }
    assert describe_drift(expected, found, {WEB, DNS, MAIL}) == [
        "service TCP 192.0.2.10:25 added by someone else",
        "service TCP 192.0.2.10:80 scheduler rr, want wrr",
        "service TCP 192.0.2.10:80 destination 10.0.0.1:80 forwarding masquerade, "
        "want direct_route",
        "service TCP 192.0.2.10:80 destination 10.0.0.2:80 missing",
        "service UDP 192.0.2.10:53 missing",
    ]
    assert describe_drift(expected, expected, {WEB, DNS}) == []


def test_describe_operation() -> None:
    before = HEALTHY_TABLE
    assert (
        describe_operation(EditDestination(WEB, dest("10.0.0.1", 80, 0)), before)
        == "edit destination 10.0.0.1:80 of service TCP 192.0.2.10:80: weight 2, want 0"
    )
    assert (
        describe_operation(AddDestination(WEB, dest("10.0.0.3", 80, 1)), before)
        == "add destination 10.0.0.3:80 to service TCP 192.0.2.10:80 (weight 1, direct_route)"
    )
    assert describe_operation(DeleteService(DNS), before) == "delete service UDP 192.0.2.10:53"


def test_desired_table_honours_holds_until_they_end() -> None:
    web = SERVICES[0]
    observed: dict[ServiceKey, Service] = {
        WEB: Service(WEB, ServiceOptions("wrr"), (dest("10.0.0.1", 80, 9),))
    }
    verdicts = {WEB_A: Verdict(Health.UNHEALTHY), WEB_B: Verdict(Health.UNHEALTHY)}
    holds = adoption_holds([web], observed, now=100.0)
    assert holds == {WEB_A: pytest.approx(100.0 + web.real_servers[0].settle_time)}
    held = desired_table([web], verdicts, holds=holds, observed=observed, quorum={}, now=101.0)
    # Kept at the weight it has; the other one, not in the kernel, stays out.
    assert held.services[WEB].destinations == (dest("10.0.0.1", 80, 9),)
    over = desired_table([web], verdicts, holds=holds, observed=observed, quorum={}, now=200.0)
    assert over.services[WEB].destinations == ()


def test_adopted_quorum() -> None:
    mail = SERVICES[2]
    assert adopted_quorum(mail, None) is None
    assert adopted_quorum(SERVICES[0], HEALTHY_TABLE[WEB]) is None  # no sorry server
    assert adopted_quorum(mail, HEALTHY_TABLE[MAIL]) == QuorumState(True, 3)
    sorry_in = Service(MAIL, ServiceOptions(), (dest("10.0.9.9", 2525, 1, NAT),))
    assert adopted_quorum(mail, sorry_in) == QuorumState(False, 0)


def test_latency_stats() -> None:
    stats = LatencyStats(window=100)
    assert stats.p50 == 0.0
    for sample in range(1, 201):
        stats.record(sample / 1000)
    assert stats.count == 200
    assert stats.p50 == pytest.approx(0.150)  # the window holds the last 100
    assert stats.p99 == pytest.approx(0.199)
    assert stats.max == pytest.approx(0.200)
    with pytest.raises(ValueError, match="quantile"):
        stats.quantile(1.5)


# Log volume.


async def test_a_flapping_destination_is_logged_once_then_summarised(
    syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    port = RecordingPort(HEALTHY_TABLE)
    syncer = await start(port, syncers)
    with caplog.at_level(logging.INFO, logger="lvsha.ipvs.syncer"):
        for flip in range(20):
            health = Health.UNHEALTHY if flip % 2 == 0 else Health.HEALTHY
            syncer.on_verdict(verdict(WEB_A, health))
            present = flip % 2 == 1
            await eventually(
                lambda: ("10.0.0.1" in port.weights(WEB)) is present,  # noqa: B023
                f"flip {flip}",
            )
        lines = [r.getMessage() for r in caplog.records if "10.0.0.1:80" in r.getMessage()]
        assert lines == ["IPVS: delete destination 10.0.0.1:80 of service TCP 192.0.2.10:80"]
        await syncer.stop()
    lines = [r.getMessage() for r in caplog.records if "10.0.0.1:80" in r.getMessage()]
    assert lines[1:] == [
        "IPVS: destination 10.0.0.1:80 of service TCP 192.0.2.10:80: 19 operations in the last "
        "0 s, the last: add destination 10.0.0.1:80 to service TCP 192.0.2.10:80 (weight 2, "
        "direct_route)"
    ]


def test_presumptions_read_how_each_real_server_stood() -> None:
    found: dict[ServiceKey, Service] = {
        # web: 10.0.0.1 at a dynamic weight, 10.0.0.2 absent (failed, no inhibit)
        WEB: Service(WEB, ServiceOptions("wrr"), (dest("10.0.0.1", 80, 7),)),
        # dns (inhibit_on_failure): 10.0.0.11 failed (weight 0), 10.0.0.12 at its weight
        DNS: Service(
            DNS,
            ServiceOptions("rr"),
            (dest("10.0.0.11", 53, 0, NAT), dest("10.0.0.12", 53, 3, NAT)),
        ),
        # mail is not in the kernel: a first start for it, no presumption
    }
    assert presumptions(SERVICES, found) == {
        WEB_A: Presumption(up=True, weight=7),
        WEB_B: Presumption(up=False),
        DNS_A: Presumption(up=False),
        DNS_B: Presumption(up=True),
    }
    assert presumptions(SERVICES, {}) == {}


def test_a_drained_real_server_is_presumed_in_at_weight_zero() -> None:
    found: dict[ServiceKey, Service] = {
        WEB: Service(WEB, ServiceOptions("wrr"), (dest("10.0.0.1", 80, 2), dest("10.0.0.2", 80, 0)))
    }
    assert presumptions(SERVICES, found) == {
        WEB_A: Presumption(up=True),
        WEB_B: Presumption(up=True, weight=0),
    }
