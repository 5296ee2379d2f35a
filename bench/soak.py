"""Spurious-transition soak: two directors at 0.02 s VRRPv3 left alone while the CPUs are busy.

Run as root: `.venv/bin/python -m bench.soak --duration 600 --variant realtime`. The lab's two
directors (conf/lab, adapted to a 0.02 s advert interval, with or without
`global.vrrp.realtime_priority`) elect a master; then busy loops keep every CPU busy for the
duration. Every state change after the initial election is spurious: the target is none. The
changes come from each director's event stream (`events.sock`); a client's capture adds how
regularly the master's adverts arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from lvsha.drill.capture import AdvertSeen, Capture
from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.drill.scenarios import Election

LAB_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "lab"
DIRECTORS = (("a", "192.0.2.11/24", 150), ("b", "192.0.2.12/24", 100))
CLIENT = "192.0.2.1/24"
LAB_VIP = IPv4Interface("192.0.2.100/24")
ADVERT_INTERVAL = 0.02
VRRP_VERSION = 3
SETTLE = 2.0
"""Seconds without a state change that end the initial election."""
ELECTION_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class StateChange:
    at: float
    """Monotonic receipt time."""
    line: dict[str, Any]

    def describe(self, started: float) -> str:
        line = self.line
        return (
            f"+{self.at - started:.3f} s ({line.get('time')}): {line.get('old')} -> "
            f"{line.get('new')} ({line.get('reason')}), priority {line.get('priority')}"
        )


def new_events(lines: Iterable[str], seen: set[int]) -> Iterator[dict[str, Any]]:
    """The events among event-stream lines not seen before (by `seq`: a new connection first
    replays recent events)."""
    for text in lines:
        if not text.strip():
            continue
        event = json.loads(text)
        seq = event.get("seq")
        if isinstance(seq, int):
            if seq in seen:
                continue
            seen.add(seq)
        yield event


def state_changes(lines: Sequence[str], at: float, seen: set[int]) -> list[StateChange]:
    """The vrrp_state events among event-stream lines not seen before."""
    return [
        StateChange(at, event)
        for event in new_events(lines, seen)
        if event.get("type") == "vrrp_state"
    ]


def print_state_changes(
    spurious: Mapping[str, Sequence[StateChange]], started: float, what: str = "state changes"
) -> None:
    """Each director's state changes after the initial election, counted, then one a line."""
    for name, changes in spurious.items():
        print(f"  {what} of {name} after the initial election: {len(changes)}")
        for change in changes:
            print(f"    {change.describe(started)}")


@dataclass
class EventListener:
    """Follows one director's event stream, keeping its state changes."""

    path: Path
    changes: list[StateChange] = field(default_factory=list)
    closed_reason: str | None = None
    _seen: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stream: socket.socket | None = None

    def connect(self, timeout: float) -> None:
        def connected() -> bool:
            stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                stream.connect(str(self.path))
            except OSError:
                stream.close()
                return False
            self._stream = stream
            return True

        wait_until(connected, timeout, what=f"the event stream {self.path}")
        threading.Thread(target=self._follow, name=f"events-{self.path}", daemon=True).start()

    def _follow(self) -> None:
        assert self._stream is not None
        pending = b""
        while True:
            try:
                data = self._stream.recv(65536)
            except OSError as exc:
                self.closed_reason = f"read failed: {exc}"
                return
            if not data:
                self.closed_reason = "the director closed the stream"
                return
            at = time.monotonic()
            pending += data
            *complete, pending = pending.split(b"\n")
            lines = [line.decode() for line in complete]
            with self._lock:
                self._take(lines, at)

    def _take(self, lines: list[str], at: float) -> None:
        """Keep what matters of newly read lines (called with the lock held)."""
        self.changes.extend(state_changes(lines, at, self._seen))

    def snapshot(self) -> list[StateChange]:
        with self._lock:
            return list(self.changes)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def adapt(source: Path, target: Path, realtime_priority: int | None) -> None:
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    for instance in document["vrrp_instances"].values():
        instance["advert_interval"] = ADVERT_INTERVAL
        instance["version"] = VRRP_VERSION
    vrrp = document.setdefault("global", {}).setdefault("vrrp", {})
    if realtime_priority is None:
        vrrp.pop("realtime_priority", None)
    else:
        vrrp["realtime_priority"] = realtime_priority
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


