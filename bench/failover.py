"""Failover figures as the client sees them, lvsha beside keepalived, at three advert intervals.

Run as root: `.venv/bin/python -m bench.failover`. For every setting (1 s VRRPv2, 0.1 s and
0.02 s VRRPv3) it runs the drill's kill and graceful-stop scenarios in the namespace lab three
times: lvsha with its VRRP real-time priority off (its default configuration), lvsha with it on
(SCHED_FIFO 50, as the lab configs have it), and keepalived 2.2.7 with the same election, VIP and
gratuitous ARPs (its own defaults otherwise: no real-time priority). Then one instance with 20
VIPs at 0.1 s, kill only. The same faults hit each; times are the client's (kernel receive
stamps) and the new master's kernel address events (stamped by a real-time watcher).

"due" is when the new master's timer was due: the old master's last advert seen at the client
plus the new master's Master_Down_Interval, or its Skew_Time after a priority-0 advert (RFC 5798
6.4.2). Each table has one row per measure, min / median / max per daemon, and the ratio of
lvsha's median to keepalived's. The targets follow, each HOLDS or FAILS with its figures.
Figures are printed as measured; the machine's load average before and after each drill.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from lvsha.drill.main import DrillAbortedError, DrillOptions, DrillRun, drill
from lvsha.drill.scenarios import Election, FailoverMeasures, Scenario, ScenarioResult

REPETITIONS = 5
SCENARIOS = (Scenario.KILL, Scenario.GRACEFUL_STOP)
"""The faults keepalived takes part in as lvsha does; link-cut on request (--scenario)."""
TIMED_SCENARIOS = (Scenario.KILL, Scenario.LINK_CUT, Scenario.GRACEFUL_STOP)
"""Takeovers that the new master's timer decides (a returning master preempts)."""
HARD_FAILOVER_ALLOWANCE = 0.005
"""Seconds a hard failover may take beyond Master_Down_Interval (from the last advert)."""
GARP_AFTER_VIP = 0.001
VIP_EXCESS_OVER_KEEPALIVED = 0.0005
"""Seconds lvsha's median due>VIP added may exceed keepalived's."""
ALL_VIPS_ANNOUNCED = 0.003
"""Seconds from the new master's first advert to the last of 20 VIPs' first GARP."""
FAST_INTERVAL = 0.02
FAST_HARD_FAILOVER_MEDIAN = 0.1
TWENTY = 20
FAULT_PHASE = 0.5
"""Each fault comes this fraction of an advert interval after an advert of the master reaches
the client, for every daemon alike: where a fault falls in the interval moves a kill's outage
by up to one interval (100 lost probes at 1 s), which would swamp the daemons' difference."""
MEASURE_SWITCH_INTERVAL = 0.0005
"""Seconds: the GIL hand-over interval while measuring, so that a watcher thread waking on a
frame or an address event is not kept waiting 5 ms (Python's default) by another thread."""


@dataclass(frozen=True, slots=True)
class Setting:
    advert_interval: float
    version: int
    vips: int = 1

    def describe(self) -> str:
        text = f"advert interval {self.advert_interval:g} s VRRPv{self.version}"
        return text + (f", {self.vips} VIPs" if self.vips > 1 else "")

    @property
    def key(self) -> str:
        return f"{self.advert_interval:g}s-v{self.version}"


SETTINGS = (Setting(1.0, 2), Setting(0.1, 3), Setting(FAST_INTERVAL, 3))
TWENTY_VIPS = Setting(0.1, 3, TWENTY)


@dataclass(frozen=True, slots=True)
class Contender:
    """One daemon in one configuration; each runs the same drill in a lab of its own."""

    key: str
    heading: str
    daemon: str
    realtime: bool | None = None

    @property
    def is_lvsha(self) -> bool:
        return self.daemon == "lvsha"

    def options(self, base: DrillOptions) -> DrillOptions:
        if self.daemon == "keepalived":
            return replace(base, daemon="keepalived")
        return replace(base, daemon="lvsha", realtime=self.realtime)


