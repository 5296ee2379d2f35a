"""Scrapes of /metrics while 5,000 checks run (issue 13): does a scrape add check lateness?

    .venv/bin/python -m bench.scrape_load [--checks 5000] [--duration 30] [--rate 0]
                                          [--rounds 1] [--resync-interval S] [--settle 10]
                                          [--keep-logs]

Needs root: the director runs in a throwaway lab of network namespaces (prefix `sl`, unique per
run), removed at the end, also on failure or Ctrl-C; it runs with --dry-run and a temporary
--run-dir and --state-dir, and is stopped by PID with SIGTERM.

One director (`lvsha run --dry-run`: the IPVS table is the in-memory one; checks, VRRP and the
endpoint are real) with one VRRP instance at 1 s, alone and so MASTER, and `checks` real
servers with TCP checks (interval 1 s, timeout 1 s) spread over 10 virtual servers: 10
addresses of a lab host times as many ports as needed, all served by one
`bench.check_servers` process. `global.metrics.listen` is 127.0.0.1:9650.
--resync-interval sets global.ipvs.resync_interval: the periodic re-read of the IPVS table
pauses the checker's loop by itself, and a long interval takes those pauses out of the
comparison.

Once every real server is up and `settle` s have passed, two phases of `duration` s each,
`rounds` times over: one with no scrape, one with a client in the director's namespace
scraping /metrics in a loop (a new connection each time, back to back, or `rate` a second).
The checker writes its figures to RUN_DIR/metrics-checker.prom every 5 s; the bench reads that
file (not the endpoint, so the quiet phases stay free of scrapes) each time it is rewritten.
lvsha_check_lateness_seconds is a rolling window of the last 10,000 probe starts (2 s at 5,000
checks a second): a reading counts for a phase only when its window lies inside the phase (the
file written at least that long after the phase began).

Prints per phase: check lateness p50 and p99 (the median of the readings' p50 and p99, and
the most of their p99), and the checker's and the parent's event-loop lag p99 at the phase's
end (lvsha_event_loop_lag_seconds: a window of the last 2,000 ticks, 100 s; with phases shorter
than that a reading also covers what came before it); with several rounds, each kind's
readings pooled; the scrapes done, their rate, errors, latency (median, p99, max) and size,
and the families and samples of one scrape parsed with prometheus-client's parser; the load
average (the machine may be shared). Then the difference beside the target "a scrape adds no
lateness": the p99 with scrapes within 10 % or 5 ms (whichever is larger) of the p99 without.
Exit status 1 when the target fails or no scrape was answered.

The scraping client runs on the same machine as the director: scrapes back to back (--rate 0)
also measure how a client and a parent busy on every CPU slow the checker down.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.alert_storm import loop_lags, metric, ms, start_targets, terminate
from bench.soak import loadavg
from bench.status import Spread
from lvsha.checks.pool import DEFAULT_LATENESS_WINDOW
from lvsha.drill.lab import Host, Lab, wait_until

REPO = Path(__file__).resolve().parents[1]
DIRECTOR = "192.0.2.11/24"
ADDRESSES = tuple(f"192.0.2.{21 + n}" for n in range(10))
PORTS_FROM = 20000
VIP = "192.0.2.100"
METRICS_PORT = 9650
INTERVAL = 1.0
POLL = 0.2
"""Seconds between two looks at the checker's metrics file."""
READY_TIMEOUT = 120.0
SCRAPE_TIMEOUT = 10.0
RELATIVE_MARGIN = 0.10
ABSOLUTE_MARGIN = 0.005
"""A scrape adds no lateness: phase 2's p99 is within 10 % or 5 ms of phase 1's."""


# ---------------------------------------------------------------------------------- configuration


def layout(checks: int) -> list[tuple[str, list[int]]]:
    """(address, ports) of each virtual server's real servers: `checks` targets over the
    addresses, as many ports each as needed, the last address taking what is left."""
    if checks < 1:
        raise ValueError(f"checks must be at least 1, got {checks}")
    per_address = math.ceil(checks / len(ADDRESSES))
    out = []
    left = checks
    for address in ADDRESSES:
        if left <= 0:
            break
        count = min(per_address, left)
        out.append((address, list(range(PORTS_FROM, PORTS_FROM + count))))
        left -= count
    return out


