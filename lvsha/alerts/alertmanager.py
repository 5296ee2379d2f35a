"""The Alertmanager sink: an alert per condition, through Alertmanager's v2 API.

Events are not sent as such: they fire and resolve conditions, and the sink POSTs the alerts
of those conditions to `{url}/api/v2/alerts` (a JSON array of `{labels, annotations,
startsAt, endsAt}`):

- `LvshaRealServerDown` (severity warning), per virtual server and real server: fires on a
  `real_server` event whose `new` is unhealthy, resolves on any other `new` (healthy, drained,
  in maintenance).
- `LvshaVrrpNotPreferred` (warning), per VRRP instance: the preferred state is MASTER when
  the instance's configured `state` is MASTER or its priority 255, else BACKUP. It fires
  while the latest `vrrp_state` differs (FAULT always does); RELEASING (priority 0 sent,
  VIPs still held, on the way to a shutdown or a handover) changes nothing; INITIALIZE
  means the instance stopped (lvsha stopping, the VRRP process gone, the instance removed)
  and resolves it: a director that stops is not an instance in the wrong state, and its
  peer's own alert (a backup that became master) tells that story.
- `LvshaQuorumLost` (critical), per virtual server: fires on a `quorum` event with `held`
  false, resolves with `held` true.

Every other event type (reloads, restarts, refused scripts) is not sent to Alertmanager: use
an SMTP or webhook sink for them. A sink's `min_severity` applies to the alerts' severities
above, not to the events' (the event of a recovery is info, but must resolve its alert).

Labels: alertname, router_id, severity, the identifying fields (virtual_server, service,
real_server; instance) and the sink's `labels` (which cannot replace the others). Every
POST carries the alerts that changed since the last one that went through; every
`resend_interval` it carries every firing alert again, with `endsAt` = now + 3 x
resend_interval, so the alerts of a director that died end by themselves. A resolved alert
is sent (until it goes through) with `endsAt` = when it ended, and then forgotten. On a
reload, the alerts of instances and real servers no longer configured are resolved.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from lvsha.alerts.delivery import Send
from lvsha.alerts.events import Event, Severity, iso_time, summary
from lvsha.alerts.http import JsonPoster
from lvsha.checks.verdict import host_port
from lvsha.config.model import AlertmanagerSink, LvshaConfig
from lvsha.ipvs.specs import configured_services

REAL_SERVER_DOWN = "LvshaRealServerDown"
VRRP_NOT_PREFERRED = "LvshaVrrpNotPreferred"
QUORUM_LOST = "LvshaQuorumLost"

ALERTS: dict[str, str] = {
    "real_server": REAL_SERVER_DOWN,
    "vrrp_state": VRRP_NOT_PREFERRED,
    "quorum": QUORUM_LOST,
}
"""The event type that fires and resolves each alert."""

SEVERITIES: dict[str, Severity] = {
    REAL_SERVER_DOWN: Severity.WARNING,
    VRRP_NOT_PREFERRED: Severity.WARNING,
    QUORUM_LOST: Severity.CRITICAL,
}

EXPIRY_FACTOR = 3
"""A firing alert's endsAt is this many resend intervals ahead: two re-sends may be lost
before Alertmanager lets it end."""

_STOPPED = "INITIALIZE"
_UNDECIDED = "RELEASING"


def preferred_states(config: LvshaConfig) -> dict[str, str]:
    """Each VRRP instance's preferred state: MASTER when configured `state MASTER` or priority
    255 (the address owner), else BACKUP."""
    return {
        name: "MASTER" if instance.state == "MASTER" or instance.priority == 255 else "BACKUP"
        for name, instance in config.vrrp_instances.items()
    }


def configured_real_servers(config: LvshaConfig) -> set[str]:
    """Every real server as `real_server` events name it ("10.0.0.2:80", "[2001:db8::2]:80")."""
    return {
        host_port(str(rs.address), rs.port if rs.port is not None else (vs.port or 0))
        for vs in config.virtual_servers
        for rs in vs.real_servers
    }


@dataclass(slots=True)
class Condition:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None
    version: int = 0
    sent_version: int = -1

    @property
    def firing(self) -> bool:
        return self.ends_at is None


Key = tuple[str, ...]


class AlertmanagerTransport:
    def __init__(
        self,
        name: str,
        spec: AlertmanagerSink,
        *,
        router_id: str,
        config: LvshaConfig,
        wall_clock: Callable[[], float] = time.time,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.router_id = router_id
        self.wall_clock = wall_clock
        self.poster = JsonPoster(spec.timeout, tls_context)
        self.conditions: dict[Key, Condition] = {}
        self._vrrp: dict[str, Event] = {}
        """The latest vrrp_state event of each instance, to judge again on a reload."""
        self._preferred = preferred_states(config)
        self._last_full: float | None = None
        self._dirty = False

    @property
    def url(self) -> str:
        return self.spec.url.rstrip("/") + "/api/v2/alerts"

    @property
    def firing(self) -> int:
        return sum(1 for condition in self.conditions.values() if condition.firing)

    def adopt(self, previous: AlertmanagerTransport) -> None:
        """Take over the conditions of the sink this one replaces (a reload changed its
        settings): what fires goes on firing, to the new URL, with the new labels."""
        self.conditions = previous.conditions
        self._vrrp = previous._vrrp
        for condition in self.conditions.values():
            condition.version += 1  # sent with this sink's labels, at once
        self._dirty = bool(self.conditions)

    def reconfigure(self, config: LvshaConfig) -> bool:
        """A reload: judge the instances again by their new preferred states; resolve the
        alerts of instances, real servers and services that are gone. True when an alert changed."""
        self._preferred = preferred_states(config)
        now = self.wall_clock()
        changed = False
        for instance in list(self._vrrp):
            if instance not in self._preferred:
                del self._vrrp[instance]
                changed |= self._resolve((VRRP_NOT_PREFERRED, instance), now)
            else:
                changed |= self._judge_vrrp(self._vrrp[instance], now)
        present = configured_real_servers(config)
        services = {str(service.key) for service in configured_services(config)}
        # A group's quorum events name the group (lvsha.ipvs.events).
        services |= {f"group {vs.group}" for vs in config.virtual_servers if vs.group}
        for key, condition in list(self.conditions.items()):
            if key[0] == REAL_SERVER_DOWN and condition.labels["real_server"] not in present:
                changed |= self._resolve(key, now)
            elif key[0] == QUORUM_LOST and condition.labels["service"] not in services:
                # The service is gone: nobody will say it regained quorum.
                changed |= self._resolve(key, now)
        self._dirty |= changed
        return changed

    def compose(self, events: Sequence[Event], now: float) -> Send | None:
        for event in events:
            self._apply(event)
        self._dirty = False
        full = self._last_full is None or now >= self._last_full + self.spec.resend_interval
        chosen = [
            (key, condition, condition.version)
            for key, condition in self.conditions.items()
            if condition.version != condition.sent_version or (full and condition.firing)
        ]
        if not chosen:
            return None
        if full:
            self._last_full = now
        body = json.dumps([self._alert(condition) for _, condition, _ in chosen]).encode()
        return partial(self._send, body, chosen)

    def due(self) -> float | None:
        if self._dirty:
            return float("-inf")
        if not self.conditions:
            return None
        if self._last_full is None:
            return float("-inf")
        return self._last_full + self.spec.resend_interval

    async def aclose(self) -> None:
        await self.poster.aclose()

    async def _send(self, body: bytes, chosen: list[tuple[Key, Condition, int]]) -> None:
        await self.poster.post(self.url, body)
        for key, condition, version in chosen:
            if condition.version != version:
                continue  # changed while in flight: the next POST carries it
            condition.sent_version = version
            if not condition.firing and self.conditions.get(key) is condition:
                del self.conditions[key]

    def _alert(self, condition: Condition) -> dict[str, Any]:
        ends_at = condition.ends_at
        if ends_at is None:
            ends_at = self.wall_clock() + EXPIRY_FACTOR * self.spec.resend_interval
        return {
            "labels": {**self.spec.labels, **condition.labels, "router_id": self.router_id},
            "annotations": condition.annotations,
            "startsAt": iso_time(condition.starts_at),
            "endsAt": iso_time(ends_at),
        }

    def _apply(self, event: Event) -> None:
        fields = event.fields
        text = summary(event.type, fields)
        key: Key
        if event.type == "real_server":
            labels = {
                "virtual_server": str(fields.get("virtual_server")),
                "service": str(fields.get("service")),
                "real_server": str(fields.get("real_server")),
            }
            key = (REAL_SERVER_DOWN, labels["virtual_server"], labels["real_server"])
            if fields.get("new") == "unhealthy":
                annotations = {"summary": text, "description": str(fields.get("reason") or "")}
                if fields.get("check") is not None:
                    annotations["check"] = str(fields.get("check"))
                self._fire(key, labels, annotations, event.time)
            else:
                self._resolve(key, event.time)
        elif event.type == "quorum":
            labels = {
                "virtual_server": str(fields.get("virtual_server")),
                "service": str(fields.get("service")),
            }
            key = (QUORUM_LOST, labels["virtual_server"])
            if fields.get("held"):
                self._resolve(key, event.time)
            else:
                self._fire(key, labels, {"summary": text}, event.time)
        elif event.type == "vrrp_state":
            instance = str(fields.get("instance"))
            self._vrrp[instance] = event
            self._judge_vrrp(event, event.time)

    def _judge_vrrp(self, event: Event, when: float) -> bool:
        instance = str(event.fields.get("instance"))
        state = str(event.fields.get("new")).upper()
        key = (VRRP_NOT_PREFERRED, instance)
        preferred = self._preferred.get(instance)
        if state == _UNDECIDED:
            return False
        if preferred is None or state in (_STOPPED, preferred):
            return self._resolve(key, when)
        reason = event.fields.get("reason")
        annotations = {
            "summary": f"{instance} is {state}, prefers {preferred}",
            "description": f"{summary(event.type, event.fields)}"
            + (f": {reason}" if reason else ""),
            "state": state,
            "preferred": preferred,
        }
        return self._fire(key, {"instance": instance}, annotations, when)

    def _fire(
        self, key: Key, labels: dict[str, str], annotations: Mapping[str, str], when: float
    ) -> bool:
        alertname = key[0]
        condition = self.conditions.get(key)
        if condition is not None and condition.firing:
            if condition.annotations == annotations:
                return False
            condition.annotations = dict(annotations)
        else:
            condition = Condition(
                labels={"alertname": alertname, "severity": SEVERITIES[alertname].label, **labels},
                annotations=dict(annotations),
                starts_at=when,
                version=condition.version + 1 if condition is not None else 0,
            )
            self.conditions[key] = condition
        condition.version += 1
        return True

    def _resolve(self, key: Key, when: float) -> bool:
        condition = self.conditions.get(key)
        if condition is None or not condition.firing:
            return False
        condition.ends_at = max(when, condition.starts_at)
        condition.version += 1
        return True
