"""The events lvsha alerts on: their types, fields and severities.

Events reach the parent either from its own work (VRRP transitions it relays, reloads, child
restarts) or from a child as `lvsha.messages.ChildEvent`. The parent publishes every one on the
event stream and hands it to the alert sinks, which filter by type (or category) and severity.

Fields, by type (every event also carries `type`, and on the stream `seq` and `time`):

- `vrrp_state`: instance, old, new (INITIALIZE, BACKUP, MASTER, FAULT, ...), reason, priority.
- `real_server`: virtual_server (its name, or the service when unnamed), service
  ("TCP 192.0.2.10:80"), real_server ("10.0.0.2:80"), old and new (lvsha.checks.verdict.Health
  values: healthy, unhealthy, disabled, maintenance), reason (what the checks said), check (the
  check that decided, or null).
- `quorum`: virtual_server, service, held (bool: true when regained), live_weight, quorum,
  sorry_server ("10.0.0.9:80" while it serves, or null).
- `config_applied`: generation, digest, file, changes, cost.
- `config_refused`: outcome (invalid, failed, refused), file, generation (still running), errors.
- `child_restarted`: child (vrrp, checker), status (how it exited), restarts (so far).
- `script_refused`: process (vrrp, checker), script (its name or command), reason.
"""

from __future__ import annotations

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
    return Severity.WARNING