@dataclass(frozen=True, slots=True)
class AdvertRhythm:
    count: int
    median_gap: float | None
    max_gap: float | None
    late: int
    """Gaps longer than 3 advert intervals: a backup's Master_Down_Interval is about that."""


def advert_rhythm(adverts: Sequence[AdvertSeen], source: IPv4Address) -> AdvertRhythm:
    times = [a.at for a in adverts if a.source == source and a.priority > 0]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    if not gaps:
        return AdvertRhythm(len(times), None, None, 0)
    late = sum(gap > 3 * ADVERT_INTERVAL for gap in gaps)
    return AdvertRhythm(len(times), statistics.median(gaps), max(gaps), late)


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def start_load(workers: int, nice: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            ["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]


def stop_load(load: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in load:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    for process in load:
        process.wait(timeout=10)


@dataclass(frozen=True, slots=True)
class SoakOptions:
    duration: float
    realtime_priority: int | None
    load_workers: int
    load_nice: int
    keep_logs: bool
    prefix: str


def _say(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def _settled(listeners: dict[str, EventListener], expected: dict[str, str]) -> bool:
    now = time.monotonic()
    for name, listener in listeners.items():
        changes = listener.snapshot()
        if not changes or changes[-1].line.get("new") != expected[name]:
            return False
        if now - changes[-1].at < SETTLE:
            return False
    return True


def initial_election(listeners: dict[str, EventListener], started: float) -> dict[str, int]:
    """Wait until a is MASTER and b BACKUP, unchanged for SETTLE s; print the election's state
    changes; return each director's count of them (what came later is spurious)."""
    wait_until(
        lambda: _settled(listeners, {"a": "MASTER", "b": "BACKUP"}),
        ELECTION_TIMEOUT,
        what="a MASTER and b BACKUP, unchanged for 2 s",
    )
    baseline = {name: len(listener.snapshot()) for name, listener in listeners.items()}
    for name, listener in listeners.items():
        for change in listener.snapshot():
            print(f"  initial election, {name}: {change.describe(started)}")
    return baseline


def soak(options: SoakOptions) -> bool:
    """Run one soak and print its report; True when no spurious transition was seen."""
    variant = (
        "normal scheduling"
        if options.realtime_priority is None
        else f"realtime (SCHED_FIFO {options.realtime_priority})"
    )
    print(
        f"== soak, {variant}: {ADVERT_INTERVAL} s VRRPv{VRRP_VERSION}, {options.duration:.0f} s "
        f"under {options.load_workers} busy loop(s) at nice {options.load_nice}",
        flush=True,
    )
    work_dir = Path(tempfile.mkdtemp(prefix=f"lvsha-soak-{options.prefix}-"))
    listeners: dict[str, EventListener] = {}
    load: list[subprocess.Popen[bytes]] = []
    capture: Capture | None = None
    holds = False
    try:
        with Lab(options.prefix) as lab:
            client = lab.add_host("client", CLIENT)
            hosts: dict[str, Host] = {}
            for name, address, _priority in DIRECTORS:
                hosts[name] = lab.add_host(name, address)
            capture = Capture(client)
            capture.start()
            started = time.monotonic()
            for name, _address, _priority in DIRECTORS:
                config = work_dir / f"director-{name}.yaml"
                adapt(LAB_CONFIGS / f"director-{name}.yaml", config, options.realtime_priority)
                run_dir = work_dir / f"run-{name}"
                with (work_dir / f"{name}.log").open("wb") as log:
                    hosts[name].popen(
                        *(sys.executable, "-m", "lvsha", "run", str(config)),
                        *("--run-dir", str(run_dir)),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                listeners[name] = EventListener(run_dir / "events.sock")
                listeners[name].connect(timeout=ELECTION_TIMEOUT)
            baseline = initial_election(listeners, started)
            before = loadavg()
            load = start_load(options.load_workers, options.load_nice)
            soak_from = time.monotonic()
            deadline = soak_from + options.duration
            next_note = soak_from + 60
            while (now := time.monotonic()) < deadline:
                for process in lab.processes:
                    if process.poll() is not None and process not in load:
                        raise RuntimeError(f"a director exited with status {process.returncode}")
                if now >= next_note:
                    _say(f"{now - soak_from:.0f} s of {options.duration:.0f}, loadavg {loadavg()}")
                    next_note += 60
                time.sleep(min(1.0, max(deadline - now, 0.0)))
            during = loadavg()
            soak_until = time.monotonic()
            spurious = {
                name: listener.snapshot()[baseline[name] :] for name, listener in listeners.items()
            }
            stop_load(load)
            load = []
            rhythm = advert_rhythm(capture.adverts_since(soak_from), IPv4Address("192.0.2.11"))
            backup_adverts = advert_rhythm(
                capture.adverts_since(soak_from), IPv4Address("192.0.2.12")
            ).count
            mdi = Election(42, LAB_VIP, "eth0", ADVERT_INTERVAL).master_down_interval(100)
            print(f"  loadavg before {before}, at the end {during}, after {loadavg()}")
            print(
                f"  adverts from the master (a) seen by the client: {rhythm.count} in "
                f"{soak_until - soak_from:.0f} s; gap median "
                f"{_ms(rhythm.median_gap)}, max {_ms(rhythm.max_gap)}; gaps over 3 intervals: "
                f"{rhythm.late} (b's Master_Down_Interval {mdi * 1000:.1f} ms); "
                f"adverts from b: {backup_adverts}"
            )
            print("  (gaps between the kernel's receive times on the client's capture socket)")
            print_state_changes(spurious, started)
            for name, listener in listeners.items():
                if listener.closed_reason is not None:
                    print(f"  {name}'s event stream ended early: {listener.closed_reason}")
            holds = not any(spurious.values()) and all(
                listener.closed_reason is None for listener in listeners.values()
            )
            verdict = "HOLDS" if holds else "FAILS"
            print(f"  {verdict}  zero state changes after the initial election", flush=True)
    finally:
        stop_load(load)
        if capture is not None:
            capture.stop()
        for listener in listeners.values():
            listener.close()
        if options.keep_logs or not holds:
            print(f"  director logs: {work_dir}", flush=True)
        else:
            subprocess.run(["rm", "-rf", str(work_dir)], check=False)
    return holds


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument(
        "--variant",
        choices=("realtime", "normal", "both"),
        default="both",
        help="with global.vrrp.realtime_priority set, without it, or one after the other",
    )
    parser.add_argument("--realtime-priority", type=int, default=50, metavar="1-99")
    parser.add_argument("--load-workers", type=int, default=os.cpu_count() or 1, metavar="N")
    parser.add_argument(
        "--load-nice",
        type=int,
        default=19,
        metavar="N",
        help="niceness of the busy loops (default 19: they take every idle cycle but yield to "
        "other people's work on a shared machine; 0 competes with normal processes head on)",
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.soak needs root (network namespaces)", file=sys.stderr)
        return 2
    variants = {"realtime": [args.realtime_priority], "normal": [None]}.get(
        args.variant, [args.realtime_priority, None]
    )
    results = []
    for index, realtime_priority in enumerate(variants):
        options = SoakOptions(
            args.duration,
            realtime_priority,
            args.load_workers,
            args.load_nice,
            args.keep_logs,
            f"sk{os.getpid() % 10000}{index}",
        )
        results.append(soak(options))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
