"""The process split at work: 5,000 TCP checks and VRRP at 0.1 s on one director.

    .venv/bin/python -m bench.split [--duration 300] [--checks 5000] [--cpu N]

Run as root. A lab of three hosts on one switch: directors "a" (priority 150) and "b" (100) run
`lvsha run --dry-run` with one VRRPv3 instance at a 0.1 s advert interval and one VIP; a's config
also has virtual servers whose real servers carry `--checks` TCP checks at a 1 s interval (one
virtual server per port, one real server per address). The real servers are `ADDRESSES`
addresses on the "targets" host, where one `bench.check_servers` process listens on the ports.
`--dry-run` keeps the IPVS table in memory (this kernel has no ip_vs); the checks and VRRP are
real. Every process the lab starts is pinned to one CPU (`--cpu`; -1: not pinned), so the checker
competes with VRRP for the same core and the bench never takes more than one.

lvsha cannot run the checks on the VRRP process's event loop, so there is no "together" variant
to compare against: instead this prints, side by side, the checker's lateness (how late probes
start) and the VRRP loop's lag, with the VRRP state changes seen on both directors after the
initial election (the target is none), the checks completed per second (connections the targets
accepted), each child's CPU (/proc/PID/stat utime + stime) with the time it was runnable but
waited for a CPU (/proc/PID/task/*/schedstat: other load), and the machine's load average.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.soak import EventListener, print_state_changes
from lvsha.config import ConfigError, load_file
from lvsha.drill.lab import Host, Lab, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
ADVERT_INTERVAL = 0.1
VRRP_VERSION = 3
VRID = 42
VIP = "192.0.2.100/24"
DIRECTORS = (("a", "192.0.2.11/24", 150), ("b", "192.0.2.12/24", 100))
MASTER = "a"
CHECKER_NET_ADDRESS = "10.200.0.11/16"
"""Director a's second address, on the targets' network."""
TARGETS_HOST_ADDRESS = "10.200.0.2/16"
ADDRESSES = 100
"""Real-server addresses on the targets host: 10.200.1.1 to 10.200.1.100."""
FIRST_PORT = 20000
CHECK_INTERVAL = 1.0
CHECK_TIMEOUT = 1.0
SETTLE = 2.0
"""Seconds without a state change that end the initial election."""
ELECTION_TIMEOUT = 30.0
HEALTHY_TIMEOUT = 60.0
"""Seconds the checker may take to bring every real server up before the run starts anyway."""
SAMPLE_EVERY = 5.0
"""Seconds between readings of the metrics files (the children rewrite them every 5 s)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def real_server_addresses(count: int = ADDRESSES) -> list[str]:
    return [f"10.200.{1 + index // 250}.{1 + index % 250}" for index in range(count)]


def ports_for(checks: int, addresses: int = ADDRESSES) -> range:
    return range(FIRST_PORT, FIRST_PORT + math.ceil(checks / addresses))


def vrrp_lines(priority: int) -> list[str]:
    return [
        "vrrp_instances:",
        "  VI:",
        "    interface: eth0",
        f"    virtual_router_id: {VRID}",
        f"    priority: {priority}",
        f"    version: {VRRP_VERSION}",
        f"    advert_interval: {ADVERT_INTERVAL}",
        f"    virtual_ipaddresses: ['{VIP}']",
        "    garp: {delay: 0}",
    ]


def director_config(priority: int, checks: int, addresses: Sequence[str]) -> str:
    """A director's YAML: the VRRP instance, and `checks` TCP checks when `checks` > 0."""
    lines = vrrp_lines(priority)
    if checks:
        vip = VIP.partition("/")[0]
        lines += [
            "global:",
            "  check_defaults: "
            f"{{interval: {CHECK_INTERVAL}s, timeout: {CHECK_TIMEOUT}s, retries: 1}}",
            "virtual_servers:",
        ]
        remaining = checks
        for port in ports_for(checks, len(addresses)):
            lines += [
                f"  - name: vs{port}",
                f"    address: {vip}",
                f"    port: {port}",
                "    protocol: TCP",
                "    real_servers:",
            ]
            for address in addresses[: min(remaining, len(addresses))]:
                lines.append(f"      - {{address: {address}, checks: [{{type: tcp}}]}}")
            remaining -= min(remaining, len(addresses))
    return "\n".join(lines) + "\n"


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}, the labels as the file writes them."""
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found[match["name"] + (match["labels"] or "")] = float(match["value"])
    return found


def read_metrics(path: Path) -> dict[str, float]:
    try:
        return parse_metrics(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def cpu_seconds(stat_line: str) -> float:
    """utime + stime of a /proc/PID/stat line, in seconds."""
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return cpu_seconds(handle.read())


def runqueue_wait(pid: int) -> float:
    """Seconds the process's threads were runnable but waited for a CPU (schedstat field 2)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/schedstat"
        with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as handle:
            total += int(handle.read().split()[1])
    return total / 1e9


