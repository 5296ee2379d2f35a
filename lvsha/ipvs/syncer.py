"""The IPVS syncer: keeps the kernel's table equal to the desired one, from verdicts and config.

The pure part computes the desired table from the configured services, the latest verdicts and
the quorum states; `plan` diffs it against the table as last read (and updated by every
operation acknowledged since). `IpvsSyncer` is the asyncio edge: one task that wakes when
verdicts or configuration change (a burst of verdicts makes one pass), when the periodic
re-read of the kernel table is due (differences from what lvsha last wrote are drift, logged
and corrected), or when an adopted destination's grace ends.

Adoption: a restart must not flap a healthy destination out and back in, which would drop its
connections, nor put a failed one back in before a probe has passed. So the check pool starts
each real server of a service already in the kernel as the table shows it (`presumptions`),
until its checks have spoken. A configured destination found in the kernel that is still
unhealthy to the pool (a real server new in a reload, say) is held as it is (as healthy, at the
weight it has) until a probe result changes its verdict or its `settle_time` has passed.

Only services lvsha manages are touched: those of the current configuration, and those of the
previous one until they are gone from the kernel. Never "everything in the kernel".

Quorum: each pass decides whether each service it plans holds quorum (`desired`); a change
is a `QuorumChange` to the listeners of `subscribe_quorum`, except the first evaluation of a
service (on verdicts that are still guesses at start) and a first "held" after it, which is
no news either: a loss is always reported, a regain once a loss or a start from the kernel
table (`adopted_quorum`) has made the state known.

Metrics: the periodic re-read dumps the destinations' connection counters with the table
(`counters`), so exporting them costs no dump of its own; drift corrections the kernel
acknowledged are counted (`drift_repairs`).

Reload (`apply_config`): only services whose configuration changed are planned again, so an
unchanged entry gets no operation at all, and changes are edits, never delete-and-add (see
`lvsha.ipvs.plan`). New real servers enter as their verdicts say (`alpha`, rise); removed
services are deleted; a real server removed from a service that stays is deleted at once, or,
with `drain_removed`, kept at weight 0 that long first, so its connections can finish. The
reload waits for that pass and learns what the kernel refused, so it can go back.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import MappingProxyType

from lvsha.checks.flaplog import CoalescingLog
from lvsha.checks.state import Presumption
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict, Verdict
from lvsha.ipvs.desired import DesiredService, QuorumState, desired_service
from lvsha.ipvs.model import (
    ConnectionTable,
    Destination,
    DestinationKey,
    IpvsTable,
    Service,
    ServiceKey,
    ServiceOptions,
    destination_sort_key,
    order_matters,
    service_sort_key,
)
from lvsha.ipvs.plan import (
    AddDestination,
    AddService,
    DeleteDestination,
    DeleteService,
    EditDestination,
    EditService,
    Operation,
    moved_destinations,
    plan,
)
from lvsha.ipvs.port import IpvsTablePort
from lvsha.ipvs.specs import ConfiguredService
from lvsha.stats import RecentSamples

log = logging.getLogger(__name__)

DEFAULT_RESYNC_INTERVAL = 5.0
DEFAULT_ERROR_RETRY_DELAY = 1.0
DEFAULT_LATENCY_WINDOW = 10_000

_UNHEALTHY = Verdict(Health.UNHEALTHY)


class OnStop(enum.Enum):
    """What a clean stop does to the services lvsha manages (proposed key:
    `global.ipvs.on_stop`)."""

    KEEP = "keep"
    """Leave them: a restart adopts them and their connections survive."""
    REMOVE = "remove"
    """Delete them, as keepalived does at shutdown."""


# The pure part.


@dataclass(frozen=True, slots=True)
class Refusal:
    """An operation the kernel refused (or did not get to, as its service was refused); or,
    without a service, a pass that failed as a whole."""

    service: ServiceKey | None
    text: str
    """As `describe_operation` says it."""
    error: str

    def __str__(self) -> str:
        return f"{self.text}: {self.error}"


@dataclass(frozen=True, slots=True)
class DesiredTable:
    services: dict[ServiceKey, Service]
    quorum: dict[ServiceKey, QuorumState]
    sorry_active: frozenset[ServiceKey]


def desired_table(
    services: Sequence[ConfiguredService],
    verdicts: Mapping[RealServerId, Verdict],
    *,
    holds: Mapping[RealServerId, float],
    observed: IpvsTable,
    quorum: Mapping[ServiceKey, QuorumState],
    now: float,
    draining: Mapping[ServiceKey, Iterable[Destination]] | None = None,
) -> DesiredTable:
    """The table the kernel should have now.

    A real server without a verdict counts as unhealthy. One that is held (its hold ends after
    `now`) and unhealthy, but present in `observed`, counts as healthy at its observed weight,
    so it stays exactly as it is. `draining` destinations (real servers a reload removed) are
    in their service at weight 0, unless the service has another entry with their key.

    The members of a virtual server group among `services` are decided once, together: a real
    server held in one member is held in all, the quorum is the group's (its previous state
    that of any member that has one), and every member gets the same pool.
    """
    table: dict[ServiceKey, Service] = {}
    quorum_now: dict[ServiceKey, QuorumState] = {}
    sorry_active: set[ServiceKey] = set()
    members: dict[str, list[ConfiguredService]] = {}
    for service in services:
        if service.group is not None:
            members.setdefault(service.group, []).append(service)
    decided: dict[str, DesiredService] = {}
    for service in services:
        group = service.group
        result = None if group is None else decided.get(group)
        if result is None:
            siblings = [service] if group is None else members[group]
            effective = _effective_verdicts(
                service, siblings, verdicts, holds=holds, observed=observed, now=now
            )
            previous = next((quorum[s.key] for s in siblings if s.key in quorum), None)
            result = desired_service(service.spec, effective, previous)
            if group is not None:
                decided[group] = result
        if result.service.key != service.key:
            result = replace(result, service=replace(result.service, key=service.key))
        leaving = () if draining is None else draining.get(service.key, ())
        if leaving:
            pool = result.service.destinations
            keys = {destination.key for destination in pool}
            drained = tuple(replace(d, weight=0) for d in leaving if d.key not in keys)
            # Leaving destinations are left wherever they are in the kernel's list.
            table[service.key] = Service(
                service.key, result.service.options, pool + drained, result.service.order
            )
        else:
            table[service.key] = result.service
        quorum_now[service.key] = result.quorum
        if result.sorry_server_active:
            sorry_active.add(service.key)
    return DesiredTable(table, quorum_now, frozenset(sorry_active))


def _effective_verdicts(
    service: ConfiguredService,
    siblings: Sequence[ConfiguredService],
    verdicts: Mapping[RealServerId, Verdict],
    *,
    holds: Mapping[RealServerId, float],
    observed: IpvsTable,
    now: float,
) -> dict[DestinationKey, Verdict]:
    """The verdicts `desired_table` decides `service` on: a held real server counts as healthy
    at the weight it has in the first of `siblings` (the service itself, or its group's
    members) whose kernel entry has it."""
    present = [observed.get(sibling.key) for sibling in siblings]
    found = [p.destinations_by_key for p in present if p is not None]
    effective: dict[DestinationKey, Verdict] = {}
    for real_server in service.real_servers:
        verdict = verdicts.get(real_server.id, _UNHEALTHY)
        if verdict.health is Health.UNHEALTHY and holds.get(real_server.id, -math.inf) > now:
            held_as = next(
                (d[real_server.destination] for d in found if real_server.destination in d), None
            )
            if held_as is not None:
                verdict = Verdict(Health.HEALTHY, held_as.weight)
        effective[real_server.destination] = verdict
    return effective


def adoption_holds(
    services: Iterable[ConfiguredService],
    observed: IpvsTable,
    now: float,
    only: Container[RealServerId] | None = None,
) -> dict[RealServerId, float]:
    """Until when each configured real server already in `observed` is held (see the module
    docstring); `only` limits this to some real servers (those new in a reload)."""
    holds: dict[RealServerId, float] = {}
    for service in services:
        present = observed.get(service.key)
        if present is None:
            continue
        keys = present.destinations_by_key
        for real_server in service.real_servers:
            if (
                real_server.settle_time > 0
                and real_server.destination in keys
                and (only is None or real_server.id in only)
            ):
                holds[real_server.id] = now + real_server.settle_time
    return holds


def presumptions(
    services: Iterable[ConfiguredService], observed: IpvsTable
) -> dict[RealServerId, Presumption]:
    """How each real server stood in the table a previous checker left, for the check pool to
    start from until its checks have spoken (`lvsha.checks.state`).

    Only services already in the kernel say anything: on a first start (or for a service new
    in the configuration) there is no presumption and `alpha` decides. In a service that is
    there, a destination present at a weight is in service (at that weight if it differs from
    the configured one); one absent is out, and so is one at weight 0 under
    inhibit_on_failure, which is how lvsha leaves a failed one. At weight 0 without
    inhibit_on_failure it was drained (or given 0 by its check): in service at weight 0, so it
    stays as it is.
    """
    presumed: dict[RealServerId, Presumption] = {}
    for service in services:
        present = observed.get(service.key)
        if present is None:
            continue
        spec = service.spec
        sorry = spec.sorry_server
        destinations = present.destinations_by_key
        specs = {real_server.key: real_server for real_server in spec.real_servers}
        for real_server in service.real_servers:
            if sorry is not None and sorry.destination.key == real_server.destination:
                continue  # the sorry server may stand in its place: the table cannot tell
            if real_server.id in presumed:
                continue  # a group's real server: its first member in the kernel says
            found = destinations.get(real_server.destination)
            if found is None:
                presumed[real_server.id] = Presumption(up=False)
                continue
            real_server_spec = specs[real_server.destination]
            inhibit = (
                spec.inhibit_on_failure
                if real_server_spec.inhibit_on_failure is None
                else real_server_spec.inhibit_on_failure
            )
            if found.weight == 0 and inhibit:
                presumed[real_server.id] = Presumption(up=False)
            elif found.weight == real_server_spec.destination.weight:
                presumed[real_server.id] = Presumption(up=True)
            else:
                presumed[real_server.id] = Presumption(up=True, weight=found.weight)
    return presumed


def adopted_quorum(service: ConfiguredService, observed: Service | None) -> QuorumState | None:
    """The quorum state a service in the kernel was left in, so a restart does not re-decide it
    pessimistically (and swap in the sorry server) within the hysteresis band."""
    sorry = service.spec.sorry_server
    if sorry is None or observed is None:
        return None
    present = observed.destinations_by_key
    sorry_key = sorry.destination.key
    live_weight = sum(
        present[rs.key].weight
        for rs in service.spec.real_servers
        if rs.key in present and rs.key != sorry_key
    )
    sorry_destination = present.get(sorry_key)
    serving_sorry = sorry_destination is not None and sorry_destination.weight > 0
    return QuorumState(up=not (serving_sorry and live_weight == 0), live_weight=live_weight)


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference between the kernel table and what lvsha last left in it."""

    service: ServiceKey
    destination: DestinationKey | None
    """The destination it is about; None: the service itself."""
    text: str
    whole: bool = False
    """The whole service is missing or was added: every operation on it corrects this."""
    order: bool = False
    """Its destinations are listed in another order (a hashing scheduler's): every operation
    on its destinations corrects this."""