def director_document(checks: int) -> dict[str, Any]:
    """The director's configuration: one VRRP instance at 1 s and `checks` real servers with
    TCP checks over one virtual server per target address."""
    return {
        "global": {
            "router_id": "scrape-load",
            "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
            "check_defaults": {
                "interval": INTERVAL,
                "timeout": 1.0,
                "retries": 0,
                "rise": 1,
                "fall": 1,
            },
        },
        "vrrp_instances": {
            "VI": {
                "interface": "eth0",
                "virtual_router_id": 51,
                "priority": 100,
                "version": 3,
                "advert_interval": 1.0,
                "virtual_ipaddresses": [f"{VIP}/24"],
            }
        },
        "virtual_servers": [
            {
                "name": f"vs{n}",
                "address": VIP,
                "port": 8000 + n,
                "protocol": "TCP",
                "real_servers": [
                    {"address": address, "port": port, "checks": [{"type": "tcp"}]}
                    for port in ports
                ],
            }
            for n, (address, ports) in enumerate(layout(checks))
        ],
    }


def lateness_window(checks: int, interval: float = INTERVAL) -> float:
    """Seconds of probe starts lvsha_check_lateness_seconds covers at `checks` per interval."""
    return DEFAULT_LATENESS_WINDOW / (checks / interval)


# ---------------------------------------------------------------------------------- readings


@dataclass(frozen=True, slots=True)
class Reading:
    """One rewrite of the checker's metrics file."""

    written: float
    """Wall clock: the file's modification time."""
    p50: float
    p99: float


def reading(text: str, written: float) -> Reading | None:
    p50 = metric(text, "lvsha_check_lateness_seconds", quantile="0.5")
    p99 = metric(text, "lvsha_check_lateness_seconds", quantile="0.99")
    if p50 is None or p99 is None:
        return None
    return Reading(written, p50, p99)


@dataclass(frozen=True, slots=True)
class PhaseLateness:
    readings: int
    p50: float
    p99: float
    """The median of the readings' p99."""
    worst_p99: float


def inside(readings: Sequence[Reading], began: float, ended: float, window: float) -> list[Reading]:
    """The readings whose window lies within [began, ended] (wall clock): written at least
    `window` s after `began`."""
    return [r for r in readings if began + window <= r.written <= ended]


def summarise(readings: Sequence[Reading]) -> PhaseLateness | None:
    """The median p50 and p99 of `readings` and their most p99; None when there is none."""
    if not readings:
        return None
    return PhaseLateness(
        len(readings),
        statistics.median(r.p50 for r in readings),
        statistics.median(r.p99 for r in readings),
        max(r.p99 for r in readings),
    )


def adds_no_lateness(quiet: float, scraped: float) -> bool:
    """Phase 2's p99 within 10 % or 5 ms (the larger) of phase 1's."""
    return scraped <= quiet + max(quiet * RELATIVE_MARGIN, ABSOLUTE_MARGIN)


class FileWatcher:
    """Reads a metrics file each time it is rewritten (by rename: a new modification time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.readings: list[Reading] = []
        self.last_text = ""
        self._mtime = 0.0

    def poll(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:  # replaced between stat and open: the next poll sees it
            return
        self._mtime = mtime
        self.last_text = text
        found = reading(text, mtime)
        if found is not None:
            self.readings.append(found)


# ---------------------------------------------------------------------------------- scrapes


@dataclass
class Scrapes:
    """What the scraping client saw."""

    latencies: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first: str = ""

    def summary(self, seconds: float) -> str:
        done = len(self.latencies)
        text = f"{done} scrapes in {seconds:.1f} s ({done / seconds:.1f}/s), "
        text += f"{sum(self.errors.values())} errors"
        if self.latencies:
            spread = Spread.of(self.latencies)
            text += (
                f"; latency median {ms(spread.median)}, p99 {ms(spread.p99)}, max "
                f"{ms(spread.max)}; size median {statistics.median(self.sizes) / 1024:.0f} KiB"
            )
        return text


def scrape_loop(url: str, seconds: float, rate: float, scrapes: Scrapes) -> None:
    """GET `url` for `seconds`, back to back (rate 0) or `rate` a second, into `scrapes`."""
    began = time.perf_counter()
    deadline = began + seconds
    count = 0
    while (before := time.perf_counter()) < deadline:
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as answer:
                body = bytes(answer.read())
        except OSError as exc:
            scrapes.errors[str(exc)[:200]] += 1
            time.sleep(0.01)  # a refused connect retried in a spin would only burn CPU
        else:
            scrapes.latencies.append(time.perf_counter() - before)
            scrapes.sizes.append(len(body))
            if not scrapes.first:
                scrapes.first = body.decode()
        count += 1
        if rate > 0:
            time.sleep(max(0.0, began + count / rate - time.perf_counter()))


def parsed(text: str) -> str:
    """How prometheus-client's parser reads one scrape: its families and samples, or why not."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        return f"the parser refused it: {exc}"
    count = sum(len(family.samples) for family in families)
    return f"{len(families)} families, {count} samples, parsed without error"


