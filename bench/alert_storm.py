"""An alert storm (issue 13): 500 real servers failing at once and one flapping every second.

    .venv/bin/python -m bench.alert_storm [--duration 60] [--real-servers 500] [--broken]
                                          [--queue-size N] [--gather S] [--timeout S]
                                          [--retries N] [--drain S] [--baseline S]
                                          [--no-realtime] [--keep-logs]

Needs root: the daemons run in a throwaway lab of network namespaces (prefix `as`, unique per
run), removed at the end, also on failure or Ctrl-C; every daemon runs with --dry-run and a
temporary --run-dir and --state-dir, and is stopped by PID with SIGTERM.

The lab's two directors (conf/lab, adapted to 0.02 s VRRPv3 as bench/soak.py does, with
global.vrrp.realtime_priority 50 unless --no-realtime) elect a MASTER (a) and a BACKUP (b).
Director a also has one virtual server of `real-servers` + 1 real servers with TCP checks
(interval 1 s, timeout 1 s, no retry, fall 1): `real-servers` ports served by one
`bench.check_servers` process in a lab host, and one more port served by a process of its own,
the flapper. a's alert sinks go to real receivers in a's namespace (tests/tools/
alert_receivers.py): smtp (an aiosmtpd server), webhook and alertmanager (an Alertmanager
stand-in), each with its defaults (gather 2 s; min_interval 60 s for smtp, 1 s otherwise;
queue_size 1000) unless a flag sets them; `global.metrics.listen` serves a's /metrics.

Once the election has settled and every real server is up, `baseline` s of calm (20 by
default) give the figures before the storm; then the storm runs for `duration` s:
the flapper is killed, or started again, every second; at +5 s the process serving the
`real-servers` ports is killed (they all fail together). Then the bench waits for the sinks
to drain (at most --drain s; by default as long as the slowest sink can take to send, or fail
to send, what it holds) and prints:

- the events a produced during the storm and the drain, by type (from its event stream);
- per sink: events taken, messages received (mails, webhook POSTs, Alertmanager POSTs) against
  the bound judged for the window (one message per min_interval, or per gather when
  min_interval is 0, plus 2: the one under way when the storm began and the first of the
  window), sent and dropped (by reason), the queue's high water against queue_size, and what
  is still queued (lvsha_alerts_* from a's /metrics);
- check lateness p99 (lvsha_check_lateness_seconds, a window of the last 10,000 probe starts:
  about 20 s at 500 checks a second), read every 5 s: the most before the storm, the most
  during it and the last; each process's event-loop lag p99 (a window of 100 s) before the
  storm and at its end;
- the master's advert rhythm as a client on the segment hears it, and every VRRP state change
  of a and b after the initial election.

With --broken the smtp sink points at a black-holed port (nobody accepts its connections, so
no banner ever comes) and the webhook at one that takes the request and never answers; the
Alertmanager sink stays healthy.

Targets (exit status 1 when one fails): no state change after the initial election; the storm
happened (at least `real-servers` real_server events); every sink's queue high water <= its
queue_size; messages per sink within the bound; checks on time (the most lateness p99 during
the storm within the most before it + 50 ms). Healthy sinks: something was delivered, the
webhook received every event it took (or counted it dropped), and, at the default
queue_size, nothing was dropped. --broken: the broken sinks sent nothing and counted every
event they took as dropped, and the Alertmanager sink still delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.soak import EventListener, new_events, print_state_changes
from lvsha.checks.pool import DEFAULT_LATENESS_WINDOW
from lvsha.config.model import LvshaConfig
from lvsha.drill.lab import Host, Lab, wait_until

if TYPE_CHECKING:
    from tests.tools.alert_receivers import Received

REPO = Path(__file__).resolve().parents[1]
TARGETS_ADDRESS = "192.0.2.21"
STORM_PORTS_FROM = 20000
FLAPPER_PORT = 8080
METRICS_PORT = 9650
KILL_AT = 5.0
"""Seconds into the storm when the `real-servers` ports all fail together."""
FLAP_EVERY = 1.0
SAMPLE_EVERY = 5.0
"""Seconds between two reads of /metrics during the storm (the checker writes its figures
every 5 s)."""
READY_TIMEOUT = 90.0
LATENESS_MARGIN = 0.050
"""Checks on time: the storm may add at most this much to the lateness p99."""
QUIET = 2.0
"""A healthy sink has drained when nothing was queued for this long."""
RECEIVER_SINKS = ("mail", "hook", "am")


# ---------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class ReceiverPorts:
    """Where the receivers listen, on 127.0.0.1 in a's namespace."""

    smtp: int
    webhook: int
    alertmanager: int
    blackhole: int
    hanging: int


