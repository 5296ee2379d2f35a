"""The events lvsha alerts on: their types, fields and severities.

Events reach the parent either from its own work (VRRP transitions it relays, reloads, child
restarts) or from a child as `lvsha.messages.ChildEvent`. The parent publishes every one on the
event stream and hands it to the alert sinks, which filter by type (or category) and severity.

Fields, by type (every event also carries `type`, and on the stream `seq` and `time`):

- `vrrp_state`: instance, old, new (INITIALIZE, BACKUP, MASTER, FAULT, ...), reason, priority.
- `real_server`: virtual_server (its name, or the service when unnamed), service
  ("TCP 192.0.2.10:80"), real_server ("10.0.0.2:80"), old and new (lvsha.checks.verdict.Health
  values: healthy, unhealthy, disabled, maintenance), reason (what the checks said), check (the
  check that decided, or null). A real server found unhealthy when the checker starts is
  reported (as keepalived reports DOWN at start), with old = new = unhealthy when its starting
  state was already out; one found healthy at start is not news.
- `quorum`: virtual_server, service, held (bool: true when regained), live_weight, quorum,
  sorry_server ("10.0.0.9:80" while it serves, or null).
- `config_applied`: generation, digest, file, changes, cost.
- `config_refused`: outcome (invalid, failed, refused), file, generation (still running), errors.
- `child_restarted`: child (vrrp, checker), status (how it exited), restarts (so far).
- `script_refused`: process (vrrp, checker), script (its name or command), reason.
- `bgp_route`: route ("198.51.100.10/32"), virtual_servers (their names, comma-separated),
  announced (bool), graceful_shutdown (bool: announced with the GRACEFUL_SHUTDOWN community),
  reason (announced, or why not: "no quorum: web", "drained", ...).
- `bgp_peer`: peer (its address), state (FRR's BGP state: Established, Active, ...), bfd (the
  BFD session's status, or null without BFD).

For the sinks: `Event` (one event with its time and severity), `summary` (a line saying what
happened), `coalesce_key` (what an event is about, so a digest folds a flapping server into
one line) and `headline` (how a digest's subject counts it).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping

FieldValue = str | int | float | bool | None


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


CATEGORIES: dict[str, tuple[str, ...]] = {
    "vrrp": ("vrrp_state",),
    "checker": ("real_server", "quorum"),
    "config": ("config_applied", "config_refused"),
    "process": ("child_restarted",),
    "script": ("script_refused",),
    "bgp": ("bgp_route", "bgp_peer"),
}
"""Names a sink's `events` may use for several types at once (keepalived's smtp_alert_vrrp and
smtp_alert_checker select "vrrp" and "checker")."""

EVENT_TYPES: tuple[str, ...] = tuple(t for types in CATEGORIES.values() for t in types)


def severity(event_type: str, fields: Mapping[str, FieldValue]) -> Severity:
    """How urgent an event is: critical when service is lost (a VRRP instance in FAULT, a
    virtual service without quorum), warning when something failed or moved (a real server
    down, a transition, a refused reload or script, a restarted process), info for recoveries
    and applied reloads."""
    if event_type == "vrrp_state":
        return Severity.CRITICAL if fields.get("new") == "FAULT" else Severity.WARNING
    if event_type == "real_server":
        return Severity.INFO if fields.get("new") == "healthy" else Severity.WARNING
    if event_type == "quorum":
        return Severity.INFO if fields.get("held") else Severity.CRITICAL
    if event_type == "config_applied":
        return Severity.INFO
    if event_type == "bgp_route":
        return Severity.INFO if fields.get("announced") else Severity.WARNING
    if event_type == "bgp_peer":
        # As lvsha.bgp.frr.PeerState.up says it.
        up = fields.get("state") == "Established" and fields.get("bfd") in (None, "up")
        return Severity.INFO if up else Severity.WARNING
    return Severity.WARNING


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event as the sinks take it: its type, fields, wall-clock time and severity."""

    type: str
    fields: Mapping[str, FieldValue]
    time: float
    """Wall clock (seconds since the epoch) when it happened."""
    severity: Severity