def find_drift(
    expected: IpvsTable, found: IpvsTable, managed: Container[ServiceKey]
) -> list[Drift]:
    """How the kernel table (`found`) differs from what lvsha last left in it (`expected`), for
    the services it manages, one item per difference."""
    drift: list[Drift] = []
    keys = [key for key in expected.keys() | found.keys() if key in managed]
    for key in sorted(keys, key=service_sort_key):
        want, have = expected.get(key), found.get(key)
        if want == have:
            # The usual case, at C speed: no dictionaries built for it.
            if want is not None and have is not None:
                drift.extend(_order_drift(want, have))
            continue
        if have is None:
            drift.append(Drift(key, None, f"service {key} missing", whole=True))
            continue
        if want is None:
            drift.append(Drift(key, None, f"service {key} added by someone else", whole=True))
            continue
        drift.extend(_order_drift(want, have))
        drift.extend(
            Drift(key, None, f"service {key} {change}")
            for change in _field_changes(have.options, want.options)
        )
        wanted, present = want.destinations_by_key, have.destinations_by_key
        for dest_key in sorted(wanted.keys() | present.keys(), key=destination_sort_key):
            wanted_dest, present_dest = wanted.get(dest_key), present.get(dest_key)
            where = f"service {key} destination {dest_key}"
            if present_dest is None:
                drift.append(Drift(key, dest_key, f"{where} missing"))
            elif wanted_dest is None:
                text = f"{where} added by someone else (weight {present_dest.weight})"
                drift.append(Drift(key, dest_key, text))
            else:
                drift.extend(
                    Drift(key, dest_key, f"{where} {change}")
                    for change in _field_changes(present_dest, wanted_dest)
                )
    return drift