# ---------------------------------------------------------------------------------- the bench


@dataclass(frozen=True, slots=True)
class Phase:
    scraped: bool
    round: int
    began: float
    """Wall clock."""
    ended: float
    readings: list[Reading]
    """The lateness readings whose window lies inside the phase."""
    lags: Mapping[str, float]

    @property
    def name(self) -> str:
        return f"{'scrapes' if self.scraped else 'no scrape'}, round {self.round}"


@dataclass(frozen=True, slots=True)
class Options:
    checks: int
    duration: float
    rate: float
    rounds: int
    settle: float
    resync_interval: float | None
    keep_logs: bool


def _say(message: str) -> None:
    print(f"scrape load: {message}", file=sys.stderr, flush=True)


def _watch(
    seconds: float,
    watcher: FileWatcher,
    daemon: subprocess.Popen[bytes],
    done: Callable[[], bool] | None = None,
) -> None:
    """Poll the checker's file for `seconds` (or until `done`), checking the daemon lives."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (done is None or not done()):
        if daemon.poll() is not None:
            raise RuntimeError(f"the director exited with status {daemon.returncode}")
        watcher.poll()
        time.sleep(POLL)
    watcher.poll()


def _scraper(
    host: Host, url: str, seconds: float, rate: float, scrapes: Scrapes
) -> Callable[[], bool]:
    """Start `scrape_loop` in a thread in `host`'s namespace; returns whether it has ended."""
    client = threading.Thread(
        target=host.call,
        args=(lambda: scrape_loop(url, seconds, rate, scrapes),),
        name="scraper",
        daemon=True,
    )
    client.start()
    return lambda: not client.is_alive()


def _lags(run_dir: Path) -> dict[str, float]:
    """Event-loop lag p99 by process, from the checker's and the parent's files as they are."""
    out: dict[str, float] = {}
    for name in ("metrics-checker.prom", "metrics-main.prom"):
        with contextlib.suppress(FileNotFoundError):
            out.update(loop_lags((run_dir / name).read_text(encoding="utf-8")))
    return out


