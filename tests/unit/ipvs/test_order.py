"""The order of a service's destinations in the kernel, which hashing schedulers depend on.

The kernel adds a destination at the head of its service's list; mh, sh and dh build their
lookup tables by walking that list. lvsha's canonical order is the configuration's: real servers
added in the order of the file, so every director with the same file lists them alike. These
tests check the in-memory table models the kernel's list, the plan's moves (fewest, and right),
and the syncer restoring the order at adoption, after drift, and after a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from ipaddress import ip_address

import pytest

from lvsha.checks.verdict import Health, RealServerVerdict, Verdict
from lvsha.config import load_text
from lvsha.ipvs.desired import desired_service
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Forwarding,
    Service,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
)
from lvsha.ipvs.plan import (
    AddDestination,
    DeleteDestination,
    Operation,
    moved_destinations,
    moves,
    plan,
)
from lvsha.ipvs.port import apply_operation
from lvsha.ipvs.specs import ConfiguredService, configured_services
from lvsha.ipvs.syncer import IpvsSyncer, apply_all_to_table, apply_to_table, find_drift

VIP = ip_address("192.0.2.10")
KEY = AddressKey(TransportProtocol.TCP, VIP, 80)
MH = ServiceOptions("mh")
DR = Forwarding.DIRECT_ROUTE


def d(n: int, weight: int = 1) -> Destination:
    return Destination(ip_address(f"10.0.0.{n}"), 80, weight=weight, forwarding=DR)


def k(n: int) -> DestinationKey:
    return d(n).key


def service(order: Sequence[int], options: ServiceOptions = MH, weight: int = 1) -> Service:
    """A service whose kernel list is `order` (head first)."""
    return Service(KEY, options, tuple(d(n, weight) for n in order), tuple(map(k, order)))


async def kernel_order(table: MemoryIpvsTable) -> list[int]:
    found = (await table.list_services())[KEY]
    assert found.order is not None
    return [int(key.address) & 0xFF for key in found.order]


async def test_the_memory_table_lists_as_the_kernel_does() -> None:
    table = MemoryIpvsTable([Service(KEY, MH)])
    for n in (1, 2, 3):
        await table.add_destination(KEY, d(n))
    assert await kernel_order(table) == [3, 2, 1]  # list_add_rcu: at the head
    await table.edit_destination(KEY, d(2, weight=5))
    assert await kernel_order(table) == [3, 2, 1]  # an edit stays in place
    await table.delete_destination(KEY, k(2))
    await table.add_destination(KEY, d(2))
    assert await kernel_order(table) == [2, 3, 1]  # deleted and added: at the head
    # A table built from services lists each in its `order`.
    assert await kernel_order(MemoryIpvsTable([service([4, 1, 3])])) == [4, 1, 3]


def test_the_desired_order_is_the_configuration_s() -> None:
    (configured,) = configured_services(
        load_text(
            """
virtual_servers:
  - {address: 192.0.2.10, port: 80, protocol: TCP, scheduler: mh, forwarding: DR,
     sorry_server: {address: 10.0.0.9}, quorum: 3,
     real_servers: [{address: 10.0.0.3}, {address: 10.0.0.1}, {address: 10.0.0.2}]}