LVSHA_RT_OFF = Contender("lvsha-rt-off", "lvsha rt off", "lvsha", realtime=False)
LVSHA_RT_ON = Contender("lvsha-rt-on", "lvsha rt on", "lvsha", realtime=True)
KEEPALIVED = Contender("keepalived", "keepalived", "keepalived")
CONTENDERS = (LVSHA_RT_OFF, LVSHA_RT_ON, KEEPALIVED)


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One converged run, in seconds (lost probes a count); None where not seen."""

    scenario: Scenario
    last_advert_to_advert: float | None
    master_down_interval: float
    vip_added_to_garp: float | None
    outage: float
    lost_probes: int
    due_to_advert: float | None = None
    due_to_vip_added: float | None = None
    due_to_garp: float | None = None
    advert_to_last_garp: float | None = None
    advert_to_last_vip_added: float | None = None

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
        measures.due_to_advert,
        measures.due_to_vip_added,
        measures.due_to_garp,
        measures.advert_to_last_garp,
        measures.advert_to_last_vip_added,
    )


@dataclass(frozen=True, slots=True)
class Column:
    heading: str
    value: Callable[[RunFigures], float | None]
    scale: float = 1000.0
    decimals: int = 1


COLUMNS = (
    Column("due>advert ms", lambda f: f.due_to_advert, decimals=2),
    Column("due>VIP added ms", lambda f: f.due_to_vip_added, decimals=2),
    Column("due>GARP ms", lambda f: f.due_to_garp, decimals=2),
    Column("VIP added>GARP ms", lambda f: f.vip_added_to_garp, decimals=2),
    Column("old advert>new advert ms", lambda f: f.last_advert_to_advert),
    Column("outage ms", lambda f: f.outage),
    Column("lost probes", lambda f: float(f.lost_probes), scale=1.0, decimals=0),
)
ALL_VIPS_COLUMNS = (
    Column("advert>last GARP ms", lambda f: f.advert_to_last_garp, decimals=2),
    Column("advert>last VIP added ms", lambda f: f.advert_to_last_vip_added, decimals=2),
)


def values(runs: Sequence[RunFigures], column: Column) -> list[float]:
    return [v * column.scale for v in map(column.value, runs) if v is not None]


def median_of(runs: Sequence[RunFigures], column: Column) -> float | None:
    found = values(runs, column)
    return statistics.median(found) if found else None


def cell(runs: Sequence[RunFigures], column: Column) -> str:
    found = values(runs, column)
    if not found:
        return "-"
    figures = (min(found), statistics.median(found), max(found))
    return " / ".join(f"{v:.{column.decimals}f}" for v in figures)


def ratio(lvsha: float | None, keepalived: float | None) -> str:
    """lvsha's median over keepalived's; "-" where either is missing or keepalived's is not
    above zero (a ratio to nothing says nothing)."""
    if lvsha is None or keepalived is None or keepalived <= 0:
        return "-"
    return f"{lvsha / keepalived:.1f}x"


@dataclass
class ContenderRun:
    """What one contender's drill returned at one setting."""

    contender: Contender
    results: list[ScenarioResult]
    figures: list[RunFigures]
    seconds: float
    load_before: str
    load_after: str
    logs: str | None = None

    def runs_of(self, scenario: Scenario) -> list[ScenarioResult]:
        return [r for r in self.results if r.scenario is scenario]

    def figures_of(self, scenario: Scenario) -> list[RunFigures]:
        return [f for f in self.figures if f.scenario is scenario]


def from_drill(
    contender: Contender, run: DrillRun, load_before: str, load_after: str
) -> ContenderRun:
    priorities = {d.name: d.priority for d in run.setup.directors}
    figures = [
        f
        for f in (figures_of(r, run.setup.election, priorities) for r in run.results)
        if f is not None
    ]
    logs = None if run.logs is None else str(run.logs)
    return ContenderRun(contender, run.results, figures, run.seconds, load_before, load_after, logs)


