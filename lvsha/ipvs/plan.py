"""The pure diff: the IPVS operations, in order, that turn the observed table into the desired one.

Every field that is not part of a key can be changed in place by the kernel
(ip_vs_edit_service rebinds the scheduler and persistence engine and rewrites flags, timeout and
netmask; ip_vs_edit_dest rewrites weight, forwarding method, thresholds and tunnel settings), so
a change is always an edit: deleting and re-adding would drop the connections the entry carries.
Only a key change (service protocol/address/port or fwmark/family, destination address/port)
makes a different entry.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import TypeAlias

from lvsha.ipvs.model import (
    Destination,
    DestinationKey,
    IpvsTable,
    Service,
    ServiceKey,
    ServiceOptions,
    destination_sort_key,
    service_sort_key,
)


@dataclass(frozen=True, slots=True)
class AddService:
    key: ServiceKey
    options: ServiceOptions


@dataclass(frozen=True, slots=True)
class EditService:
    key: ServiceKey
    options: ServiceOptions


@dataclass(frozen=True, slots=True)
class DeleteService:
    key: ServiceKey


@dataclass(frozen=True, slots=True)
class AddDestination:
    service: ServiceKey
    destination: Destination


@dataclass(frozen=True, slots=True)
class EditDestination:
    service: ServiceKey
    destination: Destination


@dataclass(frozen=True, slots=True)
class DeleteDestination:
    service: ServiceKey
    destination: DestinationKey


Operation: TypeAlias = (
    AddService | EditService | DeleteService | AddDestination | EditDestination | DeleteDestination
)


def plan(
    desired: IpvsTable, observed: IpvsTable, *, managed: Container[ServiceKey]
) -> list[Operation]:
    """Operations that make `observed` equal `desired` for every service lvsha manages.

    A service lvsha manages is one whose key is in `desired` or in `managed`. An observed service
    that is in neither is never touched; one in `managed` but not in `desired` is deleted. There
    is deliberately no default for `managed`: the caller states which leftovers are its own
    (e.g. the keys of the previous configuration), never "everything in the kernel".

    Order: services in `desired` first, in key order; each new service is added before its
    destinations; within an existing service destinations are added, then edited, then deleted,
    so a service being switched to another set of servers (e.g. to its sorry server) is never
    momentarily empty. Deleted services come last, each after its own destinations.
    """
    for key, service in desired.items():
        if service.key != key:
            raise ValueError(f"desired table maps {key} to a service keyed {service.key}")

    operations: list[Operation] = []
    for key in sorted(desired, key=service_sort_key):
        want = desired[key]
        have = observed.get(key)
        if have is None:
            operations.append(AddService(key, want.options))
            operations.extend(AddDestination(key, d) for d in want.destinations)
            continue
        if have.options != want.options:
            operations.append(EditService(key, want.options))
        if have.destinations != want.destinations:
            operations.extend(_destination_changes(want, have))

    leftovers = (key for key in observed if key not in desired and key in managed)
    for key in sorted(leftovers, key=service_sort_key):
        operations.extend(DeleteDestination(key, d.key) for d in observed[key].destinations)
        operations.append(DeleteService(key))
    return operations


def _destination_changes(want: Service, have: Service) -> Iterator[Operation]:
    key = want.key
    # Services keep destinations sorted by key: with the same keys in both, the tuples pair
    # up, and only edits remain (the usual case: weights changing with verdicts).
    if len(want.destinations) == len(have.destinations) and all(
        w.port == h.port and w.address == h.address
        for w, h in zip(want.destinations, have.destinations, strict=True)
    ):
        for wanted_destination, present_destination in zip(
            want.destinations, have.destinations, strict=True
        ):
            if wanted_destination != present_destination:
                yield EditDestination(key, wanted_destination)
        return
    wanted = want.destinations_by_key
    present = have.destinations_by_key
    for destination in want.destinations:
        if destination.key not in present:
            yield AddDestination(key, destination)
    for destination in want.destinations:
        current = present.get(destination.key)
        if current is not None and current != destination:
            yield EditDestination(key, destination)
    for gone in sorted(present.keys() - wanted.keys(), key=destination_sort_key):
        yield DeleteDestination(key, gone)
