"""What an alert says: each event type's one-line summary, and digests of several events."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from lvsha.alerts.digest import body, coalesce, subject
from lvsha.alerts.events import Event, severity, summary

NOW = 1_735_732_800.0  # 2025-01-01T12:00:00Z


def event(event_type: str, at: float = NOW, **fields: Any) -> Event:
    return Event(event_type, fields, at, severity(event_type, fields))


@pytest.mark.parametrize(
    ("event_type", "fields", "expected"),
    [
        (
            "vrrp_state",
            {"instance": "VI_1", "old": "BACKUP", "new": "MASTER", "reason": "r", "priority": 9},
            "VI_1: BACKUP -> MASTER",
        ),
        (
            "real_server",
            {"virtual_server": "web", "real_server": "[2001:db8::2]:80", "new": "disabled"},
            "web: real server [2001:db8::2]:80 drained",
        ),
        (
            "quorum",
            {"virtual_server": "web", "held": True, "live_weight": 3, "quorum": 2},
            "web: quorum regained (live weight 3 >= 2)",
        ),
        (
            "quorum",
            {"virtual_server": "web", "held": False, "live_weight": 1, "quorum": 2},
            "web: quorum lost (live weight 1 < 2)",
        ),
        (
            "config_applied",
            {"generation": 4, "digest": "ab12", "file": "/etc/lvsha/lvsha.yaml", "changes": 2},
            "configuration generation 4 applied from /etc/lvsha/lvsha.yaml",
        ),
        (
            "config_refused",
            {"outcome": "invalid", "file": "/etc/lvsha/lvsha.yaml", "generation": 3},
            "configuration /etc/lvsha/lvsha.yaml invalid: generation 3 still running",
        ),
        (
            "child_restarted",
            {"child": "checker", "status": "killed by SIGKILL", "restarts": 2},
            "checker process restarted (killed by SIGKILL; restart 2)",
        ),
        (
            "script_refused",
            {"process": "vrrp", "script": "/tmp/x.sh", "reason": "writable by uid 1000"},
            "vrrp: script /tmp/x.sh refused: writable by uid 1000",
        ),
        ("something_new", {"a": 1}, "something_new: a=1"),
    ],
)
def test_each_event_has_a_one_line_summary(
    event_type: str, fields: dict[str, Any], expected: str
) -> None:
    assert summary(event_type, fields) == expected


def test_a_few_vrrp_transitions_show_their_path_more_a_count() -> None:
    def moves(name: str, *states: str) -> list[Event]:
        return [
            event("vrrp_state", NOW + n, instance=name, old=old, new=new)
            for n, (old, new) in enumerate(itertools.pairwise(states))
        ]

    entries = coalesce(
        [
            *moves("VI_1", "INITIALIZE", "BACKUP", "MASTER"),
            *moves("VI_2", "BACKUP", "MASTER"),
            *moves("VI_3", "BACKUP", "MASTER", "BACKUP", "MASTER", "BACKUP"),
            *moves("VI_4", "BACKUP", "MASTER", "BACKUP", "MASTER", "BACKUP", "FAULT"),
        ]
    )
    assert [entry.line for entry in entries] == [
        "VI_1: INITIALIZE -> BACKUP -> MASTER",
        "VI_2: BACKUP -> MASTER",
        "VI_3: BACKUP -> MASTER -> BACKUP -> MASTER -> BACKUP",
        "VI_4: BACKUP -> FAULT (5 changes since 2025-01-01T12:00:00.000Z)",
    ]


def test_a_digest_subject_names_the_most_urgent_kinds_first() -> None:
    events = [
        event("real_server", virtual_server="web", real_server=f"10.0.0.{n}:80", new="unhealthy")
        for n in range(35)
    ]
    events += [
        event("real_server", virtual_server="web", real_server="10.0.1.1:80", new="healthy"),
        event("quorum", virtual_server="web", held=False, live_weight=0, quorum=1),
        event("config_applied", generation=2),
        event("child_restarted", child="vrrp", status="exit 1", restarts=1),
    ]
    entries = coalesce(events)
    assert subject("lb-nat-1", events, entries) == (
        "[lvsha lb-nat-1] 39 events: 1 service without quorum, 35 real servers down, "
        "1 process restart, ..."
    )


def test_one_event_is_a_field_a_line() -> None:
    one = [event("real_server", virtual_server="web", real_server="10.0.0.2:80", new="unhealthy")]
    text = body("lb-nat-1", one, coalesce(one))
    assert text == (
        "lvsha on lb-nat-1 reports:\n\n"
        "2025-01-01T12:00:00.000Z  WARNING  real_server\n"
        "  web: real server 10.0.0.2:80 down\n"
        "    virtual_server: web\n"
        "    real_server: 10.0.0.2:80\n"
        "    new: unhealthy\n"
    )


def test_events_without_a_key_stand_alone() -> None:
    events = [event("something_new", a=1), event("something_new", a=1)]
    assert [entry.count for entry in coalesce(events)] == [1, 1]
