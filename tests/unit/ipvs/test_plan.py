"""plan() on hand-written tables."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    Family,
    Forwarding,
    FwmarkKey,
    Persistence,
    Service,
    ServiceFlags,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
    table_of,
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
from lvsha.ipvs.port import apply_operation

WEB = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 80)
DNS6 = AddressKey(TransportProtocol.UDP, ip_address("2001:db8::53"), 53)
MARKED = FwmarkKey(7, Family.INET)
FOREIGN = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.99"), 443)

RR = ServiceOptions(scheduler="rr")


def rs(
    address: str,
    weight: int = 1,
    port: int = 80,
    *,
    forwarding: Forwarding = Forwarding.MASQUERADE,
    upper_threshold: int = 0,
    lower_threshold: int = 0,
) -> Destination:
    return Destination(
        ip_address(address), port, weight, forwarding, upper_threshold, lower_threshold
    )


def web(*destinations: Destination, options: ServiceOptions = RR) -> Service:
    return Service(WEB, options, destinations)


async def converge(
    desired: dict[ServiceKey, Service],
    observed: dict[ServiceKey, Service],
    managed: frozenset[ServiceKey],
) -> tuple[list[Operation], dict[ServiceKey, Service]]:
    operations = plan(desired, observed, managed=managed)
    port = MemoryIpvsTable(observed.values())
    for operation in operations:
        await apply_operation(port, operation)
    return operations, port.snapshot()


async def test_create_from_empty_adds_service_then_its_destinations() -> None:
    desired = table_of([web(rs("10.0.0.1"), rs("10.0.0.2", weight=3))])

    operations, result = await converge(desired, {}, frozenset())

    assert operations == [
        AddService(WEB, RR),
        AddDestination(WEB, rs("10.0.0.1")),
        AddDestination(WEB, rs("10.0.0.2", weight=3)),
    ]
    assert result == desired


async def test_delete_all_managed_removes_destinations_before_their_service() -> None:
    observed = table_of(
        [
            web(rs("10.0.0.1"), rs("10.0.0.2")),
            Service(MARKED, RR, (rs("10.0.0.3", port=0),)),
        ]
    )

    operations, result = await converge({}, observed, frozenset({WEB, MARKED}))

    assert operations == [
        DeleteDestination(WEB, rs("10.0.0.1").key),
        DeleteDestination(WEB, rs("10.0.0.2").key),
        DeleteService(WEB),
        DeleteDestination(MARKED, rs("10.0.0.3", port=0).key),
        DeleteService(MARKED),
    ]
    assert result == {}


async def test_unmanaged_services_are_never_touched() -> None:
    foreign = Service(FOREIGN, ServiceOptions(), (rs("10.9.9.9", port=443),))
    observed = table_of([foreign, web(rs("10.0.0.1"))])

    operations, result = await converge({}, observed, frozenset({WEB}))

    assert operations == [DeleteDestination(WEB, rs("10.0.0.1").key), DeleteService(WEB)]
    assert result == {FOREIGN: foreign}


def test_a_desired_key_is_managed_even_if_not_listed_as_managed() -> None:
    observed = table_of([web(rs("10.0.0.1"))])
    desired = table_of([web(rs("10.0.0.1", weight=5))])

    assert plan(desired, observed, managed=frozenset()) == [
        EditDestination(WEB, rs("10.0.0.1", weight=5))
    ]


def test_equal_tables_need_nothing() -> None:
    table = table_of([web(rs("10.0.0.1"), rs("10.0.0.2"))])

    assert plan(table, dict(table), managed=frozenset({WEB})) == []


def test_destination_order_does_not_matter() -> None:
    desired = table_of([web(rs("10.0.0.1"), rs("10.0.0.2"))])
    observed = table_of([web(rs("10.0.0.2"), rs("10.0.0.1"))])

    assert plan(desired, observed, managed=frozenset()) == []


async def test_weight_change_is_an_edit() -> None:
    observed = table_of([web(rs("10.0.0.1"), rs("10.0.0.2"))])
    desired = table_of([web(rs("10.0.0.1", weight=0), rs("10.0.0.2"))])

    operations, result = await converge(desired, observed, frozenset({WEB}))

    assert operations == [EditDestination(WEB, rs("10.0.0.1", weight=0))]
    assert result == desired


async def test_scheduler_and_persistence_change_is_an_edit_of_the_service() -> None:
    sticky = ServiceOptions(
        scheduler="sh",
        flags=ServiceFlags.SH_PORT,
        persistence=Persistence(timeout=300, prefix_length=24),
    )
    observed = table_of([web(rs("10.0.0.1"))])
    desired = table_of([web(rs("10.0.0.1"), options=sticky)])

    operations, result = await converge(desired, observed, frozenset({WEB}))

    assert operations == [EditService(WEB, sticky)]
    assert result == desired


async def test_forwarding_change_is_an_edit_of_the_destination() -> None:
    observed = table_of([web(rs("10.0.0.1", forwarding=Forwarding.MASQUERADE))])
    desired = table_of([web(rs("10.0.0.1", forwarding=Forwarding.DIRECT_ROUTE))])

    operations, result = await converge(desired, observed, frozenset({WEB}))

    assert operations == [EditDestination(WEB, rs("10.0.0.1", forwarding=Forwarding.DIRECT_ROUTE))]
    assert result == desired


async def test_threshold_change_is_an_edit_of_the_destination() -> None:
    observed = table_of([web(rs("10.0.0.1"))])
    desired = table_of([web(rs("10.0.0.1", upper_threshold=100, lower_threshold=50))])

    operations, _ = await converge(desired, observed, frozenset({WEB}))

    assert operations == [
        EditDestination(WEB, rs("10.0.0.1", upper_threshold=100, lower_threshold=50))
    ]


async def test_port_change_is_a_different_destination() -> None:
    observed = table_of([web(rs("10.0.0.1", port=8080))])
    desired = table_of([web(rs("10.0.0.1", port=8081))])

    operations, result = await converge(desired, observed, frozenset({WEB}))

    assert operations == [
        AddDestination(WEB, rs("10.0.0.1", port=8081)),
        DeleteDestination(WEB, rs("10.0.0.1", port=8080).key),
    ]
    assert result == desired


async def test_swapping_servers_adds_before_it_deletes_so_the_pool_is_never_empty() -> None:
    observed = table_of([web(rs("10.0.0.1"), rs("10.0.0.2"))])
    desired = table_of([web(rs("10.0.0.2", weight=0), rs("10.0.0.99"))])

    operations, result = await converge(desired, observed, frozenset({WEB}))

    assert operations == [
        AddDestination(WEB, rs("10.0.0.99")),
        EditDestination(WEB, rs("10.0.0.2", weight=0)),
        DeleteDestination(WEB, rs("10.0.0.1").key),
    ]
    assert result == desired


async def test_services_in_desired_come_first_in_key_order_then_deletions() -> None:
    desired = table_of(
        [
            Service(MARKED, RR),
            Service(DNS6, RR, (rs("2001:db8::1", port=53),)),
            web(rs("10.0.0.1")),
        ]
    )
    stale = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.1"), 22)
    observed = table_of([Service(stale, RR)])

    operations, result = await converge(desired, observed, frozenset({stale}))

    assert operations == [
        AddService(WEB, RR),
        AddDestination(WEB, rs("10.0.0.1")),
        AddService(DNS6, RR),
        AddDestination(DNS6, rs("2001:db8::1", port=53)),
        AddService(MARKED, RR),
        DeleteService(stale),
    ]
    assert result == desired


def test_a_desired_table_keyed_inconsistently_is_refused() -> None:
    with pytest.raises(ValueError, match="keyed"):
        plan({FOREIGN: web()}, {}, managed=frozenset())
