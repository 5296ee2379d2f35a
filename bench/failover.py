"""Failover figures: the drill's four scenarios, repeated, at three advert intervals.

Run as root: `.venv/bin/python -m bench.failover`. For every setting and scenario it prints
min / median / max of the old master's last advert to the new master's first advert, that
director's Master_Down_Interval (computed) and the excess over it, the VIP being added on the
new master (its kernel's netlink address event) to the client's first gratuitous ARP, the probe
outage and the lost probes; then the targets and whether each holds. Figures are printed as
measured. The machine's load average is printed before and after each setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lvsha.drill.main import DrillAbortedError, DrillOptions, DrillRun, drill
from lvsha.drill.scenarios import Election, FailoverMeasures, Scenario, ScenarioResult

REPETITIONS = 5
HARD_FAILOVER_ALLOWANCE = 0.005
"""Seconds a hard failover may take beyond Master_Down_Interval (from the last advert)."""
GARP_AFTER_VIP = 0.001
FAST_INTERVAL = 0.02
FAST_HARD_FAILOVER_MEDIAN = 0.1
MEASURE_SWITCH_INTERVAL = 0.0005
"""Seconds: the GIL hand-over interval while measuring, so that a watcher thread waking on a
frame or an address event is not kept waiting 5 ms (Python's default) by another thread."""


@dataclass(frozen=True, slots=True)
class Setting:
    advert_interval: float
    version: int

    def describe(self) -> str:
        return f"advert interval {self.advert_interval} s VRRPv{self.version}"


SETTINGS = (Setting(1.0, 2), Setting(0.1, 3), Setting(FAST_INTERVAL, 3))


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One converged run, in seconds (lost probes a count); None where not seen."""

    scenario: Scenario
    last_advert_to_advert: float | None
    master_down_interval: float
    vip_added_to_garp: float | None
    outage: float
    lost_probes: int

    @property
    def excess(self) -> float | None:
        if self.last_advert_to_advert is None:
            return None
        return self.last_advert_to_advert - self.master_down_interval


def figures_of(
    result: ScenarioResult, election: Election, priorities: dict[str, int]
) -> RunFigures | None:
    """The figures of a converged run; Master_Down_Interval is the new master's (RFC 5798 6.1)."""
    measures: FailoverMeasures | None = result.measures
    if measures is None:
        return None
    return RunFigures(
        result.scenario,
        measures.last_advert_to_advert,
        election.master_down_interval(priorities[result.new_master]),
        measures.vip_added_to_garp,
        measures.outage,
        measures.lost_probes,
    )


@dataclass(frozen=True, slots=True)
class Column:
    heading: str
    value: Callable[[RunFigures], float | None]
    scale: float = 1000.0
    decimals: int = 1


COLUMNS = (
    Column("old advert>new advert ms", lambda f: f.last_advert_to_advert),
    Column("MDI ms", lambda f: f.master_down_interval),
    Column("excess ms", lambda f: f.excess),
    Column("VIP added>GARP ms", lambda f: f.vip_added_to_garp, decimals=2),
    Column("outage ms", lambda f: f.outage),
    Column("lost probes", lambda f: float(f.lost_probes), scale=1.0, decimals=0),
)


def cell(runs: Sequence[RunFigures], column: Column) -> str:
    values = [v * column.scale for v in map(column.value, runs) if v is not None]
    if not values:
        return "-"
    figures = (min(values), statistics.median(values), max(values))
    return " / ".join(f"{v:.{column.decimals}f}" for v in figures)


def table(results: Sequence[ScenarioResult], figures: Sequence[RunFigures]) -> list[str]:
    headings = ["scenario", "runs", "failed", *(c.heading for c in COLUMNS)]
    rows = [headings]
    for scenario in Scenario:
        runs = [r for r in results if r.scenario is scenario]
        if not runs:
            continue
        measured = [f for f in figures if f.scenario is scenario]
        rows.append(
            [
                scenario.value,
                str(len(runs)),
                str(len(runs) - len(measured)),
                *(cell(measured, column) for column in COLUMNS),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(headings))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    holds: bool
    evidence: str

    def line(self) -> str:
        return f"  {'HOLDS' if self.holds else 'FAILS'}  {self.target}: {self.evidence}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _missing(runs: int, measured: int) -> str:
    return "" if runs == measured else f"; {runs - measured} run(s) without this figure"


def judge(
    setting: Setting, results: Sequence[ScenarioResult], figures: Sequence[RunFigures]
) -> list[Verdict]:
    """The targets for one setting; a run that failed or lacks a figure fails its target."""
    verdicts = []
    kill_runs = sum(r.scenario is Scenario.KILL for r in results)
    kills = [f for f in figures if f.scenario is Scenario.KILL]
    excesses = [e for e in (f.excess for f in kills) if e is not None]
    over = [e for e in excesses if e > HARD_FAILOVER_ALLOWANCE]
    verdicts.append(
        Verdict(
            "hard failover (kill) within Master_Down_Interval + 5 ms of the last advert",
            kill_runs > 0 and len(excesses) == kill_runs and not over,
            f"{len(excesses) - len(over)}/{kill_runs} runs within"
            + (f", excess max {_ms(max(excesses))}" if excesses else "")
            + _missing(kill_runs, len(excesses)),
        )
    )
    graceful_runs = sum(r.scenario is Scenario.GRACEFUL_STOP for r in results)
    graceful = [f for f in figures if f.scenario is Scenario.GRACEFUL_STOP]
    losing = [f.lost_probes for f in graceful if f.lost_probes]
    verdicts.append(
        Verdict(
            "graceful stop with 0 lost probes",
            graceful_runs > 0 and len(graceful) == graceful_runs and not losing,
            f"{len(graceful) - len(losing)}/{graceful_runs} runs lost none"
            + (f", lost {losing}" if losing else "")
            + _missing(graceful_runs, len(graceful)),
        )
    )
    gaps = [g for g in (f.vip_added_to_garp for f in figures) if g is not None]
    late = [g for g in gaps if g > GARP_AFTER_VIP]
    verdicts.append(
        Verdict(
            "first GARP within 1 ms of the VIP being added (all scenarios)",
            bool(results) and len(gaps) == len(results) and not late,
            f"{len(gaps) - len(late)}/{len(results)} runs within"
            + (f", max {max(gaps) * 1000:.2f} ms" if gaps else "")
            + _missing(len(results), len(gaps)),
        )
    )
    if setting.advert_interval == FAST_INTERVAL:
        takeovers = [f.last_advert_to_advert for f in kills if f.last_advert_to_advert is not None]
        median = statistics.median(takeovers) if takeovers else None
        verdicts.append(
            Verdict(
                "hard failover (kill) median under 100 ms",
                median is not None and median < FAST_HARD_FAILOVER_MEDIAN,
                "no kill run measured" if median is None else f"median {_ms(median)}",
            )
        )
    return verdicts


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def report_setting(
    setting: Setting, repetitions: int, run: DrillRun, before: str, after: str
) -> list[str]:
    priorities = {d.name: d.priority for d in run.setup.directors}
    figures = [
        f
        for f in (figures_of(r, run.setup.election, priorities) for r in run.results)
        if f is not None
    ]
    lines = [
        f"== {setting.describe()}: {repetitions} runs per scenario, {run.seconds:.0f} s; "
        f"loadavg before {before}, after {after}",
        "   (MDI: Master_Down_Interval of the director taking over, priorities "
        + ", ".join(f"{d.name} {d.priority}" for d in run.setup.directors)
        + "; cells min / median / max)",
        *table(run.results, figures),
    ]
    for result in run.results:
        if result.error is not None:
            lines.append(f"{result.scenario.value} run {result.repetition} failed: {result.error}")
    lines.append("targets:")
    lines.extend(verdict.line() for verdict in judge(setting, run.results, figures))
    if run.logs is not None:
        lines.append(f"director logs: {run.logs}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--repetitions", type=int, default=REPETITIONS, metavar="N")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the directors' logs of every setting"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.failover needs root (network namespaces)", file=sys.stderr)
        return 2
    sys.setswitchinterval(MEASURE_SWITCH_INTERVAL)
    started, first_load = time.monotonic(), loadavg()
    print(
        f"failover bench: {args.repetitions} runs of each scenario per setting; "
        f"{os.cpu_count()} CPUs; loadavg at start {first_load}",
        flush=True,
    )
    status = 0
    for setting in SETTINGS:
        options = DrillOptions(
            advert_interval=setting.advert_interval,
            vrrp_version=setting.version,
            repetitions=args.repetitions,
            keep_logs=args.keep_logs,
            watch_vip=True,
        )
        before = loadavg()
        try:
            run = drill(options)
        except DrillAbortedError as aborted:
            print(f"== {setting.describe()}: the drill stopped (exit status {aborted.status})")
            return aborted.status
        print(
            "\n".join(["", *report_setting(setting, args.repetitions, run, before, loadavg())]),
            flush=True,
        )
        if any(r.error for r in run.results):
            status = 1
    print(f"\nbench took {time.monotonic() - started:.0f} s; loadavg at end {loadavg()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
