"""What each sink sends, for the configuration reference: two events (a failover and a real
server failing) rendered by the sinks' own code, at a fixed time, so the reference shows what
lvsha sends and a test keeps it so."""

from __future__ import annotations

import json
from collections.abc import Sequence

from lvsha.alerts.alertmanager import AlertmanagerTransport
from lvsha.alerts.digest import body, coalesce, subject
from lvsha.alerts.events import EVENT_TYPES, Event, FieldValue, severity, summary
from lvsha.alerts.webhook import payload
from lvsha.config.model import AlertmanagerSink, LvshaConfig

ROUTER_ID = "lb-nat-1"
AT = 1_796_500_000.0
"""2026-12-05T19:46:40Z."""

SAMPLE_FIELDS: dict[str, dict[str, FieldValue]] = {
    "vrrp_state": {
        "instance": "VI_1",
        "old": "BACKUP",
        "new": "MASTER",
        "reason": "master down timer expired",
        "priority": 150,
    },
    "real_server": {
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "real_server": "10.0.0.21:8080",
        "old": "healthy",
        "new": "unhealthy",
        "reason": "http GET /health: status 503",
        "check": "http 10.0.0.21:8080",
    },
    "quorum": {
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "held": False,
        "live_weight": 0,
        "quorum": 1,
        "sorry_server": "10.0.0.99:8080",
    },
    "config_applied": {
        "generation": 4,
        "digest": "38d83a2ce5c0",
        "file": "/etc/lvsha/lvsha.yaml",
        "changes": 2,
        "cost": "hitless",
    },
    "config_refused": {
        "outcome": "invalid",
        "file": "/etc/lvsha/lvsha.yaml",
        "generation": 4,
        "errors": 1,
    },
    "child_restarted": {"child": "vrrp", "status": "signal SIGKILL", "restarts": 1},
    "script_refused": {
        "process": "vrrp",
        "script": "chk_haproxy",
        "reason": "script security: /usr/local/bin/chk_haproxy is writable by uid 1000",
    },
    "bgp_route": {
        "route": "198.51.100.10/32",
        "virtual_servers": "web",
        "announced": False,
        "graceful_shutdown": False,
        "reason": "no quorum: web",
    },
    "bgp_peer": {"peer": "192.0.2.1", "state": "Active", "bfd": "down"},
}


def _event(event_type: str, at: float) -> Event:
    fields = SAMPLE_FIELDS[event_type]
    return Event(event_type, fields, at, severity(event_type, fields))


def sample_events() -> list[Event]:
    return [_event("vrrp_state", AT), _event("real_server", AT + 2.5)]


def mail(events: Sequence[Event]) -> str:
    entries = coalesce(events)
    return f"Subject: {subject(ROUTER_ID, events, entries)}\n\n{body(ROUTER_ID, events, entries)}"


def webhook(events: Sequence[Event]) -> str:
    return json.dumps(payload(ROUTER_ID, events), indent=2)


def alertmanager(events: Sequence[Event]) -> str:
    """The first POST after `events` (the instance away from its preferred BACKUP, the real
    server down), with the configuration that makes VI_1 prefer BACKUP."""
    config = LvshaConfig.model_validate(
        {
            "vrrp_instances": {
                "VI_1": {
                    "interface": "eth0",
                    "virtual_router_id": 51,
                    "virtual_ipaddresses": ["192.0.2.10/24"],
                }
            }
        }
    )
    spec = AlertmanagerSink.model_validate(
        {"type": "alertmanager", "url": "http://127.0.0.1:9093", "labels": {"team": "lb"}}
    )
    now = max(event.time for event in events)
    transport = AlertmanagerTransport(
        "alertmanager-1", spec, router_id=ROUTER_ID, config=config, wall_clock=lambda: now
    )
    send = transport.compose(events, now)
    assert send is not None
    sent: bytes = send.args[0]  # type: ignore[attr-defined]  # a functools.partial
    return json.dumps(json.loads(sent), indent=2)


def summaries() -> list[tuple[str, str, str]]:
    """(type, severity, summary line) of a sample event of each type."""
    return [
        (kind, severity(kind, SAMPLE_FIELDS[kind]).label, summary(kind, SAMPLE_FIELDS[kind]))
        for kind in EVENT_TYPES
    ]
