"""The Alertmanager sink: conditions fired and resolved by events (driven by hand, the POSTs
recorded), and against an Alertmanager stand-in on 127.0.0.1: an alert fires, is re-sent
while it lasts and resolves with its endsAt."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lvsha.alerts.alertmanager import AlertmanagerTransport
from lvsha.alerts.dispatch import Alerts
from lvsha.alerts.events import Event, iso_time, severity
from lvsha.alerts.http import JsonPoster
from lvsha.config.model import AlertmanagerSink, LvshaConfig
from tests.unit.alerts.servers import config, http_server, wait_until

NOW = 1_735_732_800.0  # 2025-01-01T12:00:00Z
RESEND = 60.0


class RecordingPoster(JsonPoster):
    """Keeps what would be POSTed; fails while `refuse` is set."""

    def __init__(self) -> None:
        super().__init__(timeout=1.0)
        self.posts: list[tuple[str, list[dict[str, Any]]]] = []
        self.refuse = False

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.refuse:
            raise OSError("refused by the test")
        self.posts.append((url, json.loads(body)))


def instance(state: str = "BACKUP", priority: int = 100) -> dict[str, Any]:
    return {
        "interface": "eth0",
        "virtual_router_id": 51,
        "priority": priority,
        "state": state,
        "virtual_ipaddresses": ["192.0.2.10/24"],
    }


def lab_config(**sink: Any) -> LvshaConfig:
    return config(
        {"type": "alertmanager", "url": "http://127.0.0.1:9093/", "gather": 0, **sink},
        vrrp_instances={
            "VI_MASTER": instance("MASTER"),
            "VI_OWNER": instance("BACKUP", 255),
            "VI_BACKUP": instance("BACKUP"),
        },
        virtual_servers=[
            {
                "name": "web",
                "address": "192.0.2.10",
                "port": 80,
                "protocol": "TCP",
                "real_servers": [{"address": "10.0.0.2"}, {"address": "10.0.0.3", "port": 8080}],
            }
        ],
    )


class Harness:
    """A transport whose clock and POSTs the test holds."""

    def __init__(self, **sink: Any) -> None:
        self.config = lab_config(**sink)
        spec = self.config.global_.notification.sinks[0]
        assert isinstance(spec, AlertmanagerSink)
        self.wall = NOW
        self.loop_time = 1000.0
        self.transport = AlertmanagerTransport(
            "am", spec, router_id="lb-nat-1", config=self.config, wall_clock=lambda: self.wall
        )
        self.poster = RecordingPoster()
        self.transport.poster = self.poster

    async def flush(self, *events: Event) -> list[dict[str, Any]] | None:
        """Compose and send; the alerts POSTed, or None when nothing was to send."""
        send = self.transport.compose(list(events), self.loop_time)
        if send is None:
            return None
        await send()
        return self.poster.posts[-1][1]

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.loop_time += seconds


def event(event_type: str, at: float = NOW, **fields: Any) -> Event:
    return Event(event_type, fields, at, severity(event_type, fields))


def rs(new: str, real_server: str = "10.0.0.2:80", at: float = NOW, **fields: Any) -> Event:
    return event(
        "real_server",
        at,
        virtual_server="web",
        service="TCP 192.0.2.10:80",
        real_server=real_server,
        old="?",
        new=new,
        reason=f"checks say {new}",
        check="tcp",
        **fields,
    )


def vrrp(name: str, new: str, at: float = NOW) -> Event:
    return event("vrrp_state", at, instance=name, old="?", new=new, reason="test", priority=100)


def names(h: Harness, alerts: list[dict[str, Any]] | None) -> list[tuple[str, ...]]:
    """(alertname, instance or real server, "firing" or when it ended) of each alert."""
    assert alerts is not None
    return [
        (
            a["labels"]["alertname"],
            a["labels"].get("instance") or a["labels"].get("real_server") or "",
            "firing" if a["endsAt"] == iso_time(h.wall + 3 * RESEND) else a["endsAt"],
        )
        for a in alerts
    ]


async def test_a_real_server_down_fires_is_resent_and_resolves() -> None:
    h = Harness(labels={"team": "lb", "alertname": "ignored"})
    alerts = await h.flush(rs("unhealthy"))
    assert alerts == [
        {
            "labels": {
                "team": "lb",
                "alertname": "LvshaRealServerDown",
                "severity": "warning",
                "virtual_server": "web",
                "service": "TCP 192.0.2.10:80",
                "real_server": "10.0.0.2:80",
                "router_id": "lb-nat-1",
            },
            "annotations": {
                "summary": "web: real server 10.0.0.2:80 down: checks say unhealthy",
                "description": "checks say unhealthy",
                "check": "tcp",
            },
            "startsAt": "2025-01-01T12:00:00.000Z",
            "endsAt": iso_time(NOW + 3 * RESEND),
        }
    ]
    assert h.poster.posts[0][0] == "http://127.0.0.1:9093/api/v2/alerts"
    assert h.transport.firing == 1
    assert h.transport.due() == h.loop_time + RESEND

    h.advance(RESEND / 2)
    assert await h.flush() is None  # nothing changed, no re-send due
    h.advance(RESEND / 2)
    resent = await h.flush()
    assert resent is not None
    assert [a["endsAt"] for a in resent] == [iso_time(NOW + RESEND + 3 * RESEND)]
    assert resent[0]["startsAt"] == "2025-01-01T12:00:00.000Z"

    h.advance(5)
    resolved = await h.flush(rs("healthy", at=h.wall))
    assert resolved is not None
    assert [(a["labels"]["real_server"], a["endsAt"]) for a in resolved] == [
        ("10.0.0.2:80", iso_time(h.wall))
    ]
    assert h.transport.conditions == {}
    assert h.transport.due() is None
    h.advance(RESEND)
    assert await h.flush() is None


async def test_drained_or_in_maintenance_resolves_and_only_changes_are_sent_between_resends() -> (
    None
):
    h = Harness()
    await h.flush(rs("unhealthy"), rs("unhealthy", "10.0.0.3:8080"))
    h.advance(1)
    changed = await h.flush(rs("disabled", at=h.wall))
    assert names(h, changed) == [("LvshaRealServerDown", "10.0.0.2:80", iso_time(h.wall))]
    h.advance(1)
    assert await h.flush(rs("maintenance", "10.0.0.2:80")) is None  # resolved already
    changed = await h.flush(rs("maintenance", "10.0.0.3:8080", at=h.wall))
    assert names(h, changed) == [("LvshaRealServerDown", "10.0.0.3:8080", iso_time(h.wall))]


async def test_a_resolution_that_could_not_be_sent_goes_with_the_next_post() -> None:
    h = Harness()
    await h.flush(rs("unhealthy"))
    h.poster.refuse = True
    h.advance(1)
    send = h.transport.compose([rs("healthy", at=h.wall)], h.loop_time)
    assert send is not None
    with pytest.raises(OSError):
        await send()
    assert h.transport.due() == h.loop_time - 1 + RESEND  # not before the next re-send
    h.poster.refuse = False
    h.advance(1)
    again = await h.flush(rs("unhealthy", "10.0.0.3:8080"))  # the next POST, whatever its cause
    assert [(a["labels"]["real_server"], a["endsAt"]) for a in again or []] == [
        ("10.0.0.2:80", iso_time(NOW + 1)),
        ("10.0.0.3:8080", iso_time(h.wall + 3 * RESEND)),
    ]
    assert h.transport.firing == 1


async def test_an_instance_fires_while_not_in_its_preferred_state() -> None:
    h = Harness()
    # state MASTER and the address owner prefer MASTER; the others BACKUP
    fired = await h.flush(
        vrrp("VI_MASTER", "BACKUP"),
        vrrp("VI_OWNER", "MASTER"),
        vrrp("VI_BACKUP", "BACKUP"),
        vrrp("VI_OWNER", "FAULT"),
    )
    assert fired is not None
    assert [(a["labels"]["instance"], a["annotations"]["state"]) for a in fired] == [
        ("VI_MASTER", "BACKUP"),
        ("VI_OWNER", "FAULT"),
    ]
    assert fired[0]["annotations"]["summary"] == "VI_MASTER is BACKUP, prefers MASTER"
    assert fired[0]["labels"]["severity"] == "warning"

    h.advance(1)
    changed = await h.flush(vrrp("VI_MASTER", "MASTER", h.wall), vrrp("VI_BACKUP", "MASTER"))
    assert names(h, changed) == [
        ("LvshaVrrpNotPreferred", "VI_MASTER", iso_time(h.wall)),
        ("LvshaVrrpNotPreferred", "VI_BACKUP", "firing"),
    ]
    # releasing changes nothing; stopping (INITIALIZE) resolves
    h.advance(1)
    assert await h.flush(vrrp("VI_BACKUP", "RELEASING")) is None
    changed = await h.flush(vrrp("VI_BACKUP", "INITIALIZE", h.wall), vrrp("VI_OWNER", "MASTER"))
    assert [a["labels"]["instance"] for a in changed or []] == ["VI_OWNER", "VI_BACKUP"]
    assert h.transport.conditions == {}


async def test_quorum_lost_is_critical_and_resolves_when_held() -> None:
    h = Harness()
    quorum: dict[str, Any] = {
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "live_weight": 0,
        "quorum": 2,
        "sorry_server": "10.0.0.9:80",
    }
    fired = await h.flush(event("quorum", held=False, **quorum))
    assert fired is not None
    assert fired[0]["labels"]["alertname"] == "LvshaQuorumLost"
    assert fired[0]["labels"]["severity"] == "critical"
    assert fired[0]["annotations"]["summary"] == (
        "web: quorum lost (live weight 0 < 2), sorry server 10.0.0.9:80 serving"
    )
    h.advance(1)
    resolved = await h.flush(event("quorum", h.wall, held=True, **{**quorum, "live_weight": 3}))
    assert [a["endsAt"] for a in resolved or []] == [iso_time(h.wall)]


async def test_a_reload_judges_instances_again_and_resolves_what_is_gone() -> None:
    h = Harness()
    lost: dict[str, Any] = {"virtual_server": "web", "service": "TCP 192.0.2.10:80"}
    await h.flush(
        vrrp("VI_BACKUP", "BACKUP"),
        vrrp("VI_MASTER", "BACKUP"),
        rs("unhealthy", "10.0.0.3:8080"),
        event("quorum", held=False, live_weight=0, quorum=1, sorry_server=None, **lost),
    )
    assert h.transport.firing == 3
    reloaded = LvshaConfig.model_validate(
        {
            "global": {"router_id": "lb-nat-1"},
            "vrrp_instances": {"VI_BACKUP": instance("BACKUP", 255)},  # now the owner
        }
    )
    h.advance(1)
    assert h.transport.reconfigure(reloaded)
    assert h.transport.due() == float("-inf")
    changed = await h.flush()
    assert names(h, changed) == [
        ("LvshaVrrpNotPreferred", "VI_MASTER", iso_time(h.wall)),
        ("LvshaRealServerDown", "10.0.0.3:8080", iso_time(h.wall)),
        # The service is gone with the reload: nobody would say it regained quorum.
        ("LvshaQuorumLost", "", iso_time(h.wall)),
        ("LvshaVrrpNotPreferred", "VI_BACKUP", "firing"),
    ]
    assert not h.transport.reconfigure(reloaded)


async def test_against_a_stand_in_it_fires_is_resent_while_it_lasts_and_resolves() -> None:
    async with http_server("/api/v2/alerts") as stand_in:
        sink = {
            "type": "alertmanager",
            "url": stand_in.url(),
            "gather": 0,
            "min_interval": 0,
            "resend_interval": 1,
        }
        alerts = Alerts(config(sink))
        await alerts.start()
        loop = asyncio.get_running_loop()
        fired_at = loop.time()
        down = rs("unhealthy", at=NOW)
        alerts.submit("real_server", dict(down.fields), NOW)
        await wait_until(lambda: len(stand_in.requests) == 1)
        assert ("lvsha_alerts_firing", {"sink": "alertmanager-1"}, 1) in alerts.samples()
        await wait_until(lambda: len(stand_in.requests) == 2, timeout=3)
        resent_after = loop.time() - fired_at
        alerts.submit("real_server", dict(rs("healthy").fields), NOW + 2)
        await wait_until(lambda: len(stand_in.requests) == 3)
        await alerts.close()

    sent = stand_in.alerts()
    assert [a["labels"]["alertname"] for a in sent] == ["LvshaRealServerDown"] * 3
    assert [a["startsAt"] for a in sent] == ["2025-01-01T12:00:00.000Z"] * 3
    assert sent[0]["endsAt"] < sent[1]["endsAt"]  # each re-send pushes the end ahead
    assert sent[2]["endsAt"] == "2025-01-01T12:00:02.000Z"
    assert 1.0 <= resent_after < 1.5
    counters = alerts.counters("alertmanager-1")
    assert (counters.events, counters.sent, counters.delivered) == (2, 3, 2)
    assert ("lvsha_alerts_firing", {"sink": "alertmanager-1"}, 0) in alerts.samples()


async def test_only_the_condition_events_reach_it_and_min_severity_is_the_alerts() -> None:
    sinks = [
        {"type": "alertmanager", "url": "http://127.0.0.1:9/", "name": "all"},
        {"type": "alertmanager", "url": "http://127.0.0.1:9/", "name": "critical"},
    ]
    sinks[1]["min_severity"] = "critical"
    alerts = Alerts(config(*sinks))
    alerts.submit("config_applied", {"generation": 2, "file": "x", "changes": 1}, NOW)
    alerts.submit("child_restarted", {"child": "vrrp", "status": "exit 1", "restarts": 1}, NOW)
    alerts.submit("real_server", dict(rs("unhealthy").fields), NOW)
    alerts.submit("real_server", dict(rs("healthy").fields), NOW)  # info, resolves: taken
    alerts.submit("quorum", {"virtual_server": "web", "held": False}, NOW)
    assert alerts.counters("all").events == 3
    assert alerts.counters("critical").events == 1
    await alerts.close(timeout=0)


async def test_a_changed_sink_keeps_its_alerts_firing_with_the_new_labels() -> None:
    async with http_server("/api/v2/alerts") as stand_in:
        sink = {"type": "alertmanager", "url": stand_in.url(), "gather": 0, "min_interval": 0}
        alerts = Alerts(config(sink))
        await alerts.start()
        alerts.submit("real_server", dict(rs("unhealthy").fields), NOW)
        await wait_until(lambda: len(stand_in.requests) == 1)
        alerts.update(config({**sink, "labels": {"site": "par1"}}))
        await wait_until(lambda: len(stand_in.requests) == 2)
        await alerts.close()

    first, second = stand_in.alerts()
    assert "site" not in first["labels"]
    assert second["labels"]["site"] == "par1"
    assert second["startsAt"] == first["startsAt"]
    assert alerts.counters("alertmanager-1").sent == 2  # counters kept by name