def child_pids(parent: int) -> dict[str, int]:
    """The parent's children by role: {"vrrp": pid, "checker": pid} as far as they run."""
    with open(f"/proc/{parent}/task/{parent}/children", encoding="ascii") as handle:
        pids = [int(pid) for pid in handle.read().split()]
    found = {}
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        for role in ("vrrp", "checker"):
            if f"lvsha.daemon.{role}_process".encode() in argv:
                found[role] = pid
    return found


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


@dataclass
class Director:
    name: str
    host: Host
    config: Path
    run_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    listener: EventListener | None = None

    def metrics(self, process: str) -> dict[str, float]:
        return read_metrics(self.run_dir / f"metrics-{process}.prom")


@dataclass
class Series:
    """Values of one metric read every few seconds over the run."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    def describe(self, scale: float = 1000.0, unit: str = "ms") -> str:
        if not self.values:
            return "no readings"
        return (
            f"median {statistics.median(self.values) * scale:.2f} {unit}, "
            f"max {max(self.values) * scale:.2f} {unit} over {len(self.values)} readings"
        )


class Targets:
    """The `bench.check_servers` process: its count of accepted connections on demand."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self._stdout: IO[bytes] = process.stdout
        line = self._readline(30.0)
        if line != "ready":
            raise RuntimeError(f"the target server did not start (said {line!r})")

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        if not ready:
            raise RuntimeError("the target server did not answer")
        return self._stdout.readline().decode().strip()

    def accepted(self) -> int:
        self.process.send_signal(signal.SIGUSR1)
        line = self._readline(10.0)
        if not line.startswith("accepted "):
            raise RuntimeError(f"unexpected line from the target server: {line!r}")
        return int(line.split()[1])


def _say(message: str) -> None:
    print(f"split: {message}", file=sys.stderr, flush=True)


def _settled(directors: Sequence[Director], expected: Mapping[str, str]) -> bool:
    now = time.monotonic()
    for director in directors:
        assert director.listener is not None
        changes = director.listener.snapshot()
        if not changes or changes[-1].line.get("new") != expected[director.name]:
            return False
        if now - changes[-1].at < SETTLE:
            return False
    return True


HEALTHY = 'lvsha_real_servers{health="healthy"}'
CHECKER_LAG = 'lvsha_event_loop_lag_seconds{process="checker",quantile="%s"}'
VRRP_LAG = 'lvsha_event_loop_lag_seconds{process="vrrp",quantile="%s"}'
VRRP_LAG_MAX = 'lvsha_event_loop_lag_max_seconds{process="vrrp"}'
CHECKER_LAG_MAX = 'lvsha_event_loop_lag_max_seconds{process="checker"}'
LATENESS = 'lvsha_check_lateness_seconds{quantile="%s"}'


@dataclass(frozen=True, slots=True)
class Options:
    duration: float
    checks: int
    cpu: int | None
    warmup: float
    keep_logs: bool
    prefix: str


