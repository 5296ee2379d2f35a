"""Several events as one message: coalesced by what they are about, counted for a subject.

A burst (500 real servers failing in a second) and a flapping real server must make one
readable message, not hundreds: `coalesce` folds the events about one thing (`coalesce_key`)
into one `Entry` that shows the latest state and how many events it stands for. `subject`
and `body` write the plain text the SMTP sink sends; the webhook sink sends the entries as
JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lvsha.alerts.events import (
    Event,
    FieldValue,
    Severity,
    coalesce_key,
    headline,
    iso_time,
    summary,
)

SUBJECT_HEADLINES = 3
"""Kinds of entries a digest's subject names; the rest are "...": a subject is read at a glance."""


@dataclass(slots=True)
class Entry:
    """One or more events about one thing, in the order the first of them came."""

    first: Event
    latest: Event
    count: int = 1
    states: list[str] = field(default_factory=list)
    """A VRRP instance's states, from before its first change on, while there are at most
    `PATH_STATES`."""

    @property
    def line(self) -> str:
        """The latest state, and how many events this stands for when more than one:
        "web: real server 10.0.0.2:80 down: connection refused (7 changes since ...)"; a few
        VRRP transitions show their path: "VI_1: INITIALIZE -> BACKUP -> MASTER"."""
        latest = self.latest
        text = summary(latest.type, latest.fields)
        if self.count == 1:
            return text
        if latest.type == "vrrp_state" and len(self.states) == self.count + 1:
            return f"{latest.fields.get('instance')}: {' -> '.join(self.states)}"
        return f"{text} ({self.count} changes since {iso_time(self.first.time)})"


PATH_STATES = 5
"""States a coalesced VRRP line spells out (four transitions); more read as a count."""


def _state(event: Event, key: str) -> str:
    value = event.fields.get(key)
    return "?" if value is None else str(value)


def coalesce(events: Iterable[Event]) -> list[Entry]:
    """The entries of `events`: one per coalescing key (events without one stand alone)."""
    entries: list[Entry] = []
    by_key: dict[tuple[str, ...], Entry] = {}
    for event in events:
        key = coalesce_key(event.type, event.fields)
        entry = by_key.get(key) if key is not None else None
        if entry is None:
            entry = Entry(first=event, latest=event)
            if event.type == "vrrp_state":
                entry.states = [_state(event, "old"), _state(event, "new")]
            entries.append(entry)
            if key is not None:
                by_key[key] = entry
        else:
            entry.latest = event
            entry.count += 1
            if event.type == "vrrp_state" and len(entry.states) == entry.count:
                if len(entry.states) < PATH_STATES:
                    entry.states.append(_state(event, "new"))
                else:
                    entry.states = []  # too many to spell out: a count
    return entries


def subject(router_id: str, events: Sequence[Event], entries: Sequence[Entry]) -> str:
    """`[lvsha lb-nat-1] VI_1: BACKUP -> MASTER` for one event; for several `[lvsha lb-nat-1]
    37 events: 35 real servers down, 1 real server up, ...` (the entries by their latest
    state, the most urgent kind first)."""
    prefix = f"[lvsha {router_id}]"
    if len(entries) == 1:
        return f"{prefix} {entries[0].line}"
    kinds: dict[str, tuple[str, Severity, int]] = {}  # singular -> plural, severity, count
    for entry in entries:
        singular, plural = headline(entry.latest.type, entry.latest.fields)
        _, severity, count = kinds.get(singular, (plural, entry.latest.severity, 0))
        kinds[singular] = (plural, max(severity, entry.latest.severity), count + 1)
    ranked = sorted(kinds.items(), key=lambda item: (-item[1][1], -item[1][2]))
    parts = [
        f"{count} {singular if count == 1 else plural}"
        for singular, (plural, _, count) in ranked[:SUBJECT_HEADLINES]
    ]
    if len(ranked) > SUBJECT_HEADLINES:
        parts.append("...")
    return f"{prefix} {len(events)} events: {', '.join(parts)}"


def _value(value: FieldValue) -> str:
    return "-" if value is None else str(value)


def body(router_id: str, events: Sequence[Event], entries: Sequence[Entry]) -> str:
    """Plain text: for each entry its time, severity, type, summary and every field of its
    latest event (a real server's `reason` says what its check saw). One event gets a field
    a line; a digest a line of fields per entry, so 500 entries stay a readable page."""
    if len(events) == 1:
        event = events[0]
        fields = "\n".join(f"    {key}: {_value(value)}" for key, value in event.fields.items())
        return (
            f"lvsha on {router_id} reports:\n\n"
            f"{iso_time(event.time)}  {event.severity.label.upper()}  {event.type}\n"
            f"  {entries[0].line}\n{fields}\n"
        )
    first, last = min(e.time for e in events), max(e.time for e in events)
    blocks = [
        f"lvsha on {router_id} reports {len(events)} events from {iso_time(first)} to "
        f"{iso_time(last)}"
        + (
            ""
            if len(entries) == len(events)
            else f", as {len(entries)} {'entry' if len(entries) == 1 else 'entries'} (the "
            "events about one thing are folded into one, which shows the latest)"
        )
        + "."
    ]
    for entry in entries:
        latest = entry.latest
        fields = "; ".join(f"{key}: {_value(value)}" for key, value in latest.fields.items())
        blocks.append(
            f"{iso_time(latest.time)}  {latest.severity.label.upper()}  {latest.type}\n"
            f"  {entry.line}\n    {fields}"
        )
    return "\n\n".join(blocks) + "\n"