def _order_drift(expected: Service, found: Service) -> list[Drift]:
    """A hashing scheduler's destinations that both tables have, found in another order than
    lvsha left them (someone deleted and added one again, say)."""
    if expected.order is None or found.order is None or not order_matters(expected.options):
        return []
    if expected.order == found.order:
        return []
    common = set(expected.order) & set(found.order)
    left = [key for key in expected.order if key in common]
    now = [key for key in found.order if key in common]
    if left == now:
        return []
    text = (
        f"service {expected.key} destinations listed in the order {_keys_text(now)}, "
        f"left in the order {_keys_text(left)} ({expected.options.scheduler} hashes by it)"
    )
    return [Drift(expected.key, None, text, order=True)]


def _zeroed(
    operations: Iterable[Operation], service: ServiceKey, before: Service | None
) -> list[DestinationKey]:
    """The destinations of `service` that `operations` add again at weight 0 after they had
    a weight (mh would have kept that weight's share of its table after an edit to 0)."""
    if before is None:
        return []
    had = before.destinations_by_key
    return [
        operation.destination.key
        for operation in operations
        if isinstance(operation, AddDestination)
        and operation.service == service
        and operation.destination.weight == 0
        and (current := had.get(operation.destination.key)) is not None
        and current.weight > 0
    ]


def _keys_text(keys: Iterable[DestinationKey]) -> str:
    return ", ".join(map(str, keys))


def describe_drift(
    expected: IpvsTable, found: IpvsTable, managed: Container[ServiceKey]
) -> list[str]:
    """`find_drift`, one line per difference."""
    return [item.text for item in find_drift(expected, found, managed)]


class DriftRepair:
    """Which operations of the pass after a re-read correct the drift it found: those on a
    destination that drifted, on a service whose options drifted, or on a service missing or
    added whole."""

    def __init__(self, drift: Iterable[Drift]) -> None:
        self._targets: set[tuple[ServiceKey, DestinationKey | None]] = set()
        self._whole: set[ServiceKey] = set()
        for item in drift:
            if item.whole or item.order:
                self._whole.add(item.service)
            else:
                self._targets.add((item.service, item.destination))

    def __bool__(self) -> bool:
        return bool(self._targets or self._whole)

    def corrects(self, service: ServiceKey, destination: DestinationKey | None) -> bool:
        return service in self._whole or (service, destination) in self._targets


def describe_operation(operation: Operation, before: IpvsTable) -> str:
    """An operation as a log line; edits name only the fields they change."""
    match operation:
        case AddService(key, options):
            return f"add service {key} ({_options_text(options)})"
        case EditService(key, options):
            old = before.get(key)
            changes = _field_changes(old.options, options) if old is not None else []
            return f"edit service {key}: {', '.join(changes) or _options_text(options)}"
        case DeleteService(key):
            return f"delete service {key}"
        case AddDestination(service, destination):
            return (
                f"add destination {destination.key} to service {service} "
                f"(weight {destination.weight}, {destination.forwarding.name.lower()})"
            )
        case EditDestination(service, destination):
            old_service = before.get(service)
            old_destination = (
                None
                if old_service is None
                else old_service.destinations_by_key.get(destination.key)
            )
            changes = (
                [] if old_destination is None else _field_changes(old_destination, destination)
            )
            text = ", ".join(changes) or f"weight {destination.weight}"
            return f"edit destination {destination.key} of service {service}: {text}"
        case DeleteDestination(service, destination_key):
            return f"delete destination {destination_key} of service {service}"
    raise AssertionError(f"unhandled operation {operation!r}")


def apply_to_table(table: dict[ServiceKey, Service], operation: Operation) -> None:
    """Change `table` in place as the kernel changes once `operation` is acknowledged (an added
    destination goes to the head of its service's `order`, if that is known)."""
    match operation:
        case AddService(key, options):
            table[key] = Service(key, options, order=())
        case EditService(key, options):
            old = table[key]
            table[key] = Service(key, options, old.destinations, old.order)
        case DeleteService(key):
            del table[key]
        case AddDestination(key, destination) | EditDestination(key, destination):
            old = table[key]
            kept = tuple(d for d in old.destinations if d.key != destination.key)
            order = old.order
            if order is not None and isinstance(operation, AddDestination):
                order = (destination.key, *(k for k in order if k != destination.key))
            table[key] = Service(key, old.options, (*kept, destination), order)
        case DeleteDestination(key, destination_key):
            old = table[key]
            kept = tuple(d for d in old.destinations if d.key != destination_key)
            order = old.order
            if order is not None:
                order = tuple(k for k in order if k != destination_key)
            table[key] = Service(key, old.options, kept, order)