def _pinned(cpu: int | None, *command: str) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else list(command)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def split(options: Options) -> bool:
    """Run the benchmark and print its figures; True when no spurious transition was seen."""
    addresses = real_server_addresses()
    if options.checks > len(addresses) * 1000:
        raise ValueError(f"at most {len(addresses) * 1000} checks")
    work_dir = Path(tempfile.mkdtemp(prefix=f"lvsha-split-{options.prefix}-"))
    directors: list[Director] = []
    holds = False
    try:
        with Lab(options.prefix) as lab:
            targets_host = lab.add_host("targets", TARGETS_HOST_ADDRESS)
            batch = work_dir / "addresses.batch"
            batch.write_text("".join(f"address add {a}/16 dev eth0\n" for a in addresses))
            targets_host.ip("-batch", str(batch))
            ports = ports_for(options.checks)
            targets = Targets(
                targets_host.popen(
                    *_pinned(options.cpu, sys.executable, "-m", "bench.check_servers"),
                    *("--tcp-ports", f"{ports[0]}-{ports[-1]}"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    cwd=str(REPO_ROOT),
                )
            )
            for name, address, priority in DIRECTORS:
                extra = [CHECKER_NET_ADDRESS] if name == MASTER else []
                host = lab.add_host(name, address, *extra)
                checks = options.checks if name == MASTER else 0
                config = work_dir / f"director-{name}.yaml"
                config.write_text(director_config(priority, checks, addresses))
                load_file(str(config))  # fail here, with the file and line, not in a child
                directors.append(
                    Director(
                        name,
                        host,
                        config,
                        work_dir / f"run-{name}",
                        work_dir / f"{name}.log",
                    )
                )
            started = time.monotonic()
            try:
                holds = _run(options, directors, targets, lab, started)
            finally:
                _stop(directors)
            return holds
    finally:
        for director in directors:
            if director.listener is not None:
                director.listener.close()
        if options.keep_logs or not holds:
            print(f"  director logs and metrics: {work_dir}", flush=True)
        else:
            subprocess.run(["rm", "-rf", str(work_dir)], check=False)


def _run(
    options: Options, directors: list[Director], targets: Targets, lab: Lab, started: float
) -> bool:
    """Start the directors, wait for the election and the checks, then measure."""
    for director in directors:
        with director.log.open("wb") as log:
            director.process = director.host.popen(
                *_pinned(options.cpu, sys.executable, "-m", "lvsha", "run"),
                *(str(director.config), "--run-dir", str(director.run_dir), "--dry-run"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(REPO_ROOT),
                start_new_session=True,
            )
        director.listener = EventListener(director.run_dir / "events.sock")
        director.listener.connect(timeout=ELECTION_TIMEOUT)
    wait_until(
        lambda: _settled(directors, {"a": "MASTER", "b": "BACKUP"}),
        ELECTION_TIMEOUT,
        what="a MASTER and b BACKUP, unchanged for 2 s",
    )
    master = directors[0]
    try:
        wait_until(
            lambda: master.metrics("checker").get(HEALTHY) == options.checks,
            HEALTHY_TIMEOUT,
            interval=0.5,
            what=f"all {options.checks} real servers healthy",
        )
    except TimeoutError as exc:
        _say(f"{exc}; measuring anyway")
    time.sleep(options.warmup)
    return _measure(options, directors, targets, lab, started)


def _stop(directors: Sequence[Director]) -> None:
    """SIGTERM each director (a graceful release) and wait; then end, by its process group, any
    child the parent left behind (the lab alone would kill only the parent)."""
    for director in directors:
        if director.process is not None and director.process.poll() is None:
            director.process.send_signal(signal.SIGTERM)
    for director in directors:
        if director.process is None:
            continue
        try:
            director.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _say(f"director {director.name} did not stop within 30 s")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(director.process.pid, signal.SIGKILL)


def _measure(
    options: Options, directors: list[Director], targets: Targets, lab: Lab, started: float
) -> bool:
    master = directors[0]
    pids: dict[str, int] = {}
    for director in directors:
        assert director.process is not None
        for role, pid in child_pids(director.process.pid).items():
            pids[f"{director.name}/{role}"] = pid
    pids["targets"] = targets.process.pid
    max_at_start = {d.name: d.metrics("vrrp").get(VRRP_LAG_MAX) for d in directors}
    checker_max_at_start = master.metrics("checker").get(CHECKER_LAG_MAX)
    baseline = {d.name: len(d.listener.snapshot()) for d in directors if d.listener}
    election = {d.name: d.listener.snapshot() for d in directors if d.listener}
    load_before = loadavg()
    cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
    wait_before = {name: runqueue_wait(pid) for name, pid in pids.items()}
    accepted_before = targets.accepted()
    measure_from = time.monotonic()
    deadline = measure_from + options.duration
    lateness = {q: Series() for q in ("0.5", "0.99")}
    vrrp_p99 = {d.name: Series() for d in directors}
    checker_p99 = Series()
    unhealthy_readings = 0
    next_sample = measure_from + SAMPLE_EVERY
    next_note = measure_from + 60
    while (now := time.monotonic()) < deadline:
        for process in lab.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with status {process.returncode}")
        if now >= next_sample:
            checker = master.metrics("checker")
            for q, series in lateness.items():
                series.add(checker.get(LATENESS % q))
            checker_p99.add(checker.get(CHECKER_LAG % "0.99"))
            unhealthy_readings += checker.get(HEALTHY) != options.checks
            for director in directors:
                vrrp_p99[director.name].add(director.metrics("vrrp").get(VRRP_LAG % "0.99"))
            next_sample += SAMPLE_EVERY
        if now >= next_note:
            _say(f"{now - measure_from:.0f} s of {options.duration:.0f}, loadavg {loadavg()}")
            next_note += 60
        time.sleep(min(0.5, max(deadline - now, 0.0)))
    accepted_after = targets.accepted()
    cpu_after = {name: process_cpu(pid) for name, pid in pids.items()}
    wait_after = {name: runqueue_wait(pid) for name, pid in pids.items()}
    seconds = time.monotonic() - measure_from
    load_after = loadavg()
    spurious = {d.name: d.listener.snapshot()[baseline[d.name] :] for d in directors if d.listener}
    final_vrrp = {d.name: d.metrics("vrrp") for d in directors}
    final_checker = master.metrics("checker")

    print(
        f"== split: {options.checks} TCP checks at {CHECK_INTERVAL:g} s and VRRPv{VRRP_VERSION} "
        f"at {ADVERT_INTERVAL} s on director a (MASTER, priority 150); director b (BACKUP, "
        f"priority 100) runs VRRP only; {seconds:.0f} s measured; "
        + (
            f"every lab process pinned to CPU {options.cpu}"
            if options.cpu is not None
            else "lab processes not pinned"
        )
    )
    for name, changes in election.items():
        for change in changes:
            print(f"  initial election, {name}: {change.describe(started)}")
    print_state_changes(spurious, started, "VRRP state transitions")
    for director in directors:
        if director.listener is not None and director.listener.closed_reason is not None:
            print(
                f"  {director.name}'s event stream ended early: {director.listener.closed_reason}"
            )
    for director in directors:
        vrrp = final_vrrp[director.name]
        print(
            f"  VRRP event-loop lag, {director.name} (at the end; p50/p99 over the last 2,000 "
            f"ticks = 100 s, max since start): p50 {_ms(vrrp.get(VRRP_LAG % '0.5'))}, "
            f"p99 {_ms(vrrp.get(VRRP_LAG % '0.99'))}, max {_ms(vrrp.get(VRRP_LAG_MAX))}"
        )
        print(
            f"    its max when the measured period began: {_ms(max_at_start[director.name])}; "
            f"its p99 read every {SAMPLE_EVERY:g} s: {vrrp_p99[director.name].describe()}"
        )
    print(
        f"  checker lateness, a (at the end; over its last 10,000 probe starts = 2 s): "
        f"p50 {_ms(final_checker.get(LATENESS % '0.5'))}, "
        f"p99 {_ms(final_checker.get(LATENESS % '0.99'))}"
    )
    for q, series in lateness.items():
        print(f"    its p{float(q) * 100:g} read every {SAMPLE_EVERY:g} s: {series.describe()}")
    print(
        f"  checker event-loop lag, a (at the end): p50 "
        f"{_ms(final_checker.get(CHECKER_LAG % '0.5'))}, p99 "
        f"{_ms(final_checker.get(CHECKER_LAG % '0.99'))}, max "
        f"{_ms(final_checker.get(CHECKER_LAG_MAX))} (max when the measured period began: "
        f"{_ms(checker_max_at_start)}); p99 read every {SAMPLE_EVERY:g} s: "
        f"{checker_p99.describe()}"
    )
    accepted = accepted_after - accepted_before
    healthy = final_checker.get(HEALTHY)
    print(
        f"  checks done: {accepted} connections accepted by the targets in {seconds:.1f} s = "
        f"{accepted / seconds:.1f} checks/s (configured: {options.checks / CHECK_INTERVAL:g}/s); "
        f"healthy real servers at the end: {'-' if healthy is None else f'{healthy:.0f}'} of "
        f"{options.checks}; readings with any unhealthy: {unhealthy_readings}"
    )
    for name, pid in pids.items():
        used = cpu_after[name] - cpu_before[name]
        waited = wait_after[name] - wait_before[name]
        print(
            f"  CPU {name} (pid {pid}): {used:.1f} s = {used / seconds:.1%} of one core; "
            f"runnable but waiting for a CPU: {waited:.1f} s = {waited / seconds:.1%} of the time"
        )
    print(f"  load average (1/5/15 min): before {load_before}, at the end {load_after}")
    holds = not any(spurious.values()) and all(
        d.listener is not None and d.listener.closed_reason is None for d in directors
    )
    print(f"  {'HOLDS' if holds else 'FAILS'}  zero VRRP state changes after the initial election")
    return holds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.split", description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument(
        "--cpu",
        type=int,
        default=max(os.sched_getaffinity(0)),
        help="pin every lab process to this CPU (default: the last one); -1: do not pin",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long after every real server is up before measuring",
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.split needs root (network namespaces)", file=sys.stderr)
        return 2
    options = Options(
        args.duration,
        args.checks,
        None if args.cpu < 0 else args.cpu,
        args.warmup,
        args.keep_logs,
        f"sp{os.getpid() % 10000}",
    )
    try:
        return 0 if split(options) else 1
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
