"""Check pool throughput: thousands of TCP and HTTP checks at a 1 s interval, in a lab.

    .venv/bin/python -m bench.checks [--warmup 5] [--duration 30] [--only tcp-10000 ...]

Needs root (network namespaces). Builds a two-host lab: "targets" carries `ADDRESSES` addresses
and one `bench.check_servers` process listening on the ports, so `ADDRESSES` * ports targets;
"client" runs the checker. For each scenario it writes a config with one virtual server per port
and one real server per address, runs `bench.check_runner` in the client's namespace (the pool
in its own process, as lvsha runs it) pinned to one CPU, and prints what that process measured:
checks completed per second, CPU seconds per 1,000 checks (its rusage), the p50/p99/max lateness
of probe starts against their schedule (the pool's own figures) and its maximum RSS.

Both hosts are namespaces of this one machine, so by default the kernel would do the real
servers' half of every handshake on the checker's CPU too (a veth hands a packet to its peer on
the sending CPU). With two CPUs or more, receive packet steering puts the targets' receive work
on another CPU, as if they were other machines, and the client's on the checker's CPU, where a
director's own share of the handshakes stays. The header line says which applies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.check_runner import Figures
from lvsha.drill.lab import Host, Lab

REPO_ROOT = Path(__file__).resolve().parents[1]
ADDRESSES = 100
"""Target addresses on the targets host: 10.200.1.1 to 10.200.1.100."""
TCP_PORTS = range(20000, 20100)
HTTP_PORTS = range(30000, 30010)
INTERVAL = 1.0
TIMEOUT = 2.0
ON_SCHEDULE_P99 = 0.1
"""The target: 10,000 TCP checks at 1 s with p99 lateness under this, on one core."""


@dataclass(frozen=True, slots=True)
class Scenario:
    kind: str
    """The check type: "tcp" or "http"."""
    checks: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.checks}"

    def ports(self) -> range:
        ports = TCP_PORTS if self.kind == "tcp" else HTTP_PORTS
        needed = -(-self.checks // ADDRESSES)
        if needed > len(ports):
            raise ValueError(f"{self.name}: needs {needed} ports, the targets serve {len(ports)}")
        return ports[:needed]


SCENARIOS = (
    Scenario("tcp", 2000),
    Scenario("tcp", 5000),
    Scenario("tcp", 10000),
    Scenario("http", 1000),
)


def target_addresses(count: int = ADDRESSES) -> list[str]:
    return [f"10.200.{1 + index // 250}.{1 + index % 250}" for index in range(count)]


def check_config(
    kind: str, checks: int, addresses: Sequence[str], ports: Sequence[int], vip: str
) -> str:
    """YAML for `checks` checks of `kind`: a virtual server per port, a real server per address."""
    lines = [
        "global:",
        f"  check_defaults: {{interval: {INTERVAL}s, timeout: {TIMEOUT}s, retries: 1}}",
        "virtual_servers:",
    ]
    remaining = checks
    for port in ports:
        lines += [f"  - address: {vip}", f"    port: {port}", "    protocol: TCP"]
        lines.append("    real_servers:")
        for address in addresses[: min(remaining, len(addresses))]:
            lines.append(f"      - {{address: {address}, checks: [{{type: {kind}}}]}}")
        remaining -= min(remaining, len(addresses))
    if remaining:
        raise ValueError(f"{checks} checks need more than {len(ports)} x {len(addresses)} targets")
    return "\n".join(lines) + "\n"


def start_targets(host: Host, addresses: Sequence[str], workdir: Path) -> None:
    batch = workdir / "addresses.batch"
    batch.write_text("".join(f"address add {address}/16 dev eth0\n" for address in addresses))
    host.ip("-batch", str(batch))
    server = host.popen(
        sys.executable,
        "-m",
        "bench.check_servers",
        "--tcp-ports",
        f"{TCP_PORTS[0]}-{TCP_PORTS[-1]}",
        "--http-ports",
        f"{HTTP_PORTS[0]}-{HTTP_PORTS[-1]}",
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != b"ready":
        raise RuntimeError("the target server did not start")


def steer_receive(host: Host, cpu: int) -> None:
    """Process what `host`'s eth0 receives on `cpu` (receive packet steering)."""
    host.run("sh", "-c", f"echo {1 << cpu:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus")