def side_by_side(runs: Sequence[ContenderRun], columns: Sequence[Column]) -> list[str]:
    """Per scenario, one row per measure: min / median / max per contender, then the ratio of
    each lvsha contender's median to keepalived's."""
    keepalived = next((r for r in runs if r.contender is KEEPALIVED), None)
    compared = [r for r in runs if r.contender.is_lvsha] if keepalived else []
    headings = [
        "measure",
        *(r.contender.heading for r in runs),
        *(f"{r.contender.heading}/keepalived" for r in compared),
    ]
    lines: list[str] = []
    scenarios = [s for s in Scenario if any(r.runs_of(s) for r in runs)]
    for scenario in scenarios:
        counts = ", ".join(
            f"{r.contender.heading} {len(r.runs_of(scenario))}"
            + (
                f" ({len(r.runs_of(scenario)) - len(r.figures_of(scenario))} failed)"
                if len(r.runs_of(scenario)) != len(r.figures_of(scenario))
                else ""
            )
            for r in runs
        )
        rows = [headings]
        for column in columns:
            row = [column.heading, *(cell(r.figures_of(scenario), column) for r in runs)]
            if keepalived is not None:
                theirs = median_of(keepalived.figures_of(scenario), column)
                row += [ratio(median_of(r.figures_of(scenario), column), theirs) for r in compared]
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(headings))]
        lines.append(f"{scenario.value}: runs {counts}")
        lines += [
            "  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        ]
    return lines


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    holds: bool | None
    """None: not judged (what it compares with was not run)."""
    evidence: str

    def line(self) -> str:
        word = {True: "HOLDS", False: "FAILS", None: "  n/a"}[self.holds]
        return f"  {word}  {self.target}: {self.evidence}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _ms2(milliseconds: float | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds:.2f} ms"


def _missing(runs: int, measured: int) -> str:
    return "" if runs == measured else f"; {runs - measured} run(s) without this figure"


DUE_TO_VIP_ADDED = COLUMNS[1]
LOST = COLUMNS[-1]
ADVERT_TO_LAST_GARP = ALL_VIPS_COLUMNS[0]


def judge_vip_excess(lvsha: ContenderRun, keepalived: ContenderRun | None) -> Verdict:
    """Per timed scenario: lvsha's median due>VIP added within keepalived's + 0.5 ms."""
    target = (
        f"{lvsha.contender.heading}: VIP added, median from the timer's due time, within "
        "keepalived's + 0.5 ms"
    )
    if keepalived is None:
        return Verdict(target, None, "keepalived not run")
    parts, holds = [], True
    for scenario in TIMED_SCENARIOS:
        runs = lvsha.runs_of(scenario)
        if not runs:
            continue
        ours = median_of(lvsha.figures_of(scenario), DUE_TO_VIP_ADDED)
        theirs = median_of(keepalived.figures_of(scenario), DUE_TO_VIP_ADDED)
        measured = len(values(lvsha.figures_of(scenario), DUE_TO_VIP_ADDED))
        within = (
            ours is not None
            and theirs is not None
            and measured == len(runs)
            and ours <= theirs + VIP_EXCESS_OVER_KEEPALIVED * 1000
        )
        holds = holds and within
        parts.append(
            f"{scenario.value} {_ms2(ours)} vs {_ms2(theirs)}" + _missing(len(runs), measured)
        )
    return Verdict(target, holds and bool(parts), "; ".join(parts) or "no timed scenario run")


def judge_garp_after_vip(run: ContenderRun) -> Verdict:
    """Every run: the client's first GARP within 1 ms of the new master's kernel adding the VIP."""
    gaps = [g for g in (f.vip_added_to_garp for f in run.figures) if g is not None]
    late = [g for g in gaps if g > GARP_AFTER_VIP]
    return Verdict(
        f"{run.contender.heading}: first GARP at the client within 1 ms of the VIP added "
        "(every run)",
        bool(run.results) and len(gaps) == len(run.results) and not late,
        f"{len(gaps) - len(late)}/{len(run.results)} runs within"
        + (f", max {max(gaps) * 1000:.2f} ms" if gaps else "")
        + _missing(len(run.results), len(gaps)),
    )


def judge_lost_probes(lvsha: ContenderRun, keepalived: ContenderRun | None) -> Verdict:
    """Per scenario: lvsha's median of lost probes not above keepalived's."""
    target = f"{lvsha.contender.heading}: lost probes (median) not more than keepalived's"
    if keepalived is None:
        return Verdict(target, None, "keepalived not run")
    parts, holds = [], True
    for scenario in Scenario:
        runs = lvsha.runs_of(scenario)
        if not runs:
            continue
        ours_all = [f.lost_probes for f in lvsha.figures_of(scenario)]
        theirs_all = [f.lost_probes for f in keepalived.figures_of(scenario)]
        ours = median_of(lvsha.figures_of(scenario), LOST)
        theirs = median_of(keepalived.figures_of(scenario), LOST)
        within = (
            ours is not None
            and theirs is not None
            and len(ours_all) == len(runs)
            and ours <= theirs
        )
        holds = holds and within
        parts.append(f"{scenario.value} {ours_all} vs {theirs_all}")
    return Verdict(target, holds and bool(parts), "; ".join(parts) or "no scenario run")


def judge_lvsha_alone(setting: Setting, run: ContenderRun) -> list[Verdict]:
    """lvsha's own targets from issue 9: from advert to advert, graceful stop without loss."""
    verdicts = []
    name = run.contender.heading
    kill_runs = len(run.runs_of(Scenario.KILL))
    kills = run.figures_of(Scenario.KILL)
    excesses = [e for e in (f.excess for f in kills) if e is not None]
    over = [e for e in excesses if e > HARD_FAILOVER_ALLOWANCE]
    if kill_runs:
        verdicts.append(
            Verdict(
                f"{name}: hard failover (kill) within Master_Down_Interval + 5 ms of the last "
                "advert",
                len(excesses) == kill_runs and not over,
                f"{len(excesses) - len(over)}/{kill_runs} runs within"
                + (f", excess max {_ms(max(excesses))}" if excesses else "")
                + _missing(kill_runs, len(excesses)),
            )
        )
    graceful_runs = len(run.runs_of(Scenario.GRACEFUL_STOP))
    graceful = run.figures_of(Scenario.GRACEFUL_STOP)
    losing = [f.lost_probes for f in graceful if f.lost_probes]
    if graceful_runs:
        verdicts.append(
            Verdict(
                f"{name}: graceful stop with 0 lost probes",
                len(graceful) == graceful_runs and not losing,
                f"{len(graceful) - len(losing)}/{graceful_runs} runs lost none"
                + (f", lost {losing}" if losing else "")
                + _missing(graceful_runs, len(graceful)),
            )
        )
    if setting.advert_interval == FAST_INTERVAL and kill_runs:
        takeovers = [f.last_advert_to_advert for f in kills if f.last_advert_to_advert is not None]
        median = statistics.median(takeovers) if takeovers else None
        verdicts.append(
            Verdict(
                f"{name}: hard failover (kill) median under 100 ms",
                median is not None and median < FAST_HARD_FAILOVER_MEDIAN,
                "no kill run measured" if median is None else f"median {_ms(median)}",
            )
        )
    return verdicts


def judge(setting: Setting, runs: Sequence[ContenderRun]) -> list[Verdict]:
    """The targets of one setting, for each lvsha contender; a failed run or a missing figure
    fails the target it cannot show."""
    keepalived = next((r for r in runs if r.contender is KEEPALIVED), None)
    verdicts = []
    for run in runs:
        if not run.contender.is_lvsha:
            continue
        verdicts.append(judge_vip_excess(run, keepalived))
        verdicts.append(judge_garp_after_vip(run))
        verdicts.append(judge_lost_probes(run, keepalived))
        verdicts.extend(judge_lvsha_alone(setting, run))
    if keepalived is not None:
        # Not a target: the reference's own GARP gap, to read lvsha's against.
        gaps = [
            g * 1000 for g in (f.vip_added_to_garp for f in keepalived.figures) if g is not None
        ]
        if gaps:
            verdicts.append(
                Verdict(
                    "keepalived (reference): VIP added>GARP",
                    None,
                    f"max {max(gaps):.2f} ms over {len(gaps)} runs",
                )
            )
    return verdicts


def judge_all_vips(runs: Sequence[ContenderRun]) -> list[Verdict]:
    """The 20-VIP instance: from the first advert to the last VIP's first GARP, median within
    3 ms, shown against keepalived's."""
    keepalived = next((r for r in runs if r.contender is KEEPALIVED), None)
    theirs = None if keepalived is None else median_of(keepalived.figures, ADVERT_TO_LAST_GARP)
    verdicts = []
    for run in runs:
        if not run.contender.is_lvsha:
            continue
        found = values(run.figures, ADVERT_TO_LAST_GARP)
        ours = statistics.median(found) if found else None
        verdicts.append(
            Verdict(
                f"{run.contender.heading}: {TWENTY} VIPs announced (first advert to the last "
                "VIP's first GARP at the client), median within 3 ms",
                ours is not None
                and len(found) == len(run.results)
                and ours <= ALL_VIPS_ANNOUNCED * 1000,
                f"median {_ms2(ours)}, keepalived's {_ms2(theirs)}"
                + _missing(len(run.results), len(found)),
            )
        )
    return verdicts


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def report_setting(
    setting: Setting, repetitions: int, runs: Sequence[ContenderRun], lab: str
) -> list[str]:
    lines = [f"== {setting.describe()}: {repetitions} runs per scenario and daemon; {lab}"]
    for run in runs:
        lines.append(
            f"   {run.contender.heading}: {run.seconds:.0f} s, loadavg before {run.load_before}, "
            f"after {run.load_after}"
        )
    lines.append("   (cells min / median / max; ratio: lvsha's median / keepalived's)")
    columns = ALL_VIPS_COLUMNS + COLUMNS if setting.vips > 1 else COLUMNS
    lines += side_by_side(runs, columns)
    for run in runs:
        for result in run.results:
            if result.error is not None:
                lines.append(
                    f"{run.contender.heading}: {result.scenario.value} run {result.repetition} "
                    f"failed: {result.error}"
                )
    lines.append("targets:")
    verdicts = judge_all_vips(runs) if setting.vips > 1 else judge(setting, runs)
    lines.extend(verdict.line() for verdict in verdicts)
    for run in runs:
        if run.logs is not None:
            lines.append(f"{run.contender.heading} director logs: {run.logs}")
    return lines


def lab_description(run: DrillRun) -> str:
    priorities = ", ".join(f"{d.name} {d.priority}" for d in run.setup.directors)
    mdi = ", ".join(
        f"{d.name} {run.setup.election.master_down_interval(d.priority) * 1000:.1f} ms"
        for d in run.setup.directors
    )
    return f"priorities {priorities}; Master_Down_Interval {mdi}"


@dataclass
class BenchPlan:
    settings: tuple[Setting, ...] = SETTINGS
    contenders: tuple[Contender, ...] = CONTENDERS
    scenarios: tuple[Scenario, ...] = SCENARIOS
    repetitions: int = REPETITIONS
    twenty_vips: bool = True
    keep_logs: bool = False
    failed: list[str] = field(default_factory=list)


class BenchAbortedError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def run_setting(plan: BenchPlan, setting: Setting) -> list[str]:
    scenarios = (Scenario.KILL,) if setting.vips > 1 else plan.scenarios
    base = DrillOptions(
        advert_interval=setting.advert_interval,
        vrrp_version=setting.version,
        repetitions=plan.repetitions,
        scenarios=scenarios,
        keep_logs=plan.keep_logs,
        watch_vip=True,
        vips=setting.vips if setting.vips > 1 else None,
        fault_after_advert=setting.advert_interval * FAULT_PHASE,
    )
    runs: list[ContenderRun] = []
    lab = ""
    for contender in plan.contenders:
        before = loadavg()
        try:
            drilled = drill(contender.options(base))
        except DrillAbortedError as aborted:
            print(f"== {setting.describe()}, {contender.heading}: the drill stopped "
                  f"(exit status {aborted.status})", flush=True)  # fmt: skip
            raise BenchAbortedError(aborted.status) from None
        lab = lab_description(drilled)
        runs.append(from_drill(contender, drilled, before, loadavg()))
        if any(r.error for r in drilled.results):
            plan.failed.append(f"{setting.describe()}, {contender.heading}")
    return report_setting(setting, plan.repetitions, runs, lab)


def _setting(text: str) -> Setting:
    for setting in SETTINGS:
        if text == setting.key:
            return setting
    interval, _, version = text.partition("s-v")
    try:
        return Setting(float(interval), int(version))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write a setting as <seconds>s-v<version>, e.g. 0.1s-v3"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repetitions", type=int, default=REPETITIONS, metavar="N")
    parser.add_argument(
        "--settings",
        type=_setting,
        nargs="+",
        metavar="SETTING",
        help="e.g. 1s-v2 0.1s-v3 0.02s-v3 (default: those three)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[c.key for c in CONTENDERS] + ["lvsha"],
        help="run only this daemon (lvsha: both real-time settings); repeat for more",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.value for s in Scenario],
        help="run this scenario; repeat for more (default: kill, graceful-stop)",
    )
    parser.add_argument(
        "--twenty-vips",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also run the {TWENTY}-VIP instance at 0.1 s, kill only (default: yes)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the directors' logs of every drill"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.failover needs root (network namespaces)", file=sys.stderr)
        return 2
    contenders: tuple[Contender, ...] = CONTENDERS
    if args.only:
        wanted = set(args.only)
        if "lvsha" in wanted:
            wanted |= {LVSHA_RT_OFF.key, LVSHA_RT_ON.key}
        contenders = tuple(c for c in CONTENDERS if c.key in wanted)
    plan = BenchPlan(
        settings=tuple(args.settings or SETTINGS),
        contenders=contenders,
        scenarios=tuple(Scenario(s) for s in args.scenario) if args.scenario else SCENARIOS,
        repetitions=args.repetitions,
        twenty_vips=args.twenty_vips,
        keep_logs=args.keep_logs,
    )
    sys.setswitchinterval(MEASURE_SWITCH_INTERVAL)
    started = time.monotonic()
    print(
        f"failover bench: {plan.repetitions} runs of {', '.join(s.value for s in plan.scenarios)} "
        f"per setting and daemon ({', '.join(c.heading for c in plan.contenders)}); "
        f"{os.cpu_count()} CPUs; loadavg at start {loadavg()}",
        flush=True,
    )
    settings = plan.settings + ((TWENTY_VIPS,) if plan.twenty_vips else ())
    try:
        for setting in settings:
            print("\n".join(["", *run_setting(plan, setting)]), flush=True)
    except BenchAbortedError as aborted:
        return aborted.status
    print(f"\nbench took {time.monotonic() - started:.0f} s; loadavg at end {loadavg()}")
    if plan.failed:
        print("drills with failed runs: " + "; ".join(plan.failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
