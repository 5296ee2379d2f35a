"""The in-memory IPVS table refuses what the kernel refuses, with the kernel's errno."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import ip_address

import pytest

from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.model import (
    AddressKey,
    Connections,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    FwmarkKey,
    Persistence,
    Service,
    ServiceOptions,
    TransportProtocol,
    TunnelType,
)
from lvsha.ipvs.plan import (
    AddDestination,
    AddService,
    DeleteDestination,
    DeleteService,
    EditDestination,
    EditService,
    Operation,
)
from lvsha.ipvs.port import (
    DestinationExistsError,
    InvalidRequestError,
    IpvsError,
    IpvsTablePort,
    NoSuchDestinationError,
    NoSuchServiceError,
    ServiceExistsError,
    UnknownModuleError,
    apply_operation,
)

WEB = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 80)
WEB6 = AddressKey(TransportProtocol.TCP, ip_address("2001:db8::10"), 80)
REAL = Destination(ip_address("10.0.0.1"), 80, weight=2)


def port_with_web() -> MemoryIpvsTable:
    return MemoryIpvsTable([Service(WEB, ServiceOptions(), (REAL,))])


def test_it_is_an_ipvs_table_port() -> None:
    port: IpvsTablePort = MemoryIpvsTable()
    assert port is not None


async def test_list_services_returns_services_with_destinations() -> None:
    port = port_with_web()

    assert await port.list_services() == {WEB: Service(WEB, ServiceOptions(), (REAL,))}


async def test_connection_counters_are_zero_until_set_and_go_with_their_destination() -> None:
    port = port_with_web()
    other = Destination(ip_address("10.0.0.2"), 80)
    await port.add_destination(WEB, other)
    assert await port.destination_counters() == {
        WEB: {REAL.key: Connections(), other.key: Connections()}
    }
    port.set_connections(WEB, REAL.key, 7, 30)
    assert (await port.destination_counters())[WEB][REAL.key] == Connections(7, 30)
    before = await port.list_services()
    port.set_connections(WEB, other.key, 1, 0)
    assert await port.list_services() == before  # counters never make tables differ
    await port.delete_destination(WEB, REAL.key)
    await port.add_destination(WEB, REAL)
    assert (await port.destination_counters())[WEB] == {
        REAL.key: Connections(),
        other.key: Connections(1, 0),
    }
    with pytest.raises(NoSuchDestinationError):
        port.set_connections(WEB, DestinationKey(ip_address("10.0.0.9"), 80), 1, 1)
    with pytest.raises(NoSuchServiceError):
        port.set_connections(WEB6, REAL.key, 1, 1)
    await port.delete_service(WEB)
    assert await port.destination_counters() == {}


async def test_a_counted_listing_is_the_listing_and_the_counters_of_one_moment() -> None:
    port = port_with_web()
    port.set_connections(WEB, REAL.key, 4, 9)
    services, counters = await port.list_services_counted()
    assert services == await port.list_services()
    assert counters == await port.destination_counters() == {WEB: {REAL.key: Connections(4, 9)}}


async def test_a_snapshot_does_not_change_with_the_table() -> None:
    port = port_with_web()
    before = port.snapshot()

    await port.delete_destination(WEB, REAL.key)

    assert before[WEB].destinations == (REAL,)
    assert port.snapshot()[WEB].destinations == ()


async def test_adding_an_existing_service_is_eexist() -> None:
    port = port_with_web()

    with pytest.raises(ServiceExistsError) as raised:
        await port.add_service(WEB, ServiceOptions(scheduler="rr"))
    assert raised.value.errno == errno.EEXIST


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.edit_service(WEB6, ServiceOptions()),
        lambda p: p.delete_service(WEB6),
        lambda p: p.add_destination(WEB6, Destination(ip_address("2001:db8:1::1"), 80)),
        lambda p: p.edit_destination(WEB6, Destination(ip_address("2001:db8:1::1"), 80)),
        lambda p: p.delete_destination(WEB6, Destination(ip_address("2001:db8:1::1"), 80).key),
    ],
    ids=["edit service", "delete service", "add dest", "edit dest", "delete dest"],
)
async def test_anything_on_a_missing_service_is_esrch(
    call: Callable[[MemoryIpvsTable], Awaitable[None]],
) -> None:
    port = port_with_web()

    with pytest.raises(NoSuchServiceError) as raised:
        await call(port)
    assert raised.value.errno == errno.ESRCH


async def test_adding_an_existing_destination_is_eexist() -> None:
    port = port_with_web()

    with pytest.raises(DestinationExistsError):
        await port.add_destination(WEB, Destination(REAL.address, REAL.port, weight=5))
    assert port.snapshot()[WEB].destinations == (REAL,)


async def test_editing_or_deleting_a_missing_destination_is_enoent() -> None:
    port = port_with_web()
    other = Destination(ip_address("10.0.0.1"), 8080)

    with pytest.raises(NoSuchDestinationError) as raised:
        await port.edit_destination(WEB, other)
    assert raised.value.errno == errno.ENOENT
    with pytest.raises(NoSuchDestinationError):
        await port.delete_destination(WEB, other.key)


async def test_deleting_a_service_takes_its_destinations_with_it() -> None:
    port = port_with_web()

    await port.delete_service(WEB)
    await port.add_service(WEB, ServiceOptions())

    assert port.snapshot()[WEB].destinations == ()


async def test_unknown_scheduler_or_persistence_engine_is_refused() -> None:
    port = MemoryIpvsTable()

    with pytest.raises(UnknownModuleError, match="ip_vs_fancy"):
        await port.add_service(WEB, ServiceOptions(scheduler="fancy"))
    with pytest.raises(UnknownModuleError, match="ip_vs_ftp"):
        await port.add_service(WEB, ServiceOptions(persistence_engine="ftp"))
    assert port.snapshot() == {}

    await port.add_service(WEB, ServiceOptions(scheduler="none"))
    with pytest.raises(UnknownModuleError):
        await port.edit_service(WEB, ServiceOptions(scheduler="fancy"))
    assert port.snapshot()[WEB].options.scheduler == "none"


async def test_ipv6_persistence_needs_a_prefix_of_at_least_one_bit() -> None:
    port = MemoryIpvsTable()

    with pytest.raises(InvalidRequestError):
        await port.add_service(WEB6, ServiceOptions(persistence=Persistence(300, 0)))
    await port.add_service(WEB, ServiceOptions(persistence=Persistence(300, 0)))


async def test_a_destination_of_another_family_needs_tunnel_forwarding() -> None:
    port = MemoryIpvsTable([Service(WEB6, ServiceOptions())])
    nat = Destination(ip_address("10.0.0.1"), 80, forwarding=Forwarding.MASQUERADE)

    with pytest.raises(InvalidRequestError, match="tunnel"):
        await port.add_destination(WEB6, nat)
    tunnelled = Destination(ip_address("10.0.0.1"), 80, forwarding=Forwarding.TUNNEL)
    await port.add_destination(WEB6, tunnelled)
    with pytest.raises(InvalidRequestError, match="tunnel"):
        await port.edit_destination(WEB6, nat)


async def test_a_fwmark_service_takes_destinations_of_its_own_family() -> None:
    marked = FwmarkKey(3, Family.INET6)
    port = MemoryIpvsTable([Service(marked, ServiceOptions())])

    await port.add_destination(marked, Destination(ip_address("2001:db8:1::1"), 0))
    with pytest.raises(InvalidRequestError):
        await port.add_destination(marked, Destination(ip_address("10.0.0.1"), 0))


async def test_lower_threshold_above_upper_is_erange() -> None:
    port = port_with_web()

    with pytest.raises(InvalidRequestError) as raised:
        await port.edit_destination(
            WEB, Destination(REAL.address, REAL.port, upper_threshold=10, lower_threshold=20)
        )
    assert raised.value.errno == errno.ERANGE
    assert port.snapshot()[WEB].destinations == (REAL,)


async def test_gue_tunnel_needs_a_port() -> None:
    port = port_with_web()
    gue = Destination(
        ip_address("10.0.0.2"), 80, forwarding=Forwarding.TUNNEL, tunnel_type=TunnelType.GUE
    )

    with pytest.raises(InvalidRequestError, match="GUE"):
        await port.add_destination(WEB, gue)


@pytest.mark.parametrize("address", ["224.0.0.5", "0.0.0.0", "255.255.255.255"])
async def test_a_destination_must_be_unicast(address: str) -> None:
    port = port_with_web()

    with pytest.raises(InvalidRequestError, match="unicast"):
        await port.add_destination(WEB, Destination(ip_address(address), 80))


@pytest.mark.parametrize("address", ["ff02::1", "::", "fe80::1"])
async def test_an_ipv6_destination_must_be_global_unicast(address: str) -> None:
    port = MemoryIpvsTable([Service(WEB6, ServiceOptions())])

    with pytest.raises(InvalidRequestError, match="unicast"):
        await port.add_destination(WEB6, Destination(ip_address(address), 80))


def test_an_initial_table_is_checked_like_any_other() -> None:
    with pytest.raises(UnknownModuleError):
        MemoryIpvsTable([Service(WEB, ServiceOptions(scheduler="fancy"))])


async def test_a_batch_goes_on_after_a_refusal_with_one_result_per_operation() -> None:
    port = port_with_web()
    other = Destination(ip_address("10.0.0.2"), 80, weight=7)
    operations: list[Operation] = [
        EditService(WEB, ServiceOptions(scheduler="rr")),
        AddDestination(WEB, REAL),  # already there
        AddDestination(WEB, other),
        DeleteService(WEB6),  # no such service
        EditDestination(WEB, replace(REAL, weight=9)),
    ]

    results = await port.apply_operations(operations)

    assert [type(result) for result in results] == [
        type(None),
        DestinationExistsError,
        type(None),
        NoSuchServiceError,
        type(None),
    ]
    assert [getattr(result, "errno", 0) for result in results] == [
        0,
        errno.EEXIST,
        0,
        errno.ESRCH,
        0,
    ]
    assert port.snapshot() == {
        WEB: Service(WEB, ServiceOptions(scheduler="rr"), (replace(REAL, weight=9), other))
    }


async def test_a_batch_refuses_exactly_as_the_single_operations_do() -> None:
    operations: list[Operation] = [
        AddService(WEB, ServiceOptions(scheduler="fancy")),
        DeleteDestination(WEB, DestinationKey(ip_address("10.9.9.9"), 80)),
        AddDestination(WEB, Destination(ip_address("224.0.0.5"), 80)),
    ]
    batch = await port_with_web().apply_operations(operations)
    one_by_one = port_with_web()
    for operation, result in zip(operations, batch, strict=True):
        with pytest.raises(IpvsError) as raised:
            await apply_operation(one_by_one, operation)
        assert (type(result), str(result)) == (type(raised.value), str(raised.value))


async def test_an_empty_batch_changes_nothing() -> None:
    port = port_with_web()
    assert await port.apply_operations([]) == []
    assert port.snapshot() == {WEB: Service(WEB, ServiceOptions(), (REAL,))}
