"""The failover bench's figures and its verdicts on the targets."""

from __future__ import annotations

from ipaddress import IPv4Interface

import pytest

from bench.failover import COLUMNS, FAST_INTERVAL, Setting, cell, figures_of, judge
from lvsha.drill.scenarios import Election, FailoverMeasures, Scenario, ScenarioResult

FAST = Setting(FAST_INTERVAL, 3)
ELECTION = Election(42, IPv4Interface("192.0.2.100/24"), "eth0", FAST_INTERVAL)
PRIORITIES = {"a": 150, "b": 100}
MDI_B = ELECTION.master_down_interval(100)


def run(
    scenario: Scenario,
    takeover: float | None,
    *,
    lost: int = 0,
    garp: float | None = 0.0003,
    new: str = "b",
) -> ScenarioResult:
    old = "a" if new == "b" else "b"
    measures = FailoverMeasures(0.05, takeover, 0.06, 0.05, lost, True, garp)
    return ScenarioResult(scenario, 1, old, new, measures)


def holds(results: list[ScenarioResult], target: str) -> bool:
    """Whether the one target whose text contains `target` holds."""
    figures = [f for f in (figures_of(r, ELECTION, PRIORITIES) for r in results) if f]
    (verdict,) = [v for v in judge(FAST, results, figures) if target in v.target]
    return verdict.holds


def good_runs() -> list[ScenarioResult]:
    return [
        run(Scenario.KILL, MDI_B + 0.002),
        run(Scenario.KILL, MDI_B + 0.004),
        run(Scenario.GRACEFUL_STOP, 0.015),
        run(Scenario.MASTER_RETURNS, 0.002, new="a"),
    ]


def test_master_down_interval_is_the_new_masters() -> None:
    returns = figures_of(run(Scenario.MASTER_RETURNS, 0.002, new="a"), ELECTION, PRIORITIES)
    assert returns is not None
    assert returns.master_down_interval == pytest.approx(3 * 0.02 + 106 / 256 * 0.02)
    kill = figures_of(run(Scenario.KILL, MDI_B + 0.002), ELECTION, PRIORITIES)
    assert kill is not None and kill.excess == pytest.approx(0.002)


HARD = "Master_Down_Interval + 5 ms"
GRACEFUL = "graceful stop"
GARP = "first GARP"
MEDIAN = "median under 100 ms"


def test_every_target_holds_on_good_runs() -> None:
    runs = good_runs()
    assert all(holds(runs, target) for target in (HARD, GRACEFUL, GARP, MEDIAN))


def test_a_kill_over_the_allowance_fails_the_hard_failover_target() -> None:
    runs = [*good_runs(), run(Scenario.KILL, MDI_B + 0.0051)]
    assert not holds(runs, HARD)
    assert holds(runs, GRACEFUL) and holds(runs, MEDIAN)


def test_a_lost_probe_in_a_graceful_stop_fails_its_target() -> None:
    assert not holds([*good_runs(), run(Scenario.GRACEFUL_STOP, 0.015, lost=1)], GRACEFUL)


def test_a_late_or_missing_garp_fails_its_target() -> None:
    assert not holds([*good_runs(), run(Scenario.KILL, MDI_B, garp=0.0011)], GARP)
    assert not holds([*good_runs(), run(Scenario.KILL, MDI_B, garp=None)], GARP)


def test_a_failed_run_fails_the_targets_it_cannot_show() -> None:
    runs = [*good_runs(), ScenarioResult(Scenario.KILL, 2, "a", "b", None, "not within 2 s")]
    assert not holds(runs, HARD) and not holds(runs, GARP)
    assert holds(runs, GRACEFUL)


def test_the_fast_median_target_is_strict_and_only_at_the_fast_setting() -> None:
    slow = [run(Scenario.KILL, 0.1), run(Scenario.KILL, 0.1), run(Scenario.KILL, 0.07)]
    assert not holds(slow, MEDIAN)
    assert holds([run(Scenario.KILL, 0.0999)], MEDIAN)
    assert not any(MEDIAN in v.target for v in judge(Setting(0.1, 3), slow, []))


def test_cells_are_min_median_max_in_milliseconds() -> None:
    figures = [
        f
        for f in (
            figures_of(run(Scenario.KILL, t), ELECTION, PRIORITIES) for t in (0.08, 0.07, 0.09)
        )
        if f
    ]
    takeover = COLUMNS[0]
    assert cell(figures, takeover) == "70.0 / 80.0 / 90.0"
    assert cell([], takeover) == "-"
