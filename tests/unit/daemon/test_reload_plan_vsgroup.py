"""The reload plan of a virtual server group: members are services, added or removed one by
one; the group's settings, real servers and checks are one, said once."""

from __future__ import annotations

from lvsha.config import load_text
from lvsha.daemon.reload_plan import CONNECTION_RESET, HITLESS, Change, reload_plan
from tests.unit.ipvs.test_vsgroup import CONFIG


def changes(new: str) -> list[Change]:
    return list(reload_plan(load_text(CONFIG), load_text(new)).changes)


def test_an_unchanged_group_plans_nothing() -> None:
    assert changes(CONFIG) == []


def test_a_new_member_is_one_added_service() -> None:
    (change,) = changes(CONFIG.replace("fwmark 7]", "fwmark 7, 192.0.2.30:80]"))
    assert (change.area, change.action, change.subject, change.cost) == (
        "virtual_service",
        "add",
        "TCP 192.0.2.30:80",
        HITLESS,
    )
    assert (
        change.detail == "member of group web: its 2 real servers enter as the group's checks say"
    )


def test_a_removed_range_is_one_removed_service_per_address() -> None:
    found = changes(CONFIG.replace("192.0.2.20-21:80, ", ""))
    assert [(c.action, c.subject, c.cost) for c in found] == [
        ("remove", "TCP 192.0.2.20:80", CONNECTION_RESET),
        ("remove", "TCP 192.0.2.21:80", CONNECTION_RESET),
    ]


def test_a_real_server_change_is_said_once_for_the_group() -> None:
    found = changes(
        CONFIG.replace(
            "{address: 10.0.0.1, port: 80, weight: 2,", "{address: 10.0.0.1, port: 80, weight: 5,"
        ).replace(
            "checks: [{type: tcp}]}\n  - name", "checks: [{type: tcp, port: 8080}]}\n  - name"
        )
    )
    assert [(c.area, c.action, c.subject, c.detail) for c in found] == [
        ("real_server", "change", "group web -> 10.0.0.1:80", "weight 2 -> 5"),
        (
            "check",
            "change",
            "tcp 10.0.0.2:8080 check of group web -> 10.0.0.2:80",
            "restarts: port 80 -> 8080",
        ),
    ]
    assert {c.cost for c in found} == {HITLESS}