@dataclass(frozen=True, slots=True)
class SinkFlags:
    """Settings given on the command line for every sink (None: the sink's default)."""

    queue_size: int | None = None
    gather: float | None = None
    timeout: float | None = None
    retries: int | None = None

    def apply(self, sink: dict[str, Any]) -> dict[str, Any]:
        for key in ("queue_size", "gather", "timeout", "retries"):
            value = getattr(self, key)
            if value is not None:
                sink[key] = value
        return sink


def sink_entries(ports: ReceiverPorts, broken: bool, flags: SinkFlags) -> list[dict[str, Any]]:
    """a's `global.notification.sinks`: smtp `mail`, webhook `hook`, alertmanager `am`. Broken:
    mail at the black-holed port, hook at the hanging one."""
    smtp_port = ports.blackhole if broken else ports.smtp
    hook_port = ports.hanging if broken else ports.webhook
    sinks: list[dict[str, Any]] = [
        {"type": "smtp", "name": "mail", "server": "127.0.0.1", "port": smtp_port,
         "from": "lvsha@lab.test", "to": ["ops@lab.test"]},
        {"type": "webhook", "name": "hook", "url": f"http://127.0.0.1:{hook_port}/hook"},
        {"type": "alertmanager", "name": "am", "url": f"http://127.0.0.1:{ports.alertmanager}"},
    ]  # fmt: skip
    return [flags.apply(sink) for sink in sinks]


def storm_document(
    base: Mapping[str, Any], sinks: Sequence[Mapping[str, Any]], real_servers: int
) -> dict[str, Any]:
    """Director a's configuration: `base` (the adapted lab config) with the sinks, the metrics
    endpoint and one virtual server of `real_servers` ports plus the flapper's, TCP checks."""
    document: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain data
    settings = document.setdefault("global", {})
    settings["notification"] = {"sinks": [dict(sink) for sink in sinks]}
    settings["metrics"] = {"listen": f"127.0.0.1:{METRICS_PORT}"}
    settings["check_defaults"] = {
        "interval": 1.0, "timeout": 1.0, "retries": 0, "rise": 1, "fall": 1,
    }  # fmt: skip
    ports = [*range(STORM_PORTS_FROM, STORM_PORTS_FROM + real_servers), FLAPPER_PORT]
    document["virtual_servers"] = [
        {
            "name": "storm",
            "address": "192.0.2.100",
            "port": 80,
            "protocol": "TCP",
            "real_servers": [
                {"address": TARGETS_ADDRESS, "port": port, "checks": [{"type": "tcp"}]}
                for port in ports
            ],
        }
    ]
    return document


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """What the bounds need of one sink, its defaults filled in by the configuration model."""

    name: str
    kind: str
    queue_size: int
    gather: float
    min_interval: float
    timeout: float
    retries: int


def sink_settings(document: Mapping[str, Any]) -> dict[str, SinkSettings]:
    config = LvshaConfig.model_validate(document)
    out = {}
    for sink in config.global_.notification.sinks:
        if sink.name is None:
            raise ValueError(f"the bench names every sink; one {sink.type} sink has no name")
        out[sink.name] = SinkSettings(
            sink.name, sink.type, sink.queue_size, sink.gather, sink.min_interval,
            sink.timeout, sink.retries,
        )  # fmt: skip
    return out