def apply_all_to_table(table: dict[ServiceKey, Service], operations: Iterable[Operation]) -> None:
    """`apply_to_table` for each of `operations` in order, rebuilding each service once for a
    run of destination operations rather than once per operation (a reload that adds 1,000
    real servers to a service would otherwise sort its destinations 1,000 times)."""
    pending: dict[ServiceKey, dict[DestinationKey, Destination]] = {}
    # Each service's order as the kernel built it: oldest first, so an add is an append.
    added: dict[ServiceKey, dict[DestinationKey, None] | None] = {}

    def flush(key: ServiceKey) -> None:
        destinations = pending.pop(key, None)
        if destinations is not None:
            order = added.pop(key, None)
            table[key] = Service(
                key,
                table[key].options,
                tuple(destinations.values()),
                None if order is None else tuple(reversed(order)),
            )

    def destinations_of(key: ServiceKey) -> dict[DestinationKey, Destination]:
        found = pending.get(key)
        if found is None:
            service = table[key]
            found = pending[key] = {d.key: d for d in service.destinations}
            added[key] = None if service.order is None else dict.fromkeys(reversed(service.order))
        return found

    for operation in operations:
        match operation:
            case AddDestination(key, destination):
                destinations_of(key)[destination.key] = destination
                order = added[key]
                if order is not None:
                    order.pop(destination.key, None)
                    order[destination.key] = None
            case EditDestination(key, destination):
                destinations_of(key)[destination.key] = destination
            case DeleteDestination(key, destination_key):
                destinations_of(key).pop(destination_key, None)
                order = added[key]
                if order is not None:
                    order.pop(destination_key, None)
            case _:
                flush(operation.key)
                apply_to_table(table, operation)
    for key in list(pending):
        flush(key)


def operation_target(operation: Operation) -> tuple[ServiceKey, DestinationKey | None]:
    """The service an operation acts on, and its destination if it acts on one."""
    match operation:
        case AddService(key) | EditService(key) | DeleteService(key):
            return key, None
        case AddDestination(key, destination) | EditDestination(key, destination):
            return key, destination.key
        case DeleteDestination(key, destination_key):
            return key, destination_key
    raise AssertionError(f"unhandled operation {operation!r}")


def _field_changes(
    have: Destination | ServiceOptions, want: Destination | ServiceOptions
) -> list[str]:
    changes = []
    for field in fields(want):
        old, new = getattr(have, field.name), getattr(want, field.name)
        if old != new:
            changes.append(f"{field.name.replace('_', ' ')} {_text(old)}, want {_text(new)}")
    return changes


def _text(value: object) -> str:
    if isinstance(value, enum.Enum):
        return str(value.name).lower()
    return str(value)


def _options_text(options: ServiceOptions) -> str:
    text = f"scheduler {options.scheduler}"
    if options.flags:
        text += f", flags {_text(options.flags)}"
    if options.persistence is not None:
        persistence = options.persistence
        text += f", persistent {persistence.timeout} s /{persistence.prefix_length}"
    return text


def _operation_line(_: tuple[ServiceKey, DestinationKey], text: str) -> str:
    return f"IPVS: {text}"


def _operations_line(
    where: tuple[ServiceKey, DestinationKey], text: str, changes: int, span: float
) -> str:
    service, destination = where
    return (
        f"IPVS: destination {destination} of service {service}: {changes} operations in the "
        f"last {span:.0f} s, the last: {text}"
    )


def _unlogged_operations_line(changes: int, destinations: int, span: float) -> str:
    return (
        f"IPVS: {changes} more operations on {destinations} destinations in the last "
        f"{span:.0f} s not logged one by one (too many at once; debug level shows each)"
    )


@dataclass(frozen=True, slots=True)
class QuorumChange:
    """A service lost or regained quorum (see the module docstring for which changes count)."""

    service: ConfiguredService
    quorum: QuorumState
    """The new state: `up` is whether quorum is held."""
    sorry_active: bool
    """The sorry server is in the pool now."""


QuorumListener = Callable[[QuorumChange], None]


class LatencyStats(RecentSamples):
    """Seconds from a verdict's arrival to the kernel's acknowledgement of the operation it
    caused, over the last `window` samples."""

    def __init__(self, window: int = DEFAULT_LATENCY_WINDOW) -> None:
        super().__init__(window)


def _one_per_group(services: Iterable[ConfiguredService]) -> Iterator[ConfiguredService]:
    """`services` but the second and later members of each group."""
    seen: set[str] = set()
    for service in services:
        if service.group is not None:
            if service.group in seen:
                continue
            seen.add(service.group)
        yield service


# The asyncio edge.


