"""Effective priority and tracking fault of one VRRP instance from its tracked scripts, links
and files."""

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


FILE_FAULT = -254
"""A tracked file's effect at or below this puts the instance in FAULT (keepalived's rule)."""
FILE_MAX_EFFECT = 253


@dataclass(frozen=True, slots=True)
class FileTracker:
    """A tracked file (keepalived's track_file): the number it holds, times the weight (negated
    with `reverse`), is added to the priority; see `file_effect`."""

    name: str
    weight: int
    reverse: bool = False

    def __post_init__(self) -> None:
        if not -MAX_WEIGHT <= self.weight <= MAX_WEIGHT:
            raise ValueError(
                f"tracker {self.name!r}: weight {self.weight} outside -{MAX_WEIGHT}..{MAX_WEIGHT}"
            )

    def effect(self, value: int) -> int | None:
        return file_effect(value, self.weight, self.reverse)


def file_effect(value: int, weight: int, reverse: bool) -> int | None:
    """What a tracked file holding `value` adds to the priority, or None for FAULT.

    As keepalived 2.2 (trackers/track_file.c): with weight 0 a non-zero value is a failure
    (with reverse, a zero value is); otherwise value x weight (x -1 with reverse), where a
    result of -254 or less is FAULT and more than 253 counts as 253."""
    if weight == 0:
        return None if (value != 0) != reverse else 0
    effect = value * weight * (-1 if reverse else 1)
    if effect <= FILE_FAULT:
        return None
    return min(effect, FILE_MAX_EFFECT)


AnyTracker = Tracker | FileTracker
Reading = bool | int
"""A tracker's input: healthy or not (scripts, interfaces), or the number read (files)."""


@dataclass(frozen=True, slots=True)
class TrackingVerdict:
    priority: int
    fault: bool


def evaluate(base_priority: int, health: Mapping[AnyTracker, Reading]) -> TrackingVerdict:
    """The effective priority and fault for trackers in the given health (True: healthy; a
    file tracker's number)."""
    total = base_priority
    fault = False
    for tracker, healthy in health.items():
        if isinstance(tracker, FileTracker):
            effect = tracker.effect(int(healthy))
            if effect is None:
                fault = True
            else:
                total += effect
        elif (tracker.weight > 0 and healthy) or (tracker.weight < 0 and not healthy):
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
        self,
        base_priority: int,
        trackers: Iterable[AnyTracker],
        healthy: Mapping[str, Reading],
    ) -> None:
        if not 1 <= base_priority <= OWNER_PRIORITY:
            raise ValueError(f"base priority {base_priority} outside 1..255")
        self.base_priority = base_priority
        self._trackers: dict[str, AnyTracker] = {}
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
    def trackers(self) -> tuple[AnyTracker, ...]:
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

    def set_health(self, name: str, healthy: Reading) -> list[PriorityChanged | TrackingFault]:
        """Record one tracker's health (a file tracker's number); return the machine events
        its effect calls for."""
        if name not in self._trackers:
            raise KeyError(f"no tracker named {name!r}")
        self._healthy[name] = healthy
        old, new = self._verdict, self._evaluate()
        self._verdict = new
        return _changes(old, new)

    def reconfigure(
        self,
        base_priority: int,
        trackers: Iterable[AnyTracker],
        healthy: Mapping[str, Reading],
    ) -> list[PriorityChanged | TrackingFault]:
        """A live reload: a new base priority and set of trackers (weights may change). A
        tracker still listed keeps its health; `healthy` gives it for each new one (and is not
        consulted for the others). Returns the machine events the change of verdict calls for:
        the machine hears only the effective priority, so this is how its base changes."""
        if not 1 <= base_priority <= OWNER_PRIORITY:
            raise ValueError(f"base priority {base_priority} outside 1..255")
        found: dict[str, AnyTracker] = {}
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

    def health(self, name: str) -> Reading:
        return self._healthy[name]

    def effect(self, name: str) -> int | None:
        """What the tracker adds to the base priority now; None: it puts the instance in
        FAULT."""
        tracker, reading = self._trackers[name], self._healthy[name]
        if isinstance(tracker, FileTracker):
            return tracker.effect(int(reading))
        if tracker.weight == 0:
            return None if not reading else 0
        counts = (tracker.weight > 0 and reading) or (tracker.weight < 0 and not reading)
        return tracker.weight if counts else 0

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