"""
        )
    )
    up = {rs.key: Verdict(Health.HEALTHY) for rs in configured.spec.real_servers}
    held = desired_service(configured.spec, up, None).service
    assert held.order == (k(2), k(1), k(3))  # added 3, 1, 2: the last added comes first
    down = dict(up)
    down[k(1)] = Verdict(Health.UNHEALTHY)
    sorry = desired_service(configured.spec, down, None).service  # quorum 3: the sorry server in
    assert sorry.order == (k(9),)


def test_mh_moves_a_destination_going_to_weight_zero_and_those_ahead_of_it() -> None:
    order = (k(4), k(3), k(2), k(1))
    want = Service(KEY, MH, (d(1), d(2, weight=0), d(3), d(4)), order)
    assert moves(want, service([4, 3, 2, 1])) == {k(2), k(3), k(4)}
    # Already at 0: nothing to forget. sh and dh keep no last weight.
    assert moves(want, Service(KEY, MH, want.destinations, order)) == set()
    sh = ServiceOptions("sh")
    assert moves(Service(KEY, sh, want.destinations, order), service([4, 3, 2, 1], sh)) == set()


@pytest.mark.parametrize(
    ("desired", "listed", "moved"),
    [
        ([4, 3, 2, 1], [4, 3, 2, 1], set()),  # in order
        ([4, 3, 2, 1], [1, 2, 3, 4], {2, 3, 4}),  # reversed: only the last stays
        ([4, 3, 2, 1], [2, 4, 3, 1], {4, 3}),  # 2 failed and came back at the head
        ([4, 3, 2, 1], [4, 3, 1], {4, 3}),  # 2 coming back: 4 and 3 go again ahead of it
        ([4, 3, 1], [4, 3, 1], set()),  # 2 out: nothing to move
        ([4, 2, 1], [4, 3, 2, 1], set()),  # 3 leaving (draining, unconstrained) is skipped
        ([3, 2, 1], [3, 1, 9, 2], {3, 2}),  # 9 is not ordered; only 1 stays
        ([5, 4, 3, 2, 1], [2, 4, 3, 1], {4, 3}),  # 2 must go after 5, 4, 3 added ahead of it
    ],
)
def test_moves_are_the_destinations_ahead_of_the_longest_kept_tail(
    desired: list[int], listed: list[int], moved: set[int]
) -> None:
    want = Service(KEY, MH, tuple(map(d, desired)), tuple(map(k, desired)))
    have = service(listed)
    assert moves(want, have) == {k(n) for n in moved}
    # Only hashing schedulers care.
    assert moves(Service(KEY, ServiceOptions("wlc"), want.destinations, want.order), have) == set()


def moved_by_hand(listed: list[int], desired: list[int], moving: set[int]) -> list[int]:
    """The kernel list after deleting `moving` and adding what `desired` lacks, last first."""
    result = [n for n in listed if n not in moving]
    for n in reversed(desired):
        if n in moving or n not in listed:
            result.insert(0, n)
    return result


@pytest.mark.parametrize("seed", range(4))
async def test_plans_end_in_the_desired_order_with_the_fewest_moves(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        pool = list(range(1, rng.randint(1, 6) + 1))
        listed = rng.sample(pool, rng.randint(0, len(pool)))
        desired = rng.sample(pool, rng.randint(1, len(pool)))
        desired.sort(key=pool.index, reverse=True)  # a subset of one configured order
        weights = {n: rng.choice((0, 1, 2)) for n in pool}
        want = Service(KEY, MH, tuple(d(n, weights[n]) for n in desired), tuple(map(k, desired)))
        have = service(listed)
        table = MemoryIpvsTable([have])
        believed: dict[ServiceKey, Service] = {KEY: have}
        operations = plan({KEY: want}, {KEY: have}, managed={KEY})
        for operation in operations:
            await apply_operation(table, operation)
        apply_all_to_table(believed, operations)
        assert await kernel_order(table) == desired, (listed, desired)
        assert believed[KEY].order == want.order
        assert (await table.list_services())[KEY] == want
        moved = moved_destinations(operations).get(KEY, [])
        assert set(moved) == moves(want, have)
        # mh: a weight-0 destination has no last weight left over, as if added at 0.
        for destination in want.destinations:
            assert table.last_weight(KEY, destination.key) == destination.weight
        # No smaller set of moves would do: those going to weight 0, then the order.
        zeroed = {n for n in listed if n in desired and weights[n] == 0}
        others = [n for n in listed if n in desired and n not in zeroed]
        for size in range(len(moved) - len(zeroed)):
            for subset in itertools.combinations(others, size):
                assert moved_by_hand(listed, desired, zeroed | set(subset)) != desired


async def test_believed_tables_follow_the_kernel_s_order() -> None:
    table = MemoryIpvsTable([service([3, 1, 2])])
    one: dict[ServiceKey, Service] = {KEY: service([3, 1, 2])}
    batched = dict(one)
    operations: list[Operation] = [
        DeleteDestination(KEY, k(1)),
        AddDestination(KEY, d(4)),
        AddDestination(KEY, d(1)),
    ]
    for operation in operations:
        await apply_operation(table, operation)
        apply_to_table(one, operation)
    apply_all_to_table(batched, operations)
    assert one[KEY].order == batched[KEY].order == (k(1), k(4), k(3), k(2))
    assert await kernel_order(table) == [1, 4, 3, 2]


def test_drift_in_order_is_found_for_hashing_schedulers_only() -> None:
    left, found = service([3, 2, 1]), service([2, 3, 1])
    (drift,) = find_drift({KEY: left}, {KEY: found}, {KEY})
    assert drift.order
    assert drift.text == (
        "service TCP 192.0.2.10:80 destinations listed in the order 10.0.0.2:80, 10.0.0.3:80, "
        "10.0.0.1:80, left in the order 10.0.0.3:80, 10.0.0.2:80, 10.0.0.1:80 (mh hashes by it)"
    )
    wlc = ServiceOptions("wlc")
    assert find_drift({KEY: service([3, 2, 1], wlc)}, {KEY: service([2, 3, 1], wlc)}, {KEY}) == []


# The syncer, on the in-memory table.

CONFIG = """
virtual_servers:
  - address: 192.0.2.10
    port: 80
    protocol: TCP
    scheduler: mh
    scheduler_flags: [mh-port]
    forwarding: DR
    inhibit_on_failure: {inhibit}
    real_servers:
      - {{address: 10.0.0.1}}
      - {{address: 10.0.0.2}}
      - {{address: 10.0.0.3}}
      - {{address: 10.0.0.4}}