class IpvsSyncer:
    """Construct, `await start()` inside the running loop, feed `on_verdict`, `await stop()`."""

    def __init__(
        self,
        port: IpvsTablePort,
        services: Sequence[ConfiguredService],
        *,
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
        on_stop: OnStop = OnStop.KEEP,
        error_retry_delay: float = DEFAULT_ERROR_RETRY_DELAY,
        latency_window: int = DEFAULT_LATENCY_WINDOW,
        drain_removed: float = 0.0,
    ) -> None:
        if resync_interval <= 0:
            raise ValueError(f"resync_interval must be > 0, got {resync_interval}")
        if error_retry_delay < 0:
            raise ValueError(f"error_retry_delay must be >= 0, got {error_retry_delay}")
        if drain_removed < 0:
            raise ValueError(f"drain_removed must be >= 0, got {drain_removed}")
        self._port = port
        self._resync_interval = resync_interval
        self._on_stop = on_stop
        self._drain_removed = drain_removed
        self._draining: dict[ServiceKey, dict[DestinationKey, tuple[Destination, float]]] = {}
        """Destinations of real servers a reload removed, kept at weight 0 until a time."""
        self._pass_lock = asyncio.Lock()
        """One pass at a time: the task's, or the one a reload waits for."""
        self._error_retry_delay = error_retry_delay
        self._services: tuple[ConfiguredService, ...] = ()
        self._locations: dict[RealServerId, tuple[tuple[ServiceKey, DestinationKey], ...]] = {}
        """Where each real server is: one entry, or one per member of its group."""
        self._groups: dict[str, tuple[ServiceKey, ...]] = {}
        """The member services of each virtual server group."""
        self._set_services(services)
        self._verdicts: dict[RealServerId, Verdict] = {}
        self._holds: dict[RealServerId, float] = {}
        self._quorum: dict[ServiceKey, QuorumState] = {}
        self._sorry_active: frozenset[ServiceKey] = frozenset()
        self._retired: set[ServiceKey] = set()
        self._believed: dict[ServiceKey, Service] | None = None
        """The kernel table as last read, with every acknowledged operation since applied."""
        self._dirty: set[ServiceKey] | None = None
        self._refused: set[ServiceKey] = set()
        """Services the kernel refused an operation on: planned again after the re-read
        that follows, drift or not."""
        """Services the next pass must re-plan; None: all of them (after a read, a reload)."""
        self._arrivals: dict[RealServerId, float] = {}
        self._failing: set[tuple[Operation, int]] = set()
        self._reread_requested = False
        self._reread_due = math.inf
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.latency = LatencyStats(latency_window)
        self.operations: Counter[str] = Counter()
        """Acknowledged operations by type name ("AddDestination", ...)."""
        self.errors = 0
        """Operations the kernel refused, and passes that failed as a whole."""
        self.drift = 0
        """Differences found between the kernel and what lvsha last left in it."""
        self.drift_repairs = 0
        """Operations correcting those differences that the kernel acknowledged."""
        self.order_repairs = 0
        """Destinations deleted and added again (acknowledged) to put a hashing scheduler's
        destinations back in the configured order, at adoption or after drift or a failure,
        or (mh) to set one to weight 0 without the kernel remembering its weight."""
        self.counters: ConnectionTable | None = None
        """The destinations' connection counters as of the last full read of the table."""
        self.counters_read_at: float | None = None
        """Loop time of that read."""
        self._quorum_listeners: list[QuorumListener] = []
        self._every_quorum_listeners: list[QuorumListener] = []
        self._quorum_known: set[ServiceKey] = set()
        """Services whose quorum state has been known (reported, or adopted from the kernel)
        since they were first evaluated: a regain of the others is no news."""
        self.passes = 0
        self._destination_log: CoalescingLog[tuple[ServiceKey, DestinationKey], str] = (
            CoalescingLog(log, _operation_line, _operations_line, _unlogged_operations_line)
        )
        """Operations on destinations as log lines, coalesced while a real server flaps."""

    # Queries.

    @property
    def services(self) -> tuple[ConfiguredService, ...]:
        return self._services

    @property
    def sorry_active(self) -> frozenset[ServiceKey]:
        """Services whose sorry server is in the pool."""
        return self._sorry_active

    @property
    def quorum(self) -> Mapping[ServiceKey, QuorumState]:
        """Each service's quorum state as last decided."""
        return MappingProxyType(self._quorum)

    @property
    def table(self) -> IpvsTable | None:
        """The kernel's table as last read, with every operation acknowledged since (None:
        not read yet). Read-only by convention; replaced, never changed, by a re-read."""
        return self._believed

    def service_of(self, real_server: RealServerId) -> ServiceKey | None:
        """The configured service `real_server` is in (None: none)."""
        locations = self._locations.get(real_server)
        return None if not locations else locations[0][0]

    def services_of(self, real_server: RealServerId) -> tuple[ServiceKey, ...]:
        """Every configured service `real_server` is in: one, or each member of its group."""
        return tuple(service for service, _ in self._locations.get(real_server, ()))

    @property
    def held(self) -> frozenset[RealServerId]:
        """Adopted real servers whose destinations are still left as found."""
        return frozenset(self._holds)

    @property
    def draining(self) -> dict[ServiceKey, dict[DestinationKey, float]]:
        """Destinations of removed real servers kept at weight 0, and until when."""
        return {
            key: {destination: until for destination, (_, until) in entries.items()}
            for key, entries in self._draining.items()
        }

    @property
    def resync_interval(self) -> float:
        return self._resync_interval

    @resync_interval.setter
    def resync_interval(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"resync_interval must be > 0, got {seconds}")
        self._resync_interval = seconds
        if self._loop is not None:
            self._reread_due = min(self._reread_due, self._loop.time() + seconds)
            self._wake.set()

    @property
    def on_stop(self) -> OnStop:
        return self._on_stop

    @on_stop.setter
    def on_stop(self, on_stop: OnStop) -> None:
        self._on_stop = on_stop

    def managed(self) -> set[ServiceKey]:
        return {service.key for service in self._services} | self._retired

    # Inputs.

    def subscribe_quorum(
        self, listener: QuorumListener, *, every_change: bool = False
    ) -> Callable[[], None]:
        """Call `listener` with every `QuorumChange` from now on; returns the unsubscriber.

        `every_change`: also the first "held" after start that is no news to the operator
        (an `alpha` service whose real servers came up): quorum hooks run on it, as
        keepalived runs quorum_up then."""
        listeners = self._every_quorum_listeners if every_change else self._quorum_listeners
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    async def read_table(self) -> IpvsTable:
        """The kernel's table as it is now (for `presumptions` before the check pool starts,
        then `start`), its counters kept in `counters`. Raises IpvsError."""
        return await self._read_counted()

    async def _read_counted(self) -> dict[ServiceKey, Service]:
        found, counters = await self._port.list_services_counted()
        self.counters = counters
        loop = asyncio.get_running_loop()
        self.counters_read_at = loop.time()
        return dict(found)

    async def start(
        self, verdicts: Iterable[RealServerVerdict] = (), observed: IpvsTable | None = None
    ) -> None:
        """Read and adopt the kernel's table, apply the first plan, then run in the background.

        `verdicts` are the current ones (e.g. `CheckPool.verdicts().values()`); a real server
        without one is unhealthy until one arrives. `observed` is the table `read_table` gave
        just before, to spare a second read of a large table. Raises IpvsError if the table
        cannot be read; refused operations are logged and retried, as later.
        """
        if self._loop is not None:
            raise RuntimeError("the IPVS syncer is already started")
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        if observed is None:
            observed = await self._read_counted()
        observed = dict(observed)
        self._believed = observed
        self._reread_due = now + self._resync_interval
        self._holds = adoption_holds(self._services, observed, now)
        for verdict in verdicts:
            self._take(verdict, arrived_at=None)
        for service in self._services:
            adopted = adopted_quorum(service, observed.get(service.key))
            if adopted is not None:
                self._quorum[service.key] = adopted
                self._quorum_known.add(service.key)
        unmanaged = [key for key in observed if key not in self.managed()]
        log.info(
            "IPVS syncer started: %d services configured, %d found in the kernel "
            "(%d not lvsha's, left alone), %d destinations adopted",
            len(self._services),
            len(observed),
            len(unmanaged),
            len(self._holds),
        )
        await self._guarded_pass()
        self._task = self._loop.create_task(self._run(), name="ipvs syncer")

    def on_verdict(self, verdict: RealServerVerdict) -> None:
        """A verdict changed (a `CheckPool` listener)."""
        if self._stopped:
            return
        if verdict.real_server not in self._locations:
            log.debug("verdict for %s, which no configured service has", verdict.real_server)
            return
        now = self._loop.time() if self._loop is not None else None
        self._take(verdict, arrived_at=now)
        for service, _ in self._locations[verdict.real_server]:
            self._mark_dirty(service)
        self._wake.set()

    def reconfigure(
        self,
        services: Sequence[ConfiguredService],
        *,
        verdicts: Iterable[RealServerVerdict] = (),
        drain_removed: float | None = None,
    ) -> set[ServiceKey]:
        """A new configuration, for the next pass; returns the services it changes (added,
        changed or removed): only those are planned again.

        Services no longer configured are removed (once); new real servers already in the
        kernel are adopted like at start; `verdicts` are taken for real servers new to the
        syncer (the check pool's current ones: their changes may have been published before
        the syncer knew them). A real server removed from a service that stays drains for
        `drain_removed` seconds (None: as before) if it is in the kernel.
        """
        if drain_removed is not None:
            if drain_removed < 0:
                raise ValueError(f"drain_removed must be >= 0, got {drain_removed}")
            self._drain_removed = drain_removed
        old = {service.key: service for service in self._services}
        old_ids = set(self._locations)
        self._set_services(services)
        new = {service.key: service for service in self._services}
        removed = old.keys() - new.keys()
        touched = {key for key, service in new.items() if old.get(key) != service} | removed
        self._retired = (self._retired | removed) - new.keys()
        for gone in old_ids - self._locations.keys():
            self._verdicts.pop(gone, None)
            self._holds.pop(gone, None)
            self._arrivals.pop(gone, None)
        for key in removed:
            self._quorum.pop(key, None)
            self._quorum_known.discard(key)
            self._draining.pop(key, None)
        now = self._loop.time() if self._loop is not None else 0.0
        for key in touched - removed:
            self._drain_leavers(old.get(key), new[key], now)
        new_ids = self._locations.keys() - old_ids
        for verdict in verdicts:
            if verdict.real_server in new_ids:
                self._take(verdict, arrived_at=None)
        if self._believed is not None and self._loop is not None and new_ids:
            # New real servers are only in services the configuration changed.
            changed = [service for service in self._services if service.key in touched]
            self._holds.update(adoption_holds(changed, self._believed, now, new_ids))
        if self._dirty is not None:
            self._dirty |= touched
        log.info(
            "IPVS syncer reconfigured: %d services, %d changed, %d to remove, %d real servers "
            "draining",
            len(self._services),
            len(touched - removed),
            len(self._retired),
            sum(len(entries) for entries in self._draining.values()),
        )
        self._wake.set()
        return touched

    def _drain_leavers(
        self, old: ConfiguredService | None, new: ConfiguredService, now: float
    ) -> None:
        """Start draining the real servers `old` had and `new` has not; stop draining those
        `new` has again."""
        draining = self._draining.pop(new.key, {})
        configured = {real_server.destination for real_server in new.real_servers}
        for key in configured & draining.keys():
            del draining[key]
        present = None if self._believed is None else self._believed.get(new.key)
        if old is not None and present is not None and self._drain_removed > 0:
            found = present.destinations_by_key
            for real_server in old.real_servers:
                key = real_server.destination
                if key not in configured and key in found and key not in draining:
                    draining[key] = (found[key], now + self._drain_removed)
                    log.info(
                        "IPVS: %s left the configuration: weight 0 for %g s, then deleted",
                        real_server.id,
                        self._drain_removed,
                    )
        if draining:
            self._draining[new.key] = draining

    async def apply_config(
        self,
        services: Sequence[ConfiguredService],
        *,
        verdicts: Iterable[RealServerVerdict] = (),
        drain_removed: float | None = None,
    ) -> list[Refusal]:
        """`reconfigure`, then a pass that the caller waits for (after any pass in progress).

        Returns what the kernel refused of the operations on the services the configuration
        changed (empty: the kernel table now follows it). Refusals elsewhere are logged and
        retried as always. A pass that fails as a whole (the table cannot be read) is one
        refusal."""
        async with self._pass_lock:
            touched = self.reconfigure(services, verdicts=verdicts, drain_removed=drain_removed)
            if self._loop is None:
                return []  # not started: start() makes the first pass
            try:
                refusals = await self._pass()
            except Exception as error:
                self._pass_failed(error)
                return [Refusal(None, "IPVS sync pass", f"{type(error).__name__}: {error}")]
        return [refusal for refusal in refusals if refusal.service in touched]

    async def sync_now(self) -> list[Refusal]:
        """One pass, after any in progress, that the caller waits for: what the kernel
        refused in it (empty before `start`, which makes the first pass)."""
        async with self._pass_lock:
            if self._loop is None:
                return []
            try:
                return await self._pass()
            except Exception as error:
                self._pass_failed(error)
                return [Refusal(None, "IPVS sync pass", f"{type(error).__name__}: {error}")]

    def request_resync(self) -> None:
        """Re-read the kernel table and correct it now rather than at the next interval."""
        self._reread_requested = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop syncing; with `OnStop.REMOVE`, delete the services lvsha manages."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._destination_log.flush()
        if self._on_stop is OnStop.KEEP:
            log.info("IPVS syncer stopped; the table is left as it is")
            return
        observed = await self._port.list_services()
        operations = plan({}, observed, managed=self.managed())
        texts = [describe_operation(operation, observed) for operation in operations]
        results = await self._port.apply_operations(operations)
        for operation, text, error in zip(operations, texts, results, strict=True):
            if error is not None:
                self.errors += 1
                log.error("IPVS: %s refused: %s", text, error)
            else:
                self.operations[type(operation).__name__] += 1
        log.info("IPVS syncer stopped; removed the services it manages")

    # The task.

    def _set_services(self, services: Sequence[ConfiguredService]) -> None:
        self._services = tuple(services)
        locations: dict[RealServerId, tuple[tuple[ServiceKey, DestinationKey], ...]] = {}
        groups: dict[str, tuple[ServiceKey, ...]] = {}
        for service in self._services:
            key = service.key
            if service.group is None:
                for real_server in service.real_servers:
                    locations[real_server.id] = ((key, real_server.destination),)
                continue
            groups[service.group] = (*groups.get(service.group, ()), key)
            for real_server in service.real_servers:
                found = locations.get(real_server.id, ())
                locations[real_server.id] = (*found, (key, real_server.destination))
        self._locations = locations
        self._groups = groups

    def _siblings(self, service: ConfiguredService) -> tuple[ServiceKey, ...]:
        """The services decided with `service`: its group's members, or itself."""
        if service.group is None:
            return (service.key,)
        return self._groups.get(service.group, (service.key,))

    def _take(self, verdict: RealServerVerdict, arrived_at: float | None) -> None:
        self._verdicts[verdict.real_server] = verdict.verdict
        if verdict.check is not None and self._holds.pop(verdict.real_server, None) is not None:
            log.debug("%s: checks have spoken, adoption hold ends", verdict.real_server)
        if arrived_at is not None:
            self._arrivals.setdefault(verdict.real_server, arrived_at)

    async def _run(self) -> None:
        assert self._loop is not None
        while True:
            delay = self._next_wakeup() - self._loop.time()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            await self._guarded_pass()

    def _next_wakeup(self) -> float:
        assert self._loop is not None
        wakeups = [self._reread_due]
        now = self._loop.time()
        wakeups.extend(until for until in self._holds.values() if until > now)
        wakeups.extend(
            until
            for entries in self._draining.values()
            for _, until in entries.values()
            if until > now
        )
        return min(wakeups)

    async def _guarded_pass(self) -> None:
        async with self._pass_lock:
            try:
                await self._pass()
            except Exception as error:
                self._pass_failed(error)

    def _pass_failed(self, error: Exception) -> None:
        # A bug or an unreadable table must not end syncing: start over from a fresh read.
        assert self._loop is not None
        self.errors += 1
        log.error("IPVS sync pass failed; re-reading the table: %s", error, exc_info=error)
        self._believed = None
        self._dirty = None
        self._reread_due = self._loop.time() + self._error_retry_delay

    def _mark_dirty(self, service: ServiceKey) -> None:
        if self._dirty is not None:
            self._dirty.add(service)

    async def _pass(self) -> list[Refusal]:
        assert self._loop is not None
        now = self._loop.time()
        believed = self._believed
        periodic = now >= self._reread_due
        repair: DriftRepair | None = None
        refusals: list[Refusal] = []
        if believed is None or self._reread_requested or periodic:
            if believed is not None and periodic and self._dirty:
                # Verdicts are waiting: they reach the kernel first, not after a re-read of
                # the whole table (seconds for thousands of entries on a slow machine).
                refusals += await self._replan(believed, now)
            self._reread_requested = False
            found = await self._read_counted()
            believed = self._believed
            if believed is not None:
                drift = find_drift(believed, found, self.managed())
                for item in drift:
                    self.drift += 1
                    log.warning("IPVS drift: %s; correcting", item.text)
                    self._mark_dirty(item.service)
                repair = DriftRepair(drift) if drift else None
            else:
                self._dirty = None  # nothing believed: plan every service
            for service in self._refused:
                self._mark_dirty(service)
            self._refused = set()
            # A service that did not drift is as lvsha left it, which is what it wants of
            # it unless its inputs changed (then it is marked dirty already): planning every
            # service after each re-read cost the checker's loop about 80 ms a time at 5,000
            # real servers (bench/scrape_load.py).
            believed = self._believed = found
            now = self._loop.time()
            self._reread_due = now + self._resync_interval
        refusals += await self._replan(believed, now, repair=repair)
        self.passes += 1
        return refusals

    async def _replan(
        self, believed: dict[ServiceKey, Service], now: float, *, repair: DriftRepair | None = None
    ) -> list[Refusal]:
        """Plan the services marked dirty (all after a read) against `believed`, and apply;
        returns what the kernel refused."""
        for real_server, until in list(self._holds.items()):
            if until <= now:
                del self._holds[real_server]
                for service, _ in self._locations[real_server]:
                    self._mark_dirty(service)
                log.info("%s: adoption hold over, following its verdict", real_server)
        for key, entries in list(self._draining.items()):
            for destination_key, (_, until) in list(entries.items()):
                if until <= now:
                    del entries[destination_key]
                    self._mark_dirty(key)
                    log.info("IPVS: %s of service %s drained: deleting it", destination_key, key)
            if not entries:
                del self._draining[key]
        # Only services whose inputs changed since the last pass are planned again: what
        # lvsha believes of the others already equals what it wants of them.
        dirty, self._dirty = self._dirty, set()
        if dirty is None:
            services: Sequence[ConfiguredService] = self._services
        else:
            # A group's members are decided together (`desired_table`): one dirty, all are.
            if self._groups:
                for configured in self._services:
                    if configured.group is not None and configured.key in dirty:
                        dirty.update(self._groups[configured.group])
            services = [service for service in self._services if service.key in dirty]
        desired = desired_table(
            services,
            self._verdicts,
            holds=self._holds,
            observed=believed,
            quorum=self._quorum,
            now=now,
            draining={
                key: [destination for destination, _ in entries.values()]
                for key, entries in self._draining.items()
            },
        )
        replanned = desired.services.keys()
        self._log_sorry_changes(services, desired)
        self._quorum_changes(services, desired)
        if dirty is None:
            self._quorum = desired.quorum
            self._sorry_active = desired.sorry_active
        else:
            self._quorum.update(desired.quorum)
            self._sorry_active = (self._sorry_active - replanned) | desired.sorry_active
        arrivals, self._arrivals = self._arrivals, {}
        managed = replanned | self._retired
        operations = plan(desired.services, believed, managed=managed)
        refusals = await self._apply(operations, arrivals, repair=repair)
        assert self._believed is not None
        self._retired = {key for key in self._retired if key in self._believed}
        return refusals

    async def _apply(
        self,
        operations: list[Operation],
        arrivals: dict[RealServerId, float],
        *,
        repair: DriftRepair | None = None,
    ) -> list[Refusal]:
        """Apply `operations` in one batch. Those on destinations are logged coalesced while
        they flap, except in a pass that `repair`s drift, each worth its own line then; those
        that correct it count in `drift_repairs`."""
        assert self._loop is not None and self._believed is not None
        # As planned: a reconfiguration while operations are in flight does not change them.
        locations = self._locations
        by_destination: dict[tuple[ServiceKey, DestinationKey], list[RealServerId]] = {}
        for real_server in arrivals:
            for location in locations[real_server]:
                by_destination.setdefault(location, []).append(real_server)
        last_ack: dict[ServiceKey, float] = {}
        failed_services: set[ServiceKey] = set()
        failing: set[tuple[Operation, int]] = set()
        refusals: list[Refusal] = []
        texts = [describe_operation(operation, self._believed) for operation in operations]
        moved = moved_destinations(operations)
        for moved_service, moved_keys in moved.items():
            before = self._believed.get(moved_service)
            zeroed = _zeroed(operations, moved_service, before)
            log.info(
                "IPVS: service %s: moving %s (delete and add again) so its destinations are in "
                "the configured order%s, which its scheduler %s hashes by; the kernel lists %s",
                moved_service,
                _keys_text(moved_keys),
                f" and {_keys_text(zeroed)} at weight 0 without the weight the kernel would "
                "remember"
                if zeroed
                else "",
                "?" if before is None else before.options.scheduler,
                "?" if before is None or before.order is None else _keys_text(before.order),
            )
        # One batch: the kernel takes every request in order and acknowledges each.
        results = await self._port.apply_operations(operations)
        acked = self._loop.time()
        acknowledged: list[Operation] = []
        for operation, text, error in zip(operations, texts, results, strict=True):
            service, destination = operation_target(operation)
            if error is not None:
                refusals.append(Refusal(service, text, str(error)))
                if service in failed_services and not isinstance(operation, DeleteService):
                    # It depended on the service the kernel just refused to add.
                    log.debug("IPVS: %s refused with its service: %s", text, error)
                    continue
                self.errors += 1
                failing.add((operation, error.errno))
                if isinstance(operation, AddService):
                    failed_services.add(service)
                level = (
                    logging.DEBUG if (operation, error.errno) in self._failing else logging.ERROR
                )
                log.log(level, "IPVS: %s refused by the kernel: %s", text, error)
                continue
            acknowledged.append(operation)
            self.operations[type(operation).__name__] += 1
            if (
                isinstance(operation, AddDestination)
                and destination is not None
                and destination in moved.get(service, ())
            ):
                self.order_repairs += 1
            last_ack[service] = acked
            if repair is not None and repair.corrects(service, destination):
                self.drift_repairs += 1
            if destination is None or repair is not None:
                log.info("IPVS: %s", text)
            else:
                log.debug("IPVS: %s", text)
                self._destination_log.changed((service, destination), text)
            if destination is not None:
                for real_server in by_destination.pop((service, destination), ()):
                    # A group's real server counts once: at its first member's operation.
                    arrived_at = arrivals.pop(real_server, None)
                    if arrived_at is not None:
                        self.latency.record(acked - arrived_at)
        apply_all_to_table(self._believed, acknowledged)
        # Verdicts whose effect was on other entries of their service (the sorry server
        # swapped in or out) count until the service's last acknowledged operation.
        refused_services = {operation_target(operation)[0] for operation, _ in failing}
        for real_server, arrived_at in arrivals.items():
            keys = [service for service, _ in locations[real_server]]
            acks = [last_ack[service] for service in keys if service in last_ack]
            if acks:
                self.latency.record(min(acks) - arrived_at)
            elif any(service in refused_services for service in keys):
                # Its change has not reached the kernel yet: it counts until the retry does.
                self._arrivals.setdefault(real_server, arrived_at)
        if failing:
            # The table may not be what lvsha believes: re-read it before the next plan, and
            # plan these services again then, drift or not.
            self._refused |= refused_services
            self._reread_requested = True
            retry_at = self._loop.time() + self._error_retry_delay
            self._reread_due = min(self._reread_due, retry_at)
        self._failing = failing
        return refusals

    def _quorum_changes(self, services: Sequence[ConfiguredService], desired: DesiredTable) -> None:
        """Tell the listeners which of `services` lost or regained quorum in `desired`; a
        group's once, as its first member's (they share it)."""
        for service in _one_per_group(services):
            key = service.key
            # A group's state so far is any member's: the first may be new in a reload.
            siblings = self._siblings(service)
            old = next((self._quorum[k] for k in siblings if k in self._quorum), None)
            new = desired.quorum[key]
            if old is None or old.up == new.up:
                continue  # the first evaluation, or no change
            known = any(k in self._quorum_known for k in siblings)
            self._quorum_known.update(siblings)
            change = QuorumChange(service, new, key in desired.sorry_active)
            news = known or not new.up  # held for the first time since start: never known lost
            listeners = [*self._every_quorum_listeners, *(self._quorum_listeners if news else ())]
            for listener in listeners:
                try:
                    listener(change)
                except Exception:
                    log.exception("quorum listener %r failed", listener)

    def _log_sorry_changes(
        self, services: Sequence[ConfiguredService], desired: DesiredTable
    ) -> None:
        for service in _one_per_group(services):
            key = service.key
            active = key in desired.sorry_active
            was = any(k in self._sorry_active for k in self._siblings(service))
            if active == was:
                continue
            quorum = desired.quorum[key]
            sorry = service.spec.sorry_server
            assert sorry is not None
            if active:
                log.warning(
                    "%s: quorum lost (healthy weight %d, quorum %d): sorry server %s in",
                    service,
                    quorum.live_weight,
                    service.spec.quorum,
                    sorry.destination.key,
                )
            else:
                log.warning(
                    "%s: quorum regained (healthy weight %d): sorry server %s out",
                    service,
                    quorum.live_weight,
                    sorry.destination.key,
                )