def message_bound(settings: SinkSettings, window: float) -> int | None:
    """The most messages the sink may send in `window` s: one per min_interval (per gather
    when min_interval is 0: a burst waits that long after its first event; Alertmanager's
    re-sends wait for no event), plus the one under way when the window began and the first of
    the window. None: no bound (both 0)."""
    spacing = settings.min_interval
    if spacing <= 0 and settings.kind != "alertmanager":
        spacing = settings.gather
    if spacing <= 0:
        return None
    return math.floor(window / spacing) + 2


def attempts_span(settings: SinkSettings) -> float:
    """The longest one message can take to be sent or given up: every attempt timing out,
    with the backoff between them."""
    from lvsha.alerts.delivery import Backoff  # noqa: PLC0415 - the daemon's own backoff

    backoff = Backoff()
    waits = sum(backoff.delay(attempt) for attempt in range(1, settings.retries + 1))
    return (settings.retries + 1) * settings.timeout + waits


def drain_limit(settings: Iterable[SinkSettings]) -> float:
    """How long after the storm a sink may take to send or drop what it holds: a message under
    way, then the one queued behind it, after its pacing."""
    return max(
        2 * attempts_span(sink) + sink.min_interval + sink.gather + QUIET + 3.0 for sink in settings
    )


# ---------------------------------------------------------------------------------- metrics


def samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, dict(sample.labels), float(sample.value)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample `name` with `labels` (others may carry more), or None."""
    for sample_name, sample_labels, value in samples(text):
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


@dataclass
class SinkFigures:
    """lvsha_alerts_* of one sink."""

    events: float = 0.0
    sent: float = 0.0
    dropped: dict[str, float] = field(default_factory=dict)
    high_water: float = 0.0
    queued: float = 0.0

    @property
    def dropped_total(self) -> float:
        return sum(self.dropped.values())


def sink_figures(text: str) -> dict[str, SinkFigures]:
    out: dict[str, SinkFigures] = {}
    for name, labels, value in samples(text):
        sink = labels.get("sink")
        if sink is None or not name.startswith("lvsha_alerts_"):
            continue
        figures = out.setdefault(sink, SinkFigures())
        if name == "lvsha_alerts_events_total":
            figures.events = value
        elif name == "lvsha_alerts_sent_total":
            figures.sent = value
        elif name == "lvsha_alerts_dropped_total":
            figures.dropped[labels.get("reason", "?")] = value
        elif name == "lvsha_alerts_queue_high_water":
            figures.high_water = value
        elif name == "lvsha_alerts_queued":
            figures.queued = value
    return out


def loop_lags(text: str) -> dict[str, float]:
    """lvsha_event_loop_lag_seconds p99 by process."""
    return {
        labels["process"]: value
        for name, labels, value in samples(text)
        if name == "lvsha_event_loop_lag_seconds"
        and labels.get("quantile") == "0.99"
        and "process" in labels
    }


def scrape(host: Host, port: int = METRICS_PORT, timeout: float = 5.0) -> str:
    """GET /metrics on 127.0.0.1:`port` in `host`'s namespace."""

    def get() -> str:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return bytes(answer.read()).decode()

    return host.call(get)


# ---------------------------------------------------------------------------------- events


def event_types(lines: Iterable[str], seen: set[int]) -> list[str]:
    """The types of the events among event-stream lines not seen before (by `seq`: a new
    connection first replays recent events)."""
    return [str(event.get("type")) for event in new_events(lines, seen)]


@dataclass
class EventTally(EventListener):
    """Follows one director's event stream in a thread, keeping each event's type and
    (monotonic) receipt time."""

    _events: list[tuple[float, str]] = field(default_factory=list)

    def _take(self, lines: list[str], at: float) -> None:
        self._events.extend((at, kind) for kind in event_types(lines, self._seen))

    def since(self, start: float) -> Counter[str]:
        with self._lock:
            return Counter(kind for at, kind in self._events if at >= start)


