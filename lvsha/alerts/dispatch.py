"""The alert sinks of the parent process: built from `global.notification`, fed every event,
rebuilt by a reload, counted in the metrics.

`Alerts.submit` hands an event to each sink whose `events` (types or categories) and
`min_severity` take it; it never waits and never raises: each sink has a bounded queue and
its own sender task (`lvsha.alerts.delivery`). The sinks:

- the legacy keys: `email` and `smtp_server` make an SMTP sink named "email" (sender
  `email_from`, else lvsha@<host name>; `smtp_port`; `smtp_timeout` per attempt; tls auto),
  `webhook_url` a webhook sink named "webhook"; both take every event;
- each entry of `sinks`, named by its `name` or `<type>-<n>`, n its place among the sinks of
  its type, from 1 ("smtp-1", "webhook-2").

SMTP sinks (the legacy one too) also follow keepalived's smtp_alert keys: a VRRP or checker
event goes to them only when the instance or server it is about has smtp_alert on
(`lvsha.alerts.smtp_alert`); other sinks are unaffected.

A reload (`update`) keeps a sink whose settings did not change as it is (queue, counters,
Alertmanager state), rebuilds a changed one (its counters and unsent events go on, and an
Alertmanager sink's firing alerts with them), and stops a removed one (its unsent events are
logged as lost).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lvsha.alerts import alertmanager
from lvsha.alerts.alertmanager import AlertmanagerTransport
from lvsha.alerts.delivery import Backoff, Pacing, SinkCounters, SinkRunner, Transport
from lvsha.alerts.events import CATEGORIES, Event, FieldValue, Severity, severity
from lvsha.alerts.smtp import SmtpTransport
from lvsha.alerts.smtp_alert import SmtpAlertPolicy
from lvsha.alerts.webhook import WebhookTransport
from lvsha.config.model import AlertmanagerSink, LvshaConfig, SmtpSink, WebhookSink
from lvsha.daemon.metrics import Family, Sample, catalog
from lvsha.ratelimit import RateLimitedLog

log = logging.getLogger("lvsha.alerts")

SinkSpec = SmtpSink | WebhookSink | AlertmanagerSink

FAMILIES = catalog(
    Family(
        "lvsha_alerts_events_total",
        "counter",
        "Events an alert sink took (its events and min_severity let them through), whatever "
        "became of them.",
    ),
    Family(
        "lvsha_alerts_sent_total",
        "counter",
        "Messages an alert sink delivered: mails, webhook POSTs, Alertmanager POSTs.",
    ),
    Family(
        "lvsha_alerts_delivered_events_total",
        "counter",
        "Events an alert sink delivered (in a message that went through, or that needed none).",
    ),
    Family(
        "lvsha_alerts_dropped_total",
        "counter",
        "Events an alert sink dropped, by reason: queue_full (queue_size events waited "
        "already), delivery_failed (every attempt at their message failed), shutdown (not "
        "sent when lvsha stopped), reconfigured (a reload changed the sink and it no longer "
        "takes them), error (a bug, logged).",
    ),
    Family(
        "lvsha_alerts_failures_total",
        "counter",
        "Failed delivery attempts of an alert sink, retried or not.",
    ),
    Family("lvsha_alerts_queued", "gauge", "Events waiting in an alert sink's queue."),
    Family(
        "lvsha_alerts_queue_high_water",
        "gauge",
        "The most events an alert sink's queue ever held at once (never more than its queue_size).",
    ),
    Family(
        "lvsha_alerts_firing",
        "gauge",
        "Alerts an Alertmanager sink has firing (re-sent every resend_interval).",
    ),
)

CLOSE_GRACE = 0.5
"""Seconds `close` gives cancelled senders to unwind, and connections to close, after its
timeout."""

ALWAYS_COUNTED = ("queue_full", "delivery_failed")
"""Drop reasons exported from 0, so a rate over them works before the first drop."""

_SEVERITY_BY_NAME = {level.label: level for level in Severity}


def sink_specs(config: LvshaConfig, hostname: str) -> dict[str, SinkSpec]:
    """Every sink `config` asks for, by name, in order: the legacy keys' first. A name used
    twice keeps its first sink (the later one is logged and left out)."""
    notification = config.global_.notification
    specs: list[tuple[str, SinkSpec]] = []
    if notification.email and notification.smtp_server is not None:
        # built without validation: the default sender (lvsha@<host name>) may lack a dot
        legacy_smtp = SmtpSink.model_construct(
            type="smtp",
            server=notification.smtp_server,
            port=notification.smtp_port,
            sender=notification.email_from or f"lvsha@{hostname}",
            to=list(notification.email),
            timeout=notification.smtp_timeout,
        )
        specs.append(("email", legacy_smtp))
    if notification.webhook_url is not None:
        specs.append(
            ("webhook", WebhookSink.model_construct(type="webhook", url=notification.webhook_url))
        )
    per_type: dict[str, int] = {}
    for sink in notification.sinks:
        per_type[sink.type] = per_type.get(sink.type, 0) + 1
        specs.append((sink.name or f"{sink.type}-{per_type[sink.type]}", sink))
    out: dict[str, SinkSpec] = {}
    for name, spec in specs:
        if name in out:
            log.error("alert sink name %s is used twice: the second one is left out", name)
            continue
        out[name] = spec
    return out


@dataclass(frozen=True, slots=True)
class _Filter:
    types: frozenset[str] | None
    """None: every type."""
    min_severity: Severity
    alert_severities: Mapping[str, Severity] | None = None
    """Alertmanager: the severity of the alert each event type drives, compared instead of
    the event's own (a recovery is info, but resolves a warning alert)."""
    smtp_alert: SmtpAlertPolicy | None = None
    """SMTP sinks: keepalived's smtp_alert of the instance or server the event is about."""

    def takes(self, event: Event) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        if self.smtp_alert is not None and not self.smtp_alert.mails(event):
            return False
        if self.alert_severities is not None:
            return self.alert_severities[event.type] >= self.min_severity
        return event.severity >= self.min_severity


