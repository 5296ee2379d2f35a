"""plan() on random tables: applied to the in-memory port, it yields exactly the desired table."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address, ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

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
    TunnelFlags,
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
    plan,
)
from lvsha.ipvs.port import apply_operation

# Small pools, so that desired and observed tables often share services and destinations.
VIRTUAL_ADDRESSES = [ip_address("192.0.2.1"), ip_address("192.0.2.2"), ip_address("2001:db8::1")]
REAL_ADDRESSES: list[IPv4Address | IPv6Address] = [
    ip_address("10.0.0.1"),
    ip_address("10.0.0.2"),
    ip_address("10.0.0.3"),
    ip_address("2001:db8:1::1"),
    ip_address("2001:db8:1::2"),
]

service_keys: st.SearchStrategy[ServiceKey] = st.one_of(
    st.builds(
        AddressKey,
        st.sampled_from(TransportProtocol),
        st.sampled_from(VIRTUAL_ADDRESSES),
        st.sampled_from([80, 443]),
    ),
    st.builds(FwmarkKey, st.sampled_from([1, 2]), st.sampled_from(Family)),
)


@st.composite
def service_options(draw: st.DrawFn, family: Family) -> ServiceOptions:
    longest = 32 if family is Family.INET else 128
    persistence = draw(
        st.none() | st.builds(Persistence, st.sampled_from([60, 300]), st.integers(1, longest))
    )
    return ServiceOptions(
        scheduler=draw(st.sampled_from(["rr", "wlc", "sh", "none"])),
        flags=draw(
            st.sampled_from([ServiceFlags.NONE, ServiceFlags.SH_PORT, ServiceFlags.ONE_PACKET])
        ),
        persistence=persistence,
        persistence_engine=draw(st.sampled_from([None, "sip"])),
    )


@st.composite
def destinations(draw: st.DrawFn, family: Family) -> Destination:
    address = draw(st.sampled_from(REAL_ADDRESSES))
    if Family.of(address) is family:
        forwarding = draw(
            st.sampled_from([Forwarding.MASQUERADE, Forwarding.DIRECT_ROUTE, Forwarding.TUNNEL])
        )
    else:
        forwarding = Forwarding.TUNNEL  # the kernel forwards across families only by tunnel
    upper = draw(st.sampled_from([0, 100]))
    tunnel_type = draw(st.sampled_from(TunnelType))
    return Destination(
        address=address,
        port=draw(st.sampled_from([80, 8080])),
        weight=draw(st.integers(0, 3)),
        forwarding=forwarding,
        upper_threshold=upper,
        lower_threshold=draw(st.integers(0, upper)),
        tunnel_type=tunnel_type,
        tunnel_port=6080 if tunnel_type is TunnelType.GUE else 0,
        tunnel_flags=draw(st.sampled_from([TunnelFlags.NONE, TunnelFlags.CSUM])),
    )


@st.composite
def services(draw: st.DrawFn, key: ServiceKey) -> Service:
    pool = draw(st.lists(destinations(key.family), max_size=4, unique_by=lambda d: d.key))
    return Service(key, draw(service_options(key.family)), tuple(pool))


@st.composite
def tables(draw: st.DrawFn) -> dict[ServiceKey, Service]:
    keys = draw(st.lists(service_keys, max_size=4, unique=True))
    return {key: draw(services(key)) for key in keys}


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[dict[ServiceKey, Service], dict[ServiceKey, Service], frozenset[ServiceKey]]:
    desired = draw(tables())
    observed = draw(tables())
    if not observed:
        return desired, observed, frozenset()
    managed = draw(st.lists(st.sampled_from(sorted(observed, key=str)), unique=True))
    return desired, observed, frozenset(managed)


def touched_service(operation: Operation) -> ServiceKey:
    match operation:
        case AddService(key) | EditService(key) | DeleteService(key):
            return key
        case AddDestination(service) | EditDestination(service) | DeleteDestination(service):
            return service


async def apply_all(port: MemoryIpvsTable, operations: list[Operation]) -> None:
    for operation in operations:
        await apply_operation(port, operation)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_applying_the_plan_yields_the_desired_table(
    scenario: tuple[dict[ServiceKey, Service], dict[ServiceKey, Service], frozenset[ServiceKey]],
) -> None:
    desired, observed, managed = scenario
    port = MemoryIpvsTable(observed.values())

    operations = plan(desired, observed, managed=managed)
    asyncio.run(apply_all(port, operations))

    untouched = {
        key: service
        for key, service in observed.items()
        if key not in desired and key not in managed
    }
    assert port.snapshot() == {**untouched, **desired}
    assert plan(desired, port.snapshot(), managed=managed) == []


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_the_plan_never_deletes_what_it_keeps_nor_touches_what_it_does_not_manage(
    scenario: tuple[dict[ServiceKey, Service], dict[ServiceKey, Service], frozenset[ServiceKey]],
) -> None:
    desired, observed, managed = scenario

    operations = plan(desired, observed, managed=managed)

    removed: set[tuple[ServiceKey, object]] = set()
    for operation in operations:
        key = touched_service(operation)
        assert key in desired or key in managed
        if isinstance(operation, DeleteDestination):
            removed.add((key, operation.destination))
        if isinstance(operation, DeleteService):
            assert key not in desired
            assert all((key, d.key) in removed for d in observed[key].destinations)
        if isinstance(operation, DeleteDestination) and key in desired and key in observed:
            kept = desired[key].destinations_by_key.keys()
            assert operation.destination not in kept