"""
CANONICAL = [4, 3, 2, 1]
"""Added 1, 2, 3, 4 as configured: the kernel lists the last added first."""


def configured(inhibit: bool = False) -> tuple[ConfiguredService, ...]:
    return configured_services(load_text(CONFIG.format(inhibit=str(inhibit).lower())))


def verdicts(
    services: Sequence[ConfiguredService],
    health: Callable[[int], Health] = lambda n: Health.HEALTHY,
) -> list[RealServerVerdict]:
    return [
        RealServerVerdict(rs.id, health(int(rs.destination.address) & 0xFF), None, "probe", None, 0)
        for service in services
        for rs in service.real_servers
    ]


@pytest.fixture
async def syncers() -> AsyncIterator[list[IpvsSyncer]]:
    started: list[IpvsSyncer] = []
    yield started
    for syncer in started:
        await syncer.stop()


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def started(
    syncers: list[IpvsSyncer], table: MemoryIpvsTable, inhibit: bool = False
) -> IpvsSyncer:
    services = configured(inhibit)
    syncer = IpvsSyncer(table, services, resync_interval=3600)
    syncers.append(syncer)
    await syncer.start(verdicts(services))
    return syncer


async def test_the_syncer_orders_at_adoption_after_drift_and_after_a_failure(
    syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    fresh = MemoryIpvsTable()
    await started(syncers, fresh)
    assert await kernel_order(fresh) == CANONICAL  # a second director, from scratch

    # Adoption: a table written in another order (e.g. ipvsadm -R of a sorted -S dump).
    table = MemoryIpvsTable([service([1, 2, 3, 4], ServiceOptions("mh", flags=MH_PORT))])
    with caplog.at_level(logging.INFO, logger="lvsha.ipvs.syncer"):
        syncer = await started(syncers, table)
    assert await kernel_order(table) == CANONICAL
    assert syncer.order_repairs == 3  # 1 stays at the tail; 2, 3, 4 are added again before it
    assert (
        "moving 10.0.0.2:80, 10.0.0.3:80, 10.0.0.4:80 (delete and add again) so its "
        "destinations are in the configured order, which its scheduler mh hashes by; the "
        "kernel lists 10.0.0.1:80, 10.0.0.2:80, 10.0.0.3:80, 10.0.0.4:80"
    ) in caplog.text

    # Drift: someone deletes and adds a destination again by hand.
    await table.delete_destination(KEY, k(2))
    await table.add_destination(KEY, d(2))
    syncer.request_resync()
    await until(lambda: syncer.order_repairs == 5)  # 4 and 3 go ahead of 2 again
    assert await kernel_order(table) == CANONICAL
    assert syncer.drift == 1 and syncer.drift_repairs == 4

    # A real server fails (removed) and comes back (at the head): the order holds.
    syncer.on_verdict(verdicts(syncer.services, lambda n: Health.UNHEALTHY)[1])
    await until(lambda: len((table.snapshot())[KEY].destinations) == 3)
    assert await kernel_order(table) == [4, 3, 1]
    syncer.on_verdict(verdicts(syncer.services)[1])
    await until(lambda: syncer.order_repairs == 7)
    assert await kernel_order(table) == await kernel_order(fresh) == CANONICAL
    assert table.snapshot() == fresh.snapshot()


async def test_with_inhibit_on_failure_mh_forgets_the_failed_weight(
    syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    # A director that saw 10.0.0.2 fail, and one that started while it was down.
    table = MemoryIpvsTable()
    syncer = await started(syncers, table, inhibit=True)
    down = MemoryIpvsTable()
    services = configured(inhibit=True)
    later = IpvsSyncer(down, services, resync_interval=3600)
    syncers.append(later)
    await later.start(verdicts(services, lambda n: Health.UNHEALTHY if n == 2 else Health.HEALTHY))
    assert down.last_weight(KEY, k(2)) == 0  # added at 0: no share of the mh table

    caplog.set_level(logging.INFO, logger="lvsha.ipvs.syncer")
    syncer.on_verdict(verdicts(syncer.services, lambda n: Health.UNHEALTHY)[1])
    await until(lambda: table.snapshot()[KEY].destinations_by_key[k(2)].weight == 0)
    # Added again at 0 rather than edited (which would keep last_weight 1), with 4 and 3
    # moved again ahead of it.
    assert table.last_weight(KEY, k(2)) == 0
    assert await kernel_order(table) == await kernel_order(down) == CANONICAL
    assert table.snapshot() == down.snapshot()
    assert syncer.order_repairs == 3
    assert (
        "moving 10.0.0.2:80, 10.0.0.3:80, 10.0.0.4:80 (delete and add again) so its "
        "destinations are in the configured order and 10.0.0.2:80 at weight 0 without the "
        "weight the kernel would remember, which its scheduler mh hashes by"
    ) in caplog.text

    # Back: an edit in place, as on the other director.
    syncer.on_verdict(verdicts(syncer.services)[1])
    later.on_verdict(verdicts(later.services)[1])
    await until(lambda: table.snapshot()[KEY].destinations_by_key[k(2)].weight == 1)
    await until(lambda: down.snapshot()[KEY].destinations_by_key[k(2)].weight == 1)
    assert table.last_weight(KEY, k(2)) == down.last_weight(KEY, k(2)) == 1
    assert await kernel_order(table) == await kernel_order(down) == CANONICAL
    assert syncer.order_repairs == 3 and later.order_repairs == 0


MH_PORT = configured()[0].spec.options.flags
