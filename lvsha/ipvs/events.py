"""What the checker tells the operator: real servers' health, services' quorum and refused
scripts, as events for the parent (types and fields: `lvsha.alerts.events`).

`CheckerEvents` listens to the check pool (`HealthReport`, `ScriptRefusal`) and the IPVS
syncer (`QuorumChange`), which decide what is news (see `lvsha.checks.pool` and
`lvsha.ipvs.syncer`), and hands each event's fields to a sink that must not wait (the checker's
sends to the parent: one buffered write each). A burst (hundreds of real servers failing in the
same second) is one event each; coalescing them into digests is the alert sinks' job.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Mapping

from lvsha.alerts.events import FieldValue
from lvsha.checks.pool import CheckPool, HealthReport, ScriptRefusal
from lvsha.checks.targets import GROUP_PREFIX, ScriptProbe
from lvsha.checks.verdict import host_port
from lvsha.ipvs.model import ServiceKey
from lvsha.ipvs.specs import ConfiguredService, virtual_server_labels
from lvsha.ipvs.syncer import IpvsSyncer, QuorumChange

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, FieldValue]], None]
"""Takes an event's type and fields; returns at once."""

PROCESS = "checker"


class ServiceLabels:
    """`virtual_server_labels` of the services the syncer runs, worked out again only when a
    reload gives it others."""

    def __init__(self, syncer: IpvsSyncer) -> None:
        self._syncer = syncer
        self._services: tuple[ConfiguredService, ...] | None = None
        self._labels: dict[ServiceKey, str] = {}

    def labels(self) -> Mapping[ServiceKey, str]:
        services = self._syncer.services
        if services is not self._services:
            self._labels = virtual_server_labels(services)
            self._services = services
        return self._labels

    def of(self, key: ServiceKey) -> str:
        return self.labels().get(key) or str(key)


class CheckerEvents:
    """Subscribes to `pool` and `syncer` and turns what they report into events for `sink`;
    `close` unsubscribes."""

    def __init__(
        self,
        pool: CheckPool,
        syncer: IpvsSyncer,
        sink: EventSink,
        labels: ServiceLabels | None = None,
    ) -> None:
        self._syncer = syncer
        self._sink = sink
        self.labels = labels if labels is not None else ServiceLabels(syncer)
        self._unsubscribers = [
            pool.subscribe_health(self.on_health),
            pool.subscribe_refusals(self.on_refusal),
            syncer.subscribe_quorum(self.on_quorum),
        ]

    def close(self) -> None:
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []

    def on_health(self, report: HealthReport) -> None:
        verdict = report.verdict
        real_server = verdict.real_server
        key = self._syncer.service_of(real_server)
        if key is None or real_server.virtual_service.startswith(GROUP_PREFIX):
            # Not in the syncer's configuration (a reload moving both is midway): as the
            # pool knows it. A group's real server: the group, not one of its members.
            service = real_server.virtual_service
            label = real_server.virtual_server_name or service
        else:
            service = str(key)
            label = self.labels.of(key)
        self._send(
            "real_server",
            {
                "virtual_server": label,
                "service": service,
                "real_server": host_port(real_server.address, real_server.port),
                "old": report.old.value,
                "new": verdict.health.value,
                "reason": verdict.reason,
                "check": verdict.check,
            },
        )

    def on_quorum(self, change: QuorumChange) -> None:
        service = change.service
        sorry = service.spec.sorry_server
        grouped = service.group is not None
        self._send(
            "quorum",
            {
                # A group's quorum is one for all its members: named by the group.
                "virtual_server": service.name if grouped else self.labels.of(service.key),
                "service": f"{GROUP_PREFIX}{service.group}" if grouped else str(service.key),
                "held": change.quorum.up,
                "live_weight": change.quorum.live_weight,
                "quorum": service.spec.quorum,
                "sorry_server": (
                    str(sorry.destination.key)
                    if sorry is not None and change.sorry_active
                    else None
                ),
            },
        )

    def on_refusal(self, refusal: ScriptRefusal) -> None:
        probe = refusal.probe
        script = shlex.join(probe.command.argv) if isinstance(probe, ScriptProbe) else refusal.check
        self._send(
            "script_refused",
            {"process": PROCESS, "script": script, "reason": refusal.reason},
        )

    def _send(self, event_type: str, fields: dict[str, FieldValue]) -> None:
        try:
            self._sink(event_type, fields)
        except Exception:  # a bug in the sink: the check pool and syncer go on
            log.exception("sending a %s event failed", event_type)