def run(options: Options) -> bool:
    checks, duration, rate = options.checks, options.duration, options.rate
    window = lateness_window(checks)
    pace = "as fast as it goes" if rate <= 0 else f"{rate:g} a second"
    resync = (
        "default"
        if options.resync_interval is None
        else f"global.ipvs.resync_interval {options.resync_interval:g} s"
    )
    print(
        f"== scrape load: {checks} TCP checks at {INTERVAL:g} s (IPVS resync {resync}); "
        f"{options.rounds} round(s) of {duration:g} s without a scrape, then {duration:g} s of "
        f"scrapes {pace}; {os.cpu_count()} CPUs",
        flush=True,
    )
    if duration < window + 5:
        print(
            f"  note: a phase of {duration:g} s holds few lateness readings (each covers "
            f"{window:.1f} s and the file is written every 5 s)"
        )
    work = Path(tempfile.mkdtemp(prefix="lvsha-scrape-load-"))
    holds = False
    try:
        with Lab(f"sl{secrets.token_hex(2)}") as lab, contextlib.ExitStack() as stack:
            director = lab.add_host("d", DIRECTOR)
            targets = lab.add_host("rs", *(f"{address}/24" for address in ADDRESSES))
            ports = len(layout(checks)[0][1])
            start_targets(targets, range(PORTS_FROM, PORTS_FROM + ports))
            document = director_document(checks)
            if options.resync_interval is not None:
                document["global"]["ipvs"] = {"resync_interval": options.resync_interval}
            config = work / "lvsha.yaml"
            config.write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
            run_dir, state_dir = work / "run", work / "state"
            state_dir.mkdir()
            daemons: list[subprocess.Popen[bytes]] = []
            stack.callback(terminate, daemons)
            with (work / "lvsha.log").open("wb") as log:
                daemon = director.popen(
                    sys.executable, "-m", "lvsha", "run", str(config), "--dry-run",
                    "--run-dir", str(run_dir), "--state-dir", str(state_dir),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                )  # fmt: skip
            daemons.append(daemon)
            started = time.monotonic()
            watcher = FileWatcher(run_dir / "metrics-checker.prom")

            def all_up() -> bool:
                if daemon.poll() is not None:
                    raise RuntimeError(f"the director exited with status {daemon.returncode}")
                watcher.poll()
                healthy = metric(watcher.last_text, "lvsha_real_servers", health="healthy")
                return healthy == checks

            wait_until(all_up, READY_TIMEOUT, 0.5, f"{checks} real servers healthy")
            print(f"  {checks} real servers healthy after {time.monotonic() - started:.1f} s")
            _watch(options.settle, watcher, daemon)

            phases: list[Phase] = []
            scrapes = Scrapes()
            url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
            load_before = loadavg()
            for number in range(1, options.rounds + 1):
                for scraped in (False, True):
                    _say(f"round {number}: {duration:g} s {'of scrapes' if scraped else 'quiet'}")
                    began = time.time()
                    if scraped:
                        client = _scraper(director, url, duration, rate, scrapes)
                        _watch(duration + SCRAPE_TIMEOUT, watcher, daemon, client)
                    else:
                        _watch(duration, watcher, daemon)
                    ended = time.time()
                    readings = inside(watcher.readings, began, ended, window)
                    phases.append(Phase(scraped, number, began, ended, readings, _lags(run_dir)))
            holds = _report(phases, scrapes, window, load_before)
    finally:
        if options.keep_logs or not holds:
            print(f"  director log and run directory: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return holds


def _lateness_text(lateness: PhaseLateness | None) -> str:
    if lateness is None:
        return "no reading inside"
    return (
        f"p50 {ms(lateness.p50)}, p99 {ms(lateness.p99)} (most {ms(lateness.worst_p99)}; "
        f"{lateness.readings} readings)"
    )


def _report(phases: Sequence[Phase], scrapes: Scrapes, window: float, load_before: str) -> bool:
    print(
        f"  check lateness: the median of the readings whose window ({window:.1f} s of probe "
        "starts) lies inside the phase; loop lag p99: at the phase's end, over the last 100 s"
    )
    for phase in phases:
        lags = ", ".join(f"{process} {ms(lag)}" for process, lag in sorted(phase.lags.items()))
        print(
            f"  {phase.name:20} lateness {_lateness_text(summarise(phase.readings))}; "
            f"loop lag {lags or '-'}"
        )
    quiet = summarise([r for phase in phases if not phase.scraped for r in phase.readings])
    scraped = summarise([r for phase in phases if phase.scraped for r in phase.readings])
    if len(phases) > 2:
        print(f"  {'no scrape, pooled':20} lateness {_lateness_text(quiet)}")
        print(f"  {'scrapes, pooled':20} lateness {_lateness_text(scraped)}")
    seconds = sum(phase.ended - phase.began for phase in phases if phase.scraped)
    print(f"  scrapes: {scrapes.summary(seconds)}")
    for message, count in scrapes.errors.most_common(3):
        print(f"    {count} x {message}")
    if scrapes.first:
        print(f"  one scrape: {parsed(scrapes.first)}")
    print(f"  load average before the phases {load_before}, after {loadavg()}")
    if quiet is None or scraped is None:
        print("  FAILS  a scrape adds no lateness: no lateness reading inside the phases")
        return False
    allowed = max(quiet.p99 * RELATIVE_MARGIN, ABSOLUTE_MARGIN)
    holds = adds_no_lateness(quiet.p99, scraped.p99) and bool(scrapes.latencies)
    print(
        f"  {'HOLDS' if holds else 'FAILS'}  a scrape adds no lateness: p99 {ms(scraped.p99)} "
        f"with scrapes vs {ms(quiet.p99)} without ({(scraped.p99 - quiet.p99) * 1000:+.1f} ms; "
        f"allowed +{allowed * 1000:.1f} ms), {len(scrapes.latencies)} scrapes answered",
        flush=True,
    )
    return holds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scrape_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checks", type=int, default=5000, metavar="N")
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="scrapes a second in phase 2; 0: back to back"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="alternate the two phases N times (the figures pool each kind's readings)",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        metavar="SECONDS",
        help="set global.ipvs.resync_interval (default: lvsha's); a long one takes the IPVS "
        "re-read's own pauses out of the comparison",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long after every real server is up before phase 1",
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.scrape_load needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 1 <= args.checks <= 50_000:
        parser.error("--checks must be 1 to 50000")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    options = Options(
        args.checks,
        args.duration,
        args.rate,
        args.rounds,
        args.settle,
        args.resync_interval,
        args.keep_logs,
    )
    return 0 if run(options) else 1


if __name__ == "__main__":
    sys.exit(main())
