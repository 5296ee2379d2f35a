"""keepalived's smtp_alert keys: which VRRP and checker events SMTP sinks mail, with
keepalived's defaults, and nothing changed for other sinks or while no key is set."""

from __future__ import annotations

from typing import Any

import pytest

from lvsha.alerts.dispatch import Alerts
from lvsha.alerts.events import Event, FieldValue, severity
from lvsha.alerts.smtp_alert import SmtpAlertPolicy
from lvsha.config.model import LvshaConfig
from tests.unit.alerts.servers import config, smtp_server, wait_until

NOW = 1_735_732_800.0


def instance(vrid: int, **settings: Any) -> dict[str, Any]:
    return {
        "interface": "eth0",
        "virtual_router_id": vrid,
        "virtual_ipaddresses": [f"192.0.2.{vrid}/24"],
        **settings,
    }


def service(port: int, *real_servers: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {
        "address": "192.0.2.10",
        "port": port,
        "protocol": "TCP",
        "real_servers": list(real_servers),
        **settings,
    }


def director(
    notification: dict[str, Any] | None = None,
    *sinks: dict[str, Any],
    **parts: Any,
) -> LvshaConfig:
    """VI_1 alone, VI_2 and VI_3 in sync group G; services on ports 80 and 443."""
    instances = parts.pop("instances", {})
    services = parts.pop("services", {})
    group = parts.pop("group", {})
    return config(
        *sinks,
        notification=notification or {},
        vrrp_instances={
            "VI_1": instance(1, **instances.get("VI_1", {})),
            "VI_2": instance(2, **instances.get("VI_2", {})),
            "VI_3": instance(3, **instances.get("VI_3", {})),
        },
        sync_groups={"G": {"instances": ["VI_2", "VI_3"], **group}},
        virtual_servers=[
            service(
                80,
                {"address": "10.0.0.1", **services.get("rs1", {})},
                {"address": "10.0.0.2", "port": 8080, **services.get("rs2", {})},
                **services.get("web", {}),
            ),
            service(443, {"address": "10.0.0.3"}, **services.get("tls", {})),
        ],
    )


def vrrp(instance_name: str) -> tuple[str, dict[str, FieldValue]]:
    fields: dict[str, FieldValue] = {
        "instance": instance_name,
        "old": "BACKUP",
        "new": "MASTER",
        "reason": "x",
        "priority": 100,
    }
    return "vrrp_state", fields


def real_server(port: int, where: str) -> tuple[str, dict[str, FieldValue]]:
    return "real_server", {
        "virtual_server": "web",
        "service": f"TCP 192.0.2.10:{port}",
        "real_server": where,
        "old": "healthy",
        "new": "unhealthy",
        "reason": "connect: connection refused",
        "check": "tcp",
    }


def quorum(port: int) -> tuple[str, dict[str, FieldValue]]:
    return "quorum", {
        "virtual_server": "web",
        "service": f"TCP 192.0.2.10:{port}",
        "held": False,
        "live_weight": 0,
        "quorum": 1,
        "sorry_server": None,
    }


EVENTS: dict[str, tuple[str, dict[str, FieldValue]]] = {
    "VI_1": vrrp("VI_1"),
    "VI_2": vrrp("VI_2"),
    "VI_3": vrrp("VI_3"),
    "rs1": real_server(80, "10.0.0.1:80"),
    "rs2": real_server(80, "10.0.0.2:8080"),
    "rs3": real_server(443, "10.0.0.3:443"),
    "web": quorum(80),
    "tls": quorum(443),
    "reload": ("config_applied", {"generation": 2}),
}


def mailed(policy: SmtpAlertPolicy) -> set[str]:
    return {name for name, (kind, fields) in EVENTS.items() if policy.decides(kind, fields)}


def test_with_no_key_set_everything_passes_as_before() -> None:
    policy = SmtpAlertPolicy(director())
    assert not policy.active
    assert mailed(policy) == set(EVENTS) - {"VI_1", "VI_2", "VI_3", "web", "tls"}  # keepalived
    # ... but while inactive, mails() lets everything through, as lvsha did
    for kind, fields in EVENTS.values():
        assert policy.mails(Event(kind, fields, NOW, severity(kind, fields)))


@pytest.mark.parametrize(
    ("notification", "parts", "expected"),
    [
        # keepalived's defaults once anything is set: instances and quorum off, servers on
        ({"smtp_alert_vrrp": False}, {}, {"rs1", "rs2", "rs3", "reload"}),
        ({"smtp_alert": True}, {}, set(EVENTS)),
        ({"smtp_alert": False}, {}, {"reload"}),
        # the specific global keys win over smtp_alert
        (
            {"smtp_alert": False, "smtp_alert_vrrp": True},
            {},
            {"VI_1", "VI_2", "VI_3", "reload"},
        ),
        (
            {"smtp_alert": True, "smtp_alert_checker": False},
            {},
            {"VI_1", "VI_2", "VI_3", "reload"},
        ),
        # an object's own key wins over every global one
        (
            {"smtp_alert": False},
            {
                "instances": {"VI_1": {"smtp_alert": True}},
                "services": {"rs2": {"smtp_alert": True}, "tls": {"smtp_alert": True}},
            },
            {"VI_1", "rs2", "tls", "reload"},
        ),
        # set on one instance only: the rest take keepalived's defaults
        (
            {},
            {"instances": {"VI_1": {"smtp_alert": True}}},
            {"VI_1", "rs1", "rs2", "rs3", "reload"},
        ),
        # a sync group speaks for the members that say nothing
        (
            {},
            {"group": {"smtp_alert": True}, "instances": {"VI_3": {"smtp_alert": False}}},
            {"VI_2", "rs1", "rs2", "rs3", "reload"},
        ),
        # a real server's own false; the service's key is its quorum's only
        (
            {},
            {"services": {"rs1": {"smtp_alert": False}, "web": {"smtp_alert": True}}},
            {"rs2", "rs3", "web", "reload"},
        ),
    ],
)
def test_keepalived_defaulting(
    notification: dict[str, Any], parts: dict[str, Any], expected: set[str]
) -> None:
    policy = SmtpAlertPolicy(director(notification, **parts))
    assert policy.active
    assert mailed(policy) == expected


def smtp_sink(port: int) -> dict[str, Any]:
    return {
        "type": "smtp",
        "server": "127.0.0.1",
        "port": port,
        "from": "lvsha@lb1.example.net",
        "to": ["ops@example.net"],
        "gather": 0,
        "min_interval": 0,
        "tls": "off",
    }


def submit_all(alerts: Alerts) -> None:
    for kind, fields in EVENTS.values():
        alerts.submit(kind, fields, NOW)


async def test_only_smtp_sinks_follow_smtp_alert_and_a_reload_changes_it() -> None:
    async with smtp_server() as relay:
        hook = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "name": "hook"}
        first = director({"smtp_alert_vrrp": False}, smtp_sink(relay.port), hook)
        alerts = Alerts(first)
        await alerts.start()
        submit_all(alerts)
        mail = alerts.counters("smtp-1")
        await wait_until(lambda: mail.delivered == 4)
        assert alerts.counters("hook").events == len(EVENTS)  # a webhook takes everything
        text = "\n".join(m.body for m in relay.mails)
        assert "10.0.0.1:80" in text and "VI_1" not in text

        # A reload turns VRRP mails on; the SMTP sink itself is unchanged and kept.
        second = director({"smtp_alert_vrrp": True}, smtp_sink(relay.port), hook)
        alerts.update(second)
        assert alerts.counters("smtp-1") is mail
        kind, fields = EVENTS["VI_2"]
        alerts.submit(kind, fields, NOW)
        await wait_until(lambda: mail.delivered == 5)
        assert "VI_2" in relay.mails[-1].body
        await alerts.close()


async def test_the_legacy_email_sink_follows_smtp_alert_too() -> None:
    async with smtp_server() as relay:
        alerts = Alerts(
            director(
                {
                    "email": ["ops@example.net"],
                    "smtp_server": "127.0.0.1",
                    "smtp_port": relay.port,
                    "smtp_alert": False,
                },
                services={"rs2": {"smtp_alert": True}},
            )
        )
        await alerts.start()
        submit_all(alerts)
        counters = alerts.counters("email")
        await wait_until(lambda: counters.delivered == 2)  # rs2 and the reload
        await alerts.close()
        assert counters.events == 2
