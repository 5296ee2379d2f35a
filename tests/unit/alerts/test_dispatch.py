"""The sinks as the parent holds them: built from the configuration (legacy keys and `sinks`),
filtering, bounded queues under a storm, reloads, shutdown and the metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsha.alerts.dispatch import FAMILIES, Alerts, sink_specs
from lvsha.alerts.events import FieldValue
from lvsha.alerts.smtp import SmtpTransport
from lvsha.config.model import SmtpSink, WebhookSink
from lvsha.daemon.metrics import render
from tests.tools.exposition import promtool_accepts
from tests.unit.alerts.servers import config, http_server, smtp_server, wait_until

NOW = 1_735_732_800.0


def rs(real_server: str, new: str = "unhealthy") -> dict[str, Any]:
    return {
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "real_server": real_server,
        "old": "healthy" if new == "unhealthy" else "unhealthy",
        "new": new,
        "reason": "connect: connection refused",
        "check": "tcp",
    }


VRRP: dict[str, FieldValue] = {
    "instance": "VI_1",
    "old": "BACKUP",
    "new": "MASTER",
    "reason": "x",
    "priority": 100,
}


def hook(url: str = "http://127.0.0.1:9/hook", **settings: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, **settings}


def test_the_legacy_keys_make_an_email_and_a_webhook_sink() -> None:
    legacy = config(
        notification={
            "email": ["ops@example.net"],
            "smtp_server": "relay.example.net",
            "smtp_port": 2525,
            "smtp_timeout": 7,
            "webhook_url": "https://hooks.example.net/lvsha",
        }
    )
    specs = sink_specs(legacy, "lb1")
    assert list(specs) == ["email", "webhook"]
    email = specs["email"]
    assert isinstance(email, SmtpSink)
    assert (email.server, email.port, email.timeout, email.tls) == (
        "relay.example.net",
        2525,
        7.0,
        "auto",
    )
    assert (email.sender, email.to, email.events) == ("lvsha@lb1", ["ops@example.net"], None)
    webhook = specs["webhook"]
    assert isinstance(webhook, WebhookSink)
    assert webhook.url == "https://hooks.example.net/lvsha"

    with_sender = config(
        notification={
            "email": ["ops@example.net"],
            "email_from": "lb@example.net",
            "smtp_server": "relay.example.net",
        }
    )
    assert sink_specs(with_sender, "lb1")["email"].sender == "lb@example.net"  # type: ignore[union-attr]
    no_server = config(notification={"email": ["ops@example.net"]})
    assert sink_specs(no_server, "lb1") == {}


def test_sinks_are_named_by_type_and_place_and_router_id_defaults_to_the_host_name() -> None:
    sinks = config(
        hook(name="pager"),
        hook(),
        {"type": "smtp", "server": "relay", "from": "a@b.example", "to": ["c@d.example"]},
        {"type": "alertmanager", "url": "http://127.0.0.1:9093"},
        router_id=None,
    )
    alerts = Alerts(sinks, hostname="lb1.example.net")
    assert alerts.sink_names == ["pager", "webhook-2", "smtp-1", "alertmanager-1"]
    assert alerts.router_id == "lb1.example.net"


def test_a_name_used_twice_keeps_the_first(caplog: pytest.LogCaptureFixture) -> None:
    twice = config(hook(name="webhook"), notification={"webhook_url": "http://127.0.0.1:9/x"})
    assert list(sink_specs(twice, "lb1")) == ["webhook"]
    assert sink_specs(twice, "lb1")["webhook"].url == "http://127.0.0.1:9/x"  # type: ignore[union-attr]
    assert "alert sink name webhook is used twice" in caplog.text


def test_events_and_min_severity_choose_what_a_sink_takes() -> None:
    alerts = Alerts(
        config(
            hook(name="vrrp", events=["vrrp"]),
            hook(name="servers", events=["real_server", "config_refused"]),
            hook(name="warnings", min_severity="warning"),
            hook(name="critical", min_severity="critical"),
        )
    )
    alerts.submit("vrrp_state", VRRP, NOW)  # warning
    alerts.submit("vrrp_state", {**VRRP, "new": "FAULT"}, NOW)  # critical
    alerts.submit("real_server", rs("10.0.0.2:80"), NOW)  # warning
    alerts.submit("real_server", rs("10.0.0.2:80", "healthy"), NOW)  # info
    alerts.submit("config_applied", {"generation": 3}, NOW)  # info
    alerts.submit("config_refused", {"outcome": "invalid"}, NOW)  # warning
    taken = {name: alerts.counters(name).events for name in alerts.sink_names}
    assert taken == {"vrrp": 2, "servers": 3, "warnings": 4, "critical": 1}


async def test_a_full_queue_drops_counts_and_logs_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with http_server() as receiver:
        alerts = Alerts(config(hook(receiver.url("/hook"), queue_size=5, gather=0)))
        with caplog.at_level(logging.WARNING, logger="lvsha.alerts"):
            for n in range(12):
                alerts.submit("real_server", rs(f"10.0.0.{n}:80"), NOW)
        counters = alerts.counters("webhook-1")
        assert (counters.events, counters.high_water, counters.dropped["queue_full"]) == (
            12,
            5,
            7,
        )
        assert caplog.text.count("dropped a real_server event") == 1  # once a minute at most
        await alerts.start()
        await wait_until(lambda: counters.delivered == 5)
        await alerts.close()

    assert [e["real_server"] for e in receiver.requests[0].json()["events"]] == [
        f"10.0.0.{n}:80" for n in range(5)
    ]
    samples = alerts.samples()
    assert ("lvsha_alerts_dropped_total", {"sink": "webhook-1", "reason": "queue_full"}, 7) in (
        samples
    )


async def test_a_storm_and_a_flapping_server_make_few_messages_within_the_queue_bound() -> None:
    queue_size, min_interval = 600, 0.25
    async with smtp_server() as relay:
        sink = {
            "type": "smtp",
            "server": "127.0.0.1",
            "port": relay.port,
            "from": "lvsha@lb1.example.net",
            "to": ["ops@example.net"],
            "gather": 0.1,
            "min_interval": min_interval,
            "queue_size": queue_size,
        }
        alerts = Alerts(config(sink))
        await alerts.start()
        counters = alerts.counters("smtp-1")
        loop = asyncio.get_running_loop()
        began = loop.time()
        for n in range(500):  # 500 real servers fail at once
            alerts.submit("real_server", rs(f"10.3.{n // 250}.{n % 250}:80"), NOW)
        flaps = 60
        for n in range(flaps):  # and one flaps, 60 times in 1.2 s
            alerts.submit("real_server", rs("10.9.9.9:80", ("healthy", "unhealthy")[n % 2]), NOW)
            await asyncio.sleep(0.02)
        flapped_for = loop.time() - began
        await wait_until(lambda: counters.delivered == 500 + flaps)
        await alerts.close()

    messages = len(relay.mails)
    bound = 1 + int(flapped_for / min_interval) + 1
    print(f"storm: {500 + flaps} events in {flapped_for:.2f} s made {messages} mails")
    assert 2 <= messages <= bound
    assert counters.sent == messages
    assert counters.high_water <= queue_size
    assert sum(counters.dropped.values()) == 0
    first = relay.mails[0]
    assert first.subject.startswith("[lvsha lb-nat-1] 50")  # 500 and a flap or so
    assert "500 real servers down" in first.subject or "501 real servers down" in first.subject
    for mail in relay.mails[1:]:  # after the burst, one line for the flapping server
        assert [line for line in mail.body.splitlines() if line.startswith("  web:")] == [
            line for line in mail.body.splitlines() if "10.9.9.9:80 " in line and "  web" in line
        ]
        assert mail.body.count("real_server: ") == 1


async def test_a_reload_keeps_unchanged_sinks_rebuilds_changed_ones_and_stops_removed() -> None:
    async with http_server() as receiver:
        url = receiver.url("/hook")
        first = config(
            hook(url, name="same", gather=0.05),
            hook(url, name="changed", gather=30),
            hook(url, name="removed", gather=30),
        )
        alerts = Alerts(first)
        await alerts.start()
        same = alerts.transport("same")
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        await wait_until(lambda: alerts.counters("same").sent == 1)
        assert alerts.counters("changed").sent == 0  # still gathering

        second = config(
            hook(url, name="same", gather=0.05),
            hook(url, name="changed", gather=0, events=["checker"]),
        )
        alerts.update(second)
        assert alerts.sink_names == ["same", "changed"]
        assert alerts.transport("same") is same
        # the changed sink took the event its predecessor still held, and sends it now
        await wait_until(lambda: alerts.counters("changed").sent == 1)
        assert alerts.counters("changed").events == 1
        assert [s for s in alerts.samples() if s[1].get("sink") == "removed"] == []

        # a change of filter: what the new settings refuse is counted, not lost silently
        third = config(
            hook(url, name="same", gather=0.05),
            hook(url, name="changed", gather=30, events=["checker"]),
        )
        alerts.update(third)
        alerts.submit("real_server", rs("10.0.0.3:80"), NOW)
        alerts.update(config(hook(url, name="same"), hook(url, name="changed", events=["vrrp"])))
        assert alerts.counters("changed").dropped["reconfigured"] == 1
        await alerts.close()

    assert len(receiver.requests) == 3


async def test_a_reload_that_changes_router_id_rebuilds_the_sinks() -> None:
    alerts = Alerts(config(hook(name="h")))
    transport = alerts.transport("h")
    alerts.update(config(hook(name="h")))
    assert alerts.transport("h") is transport
    alerts.update(config(hook(name="h"), router_id="lb-nat-2"))
    assert alerts.transport("h") is not transport
    assert alerts.router_id == "lb-nat-2"
    await alerts.close(timeout=0)


async def test_close_never_waits_past_its_timeout() -> None:
    async with http_server() as receiver:
        receiver.hang = True
        alerts = Alerts(config(hook(receiver.url("/hook"), gather=0, timeout=60)))
        await alerts.start()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        await wait_until(lambda: receiver.taken == 1)
        alerts.submit("real_server", rs("10.0.0.3:80"), NOW)
        began = time.monotonic()
        await alerts.close(timeout=0.2)
        took = time.monotonic() - began

    assert 0.2 <= took < 0.2 + 0.5 + 0.5
    counters = alerts.counters("webhook-1")
    assert counters.dropped["shutdown"] == 2
    alerts.submit("real_server", rs("10.0.0.4:80"), NOW)  # after close: ignored
    assert counters.events == 2


async def test_close_sends_what_waits_without_gathering() -> None:
    async with http_server() as receiver:
        alerts = Alerts(config(hook(receiver.url("/hook"), gather=60, min_interval=60)))
        await alerts.start()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        await alerts.close(timeout=2)

    assert len(receiver.requests) == 1
    assert alerts.counters("webhook-1").delivered == 1


async def test_a_bug_in_one_sink_neither_raises_nor_starves_the_others(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = Alerts(config(hook(name="broken"), hook(name="fine")))

    def explode(*args: object) -> None:
        raise RuntimeError("a bug")

    broken = alerts._sinks["broken"].runner
    monkeypatch.setattr(broken, "offer", explode)
    alerts.submit("vrrp_state", VRRP, NOW)
    assert alerts.counters("fine").events == 1
    assert "alert sink broken: cannot take a vrrp_state event (a bug): RuntimeError('a bug')" in (
        caplog.text
    )
    await alerts.close(timeout=0)


async def test_a_bug_while_composing_is_counted_and_the_sink_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with smtp_server() as relay:
        sink = {
            "type": "smtp",
            "server": "127.0.0.1",
            "port": relay.port,
            "from": "a@b.example",
            "to": ["c@d.example"],
            "gather": 0,
            "min_interval": 0,
        }
        alerts = Alerts(config(sink))
        transport = alerts.transport("smtp-1")
        assert isinstance(transport, SmtpTransport)
        original = transport.compose
        calls = 0

        def compose_once_broken(events: Any, now: float) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyError("a bug")
            return original(events, now)

        monkeypatch.setattr(transport, "compose", compose_once_broken)
        await alerts.start()
        alerts.submit("vrrp_state", VRRP, NOW)
        counters = alerts.counters("smtp-1")
        await wait_until(lambda: counters.dropped["error"] == 1)
        alerts.submit("vrrp_state", VRRP, NOW)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    assert "alert sink smtp-1: cannot compose a message (a bug)" in caplog.text


async def test_the_metrics_parse_and_pass_promtool() -> None:
    async with http_server() as receiver:
        alerts = Alerts(
            config(
                hook(receiver.url("/hook"), gather=0),
                {"type": "alertmanager", "url": "http://127.0.0.1:9/"},
            )
        )
        await alerts.start()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        await wait_until(lambda: alerts.counters("webhook-1").sent == 1)
        text = render(alerts.samples(), FAMILIES)
        await alerts.close(timeout=0)

    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["lvsha_alerts_sent"].type == "counter"
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert values[("lvsha_alerts_sent_total", (("sink", "webhook-1"),))] == 1
    assert values[("lvsha_alerts_events_total", (("sink", "alertmanager-1"),))] == 1
    assert values[("lvsha_alerts_firing", (("sink", "alertmanager-1"),))] == 0
    assert values[("lvsha_alerts_queued", (("sink", "alertmanager-1"),))] == 1
    assert (
        values[
            ("lvsha_alerts_dropped_total", (("reason", "delivery_failed"), ("sink", "webhook-1")))
        ]
        == 0
    )
    promtool_accepts(text)
