"""The control API under an operator and under a crowd (issue 12).

    .venv/bin/python -m bench.status latency [--runs 30]
    .venv/bin/python -m bench.status load [--duration 60] [--clients 200] [--both]
                                          [--no-realtime] [--keep-logs]

Both need root: the daemons run in a throwaway lab of network namespaces (prefix `st`, unique
per run), removed at the end, also on failure or Ctrl-C; every daemon runs with --dry-run and
a temporary --state-dir and is stopped with SIGTERM. Clients run in this process's namespace:
the control socket is a file. Exit status 1 when a target fails.

`latency`: the wall time of the real CLI, `lvsha status` and `lvsha status --json`, Python
start-up included, against a `lvsha run --dry-run` in the lab (one VRRP instance at 1 s, MASTER
by then, and one virtual server of three real servers with TCP checks: one answers, one
refuses, one is an address nobody has). Python runs with bytecode caching (a temporary
PYTHONPYCACHEPREFIX, warmed first), as an installed lvsha would; bench/startup.py says why.
Prints the median, p90 and max of `runs` runs beside the target, 150 ms, judged on the median;
the request alone (lvsha.client.request in this process) for comparison; the `python -X
importtime` top of `lvsha status`; the load average before and after (the machine is shared).

`load`: the lab's two directors (conf/lab, adapted to 0.02 s VRRPv3 as bench/soak.py does;
global.vrrp.realtime_priority as there, or dropped with --no-realtime) elect a MASTER (a) and a
BACKUP (b); then `clients` threads, spread over one worker process per CPU, each call `GET
/v1/status` on a's control socket as fast as they can for `duration` seconds (--both: half of
them on b's; a client whose request failed waits 1 ms before the next). Prints the requests
done, their rate, errors (by message) and latency (median, p99, max), the master's advert
rhythm as a client on the segment hears it (max gap, gaps over 3 intervals), and every VRRP
state change after the initial election, from both directors' event streams. Target: none;
the verdict HOLDS when there is none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from lvsha import client
from lvsha.drill.lab import Host, Lab

REPO = Path(__file__).resolve().parents[1]
LVSHA = Path(sys.executable).with_name("lvsha")
STATUS_SCHEMA = REPO / "lvsha" / "api" / "schemas" / "status.json"
TARGET = 0.150
"""`lvsha status` answers in under 150 ms wall, Python start-up included."""
REQUEST_TIMEOUT = 10.0
"""The CLI's default --timeout."""
READY_TIMEOUT = 30.0
ERROR_PAUSE = 0.001
"""A load client whose request failed waits this long before the next: a refused connect
(a full backlog answers EAGAIN at once) retried in a spin would count thousands of failures a
second and take the CPU from the clients that are being served."""

LATENCY_CONFIG = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 61
    priority: 100
    version: 3
    advert_interval: 1
    virtual_ipaddresses: ['192.0.2.100/24']
virtual_servers:
  - address: 192.0.2.100
    port: 80
    protocol: TCP
    scheduler: wlc
    real_servers:
      - address: 192.0.2.21
        port: 80
        checks: [{type: tcp, interval: 1, timeout: 1}]
      - address: 192.0.2.22
        port: 80
        checks: [{type: tcp, interval: 1, timeout: 1}]
      - address: 192.0.2.23
        port: 80
        checks: [{type: tcp, interval: 1, timeout: 1}]
