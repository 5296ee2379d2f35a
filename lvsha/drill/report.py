"""The drill's report: one row per scenario, one column per measure, as text or JSON.

Over repeated runs each cell is min / median / max of the runs that converged; failed runs are
counted in their own column and listed with their reason.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lvsha.drill.scenarios import FailoverMeasures, Scenario, ScenarioResult


@dataclass(frozen=True, slots=True)
class Measure:
    key: str
    heading: str
    value: Callable[[FailoverMeasures], float | None]
    milliseconds: bool = True


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


MEASURES = (
    Measure("fault_to_advert_ms", "fault>advert ms", lambda m: _ms(m.fault_to_advert)),
    Measure(
        "last_advert_to_advert_ms",
        "old advert>new advert ms",
        lambda m: _ms(m.last_advert_to_advert),
    ),
    Measure("due_to_advert_ms", "due>advert ms", lambda m: _ms(m.due_to_advert)),
    Measure("fault_to_garp_ms", "fault>GARP ms", lambda m: _ms(m.fault_to_garp)),
    Measure("due_to_garp_ms", "due>GARP ms", lambda m: _ms(m.due_to_garp)),
    Measure("outage_ms", "outage ms", lambda m: _ms(m.outage)),
    Measure("lost_probes", "lost probes", lambda m: float(m.lost_probes), milliseconds=False),
)
"""`fault>advert`: the fault to the new master's first advert seen by the client.
`old advert>new advert`: the old master's last advert seen (a priority-0 one included) to it.
`due>`: from when the new master's timer was due (that last advert plus its
Master_Down_Interval, or its Skew_Time after a priority-0 advert) to its first advert, and to
the client's first GARP for the VIP: what the takeover took beyond the VRRP timers. A returning
master preempts, so no timer applies to it."""
DUE_TO_VIP_ADDED = Measure(
    "due_to_vip_added_ms", "due>VIP added ms", lambda m: _ms(m.due_to_vip_added)
)
"""The timer's due time to the new master's kernel adding the VIP; only when watched."""
VIP_TO_GARP = Measure(
    "vip_added_to_garp_ms", "VIP added>GARP ms", lambda m: _ms(m.vip_added_to_garp)
)
"""The new master's kernel adding the VIP to the client's first GARP; only when watched."""
ADVERT_TO_LAST_GARP = Measure(
    "advert_to_last_garp_ms", "advert>last GARP ms", lambda m: _ms(m.advert_to_last_garp)
)
"""The new master's first advert to the last of its VIPs' first GARPs; with several VIPs."""
ADVERT_TO_LAST_VIP_ADDED = Measure(
    "advert_to_last_vip_added_ms",
    "advert>last VIP added ms",
    lambda m: _ms(m.advert_to_last_vip_added),
)
"""The new master's first advert to its kernel holding every VIP; watched, several VIPs."""


def measures_for(*, watched: bool, vips: int = 1) -> tuple[Measure, ...]:
    """The columns of a drill: the VIP's address events only when watched, the measures over
    all VIPs only when the instance has more than one."""
    chosen = list(MEASURES)
    if watched:
        chosen += [DUE_TO_VIP_ADDED, VIP_TO_GARP]
    if vips > 1:
        chosen.append(ADVERT_TO_LAST_GARP)
        if watched:
            chosen.append(ADVERT_TO_LAST_VIP_ADDED)
    return tuple(chosen)


@dataclass(frozen=True, slots=True)
class Spread:
    minimum: float
    median: float
    maximum: float


def spread(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    return Spread(min(values), statistics.median(values), max(values))


@dataclass(frozen=True, slots=True)
class ScenarioSummary:
    scenario: Scenario
    runs: int
    failed: int
    spreads: dict[str, Spread | None]


def summarize(
    results: Sequence[ScenarioResult], measures: Sequence[Measure] = MEASURES
) -> list[ScenarioSummary]:
    """Per scenario, in first-run order: run counts and the spread of every measure."""
    order: list[Scenario] = []
    for result in results:
        if result.scenario not in order:
            order.append(result.scenario)
    summaries = []
    for scenario in order:
        runs = [result for result in results if result.scenario is scenario]
        measured = [result.measures for result in runs if result.measures is not None]
        spreads = {}
        for measure in measures:
            values = [measure.value(m) for m in measured]
            spreads[measure.key] = spread([value for value in values if value is not None])
        summaries.append(ScenarioSummary(scenario, len(runs), len(runs) - len(measured), spreads))
    return summaries


def _number(value: float, measure: Measure) -> str:
    return f"{value:.1f}" if measure.milliseconds else f"{value:.0f}"


def _cell(found: Spread | None, measure: Measure, runs: int) -> str:
    if found is None:
        return "-"
    if runs == 1 or found.minimum == found.maximum:
        return _number(found.median, measure)
    return " / ".join(_number(v, measure) for v in (found.minimum, found.median, found.maximum))


def format_table(
    results: Sequence[ScenarioResult], title: str = "", measures: Sequence[Measure] = MEASURES
) -> str:
    """A plain-text table; cells are min / median / max when a scenario ran more than once."""
    summaries = summarize(results, measures)
    headings = ["scenario", "runs", "failed", *(measure.heading for measure in measures)]
    rows = [
        [
            summary.scenario.value,
            str(summary.runs),
            str(summary.failed),
            *(_cell(summary.spreads[m.key], m, summary.runs) for m in measures),
        ]
        for summary in summaries
    ]
    widths = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings))]
    lines = [title] if title else []
    for row in [headings, *rows]:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    if any(summary.runs > 1 for summary in summaries):
        lines.append("cells: min / median / max over the runs that converged")
    for result in results:
        if result.error is not None:
            lines.append(f"{result.scenario.value} run {result.repetition} failed: {result.error}")
        elif result.measures is not None and not result.measures.recovered:
            lines.append(
                f"{result.scenario.value} run {result.repetition}: probes were still lost "
                "when the window closed"
            )
    return "\n".join(lines)


def run_record(result: ScenarioResult, measures: Sequence[Measure] = MEASURES) -> dict[str, Any]:
    record: dict[str, Any] = {
        "scenario": result.scenario.value,
        "repetition": result.repetition,
        "old_master": result.old_master,
        "new_master": result.new_master,
        "error": result.error,
    }
    for measure in measures:
        value = None if result.measures is None else measure.value(result.measures)
        if value is not None and not measure.milliseconds:
            record[measure.key] = int(value)
        else:
            record[measure.key] = value
    record["recovered"] = None if result.measures is None else result.measures.recovered
    return record


def report_json(
    results: Sequence[ScenarioResult],
    settings: dict[str, Any] | None = None,
    measures: Sequence[Measure] = MEASURES,
) -> dict[str, Any]:
    """`settings` (interval, version, ...) first, then every run, then the per-scenario summary."""
    summary = {
        item.scenario.value: {
            "runs": item.runs,
            "failed": item.failed,
            **{
                key: None
                if found is None
                else {"min": found.minimum, "median": found.median, "max": found.maximum}
                for key, found in item.spreads.items()
            },
        }
        for item in summarize(results, measures)
    }
    return {
        "settings": settings or {},
        "runs": [run_record(result, measures) for result in results],
        "summary": summary,
    }
