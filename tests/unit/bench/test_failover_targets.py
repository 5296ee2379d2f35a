"""The failover bench's figures, its side-by-side table and its verdicts on the targets."""

from __future__ import annotations

from ipaddress import IPv4Interface

import pytest

from bench.failover import (
    COLUMNS,
    FAST_INTERVAL,
    KEEPALIVED,
    LVSHA_RT_OFF,
    LVSHA_RT_ON,
    TWENTY_VIPS,
    Contender,
    ContenderRun,
    Setting,
    cell,
    figures_of,
    judge,
    judge_all_vips,
    ratio,
    side_by_side,
)
from lvsha.drill.main import DrillOptions
from lvsha.drill.scenarios import Election, FailoverMeasures, Scenario, ScenarioResult

FAST = Setting(FAST_INTERVAL, 3)
ELECTION = Election(42, IPv4Interface("192.0.2.100/24"), "eth0", FAST_INTERVAL)
PRIORITIES = {"a": 150, "b": 100}
MDI_B = ELECTION.master_down_interval(100)


def run(
    scenario: Scenario,
    takeover: float | None = None,
    *,
    lost: int = 0,
    garp: float | None = 0.0003,
    vip_added: float | None = 0.0004,
    all_garps: float | None = None,
    new: str = "b",
) -> ScenarioResult:
    old = "a" if new == "b" else "b"
    if takeover is None:
        takeover = MDI_B + 0.0003
    measures = FailoverMeasures(
        0.05,
        takeover,
        0.06,
        0.05,
        lost,
        True,
        garp,
        due_to_advert=0.0003,
        due_to_vip_added=vip_added,
        due_to_garp=None if vip_added is None or garp is None else vip_added + garp,
        advert_to_last_garp=all_garps,
    )
    return ScenarioResult(scenario, 1, old, new, measures)


def contender_run(contender: Contender, results: list[ScenarioResult]) -> ContenderRun:
    figures = [f for f in (figures_of(r, ELECTION, PRIORITIES) for r in results) if f]
    return ContenderRun(contender, results, figures, 1.0, "0.1", "0.1")


def keepalived_runs(lost: int = 36) -> ContenderRun:
    return contender_run(
        KEEPALIVED,
        [
            run(Scenario.KILL, lost=lost, vip_added=0.0003),
            run(Scenario.KILL, lost=lost, vip_added=0.0005),
            run(Scenario.GRACEFUL_STOP, lost=6, vip_added=0.0004),
        ],
    )


def good_lvsha(contender: Contender = LVSHA_RT_OFF, lost: int = 36) -> ContenderRun:
    return contender_run(
        contender,
        [
            run(Scenario.KILL, MDI_B + 0.002, lost=lost, vip_added=0.0006),
            run(Scenario.KILL, MDI_B + 0.004, lost=lost, vip_added=0.0008),
            run(Scenario.GRACEFUL_STOP, 0.015, vip_added=0.0007),
        ],
    )


def verdict(runs: list[ContenderRun], target: str, who: str = "lvsha rt off") -> bool | None:
    """Whether the one target of `who` whose text contains `target` holds."""
    found = [v for v in judge(FAST, runs) if target in v.target and v.target.startswith(who)]
    (only,) = found
    return only.holds


VIP_EXCESS = "within keepalived's + 0.5 ms"
GARP = "first GARP"
LOST = "lost probes (median)"
HARD = "Master_Down_Interval + 5 ms"
GRACEFUL = "graceful stop"
MEDIAN = "median under 100 ms"


def test_master_down_interval_is_the_new_masters() -> None:
    returns = figures_of(run(Scenario.MASTER_RETURNS, 0.002, new="a"), ELECTION, PRIORITIES)
    assert returns is not None
    assert returns.master_down_interval == pytest.approx(3 * 0.02 + 106 / 256 * 0.02)
    kill = figures_of(run(Scenario.KILL, MDI_B + 0.002), ELECTION, PRIORITIES)
    assert kill is not None and kill.excess == pytest.approx(0.002)


def test_every_target_holds_on_good_runs() -> None:
    runs = [good_lvsha(), good_lvsha(LVSHA_RT_ON), keepalived_runs()]
    for who in ("lvsha rt off", "lvsha rt on"):
        for target in (VIP_EXCESS, GARP, LOST, HARD, GRACEFUL, MEDIAN):
            assert verdict(runs, target, who) is True, (who, target)


def test_vip_added_later_than_keepalived_plus_half_a_millisecond_fails() -> None:
    # keepalived's kill median 0.4 ms: lvsha's 0.95 ms is over 0.9 ms.
    late = contender_run(
        LVSHA_RT_OFF,
        [
            run(Scenario.KILL, vip_added=0.0009),
            run(Scenario.KILL, vip_added=0.001),
            run(Scenario.GRACEFUL_STOP, vip_added=0.0004),
        ],
    )
    assert verdict([late, keepalived_runs()], VIP_EXCESS) is False
    (line,) = [v for v in judge(FAST, [late, keepalived_runs()]) if VIP_EXCESS in v.target]
    assert "kill 0.95 ms vs 0.40 ms" in line.evidence