def _filter(spec: SinkSpec, smtp_alert: SmtpAlertPolicy) -> _Filter:
    types: frozenset[str] | None = None
    if spec.events is not None:
        types = frozenset(
            event_type for name in spec.events for event_type in CATEGORIES.get(name, (name,))
        )
    min_severity = _SEVERITY_BY_NAME[spec.min_severity]
    if isinstance(spec, AlertmanagerSink):
        driven = frozenset(alertmanager.ALERTS)
        return _Filter(
            types=driven if types is None else types & driven,
            min_severity=min_severity,
            alert_severities={
                event_type: alertmanager.SEVERITIES[alertname]
                for event_type, alertname in alertmanager.ALERTS.items()
            },
        )
    if isinstance(spec, SmtpSink):
        return _Filter(types=types, min_severity=min_severity, smtp_alert=smtp_alert)
    return _Filter(types=types, min_severity=min_severity)


@dataclass(slots=True)
class _Sink:
    spec: SinkSpec
    filter: _Filter
    runner: SinkRunner
    transport: Transport
    router_id: str


class Alerts:
    """The alert sinks of one configuration; see the module's doc.

    `wall_clock` dates what the sinks send (Alertmanager's endsAt); `backoff` spaces the
    attempts at one message; `tls_context` checks the servers' certificates instead of the
    system's CAs (SMTP with tls starttls or tls, https webhooks and Alertmanagers)."""

    def __init__(
        self,
        config: LvshaConfig,
        *,
        hostname: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.hostname = hostname or socket.gethostname()
        self.wall_clock = wall_clock
        self.backoff = backoff or Backoff()
        self.tls_context = tls_context
        self.router_id = config.global_.router_id or self.hostname
        self._config = config
        self._smtp_alert = SmtpAlertPolicy(config)
        self._counters: dict[str, SinkCounters] = {}
        self._sinks: dict[str, _Sink] = {}
        self._started = False
        self._closed = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._bug_log = RateLimitedLog(log, logging.ERROR)
        for name, spec in sink_specs(config, self.hostname).items():
            self._sinks[name] = self._build(name, spec)

    @property
    def sink_names(self) -> list[str]:
        return list(self._sinks)

    def submit(self, event_type: str, fields: Mapping[str, FieldValue], wall_time: float) -> None:
        """Hand an event to every sink that takes it. Never waits, never raises."""
        if self._closed or not self._sinks:
            return
        try:
            event = Event(event_type, dict(fields), wall_time, severity(event_type, fields))
        except Exception as exc:
            self._bug_log.log("alerts: cannot take a %s event (a bug): %r", event_type, exc)
            return
        for name, sink in self._sinks.items():
            try:
                if sink.filter.takes(event):
                    sink.runner.offer(event)
            except Exception as exc:
                self._bug_log.log(
                    "alert sink %s: cannot take a %s event (a bug): %r", name, event_type, exc
                )

    async def start(self) -> None:
        """Start the sender tasks (events submitted before wait for this)."""
        self._started = True
        for sink in self._sinks.values():
            sink.runner.start()

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, for at most `timeout` seconds; then stop the rest (counted as
        dropped, reason shutdown) and close the connections. Never waits longer."""
        self._closed = True
        sinks = list(self._sinks.values())
        for sink in sinks:
            sink.runner.begin_close()
        tasks = [sink.runner.task for sink in sinks if sink.runner.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for name, sink in self._sinks.items():
            lost = sink.runner.abandon()
            if lost:
                log.warning("alert sink %s: %d alerts not sent at shutdown", name, lost)
        if tasks:  # cancelled just now: let them unwind
            await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        closing = [
            *self._retiring,
            *(asyncio.ensure_future(self._close_transport(s.transport)) for s in sinks),
        ]
        if closing:
            _, late = await asyncio.wait(closing, timeout=CLOSE_GRACE)
            for task in late:
                task.cancel()

    def update(self, config: LvshaConfig) -> None:
        """Follow a reload (see the module's doc). Never waits: connections of the sinks
        that go are closed in the background."""
        self._config = config
        self._smtp_alert = SmtpAlertPolicy(config)
        self.router_id = config.global_.router_id or self.hostname
        specs = sink_specs(config, self.hostname)
        old = self._sinks
        self._sinks = {}
        for name, spec in specs.items():
            previous = old.pop(name, None)
            if (
                previous is not None
                and previous.spec == spec
                and previous.router_id == self.router_id
            ):
                self._sinks[name] = previous
                # The same sink, but the instances and servers it mails may have changed.
                previous.filter = _filter(spec, self._smtp_alert)
                transport = previous.transport
                if isinstance(transport, AlertmanagerTransport) and transport.reconfigure(config):
                    previous.runner.poke()
                continue
            sink = self._build(name, spec)
            self._sinks[name] = sink
            if previous is not None:
                self._hand_over(previous, sink, config)
            if self._started and not self._closed:
                sink.runner.start()
            log.info("alert sink %s %s", name, "rebuilt" if previous else "added")
        for name, gone in old.items():
            lost = gone.runner.detach()
            self._retire(gone.transport)
            del self._counters[name]
            log.info(
                "alert sink %s removed%s",
                name,
                f": {len(lost)} alerts not sent" if lost else "",
            )

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        for name, sink in self._sinks.items():
            counters = sink.runner.counters
            labels = {"sink": name}
            out += [
                ("lvsha_alerts_events_total", labels, counters.events),
                ("lvsha_alerts_sent_total", labels, counters.sent),
                ("lvsha_alerts_delivered_events_total", labels, counters.delivered),
                ("lvsha_alerts_failures_total", labels, counters.failures),
                ("lvsha_alerts_queued", labels, sink.runner.queued),
                ("lvsha_alerts_queue_high_water", labels, counters.high_water),
            ]
            reasons = {reason: counters.dropped[reason] for reason in ALWAYS_COUNTED}
            reasons.update(counters.dropped)
            out += [
                ("lvsha_alerts_dropped_total", {"sink": name, "reason": reason}, count)
                for reason, count in sorted(reasons.items())
            ]
            if isinstance(sink.transport, AlertmanagerTransport):
                out.append(("lvsha_alerts_firing", labels, sink.transport.firing))
        return out

    def counters(self, name: str) -> SinkCounters:
        """What sink `name` did so far (KeyError for a sink not configured)."""
        return self._sinks[name].runner.counters

    def transport(self, name: str) -> Transport:
        return self._sinks[name].transport

    def _build(self, name: str, spec: SinkSpec) -> _Sink:
        transport: Transport
        if isinstance(spec, SmtpSink):
            transport = SmtpTransport(
                name,
                spec,
                router_id=self.router_id,
                hostname=self.hostname,
                tls_context=self.tls_context,
            )
        elif isinstance(spec, WebhookSink):
            transport = WebhookTransport(
                name, spec, router_id=self.router_id, tls_context=self.tls_context
            )
        else:
            transport = AlertmanagerTransport(
                name,
                spec,
                router_id=self.router_id,
                config=self._config,
                wall_clock=self.wall_clock,
                tls_context=self.tls_context,
            )
        pacing = Pacing(
            queue_size=spec.queue_size,
            gather=spec.gather,
            min_interval=spec.min_interval,
            timeout=spec.timeout,
            retries=spec.retries,
        )
        counters = self._counters.setdefault(name, SinkCounters())
        runner = SinkRunner(name, pacing, transport, counters, backoff=self.backoff)
        return _Sink(spec, _filter(spec, self._smtp_alert), runner, transport, self.router_id)

    def _hand_over(self, previous: _Sink, sink: _Sink, config: LvshaConfig) -> None:
        """`sink` replaces `previous` (a reload changed it): it takes the unsent events it
        still wants (the others are counted as dropped) and an Alertmanager's alerts."""
        pending = previous.runner.detach()
        self._retire(previous.transport)
        if isinstance(previous.transport, AlertmanagerTransport) and isinstance(
            sink.transport, AlertmanagerTransport
        ):
            sink.transport.adopt(previous.transport)
            sink.transport.reconfigure(config)
        refused = 0
        for event in pending:
            if sink.filter.takes(event):
                sink.runner.requeue(event)
            else:
                refused += 1
        if refused:
            sink.runner.counters.dropped["reconfigured"] += refused

    def _retire(self, transport: Transport) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop ever ran the transport: it holds no connection
        task = loop.create_task(self._close_transport(transport))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _close_transport(transport: Transport) -> None:
        try:
            await transport.aclose()
        except Exception:
            log.exception("alerts: cannot close a sink's connections")
