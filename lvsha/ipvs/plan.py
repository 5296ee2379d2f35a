"""The pure diff: the IPVS operations, in order, that turn the observed table into the desired one.

Every field that is not part of a key can be changed in place by the kernel
(ip_vs_edit_service rebinds the scheduler and persistence engine and rewrites flags, timeout and
netmask; ip_vs_edit_dest rewrites weight, forwarding method, thresholds and tunnel settings), so
a change is an edit (but see mh below): deleting and re-adding would drop the connections the
entry carries. Only a key change (service protocol/address/port or fwmark/family, destination
address/port) makes a different entry.

Order: the kernel adds a destination at the head of its service's list, and the hashing
schedulers (mh, sh, dh: `lvsha.ipvs.model.ORDERED_SCHEDULERS`) build their lookup tables by
walking that list, so the same destinations in another order send flows to other real servers.
Destinations are always added so the list ends in the desired `Service.order` (the configured
order, see `lvsha.ipvs.desired`). For a hashing scheduler, a list found in another order (a
restart adopting a table written otherwise, a destination deleted and added again by hand, a
real server that failed, was removed, and came back at the head) is put right by deleting and
adding again the fewest destinations: those ahead of the longest tail of the desired order the
list already has in order (`moves`). The kernel keeps a deleted destination's connections (in
its trash, and adding it back finds that same entry, counters and all), but drops their packets
while it is out of the list (ip_vs_in: "the destination server is not available"; with
net.ipv4.vs.expire_nodest_conn such a packet expires its connection). A move deletes and adds
in one batch, so that lasts microseconds: TCP retransmits the rare packet lost, and new
connections in that window go to the others. mh also remembers a destination's last non-zero
weight, so one going to weight 0 is moved too, not edited (`moves`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

from lvsha.ipvs.model import (
    LAST_WEIGHT_SCHEDULERS,
    Destination,
    DestinationKey,
    IpvsTable,
    Service,
    ServiceKey,
    ServiceOptions,
    add_order,
    destination_sort_key,
    order_matters,
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
    destinations; within an existing service destinations are added (in the desired order, a
    moved one deleted just before it is added again), then edited, then deleted, so a service
    being switched to another set of servers (e.g. to its sorry server) is never momentarily
    empty. Deleted services come last, each after its own destinations.
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
            operations.extend(AddDestination(key, d) for d in add_order(want))
            continue
        if have.options != want.options:
            operations.append(EditService(key, want.options))
        moved = moves(want, have)
        if moved or have.destinations != want.destinations:
            operations.extend(_destination_changes(want, have, moved))

    leftovers = (key for key in observed if key not in desired and key in managed)
    for key in sorted(leftovers, key=service_sort_key):
        operations.extend(DeleteDestination(key, d.key) for d in observed[key].destinations)
        operations.append(DeleteService(key))
    return operations


def moves(want: Service, have: Service) -> frozenset[DestinationKey]:
    """The destinations of `have` to delete and add again so that, with `want`'s new ones
    added, the kernel lists `want`'s destinations in `want.order`, and (mh) none is at weight 0
    with a weight the kernel remembers; none unless `want`'s scheduler depends on the order.

    The kernel only adds at the head, so the destinations never moved end the list, in the
    order they have: the most that can stay is the longest tail of `want.order` that `have`
    already lists in that order (skipping others), without a destination that must move
    anyway. Everything of `want.order` ahead of that tail is added anew, and those of them
    present are moved.

    mh builds its table from each destination's last non-zero weight: one edited down to 0
    keeps its share of the table, one added at 0 has none, so directors that reached weight 0
    by different paths (a failure seen, or a start while it was down) would hash differently.
    A destination going to 0 is therefore moved (added again at 0), never edited: on every
    director a destination at weight 0 is out of the table, as if absent, and its clients are
    hashed to the others (with or without mh-fallback).
    """
    if not order_matters(want.options):
        return frozenset()
    forced: set[DestinationKey] = set()
    if want.options.scheduler in LAST_WEIGHT_SCHEDULERS:
        present_by_key = have.destinations_by_key
        for destination in want.destinations:
            current = present_by_key.get(destination.key)
            if destination.weight == 0 and current is not None and current.weight > 0:
                forced.add(destination.key)
    if want.order is None or have.order is None:
        return frozenset(forced)
    wanted = set(want.order)
    listed = [key for key in have.order if key in wanted]
    # Match the wanted order from its end against the list from its end: taking each
    # destination at its last possible place leaves the most room for those before it.
    position = len(listed) - 1
    kept = 0
    for key in reversed(want.order):
        if key in forced:
            break
        while position >= 0 and listed[position] != key:
            position -= 1
        if position < 0:
            break
        kept += 1
        position -= 1
    present = set(listed)
    ahead = (key for key in want.order[: len(want.order) - kept] if key in present)
    return frozenset(forced.union(ahead))


def _destination_changes(
    want: Service, have: Service, moved: frozenset[DestinationKey]
) -> Iterator[Operation]:
    key = want.key
    # Services keep destinations sorted by key: with the same keys in both, the tuples pair
    # up, and only edits remain (the usual case: weights changing with verdicts).
    if (
        not moved
        and len(want.destinations) == len(have.destinations)
        and all(
            w.port == h.port and w.address == h.address
            for w, h in zip(want.destinations, have.destinations, strict=True)
        )
    ):
        for wanted_destination, present_destination in zip(
            want.destinations, have.destinations, strict=True
        ):
            if wanted_destination != present_destination:
                yield EditDestination(key, wanted_destination)
        return
    wanted = want.destinations_by_key
    present = have.destinations_by_key
    # Each moved destination is out of the list only between its own delete and add, so a
    # service is never emptied by a reordering.
    for destination in add_order(want):
        if destination.key in moved:
            yield DeleteDestination(key, destination.key)
            yield AddDestination(key, destination)
        elif destination.key not in present:
            yield AddDestination(key, destination)
    for destination in want.destinations:
        current = present.get(destination.key)
        if current is not None and current != destination and destination.key not in moved:
            yield EditDestination(key, destination)
    for gone in sorted(present.keys() - wanted.keys(), key=destination_sort_key):
        yield DeleteDestination(key, gone)


def moved_destinations(operations: Iterable[Operation]) -> dict[ServiceKey, list[DestinationKey]]:
    """The destinations `operations` move (delete, then add again) to restore their service's
    order, by service, in the order they are added again. `plan` never deletes and adds one
    destination for any other reason: a change to it is an edit."""
    deleted: set[tuple[ServiceKey, DestinationKey]] = set()
    moved: dict[ServiceKey, list[DestinationKey]] = {}
    for operation in operations:
        match operation:
            case DeleteDestination(key, destination_key):
                deleted.add((key, destination_key))
            case AddDestination(key, destination) if (key, destination.key) in deleted:
                moved.setdefault(key, []).append(destination.key)
    return moved