"""
"""192.0.2.21 answers (python -m http.server), .22 is a host with nothing listening (refused),
.23 is nobody (the connection times out)."""


# ---------------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class Spread:
    """Seconds: how a set of timings spreads."""

    count: int
    median: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        return cls(
            len(ordered),
            statistics.median(ordered),
            percentile(ordered, 90),
            percentile(ordered, 99),
            ordered[-1],
        )


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest sample that at least p % of the samples do not exceed."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def latency_verdict(what: str, spread: Spread, target: float = TARGET) -> tuple[str, bool]:
    """The line printed for one command, and whether its median is under the target."""
    holds = spread.median < target
    line = (
        f"  {what:34} median {spread.median * 1000:6.1f} ms  p90 {spread.p90 * 1000:6.1f} ms  "
        f"max {spread.max * 1000:6.1f} ms   target < {target * 1000:g} ms  "
        f"{'HOLDS' if holds else 'FAILS'}"
    )
    return line, holds


def parse_importtime(stderr: str, count: int = 10) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the `count` imports with the largest cumulative time,
    from the stderr of `python -X importtime`; other lines are ignored."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3:
            continue
        own, cumulative = parts[0].strip(), parts[1].strip()
        if own.isdigit() and cumulative.isdigit():
            rows.append((int(cumulative), int(own), parts[2].strip()))
    return sorted(rows, key=lambda row: row[0], reverse=True)[:count]


def required_keys(schema: Mapping[str, Any]) -> list[str]:
    required = schema.get("required", [])
    return [key for key in required if isinstance(key, str)]


def status_problem(answer: object, required: Sequence[str]) -> str | None:
    """Why `answer` is not a status answer (status.json's top level), or None."""
    if not isinstance(answer, dict):
        return "not a JSON object"
    if answer.get("ok") is not True:
        return f"not ok: {answer.get('error', answer)}"
    missing = [key for key in required if key not in answer]
    return f"missing {', '.join(missing)}" if missing else None


def status_ready(answer: Mapping[str, Any]) -> bool:
    """Both children have reported, every VRRP instance is MASTER (alone on its segment, the
    latency bench's director becomes master after its Master_Down_Interval), and every check
    has probed once (until then a real server shows its initial health)."""
    if answer.get("ok") is not True:
        return False
    vrrp = answer.get("vrrp")
    if vrrp is not None:
        instances = vrrp.get("instances") or []
        if vrrp.get("updated_at") is None or not instances:
            return False
        if any(instance.get("state") != "MASTER" for instance in instances):
            return False
    services = answer.get("services")
    if services is None:
        return True
    if services.get("updated_at") is None:
        return False
    return all(
        check.get("at") is not None
        for server in services.get("virtual_servers") or []
        for real in server.get("real_servers") or []
        for check in real.get("checks") or []
    )


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def environment(pycache: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPYCACHEPREFIX=pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# ----------------------------------------------------------------------------------- latency


def timed(
    argv: Sequence[str], env: dict[str, str]
) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def _fetch_status(socket_path: str) -> dict[str, Any] | None:
    try:
        status, answer = client.request(socket_path, "GET", "/v1/status", None, 2.0)
    except client.ControlError:
        return None
    return answer if status == 200 else None


def _wait_ready(socket_path: str, timeout: float) -> dict[str, Any] | None:
    """The first answer that is status_ready, else the last one seen (None: none at all)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        answer = _fetch_status(socket_path)
        if answer is not None:
            last = answer
            if status_ready(answer):
                return answer
        time.sleep(0.1)
    return last


def _describe(answer: Mapping[str, Any]) -> str:
    vrrp = answer.get("vrrp") or {}
    states = [f"{i.get('name')} {i.get('state')}" for i in vrrp.get("instances") or []]
    services = answer.get("services") or {}
    health: Counter[str] = Counter(
        str(real.get("health"))
        for server in services.get("virtual_servers") or []
        for real in server.get("real_servers") or []
    )
    servers = ", ".join(f"{n} {h}" for h, n in sorted(health.items())) or "none"
    return f"VRRP: {', '.join(states) or 'none'}; real servers: {servers}"


def run_latency(runs: int) -> bool:
    required = required_keys(json.loads(STATUS_SCHEMA.read_text(encoding="utf-8")))
    print(f"load average before: {load()}; {os.cpu_count()} CPUs; {runs} runs per command")
    results: list[bool] = []
    with (
        tempfile.TemporaryDirectory(prefix="st-pycache-") as pycache,
        tempfile.TemporaryDirectory(prefix="st-latency-") as tmp,
        Lab(f"st{secrets.token_hex(2)}") as lab,
        contextlib.ExitStack() as stopping,
    ):
        stopping.callback(_stop, lab.processes)
        env = environment(pycache)
        work = Path(tmp)
        director = lab.add_host("a", "192.0.2.11/24")
        servers = lab.add_host("rs", "192.0.2.21/24", "192.0.2.22/24")
        servers.popen(
            *(sys.executable, "-m", "http.server", "80", "--bind", "192.0.2.21"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        config = work / "lvsha.yaml"
        config.write_text(LATENCY_CONFIG, encoding="utf-8")
        run_dir, state_dir = work / "run", work / "state"
        state_dir.mkdir()
        socket_path = str(run_dir / "control.sock")
        with (work / "daemon.log").open("wb") as log:
            daemon = director.popen(
                *(sys.executable, "-m", "lvsha", "run", str(config), "--dry-run"),
                *("--run-dir", str(run_dir), "--state-dir", str(state_dir)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip
        answer = _wait_ready(socket_path, READY_TIMEOUT)
        if answer is None:
            print(f"the daemon did not answer within {READY_TIMEOUT:g} s (exit {daemon.poll()}):")
            print((work / "daemon.log").read_text(errors="replace")[-4000:])
            return False
        ready = "" if status_ready(answer) else f" (not settled after {READY_TIMEOUT:g} s)"
        print(f"daemon: {_describe(answer)}{ready}")
        commands = {
            "lvsha status": [str(LVSHA), "status", "--run-dir", str(run_dir)],
            "lvsha status --json": [str(LVSHA), "status", "--json", "--run-dir", str(run_dir)],
        }
        for argv in commands.values():  # warm: write the bytecode
            timed(argv, env)
        print("\nCLI against the daemon (wall time, Python start-up included):")
        for what, argv in commands.items():
            times = []
            for _ in range(runs):
                took, done = timed(argv, env)
                problem = _output_problem(done, json_wanted="--json" in argv, required=required)
                if problem is not None:
                    print(f"  {what}: {problem}")
                    return False
                times.append(took)
            line, holds = latency_verdict(what, Spread.of(times))
            print(line)
            results.append(holds)
        alone = []
        for _ in range(runs):
            start = time.perf_counter()
            client.request(socket_path, "GET", "/v1/status", None, REQUEST_TIMEOUT)
            alone.append(time.perf_counter() - start)
        spread = Spread.of(alone)
        print(
            f"  {'the request alone (in process)':34} median {spread.median * 1000:6.1f} ms  "
            f"p90 {spread.p90 * 1000:6.1f} ms  max {spread.max * 1000:6.1f} ms"
        )
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "lvsha", *commands["lvsha status"][1:]],
            env=env, cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        print("\nimport time top 10, lvsha status (cumulative, self):")
        for cumulative, own, name in parse_importtime(done.stderr):
            print(f"  {cumulative / 1000:7.1f} ms {own / 1000:7.1f} ms  {name}")
    print(f"\nload average after: {load()}")
    failed = results.count(False)
    print(f"{len(results) - failed} of {len(results)} targets hold")
    return not failed


def _output_problem(
    done: subprocess.CompletedProcess[str], *, json_wanted: bool, required: Sequence[str]
) -> str | None:
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"
    if not json_wanted:
        return None if done.stdout.strip() else "printed nothing"
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return f"--json printed no JSON: {done.stdout[:200]!r}"
    return status_problem(answer, required)


# -------------------------------------------------------------------------------------- load


@dataclass
class Tally:
    """What a set of clients saw: requests answered 200 and ok, their latencies (s), and the
    failures by message and by second of the run they happened in."""

    done: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_seconds: Counter[int] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.done += other.done
        self.latencies.extend(other.latencies)
        self.errors.update(other.errors)
        self.error_seconds.update(other.error_seconds)

    def to_json(self) -> str:
        return json.dumps(
            {
                "done": self.done,
                "latencies": [round(x, 6) for x in self.latencies],
                "errors": self.errors,
                "error_seconds": self.error_seconds,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Tally:
        data = json.loads(text)
        return cls(
            int(data["done"]),
            [float(x) for x in data["latencies"]],
            Counter(data["errors"]),
            Counter({int(second): count for second, count in data["error_seconds"].items()}),
        )

    def summary(self, seconds: float) -> str:
        failed = sum(self.errors.values())
        text = f"{self.done} requests answered in {seconds:.1f} s ({self.done / seconds:.0f}/s), "
        text += f"{failed} errors"
        if self.error_seconds:
            text += (
                f" (in {len(self.error_seconds)} of the run's seconds, the first at "
                f"+{min(self.error_seconds)} s)"
            )
        if self.latencies:
            spread = Spread.of(self.latencies)
            text += (
                f"; latency median {ms(spread.median)}, p99 {ms(spread.p99)}, max {ms(spread.max)}"
            )
        return text


def hammer(socket_path: str, threads: int, duration: float) -> Tally:
    """`threads` clients calling GET /v1/status on `socket_path` back to back for `duration`."""
    tallies = [Tally() for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    deadline: list[float] = []

    def loop(tally: Tally) -> None:
        start.wait()
        end = deadline[0]
        while (before := time.perf_counter()) < end:
            try:
                status, answer = client.request(
                    socket_path, "GET", "/v1/status", None, REQUEST_TIMEOUT
                )
            except client.ControlError as exc:
                message = str(exc).replace(socket_path, "control.sock")[:200]
            else:
                if status == 200 and answer.get("ok") is True:
                    tally.done += 1
                    tally.latencies.append(time.perf_counter() - before)
                    continue
                message = f"HTTP {status}: {str(answer.get('error', answer))[:200]}"
            tally.errors[message] += 1
            tally.error_seconds[int(before - (end - duration))] += 1
            time.sleep(ERROR_PAUSE)

    workers = [
        threading.Thread(target=loop, args=(tally,), name=f"client-{n}", daemon=True)
        for n, tally in enumerate(tallies)
    ]
    for worker in workers:
        worker.start()
    deadline.append(time.perf_counter() + duration)
    start.wait()
    for worker in workers:
        worker.join()
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


def spread_clients(clients: int, workers: int) -> list[int]:
    """Threads per worker process: `clients` dealt over at most `workers`, none empty."""
    workers = max(1, min(workers, clients))
    return [clients // workers + (n < clients % workers) for n in range(workers)]


def load_holds(spurious: Mapping[str, Sequence[object]], streams_ended: int, done: int) -> bool:
    """No state change after the initial election, both event streams followed to the end,
    and the clients did get answers."""
    return not any(spurious.values()) and streams_ended == 0 and done > 0


def _say(message: str) -> None:
    print(f"status load: {message}", file=sys.stderr, flush=True)


def run_load(duration: float, clients: int, both: bool, realtime: bool, keep_logs: bool) -> bool:
    from bench.soak import (  # noqa: PLC0415
        ADVERT_INTERVAL,
        CLIENT,
        DIRECTORS,
        ELECTION_TIMEOUT,
        LAB_CONFIGS,
        LAB_VIP,
        VRRP_VERSION,
        EventListener,
        adapt,
        advert_rhythm,
        initial_election,
        loadavg,
        print_state_changes,
    )
    from lvsha.drill.capture import Capture  # noqa: PLC0415
    from lvsha.drill.scenarios import Election  # noqa: PLC0415

    realtime_priority = 50 if realtime else None
    scheduling = "realtime (SCHED_FIFO 50)" if realtime else "normal scheduling"
    targets = "a and b" if both else "a (the master)"
    print(
        f"== status under load: {clients} clients on {targets} for {duration:g} s, "
        f"{ADVERT_INTERVAL} s VRRPv{VRRP_VERSION}, {scheduling}; {os.cpu_count()} CPUs",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="lvsha-status-load-"))
    listeners: dict[str, EventListener] = {}
    capture: Capture | None = None
    workers: list[subprocess.Popen[bytes]] = []
    holds = False
    try:
        with Lab(f"st{secrets.token_hex(2)}") as lab, contextlib.ExitStack() as stopping:
            stopping.callback(_stop, lab.processes)
            client_host = lab.add_host("client", CLIENT)
            hosts: dict[str, Host] = {}
            for name, address, _priority in DIRECTORS:
                hosts[name] = lab.add_host(name, address)
            capture = Capture(client_host)
            capture.start()
            started = time.monotonic()
            sockets: dict[str, str] = {}
            for name, _address, _priority in DIRECTORS:
                config = work / f"director-{name}.yaml"
                adapt(LAB_CONFIGS / f"director-{name}.yaml", config, realtime_priority)
                run_dir, state_dir = work / f"run-{name}", work / f"state-{name}"
                state_dir.mkdir()
                sockets[name] = str(run_dir / "control.sock")
                with (work / f"{name}.log").open("wb") as log:
                    hosts[name].popen(
                        *(sys.executable, "-m", "lvsha", "run", str(config), "--dry-run"),
                        *("--run-dir", str(run_dir), "--state-dir", str(state_dir)),
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                listeners[name] = EventListener(run_dir / "events.sock")
                listeners[name].connect(timeout=ELECTION_TIMEOUT)
            baseline = initial_election(listeners, started)
            for name, path in sockets.items():
                answer = _fetch_status(path)
                print(f"  {name}: {'no answer' if answer is None else _describe(answer)}")

            shares = spread_clients(clients, os.cpu_count() or 1)
            plan = [
                (sockets["b" if both and n % 2 else "a"], threads)
                for n, threads in enumerate(shares)
            ]
            if both and len(plan) == 1:  # one CPU: still half of them on b
                half = plan[0][1] // 2
                plan = [(sockets["a"], plan[0][1] - half), (sockets["b"], half)]
            before = loadavg()
            load_from = time.monotonic()
            outputs = [work / f"clients-{n}.json" for n in range(len(plan))]
            for (path, threads), output in zip(plan, outputs, strict=True):
                with output.open("wb") as out:  # a file: a pipe would fill before they end
                    workers.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "bench.status", "_hammer", path,
                             "--threads", str(threads), "--duration", str(duration)],
                            stdin=subprocess.DEVNULL, stdout=out, cwd=REPO,
                        )
                    )  # fmt: skip
            _say(f"{len(workers)} worker process(es), {shares} threads, for {duration:g} s")
            deadline = load_from + duration
            while any(worker.poll() is None for worker in workers):
                for process in lab.processes:
                    if process.poll() is not None:
                        raise RuntimeError(f"a director exited with status {process.returncode}")
                if time.monotonic() > deadline + 60:
                    raise TimeoutError("the clients did not stop within 60 s of the end")
                time.sleep(0.5)
            load_until = time.monotonic()
            during = loadavg()
            tallies = {"a": Tally(), "b": Tally()}
            for worker, (path, _threads), output in zip(workers, plan, outputs, strict=True):
                if worker.returncode != 0:
                    raise RuntimeError(f"a client worker exited with status {worker.returncode}")
                tally = Tally.from_json(output.read_text(encoding="utf-8"))
                tallies["a" if path == sockets["a"] else "b"].add(tally)
            workers = []
            time.sleep(1.0)  # events of the last moments reach the listeners
            spurious = {
                name: listener.snapshot()[baseline[name] :] for name, listener in listeners.items()
            }
            adverts = capture.adverts_since(load_from)
            rhythm = advert_rhythm(
                [a for a in adverts if a.at <= load_until], IPv4Address("192.0.2.11")
            )
            from_b = advert_rhythm(adverts, IPv4Address("192.0.2.12")).count
            mdi = Election(42, LAB_VIP, "eth0", ADVERT_INTERVAL).master_down_interval(100)
            seconds = load_until - load_from
            print(f"  loadavg before {before}, at the end {during}, after {loadavg()}")
            total = Tally()
            for name, tally in tallies.items():
                if tally.done or tally.errors:
                    print(f"  clients on {name}: {tally.summary(duration)}")
                    for message, count in tally.errors.most_common(5):
                        print(f"    {count} x {message}")
                    total.add(tally)
            print(
                f"  adverts from the master (a) seen by the client: {rhythm.count} in "
                f"{seconds:.0f} s; gap median {ms(rhythm.median_gap)}, max "
                f"{ms(rhythm.max_gap)}; gaps over 3 intervals: {rhythm.late} (b's "
                f"Master_Down_Interval {mdi * 1000:.1f} ms); adverts from b: {from_b}"
            )
            print_state_changes(spurious, started)
            ended = 0
            for name, listener in listeners.items():
                if listener.closed_reason is not None:
                    ended += 1
                    print(f"  {name}'s event stream ended early: {listener.closed_reason}")
            holds = load_holds(spurious, ended, total.done)
            verdict = "HOLDS" if holds else "FAILS"
            print(
                f"  {verdict}  zero state changes after the initial election while "
                f"{clients} clients call status",
                flush=True,
            )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=10)
        if capture is not None:
            capture.stop()
        for listener in listeners.values():
            listener.close()
        if keep_logs or not holds:
            print(f"  director logs: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return holds


def _stop(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM, so each daemon stops its children before it goes (the lab's SIGKILL of the
    parent alone leaves them a moment to write into the run directory being removed)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)


# -------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.status",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    latency = modes.add_parser("latency", help="wall time of lvsha status (target < 150 ms)")
    latency.add_argument("--runs", type=int, default=30, help="runs per command")
    crowd = modes.add_parser("load", help="clients calling status while VRRP runs at 0.02 s")
    crowd.add_argument("--duration", type=float, default=60.0, metavar="SECONDS")
    crowd.add_argument("--clients", type=int, default=200)
    crowd.add_argument("--both", action="store_true", help="half of the clients on b")
    crowd.add_argument(
        "--no-realtime",
        action="store_true",
        help="drop global.vrrp.realtime_priority from the lab configs",
    )
    crowd.add_argument("--keep-logs", action="store_true")
    worker = modes.add_parser("_hammer", help=argparse.SUPPRESS)
    worker.add_argument("socket")
    worker.add_argument("--threads", type=int, required=True)
    worker.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    if args.mode == "_hammer":
        print(hammer(args.socket, args.threads, args.duration).to_json())
        return 0
    if os.geteuid() != 0:
        print("bench.status needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.mode == "latency":
        return 0 if run_latency(args.runs) else 1
    holds = run_load(args.duration, args.clients, args.both, not args.no_realtime, args.keep_logs)
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