def iso_time(wall_clock: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2025-01-01T12:00:00.000Z (as the event
    stream writes it)."""
    moment = datetime.datetime.fromtimestamp(wall_clock, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_REAL_SERVER_WORDS = {
    "healthy": "up",
    "unhealthy": "down",
    "disabled": "drained",
    "maintenance": "in maintenance",
}


def _text(fields: Mapping[str, FieldValue], key: str) -> str:
    value = fields.get(key)
    return "?" if value is None else str(value)


def summary(event_type: str, fields: Mapping[str, FieldValue]) -> str:
    """One line that says what happened, e.g. "VI_1: BACKUP -> MASTER" or "web: real server
    10.0.0.2:80 down: connection refused"."""
    if event_type == "vrrp_state":
        return f"{_text(fields, 'instance')}: {_text(fields, 'old')} -> {_text(fields, 'new')}"
    if event_type == "real_server":
        new = _text(fields, "new")
        line = (
            f"{_text(fields, 'virtual_server')}: real server {_text(fields, 'real_server')} "
            f"{_REAL_SERVER_WORDS.get(new, new)}"
        )
        reason = fields.get("reason")
        return f"{line}: {reason}" if reason else line
    if event_type == "quorum":
        weight = f"live weight {_text(fields, 'live_weight')}"
        if fields.get("held"):
            return (
                f"{_text(fields, 'virtual_server')}: quorum regained "
                f"({weight} >= {_text(fields, 'quorum')})"
            )
        line = (
            f"{_text(fields, 'virtual_server')}: quorum lost ({weight} < {_text(fields, 'quorum')})"
        )
        sorry = fields.get("sorry_server")
        return f"{line}, sorry server {sorry} serving" if sorry else line
    if event_type == "config_applied":
        return (
            f"configuration generation {_text(fields, 'generation')} applied "
            f"from {_text(fields, 'file')}"
        )
    if event_type == "config_refused":
        return (
            f"configuration {_text(fields, 'file')} {_text(fields, 'outcome')}: generation "
            f"{_text(fields, 'generation')} still running"
        )
    if event_type == "child_restarted":
        return (
            f"{_text(fields, 'child')} process restarted ({_text(fields, 'status')}; "
            f"restart {_text(fields, 'restarts')})"
        )
    if event_type == "script_refused":
        return (
            f"{_text(fields, 'process')}: script {_text(fields, 'script')} refused: "
            f"{_text(fields, 'reason')}"
        )
    if event_type == "bgp_route":
        route = _text(fields, "route")
        if not fields.get("announced"):
            return f"BGP: {route} withdrawn: {_text(fields, 'reason')}"
        gshut = " with GRACEFUL_SHUTDOWN" if fields.get("graceful_shutdown") else ""
        return f"BGP: {route} announced{gshut}"
    if event_type == "bgp_peer":
        bfd = fields.get("bfd")
        return f"BGP peer {_text(fields, 'peer')}: {_text(fields, 'state')}" + (
            f", BFD {bfd}" if bfd is not None else ""
        )
    details = ", ".join(f"{key}={value}" for key, value in fields.items())
    return f"{event_type}: {details}" if details else event_type


CoalesceKey = tuple[str, ...]


def coalesce_key(event_type: str, fields: Mapping[str, FieldValue]) -> CoalesceKey | None:
    """What an event is about, so several events about one thing (a real server flapping,
    an instance moving back and forth) read as one line of a digest; None for an event that
    stands alone."""
    identity = _IDENTITY.get(event_type)
    if identity is None:
        return None
    return (event_type, *(_text(fields, key) for key in identity))


_IDENTITY: dict[str, tuple[str, ...]] = {
    "vrrp_state": ("instance",),
    "real_server": ("virtual_server", "real_server"),
    "quorum": ("virtual_server",),
    "config_applied": (),
    "config_refused": (),
    "child_restarted": ("child",),
    "script_refused": ("process", "script"),
    "bgp_route": ("route",),
    "bgp_peer": ("peer",),
}


def headline(event_type: str, fields: Mapping[str, FieldValue]) -> tuple[str, str]:
    """How a digest's subject counts an event, singular and plural: ("real server down",
    "real servers down")."""
    if event_type == "real_server":
        word = _REAL_SERVER_WORDS.get(_text(fields, "new"), _text(fields, "new"))
        return f"real server {word}", f"real servers {word}"
    if event_type == "vrrp_state":
        new = _text(fields, "new")
        return f"VRRP instance now {new}", f"VRRP instances now {new}"
    if event_type == "quorum":
        if fields.get("held"):
            return "service regained quorum", "services regained quorum"
        return "service without quorum", "services without quorum"
    if event_type == "bgp_route":
        if fields.get("announced"):
            return "route announced", "routes announced"
        return "route withdrawn", "routes withdrawn"
    if event_type == "bgp_peer":
        state = _text(fields, "state")
        return f"BGP peer {state}", f"BGP peers {state}"
    return _HEADLINES.get(event_type, (event_type, f"{event_type} events"))


_HEADLINES: dict[str, tuple[str, str]] = {
    "config_applied": ("reload applied", "reloads applied"),
    "config_refused": ("reload refused", "reloads refused"),
    "child_restarted": ("process restart", "process restarts"),
    "script_refused": ("script refused", "scripts refused"),
}
