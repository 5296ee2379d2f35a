"""Effective priority and tracking fault of one VRRP instance from its tracked scripts and links."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsha.vrrp.events import PriorityChanged, TrackingFault
from lvsha.vrrp.machine import OWNER_PRIORITY

MAX_WEIGHT = 254


@dataclass(frozen=True, slots=True)
class Tracker:
    """A tracked script or interface and what its health does to the instance.

    weight > 0 adds while healthy; weight < 0 adds (so subtracts) while failing;
    weight 0 puts the instance in fault while failing.
    """

    name: str
    weight: int

    def __post_init__(self) -> None:
        if not -MAX_WEIGHT <= self.weight <= MAX_WEIGHT:
            raise ValueError(
                f"tracker {self.name!r}: weight {self.weight} outside -{MAX_WEIGHT}..{MAX_WEIGHT}"
            )


@dataclass(frozen=True, slots=True)
class TrackingVerdict:
    priority: int
    fault: bool


def evaluate(base_priority: int, health: Mapping[Tracker, bool]) -> TrackingVerdict:
    """The effective priority and fault for trackers in the given health (True: healthy)."""
    total = base_priority
    fault = False
    for tracker, healthy in health.items():
        if (tracker.weight > 0 and healthy) or (tracker.weight < 0 and not healthy):
            total += tracker.weight
        elif tracker.weight == 0 and not healthy:
            fault = True
    if base_priority == OWNER_PRIORITY and total >= OWNER_PRIORITY:
        return TrackingVerdict(OWNER_PRIORITY, fault)
    # RFC 5798 section 5.2.4: 255 is only for the address owner, 0 means "leaving". An
    # owner pulled below 255 by a failing tracker becomes preemptible like any other
    # router (keepalived instead ignores weights on an owner).
    return TrackingVerdict(max(1, min(OWNER_PRIORITY - 1, total)), fault)


class TrackingState:
    """The trackers' current health; turns each health change into events for the machine."""

    def __init__(
        self, base_priority: int, trackers: Iterable[Tracker], healthy: Mapping[str, bool]
    ) -> None:
        if not 1 <= base_priority <= OWNER_PRIORITY:
            raise ValueError(f"base priority {base_priority} outside 1..255")
        self.base_priority = base_priority
        self._trackers: dict[str, Tracker] = {}
        for tracker in trackers:
            if tracker.name in self._trackers:
                raise ValueError(f"tracker {tracker.name!r} listed twice")
            self._trackers[tracker.name] = tracker
        missing = self._trackers.keys() - healthy.keys()
        unknown = healthy.keys() - self._trackers.keys()
        if missing or unknown:
            raise ValueError(
                f"initial health must name every tracker exactly: missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        self._healthy = dict(healthy)
        self._verdict = self._evaluate()

    @property
    def trackers(self) -> tuple[Tracker, ...]:
        return tuple(self._trackers.values())

    @property
    def verdict(self) -> TrackingVerdict:
        return self._verdict

    def initial_events(self) -> list[PriorityChanged | TrackingFault]:
        """What to feed the machine before Startup, where the start differs from no trackers."""
        events: list[PriorityChanged | TrackingFault] = []
        if self._verdict.priority != self.base_priority:
            events.append(PriorityChanged(self._verdict.priority))
        if self._verdict.fault:
            events.append(TrackingFault(active=True))
        return events

    def set_health(self, name: str, healthy: bool) -> list[PriorityChanged | TrackingFault]:
        """Record one tracker's health; return the machine events its effect calls for."""
        if name not in self._trackers:
            raise KeyError(f"no tracker named {name!r}")
        self._healthy[name] = healthy
        old, new = self._verdict, self._evaluate()
        self._verdict = new
        return _changes(old, new)

    def reconfigure(
        self, base_priority: int, trackers: Iterable[Tracker], healthy: Mapping[str, bool]
    ) -> list[PriorityChanged | TrackingFault]:
        """A live reload: a new base priority and set of trackers (weights may change). A
        tracker still listed keeps its health; `healthy` gives it for each new one (and is not
        consulted for the others). Returns the machine events the change of verdict calls for:
        the machine hears only the effective priority, so this is how its base changes."""
        if not 1 <= base_priority <= OWNER_PRIORITY:
            raise ValueError(f"base priority {base_priority} outside 1..255")
        found: dict[str, Tracker] = {}
        for tracker in trackers:
            if tracker.name in found:
                raise ValueError(f"tracker {tracker.name!r} listed twice")
            found[tracker.name] = tracker
        missing = sorted(n for n in found if n not in self._healthy and n not in healthy)
        if missing:
            raise ValueError(f"no health given for the new trackers {missing}")
        self.base_priority = base_priority
        self._trackers = found
        self._healthy = {n: self._healthy[n] if n in self._healthy else healthy[n] for n in found}
        old, new = self._verdict, self._evaluate()
        self._verdict = new
        return _changes(old, new)

    def health(self, name: str) -> bool:
        return self._healthy[name]

    def _evaluate(self) -> TrackingVerdict:
        return evaluate(
            self.base_priority, {t: self._healthy[n] for n, t in self._trackers.items()}
        )


def _changes(old: TrackingVerdict, new: TrackingVerdict) -> list[PriorityChanged | TrackingFault]:
    events: list[PriorityChanged | TrackingFault] = []
    if new.priority != old.priority:
        events.append(PriorityChanged(new.priority))
    if new.fault != old.fault:
        events.append(TrackingFault(active=new.fault))
    return events
