"""The checker process of the check benchmarks: lvsha's check pool on a config, measured.

    python -m bench.check_runner CONFIG --warmup 5 --duration 30 [--cpu 1]

Loads CONFIG as lvsha does (`load_file` -> `check_plan` -> `CheckPool`), starts the pool, lets
it warm up, then measures it for `duration` seconds and prints one JSON object (`Figures`). It
runs wherever it is started (the benchmark starts it inside a namespace), optionally pinned to one
CPU, and exits on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from lvsha.checks.pool import CheckPool, raise_file_limit
from lvsha.checks.targets import check_plan
from lvsha.checks.verdict import Health, RealServerVerdict
from lvsha.config import load_file


@dataclass(frozen=True, slots=True)
class Figures:
    checks: int
    """Distinct checks the pool runs."""
    seconds: float
    """Length of the measured period."""
    completed: int
    """Probes that finished within the period."""
    cpu_seconds: float
    """User + system CPU of this process (every thread) within the period."""
    lateness_p50: float
    lateness_p99: float
    lateness_max: float
    """Over the period: the pool's lateness window holds only starts from within it."""
    lateness_starts: int
    """How many starts the lateness figures are over."""
    lateness_within_period: bool
    """False if the pool started fewer probes than its window: then some are from the warm-up."""
    throttled: int
    """Starts within the period that waited for a free slot (max in flight)."""
    runqueue_wait_seconds: float
    """Time its threads were runnable but waited for a CPU, within the period: other load."""
    rss_max_kib: int
    unhealthy_at_end: int
    """Real servers whose verdict was not healthy when the period ended."""
    verdict_changes: int
    """Verdicts published within the period: 0 when every target stayed healthy."""


def _runqueue_wait_seconds() -> float:
    """Summed over this process's threads (/proc/<pid>/task/*/schedstat, second field, ns)."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total / 1e9


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(config_path: str, warmup: float, duration: float) -> Figures:
    plan = check_plan(load_file(config_path))
    interval = min(target.params.interval for target in plan.targets)
    distinct = len({target.key for target in plan.targets})
    # Sized to what the period holds if the pool keeps its schedule, so that at the end the
    # window holds starts from within the period only (checked below: lateness_starts).
    window = max(1, int(distinct * (duration - interval) / interval))
    raise_file_limit()  # as lvsha's checker process does
    pool = CheckPool(plan, lateness_window=window)
    changes: list[RealServerVerdict] = []
    pool.subscribe(changes.append)
    loop = asyncio.get_running_loop()
    pool.start()
    # As lvsha's checker process does (lvsha.daemon.checker_process).
    gc.collect()
    gc.freeze()
    try:
        await asyncio.sleep(warmup)
        began_at, cpu_before = loop.time(), _cpu_seconds()
        waited_before = _runqueue_wait_seconds()
        starts_before, in_flight_before = pool.lateness.starts, pool.in_flight
        throttled_before = pool.lateness.throttled
        changes.clear()
        await asyncio.sleep(duration)
        ended_at, cpu_after = loop.time(), _cpu_seconds()
        waited_after = _runqueue_wait_seconds()
        starts_after, in_flight_after = pool.lateness.starts, pool.in_flight
        stats = pool.lateness
        starts = starts_after - starts_before
        figures = Figures(
            checks=distinct,
            seconds=ended_at - began_at,
            completed=(starts_after - in_flight_after) - (starts_before - in_flight_before),
            cpu_seconds=cpu_after - cpu_before,
            lateness_p50=stats.p50,
            lateness_p99=stats.p99,
            lateness_max=stats.max,
            lateness_starts=min(window, starts),
            lateness_within_period=starts >= window,
            throttled=stats.throttled - throttled_before,
            runqueue_wait_seconds=waited_after - waited_before,
            rss_max_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            unhealthy_at_end=sum(
                verdict.health is not Health.HEALTHY for verdict in pool.verdicts().values()
            ),
            verdict_changes=len(changes),
        )
    finally:
        await pool.close()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run and measure lvsha's check pool.")
    parser.add_argument("config")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    figures = asyncio.run(measure(args.config, args.warmup, args.duration))
    print(json.dumps(asdict(figures)), flush=True)


if __name__ == "__main__":
    main()