def run_checker(host: Host, config: Path, warmup: float, duration: float, cpu: int) -> Figures:
    """Run `bench.check_runner` in `host` and return what it measured."""
    checker = host.popen(
        sys.executable,
        "-m",
        "bench.check_runner",
        str(config),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--cpu",
        str(cpu),
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    output, _ = checker.communicate(timeout=warmup + duration + 300)
    if checker.returncode != 0:
        raise RuntimeError(f"checker exited {checker.returncode}")
    figures: dict[str, object] = json.loads(output)
    return Figures(**figures)  # type: ignore[arg-type]


def on_schedule(scenario: Scenario, figures: Figures) -> bool:
    per_second = figures.completed / figures.seconds
    return (
        figures.lateness_p99 < ON_SCHEDULE_P99
        and per_second >= 0.99 * scenario.checks / INTERVAL
        and figures.unhealthy_at_end == 0
    )


HEADER = (
    f"{'scenario':<11} {'checks/s':>9} {'CPU s/1000':>10} {'CPU/core':>8} "
    f"{'late p50':>9} {'late p99':>9} {'late max':>9} {'RSS max':>9} {'unhealthy':>9} "
    f"{'throttled':>9} {'CPU wait':>8} {'retrans':>7}"
)


def retransmitted_segments(host: Host) -> int:
    """TCP segments `host`'s kernel has sent again (a lost SYN costs its check a second)."""
    out = host.run("nstat", "-asz", "TcpRetransSegs").stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("Tcp"))


def row(scenario: Scenario, figures: Figures, retransmitted: int) -> str:
    per_second = figures.completed / figures.seconds
    per_thousand = figures.cpu_seconds / figures.completed * 1000 if figures.completed else 0.0
    core = figures.cpu_seconds / figures.seconds
    window = "" if figures.lateness_within_period else "  (lateness window includes warm-up)"
    return (
        f"{scenario.name:<11} {per_second:>9.1f} {per_thousand:>10.3f} {core:>7.1%} "
        f"{figures.lateness_p50 * 1000:>7.2f}ms {figures.lateness_p99 * 1000:>7.2f}ms "
        f"{figures.lateness_max * 1000:>7.1f}ms {figures.rss_max_kib / 1024:>6.1f}MiB "
        f"{figures.unhealthy_at_end:>9} {figures.throttled:>9} "
        f"{figures.runqueue_wait_seconds / figures.seconds:>7.1%} {retransmitted:>8}{window}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument(
        "--only", nargs="*", choices=[s.name for s in SCENARIOS], help="run only these"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("bench.checks needs root for its network namespaces\n")
        return 2
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    cpus = os.sched_getaffinity(0)
    cpu = max(cpus)
    targets_cpu = min(cpus - {cpu}, default=None)
    addresses = target_addresses()
    steering = (
        f"the targets' receive work steered to CPU {targets_cpu}, the client's to CPU {cpu}"
        if targets_cpu is not None
        else "one CPU: the targets' kernel work shares the checker's CPU"
    )
    print(
        f"lvsha check pool: interval {INTERVAL:g} s, timeout {TIMEOUT:g} s, "
        f"{args.duration:g} s measured after {args.warmup:g} s of warm-up; "
        f"checker in its own process pinned to CPU {cpu}, targets in another namespace; "
        f"{steering}",
        flush=True,
    )
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    print(HEADER, flush=True)
    results: dict[Scenario, Figures] = {}
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="lvsha-bench-") as tmp:
        workdir = Path(tmp)
        client = lab.add_host("client", "10.200.0.1/16")
        targets = lab.add_host("targets", "10.200.0.2/16")
        if targets_cpu is not None:
            steer_receive(targets, targets_cpu)
            steer_receive(client, cpu)
        start_targets(targets, addresses, workdir)
        for scenario in scenarios:
            config = workdir / f"{scenario.name}.yaml"
            config.write_text(
                check_config(
                    scenario.kind, scenario.checks, addresses, scenario.ports(), "10.200.255.1"
                )
            )
            before = retransmitted_segments(client) + retransmitted_segments(targets)
            figures = run_checker(client, config, args.warmup, args.duration, cpu)
            after = retransmitted_segments(client) + retransmitted_segments(targets)
            results[scenario] = figures
            print(row(scenario, figures, after - before), flush=True)
    print(
        "checks/s: probes completed per second; CPU s/1000: checker CPU (user+sys) per 1,000 "
        "probes; CPU/core: share of its one core; late: probe start minus due time; "
        "throttled: starts that waited for a slot under the limit on probes in flight; "
        "CPU wait: share of the time the checker was runnable but its CPU ran something else; "
        "retrans: TCP segments the lab's two hosts sent again during the run (warm-up "
        "included): a lost SYN delays its check by a second, which lowers checks/s"
    )
    target = Scenario("tcp", 10000)
    if target in results:
        figures = results[target]
        verdict = "holds" if on_schedule(target, figures) else "does NOT hold"
        print(
            f"target: 10,000 TCP checks at 1 s on one core, on schedule (p99 lateness "
            f"< {ON_SCHEDULE_P99 * 1000:g} ms, >= 99% of checks/s, all healthy): {verdict} "
            f"(p99 {figures.lateness_p99 * 1000:.2f} ms, "
            f"{figures.completed / figures.seconds:.1f} checks/s, "
            f"{figures.cpu_seconds / figures.seconds:.1%} of the core)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