# ---------------------------------------------------------------------------------- processes


def start_targets(host: Host, ports: range, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """A `bench.check_servers` process in `host` listening on `ports`, once it says ready."""
    process = host.popen(
        sys.executable, "-m", "bench.check_servers", "--tcp-ports", f"{ports[0]}-{ports[-1]}",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        raise RuntimeError(
            f"the targets on ports {ports[0]}-{ports[-1]} did not start within {timeout:g} s "
            f"(exit {process.poll()}, said {line!r})"
        )
    return process


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


class Flapper:
    """One port served by a process of its own, killed or started again at each `toggle`."""

    def __init__(self, host: Host, port: int) -> None:
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.toggles = 0

    def start(self) -> None:
        self.process = self.host.popen(
            sys.executable, "-m", "bench.check_servers", "--tcp-ports", str(self.port),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip

    def toggle(self) -> None:
        if self.process is not None and self.process.poll() is None:
            kill(self.process)
            self.process = None
        else:
            self.start()
        self.toggles += 1


def terminate(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM by PID, so each daemon stops its children before the lab removes the rest."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)


# ---------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    holds: bool

    def line(self) -> str:
        return f"  {'HOLDS' if self.holds else 'FAILS'}  {self.what}"


@dataclass(frozen=True, slots=True)
class SinkOutcome:
    """One sink's storm: its settings, its lvsha_alerts_* at the end and their growth since
    the storm began, and what its receiver got in the window."""

    settings: SinkSettings
    end: SinkFigures
    events: float
    sent: float
    dropped: float
    messages: int
    bound: int | None


def sink_targets(
    outcomes: Mapping[str, SinkOutcome],
    broken: Sequence[str],
    default_queue: bool,
    hook_events_received: int,
) -> list[Target]:
    """The per-sink targets (see the module's docstring)."""
    targets = []
    for name, sink in outcomes.items():
        queue = sink.settings.queue_size
        targets.append(
            Target(
                f"{name}: queue high water {sink.end.high_water:.0f} <= queue_size {queue}",
                sink.end.high_water <= queue,
            )
        )
        if sink.bound is not None:
            targets.append(
                Target(
                    f"{name}: {sink.messages} messages <= bound {sink.bound}",
                    sink.messages <= sink.bound,
                )
            )
        if name in broken:
            targets.append(
                Target(
                    f"{name} (broken): nothing sent ({sink.sent:.0f} sent), every event taken "
                    f"counted dropped ({sink.end.dropped_total:.0f} of {sink.end.events:.0f})",
                    sink.sent == 0 and sink.end.events > 0
                    and sink.end.dropped_total == sink.end.events,
                )
            )  # fmt: skip
            continue
        targets.append(
            Target(
                f"{name}: delivered during the storm ({sink.messages} messages received, "
                f"{sink.sent:.0f} sent)",
                sink.messages > 0 and sink.sent > 0,
            )
        )
        if default_queue:
            targets.append(
                Target(
                    f"{name}: nothing dropped ({sink.end.dropped_total:.0f})",
                    sink.end.dropped_total == 0,
                )
            )
        if sink.settings.kind == "webhook":
            accounted = hook_events_received + sink.end.dropped_total
            targets.append(
                Target(
                    f"{name}: every event taken received or counted dropped "
                    f"({hook_events_received} received + {sink.end.dropped_total:.0f} dropped "
                    f"of {sink.end.events:.0f})",
                    accounted == sink.end.events,
                )
            )
    return targets


def sink_table(outcomes: Mapping[str, SinkOutcome]) -> list[str]:
    """The per-sink lines of the report: a table, then each sink's settings."""
    lines = [
        f"  {'sink':5} {'type':12} {'events':>6} {'messages':>8} {'bound':>5} {'sent':>5} "
        f"{'dropped':>7} {'high water':>10} {'queue_size':>10} {'queued':>6}  "
        "dropped by reason (since start)"
    ]
    for name, outcome in outcomes.items():
        end = outcome.end
        reasons = ", ".join(f"{r} {n:.0f}" for r, n in sorted(end.dropped.items()))
        bound = "-" if outcome.bound is None else str(outcome.bound)
        lines.append(
            f"  {name:5} {outcome.settings.kind:12} {outcome.events:6.0f} "
            f"{outcome.messages:8d} {bound:>5} {outcome.sent:5.0f} {outcome.dropped:7.0f} "
            f"{end.high_water:10.0f} {outcome.settings.queue_size:10d} {end.queued:6.0f}  "
            f"{reasons or '-'}"
        )
    for name, outcome in outcomes.items():
        sink = outcome.settings
        lines.append(
            f"    {name}: gather {sink.gather:g} s, min_interval {sink.min_interval:g} s, "
            f"timeout {sink.timeout:g} s, retries {sink.retries}"
        )
    return lines


def lateness_target(before: Sequence[float], during: Sequence[float]) -> Target:
    """The most of the p99 readings during the storm against the most of those before it."""
    if not before or not during:
        return Target("checks on time: no lateness figure was read", False)
    calm, worst = max(before), max(during)
    return Target(
        f"checks on time: lateness p99 during the storm at most {ms(worst)} <= "
        f"{ms(calm)} before it + {LATENESS_MARGIN * 1000:g} ms",
        worst <= calm + LATENESS_MARGIN,
    )


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def hook_events(received: Received) -> int:
    """Events in every webhook POST the receiver got: each POST's body has an `events` list of
    entries, each standing for `count` events about one thing (lvsha.alerts.webhook)."""
    return sum(
        int(entry.get("count", 1))
        for post in list(received.hooks)
        for entry in post.json()["events"]
    )


def messages_received(received: Received) -> dict[str, int]:
    return {
        "mail": len(received.mails),
        "hook": len(received.hooks),
        "am": len(received.alertmanager),
    }


# ---------------------------------------------------------------------------------- the storm


@dataclass(frozen=True, slots=True)
class StormOptions:
    duration: float
    real_servers: int
    broken: bool
    flags: SinkFlags
    drain: float | None
    baseline: float
    realtime: bool
    keep_logs: bool


def _say(message: str) -> None:
    print(f"alert storm: {message}", file=sys.stderr, flush=True)


def run_storm(options: StormOptions) -> bool:
    from bench.soak import (  # noqa: PLC0415
        ADVERT_INTERVAL,
        CLIENT,
        DIRECTORS,
        ELECTION_TIMEOUT,
        LAB_CONFIGS,
        LAB_VIP,
        VRRP_VERSION,
        adapt,
        advert_rhythm,
        initial_election,
    )
    from lvsha.drill.capture import Capture  # noqa: PLC0415
    from lvsha.drill.scenarios import Election  # noqa: PLC0415
    from tests.tools.alert_receivers import Receivers  # noqa: PLC0415

    scheduling = "realtime (SCHED_FIFO 50)" if options.realtime else "normal scheduling"
    print(
        f"== alert storm: {options.real_servers} real servers fail at +{KILL_AT:g} s and one "
        f"flaps every {FLAP_EVERY:g} s for {options.duration:g} s; {ADVERT_INTERVAL} s "
        f"VRRPv{VRRP_VERSION}, {scheduling}; sinks "
        f"{'broken (smtp black-holed, webhook hanging)' if options.broken else 'healthy'}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="lvsha-alert-storm-"))
    listeners: dict[str, EventListener] = {}
    tally: EventTally | None = None
    capture: Capture | None = None
    holds = False
    try:
        with Lab(f"as{secrets.token_hex(2)}") as lab, contextlib.ExitStack() as stack:
            client_host = lab.add_host("client", CLIENT)
            hosts = {name: lab.add_host(name, address) for name, address, _ in DIRECTORS}
            targets_host = lab.add_host("rs", f"{TARGETS_ADDRESS}/24")
            receivers = stack.enter_context(Receivers(hosts["a"].call))
            ports = ReceiverPorts(
                receivers.smtp_port, receivers.webhook_port, receivers.alertmanager_port,
                receivers.blackhole_port, receivers.hanging_port,
            )  # fmt: skip
            daemons: list[subprocess.Popen[bytes]] = []
            stack.callback(terminate, daemons)
            storm_ports = range(STORM_PORTS_FROM, STORM_PORTS_FROM + options.real_servers)
            big = start_targets(targets_host, storm_ports)
            flapper = Flapper(targets_host, FLAPPER_PORT)
            flapper.start()
            capture = Capture(client_host)
            capture.start()

            realtime_priority = 50 if options.realtime else None
            settings: dict[str, SinkSettings] = {}
            for name, _address, _priority in DIRECTORS:
                config = work / f"director-{name}.yaml"
                adapt(LAB_CONFIGS / f"director-{name}.yaml", config, realtime_priority)
                if name == "a":
                    base = yaml.safe_load(config.read_text(encoding="utf-8"))
                    sinks = sink_entries(ports, options.broken, options.flags)
                    document = storm_document(base, sinks, options.real_servers)
                    settings = sink_settings(document)
                    config.write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
            started = time.monotonic()
            for name, _address, _priority in DIRECTORS:
                run_dir, state_dir = work / f"run-{name}", work / f"state-{name}"
                state_dir.mkdir()
                with (work / f"{name}.log").open("wb") as log:
                    daemons.append(
                        hosts[name].popen(
                            sys.executable, "-m", "lvsha", "run",
                            str(work / f"director-{name}.yaml"), "--dry-run",
                            "--run-dir", str(run_dir), "--state-dir", str(state_dir),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO,
                        )
                    )  # fmt: skip
                listeners[name] = EventListener(run_dir / "events.sock")
                listeners[name].connect(timeout=ELECTION_TIMEOUT)
            tally = EventTally(work / "run-a" / "events.sock")
            tally.connect(timeout=ELECTION_TIMEOUT)
            baseline = initial_election(listeners, started)
            everyone = options.real_servers + 1

            def all_up() -> bool:
                _alive(daemons)
                with contextlib.suppress(OSError):
                    text = scrape(hosts["a"])
                    return metric(text, "lvsha_real_servers", health="healthy") == everyone
                return False

            wait_until(all_up, READY_TIMEOUT, 0.5, f"{everyone} real servers healthy on a")
            print(f"  a: {everyone} real servers healthy after {time.monotonic() - started:.1f} s")

            lateness_before: list[float] = []
            _say(f"{options.baseline:g} s of calm before the storm")
            text = _run_for(options.baseline, hosts["a"], daemons, lateness_before)
            before_lags = loop_lags(text)
            before_sinks = sink_figures(text)
            before_messages = messages_received(receivers.received)

            storm_from = time.monotonic()
            killed_at: list[float] = []

            def each_second(elapsed: float) -> None:
                flapper.toggle()
                if not killed_at and elapsed >= KILL_AT:
                    kill(big)
                    killed_at.append(time.monotonic() - storm_from)

            lateness_during: list[float] = []
            text = _run_for(options.duration, hosts["a"], daemons, lateness_during, each_second)
            storm_until = time.monotonic()
            storm_lags = loop_lags(text)

            broken = ("mail", "hook") if options.broken else ()
            limit = options.drain if options.drain is not None else drain_limit(settings.values())
            _say(f"storm over; waiting up to {limit:.0f} s for the sinks to drain")
            text = _drain(hosts["a"], daemons, settings, broken, limit)
            drained_at = time.monotonic()
            window = drained_at - storm_from
            end_sinks = sink_figures(text)
            end_messages = messages_received(receivers.received)
            time.sleep(0.5)  # the last events reach the listeners
            events = tally.since(storm_from)

            outcomes = {}
            for name, sink in settings.items():
                end = end_sinks.get(name, SinkFigures())
                start = before_sinks.get(name, SinkFigures())
                outcomes[name] = SinkOutcome(
                    sink, end, end.events - start.events, end.sent - start.sent,
                    end.dropped_total - start.dropped_total,
                    end_messages[name] - before_messages[name], message_bound(sink, window),
                )  # fmt: skip
            spurious = {
                name: listener.snapshot()[baseline[name] :] for name, listener in listeners.items()
            }
            adverts = [a for a in capture.adverts_since(storm_from) if a.at <= storm_until]
            rhythm = advert_rhythm(adverts, IPv4Address("192.0.2.11"))
            mdi = Election(42, LAB_VIP, "eth0", ADVERT_INTERVAL).master_down_interval(100)

            total = sum(events.values())
            by_type = ", ".join(f"{kind} {count}" for kind, count in events.most_common())
            print(
                f"  storm: the {options.real_servers} ports killed at "
                f"+{killed_at[0] if killed_at else math.nan:.1f} s, "
                f"the flapper toggled {flapper.toggles} times; counted over {window:.1f} s "
                f"(the storm and {drained_at - storm_until:.1f} s of drain)"
            )
            print(f"  events on a's stream: {total} ({by_type or 'none'})")
            for line in sink_table(outcomes):
                print(line)
            print(
                "  (messages: what the receiver got in the window; bound: one per min_interval "
                "(per gather when it is 0) + 2)"
            )
            if options.broken:
                print(
                    f"  receivers: hanging webhook took {receivers.received.hung} requests and "
                    "answered none"
                )
            window_starts = DEFAULT_LATENESS_WINDOW / (options.real_servers + 1)
            print(
                f"  check lateness p99, read every {SAMPLE_EVERY:g} s (each over the last "
                f"{DEFAULT_LATENESS_WINDOW:,} probe starts, about {window_starts:.0f} s): before "
                f"the storm at most {ms(max(lateness_before, default=None))}; during it at most "
                f"{ms(max(lateness_during, default=None))}, at the end "
                f"{ms(lateness_during[-1] if lateness_during else None)}"
            )
            for process in sorted(set(before_lags) | set(storm_lags)):
                print(
                    f"  event loop lag p99 on a, {process}: before {ms(before_lags.get(process))}"
                    f", at the storm's end {ms(storm_lags.get(process))}"
                )
            print(
                f"  adverts from the master (a) seen by the client during the storm: "
                f"{rhythm.count}; gap max {ms(rhythm.max_gap)}; gaps over 3 intervals: "
                f"{rhythm.late} (b's Master_Down_Interval {mdi * 1000:.1f} ms)"
            )
            print_state_changes(spurious, started)
            ended = [
                f"{name}'s event stream ended early: {listener.closed_reason}"
                for name, listener in listeners.items()
                if listener.closed_reason is not None
            ]
            if tally.closed_reason is not None:
                ended.append(f"a's event stream (tally) ended early: {tally.closed_reason}")
            for line in ended:
                print(f"  {line}")

            verdicts = [
                Target(
                    "zero state changes after the initial election, event streams followed",
                    not any(spurious.values()) and not ended,
                ),
                Target(
                    f"the storm happened: {events['real_server']} real_server events >= "
                    f"{options.real_servers}",
                    events["real_server"] >= options.real_servers,
                ),
                *sink_targets(
                    outcomes, broken, options.flags.queue_size is None,
                    hook_events(receivers.received),
                ),
                lateness_target(lateness_before, lateness_during),
            ]  # fmt: skip
            for verdict in verdicts:
                print(verdict.line())
            holds = all(verdict.holds for verdict in verdicts)
            print(f"  {sum(v.holds for v in verdicts)} of {len(verdicts)} targets hold", flush=True)
    finally:
        if capture is not None:
            capture.stop()
        for listener in listeners.values():
            listener.close()
        if tally is not None:
            tally.close()
        if options.keep_logs or not holds:
            print(f"  director logs: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return holds


def _alive(daemons: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in daemons:
        if process.poll() is not None:
            raise RuntimeError(f"a director exited with status {process.returncode}")


def _run_for(
    seconds: float,
    host: Host,
    daemons: Sequence[subprocess.Popen[bytes]],
    lateness: list[float],
    each_second: Callable[[float], None] | None = None,
) -> str:
    """Tick every second for `seconds` (calling `each_second` with the time elapsed), reading
    a's /metrics every SAMPLE_EVERY s and at the end into `lateness` (p99); the last scrape."""

    def read() -> str:
        text = scrape(host)
        value = metric(text, "lvsha_check_lateness_seconds", quantile="0.99")
        if value is not None:
            lateness.append(value)
        return text

    began = time.monotonic()
    next_read = began + SAMPLE_EVERY
    tick = began
    while tick < began + seconds:
        _alive(daemons)
        if each_second is not None:
            each_second(tick - began)
        if time.monotonic() >= next_read:
            read()
            next_read += SAMPLE_EVERY
        tick += FLAP_EVERY
        time.sleep(max(0.0, tick - time.monotonic()))
    return read()


def _drain(
    host: Host,
    daemons: Sequence[subprocess.Popen[bytes]],
    settings: Mapping[str, SinkSettings],
    broken: Sequence[str],
    limit: float,
) -> str:
    """Scrape until every sink has drained (a broken one: every event it took counted
    dropped; a healthy one: nothing queued for QUIET s), or `limit` s; the last scrape."""
    deadline = time.monotonic() + limit
    quiet_since: float | None = None
    while True:
        _alive(daemons)
        text = scrape(host)
        figures = sink_figures(text)
        now = time.monotonic()
        healthy_empty = all(
            figures.get(name, SinkFigures()).queued == 0 for name in settings if name not in broken
        )
        broken_done = all(
            (sink := figures.get(name)) is not None
            and sink.queued == 0
            and sink.dropped_total == sink.events
            for name in broken
        )
        if not healthy_empty:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        if broken_done and quiet_since is not None and now - quiet_since >= QUIET:
            return text
        if now >= deadline:
            _say(f"the sinks did not drain within {limit:.0f} s: figures as they stand")
            return text
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.alert_storm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--real-servers", type=int, default=500, metavar="N")
    parser.add_argument(
        "--broken", action="store_true", help="smtp at a black-holed port, webhook hanging"
    )
    parser.add_argument("--queue-size", type=int, help="every sink's queue_size")
    parser.add_argument("--gather", type=float, help="every sink's gather (s)")
    parser.add_argument("--timeout", type=float, help="every sink's timeout (s)")
    parser.add_argument("--retries", type=int, help="every sink's retries")
    parser.add_argument(
        "--drain",
        type=float,
        metavar="SECONDS",
        help="wait at most this long after the storm for the sinks to drain (default: what "
        "the slowest sink may take)",
    )
    parser.add_argument(
        "--baseline",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="calm before the storm, every real server up, for the lateness before it",
    )
    parser.add_argument(
        "--no-realtime",
        action="store_true",
        help="drop global.vrrp.realtime_priority from the lab configs",
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.alert_storm needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 1 <= args.real_servers <= 10000:
        parser.error("--real-servers must be 1 to 10000")
    options = StormOptions(
        args.duration,
        args.real_servers,
        args.broken,
        SinkFlags(args.queue_size, args.gather, args.timeout, args.retries),
        args.drain,
        args.baseline,
        not args.no_realtime,
        args.keep_logs,
    )
    return 0 if run_storm(options) else 1


if __name__ == "__main__":
    sys.exit(main())