def test_without_keepalived_the_comparisons_are_not_judged() -> None:
    runs = [good_lvsha()]
    assert verdict(runs, VIP_EXCESS) is None
    assert verdict(runs, LOST) is None
    assert verdict(runs, GARP) is True


def test_more_lost_probes_than_keepalived_fails() -> None:
    assert verdict([good_lvsha(lost=37), keepalived_runs(lost=36)], LOST) is False
    assert verdict([good_lvsha(lost=35), keepalived_runs(lost=36)], LOST) is True


def test_a_late_or_missing_garp_fails_its_target() -> None:
    late = good_lvsha()
    late.figures.append(figures_of(run(Scenario.KILL, garp=0.0011), ELECTION, PRIORITIES))  # type: ignore[arg-type]
    late.results.append(run(Scenario.KILL, garp=0.0011))
    assert verdict([late], GARP) is False
    missing = good_lvsha()
    missing.results.append(run(Scenario.KILL, garp=None))
    missing.figures.append(figures_of(run(Scenario.KILL, garp=None), ELECTION, PRIORITIES))  # type: ignore[arg-type]
    assert verdict([missing], GARP) is False


def test_a_failed_run_fails_the_targets_it_cannot_show() -> None:
    lvsha = good_lvsha()
    lvsha.results.append(ScenarioResult(Scenario.KILL, 2, "a", "b", None, "not within 2 s"))
    runs = [lvsha, keepalived_runs()]
    assert verdict(runs, HARD) is False and verdict(runs, GARP) is False
    assert verdict(runs, VIP_EXCESS) is False and verdict(runs, LOST) is False
    assert verdict(runs, GRACEFUL) is True


def test_the_fast_median_target_is_only_at_the_fast_setting() -> None:
    slow = contender_run(LVSHA_RT_OFF, [run(Scenario.KILL, 0.1), run(Scenario.KILL, 0.1)])
    assert verdict([slow], MEDIAN) is False
    assert not any(MEDIAN in v.target for v in judge(Setting(0.1, 3), [slow]))


def test_twenty_vips_within_three_milliseconds() -> None:
    def kills(contender: Contender, *seconds: float) -> ContenderRun:
        return contender_run(contender, [run(Scenario.KILL, all_garps=s) for s in seconds])

    reference = kills(KEEPALIVED, 0.0004, 0.0006)
    quick, slow = kills(LVSHA_RT_OFF, 0.002, 0.003, 0.004), kills(LVSHA_RT_ON, 0.2, 0.23)
    off, on = judge_all_vips([quick, slow, reference])
    assert off.holds and "median 3.00 ms, keepalived's 0.50 ms" in off.evidence
    assert on.holds is False
    assert TWENTY_VIPS.vips == 20


def test_cells_are_min_median_max_and_the_ratio_is_of_medians() -> None:
    figures = [
        f
        for f in (
            figures_of(run(Scenario.KILL, t), ELECTION, PRIORITIES) for t in (0.08, 0.07, 0.09)
        )
        if f
    ]
    takeover = next(c for c in COLUMNS if c.heading.startswith("old advert"))
    assert cell(figures, takeover) == "70.0 / 80.0 / 90.0"
    assert cell([], takeover) == "-"
    assert ratio(2.0, 0.5) == "4.0x"
    assert ratio(2.0, 0.0) == "-" and ratio(None, 1.0) == "-"


def test_the_table_puts_the_daemons_side_by_side() -> None:
    lines = side_by_side([good_lvsha(), keepalived_runs()], COLUMNS)
    assert lines[0] == "kill: runs lvsha rt off 2, keepalived 2"
    heading = lines[1]
    positions = [heading.index(h) for h in ("measure", "lvsha rt off ", " keepalived ")]
    assert positions == sorted(positions)
    assert heading.rstrip().endswith("lvsha rt off/keepalived")
    vip_row = next(line for line in lines if "due>VIP added" in line)
    # lvsha 0.60 / 0.70 / 0.80 against keepalived 0.30 / 0.40 / 0.50: medians 0.7 / 0.4.
    assert "0.60 / 0.70 / 0.80" in vip_row and vip_row.rstrip().endswith(f"{0.7 / 0.4:.1f}x")


def test_contenders_set_the_daemon_and_lvshas_realtime_priority() -> None:
    base = DrillOptions(advert_interval=1.0, vrrp_version=2)
    assert LVSHA_RT_OFF.options(base).realtime is False
    assert LVSHA_RT_ON.options(base).realtime is True
    assert KEEPALIVED.options(base).daemon == "keepalived"
    assert KEEPALIVED.options(base).advert_interval == 1.0
