"""min / median / max over repeated runs, the text table and the JSON form."""

from __future__ import annotations

import json

import pytest

from lvsha.drill.report import format_table, measures_for, report_json, spread, summarize
from lvsha.drill.scenarios import FailoverMeasures, Scenario, ScenarioResult


def kill_run(repetition: int, outage: float, lost: int, garp: float | None) -> ScenarioResult:
    measures = FailoverMeasures(0.35, 0.4, garp, outage, lost, recovered=True)
    return ScenarioResult(Scenario.KILL, repetition, "a", "b", measures)


RESULTS = [
    kill_run(1, 0.400, 40, 0.36),
    kill_run(2, 0.300, 30, None),
    kill_run(3, 0.500, 50, 0.38),
    ScenarioResult(Scenario.GRACEFUL_STOP, 1, "a", "b", None, "not within 2 s: b serving"),
    ScenarioResult(
        Scenario.GRACEFUL_STOP, 2, "a", "b", FailoverMeasures(0.01, 0.002, 0.012, 0.0, 0, True)
    ),
]


def test_spread_is_min_median_max() -> None:
    found = spread([3.0, 1.0, 10.0, 2.0])
    assert found is not None
    assert (found.minimum, found.median, found.maximum) == (1.0, 2.5, 10.0)
    assert spread([]) is None


def test_summary_per_scenario_skips_failed_runs_and_missing_values() -> None:
    kill, graceful = summarize(RESULTS)
    assert (kill.scenario, kill.runs, kill.failed) == (Scenario.KILL, 3, 0)
    outage = kill.spreads["outage_ms"]
    assert outage is not None
    assert (outage.minimum, outage.median, outage.maximum) == pytest.approx((300, 400, 500))
    garp = kill.spreads["fault_to_garp_ms"]
    assert garp is not None and (garp.minimum, garp.maximum) == pytest.approx((360, 380))
    assert (graceful.runs, graceful.failed) == (2, 1)
    lost = graceful.spreads["lost_probes"]
    assert lost is not None and lost.median == 0


def test_table_has_a_row_per_scenario_and_names_failures() -> None:
    table = format_table(RESULTS, "title")
    lines = table.splitlines()
    assert lines[0] == "title"
    assert "outage ms" in lines[1] and "lost probes" in lines[1]
    kill_row = next(line for line in lines if line.lstrip().startswith("kill"))
    assert "300.0 / 400.0 / 500.0" in kill_row
    assert "30 / 40 / 50" in kill_row
    assert "graceful-stop run 1 failed: not within 2 s: b serving" in table


def test_json_lists_every_run_and_the_summary() -> None:
    document = json.loads(json.dumps(report_json(RESULTS, {"advert_interval": 0.1})))
    assert document["settings"] == {"advert_interval": 0.1}
    assert len(document["runs"]) == 5
    first = document["runs"][0]
    assert first["outage_ms"] == pytest.approx(400)
    assert first["lost_probes"] == 40
    assert first["new_master"] == "b"
    assert document["runs"][3]["error"].startswith("not within")
    assert document["runs"][3]["outage_ms"] is None
    assert document["summary"]["kill"]["outage_ms"] == pytest.approx(
        {"min": 300, "median": 400, "max": 500}
    )
    assert document["summary"]["graceful-stop"]["failed"] == 1


def test_columns_follow_what_was_watched_and_how_many_vips() -> None:
    plain = [m.key for m in measures_for(watched=False)]
    assert "due_to_advert_ms" in plain and "due_to_garp_ms" in plain
    assert "due_to_vip_added_ms" not in plain and "advert_to_last_garp_ms" not in plain
    watched = [m.key for m in measures_for(watched=True)]
    assert watched[-2:] == ["due_to_vip_added_ms", "vip_added_to_garp_ms"]
    twenty = [m.key for m in measures_for(watched=True, vips=20)]
    assert twenty[-2:] == ["advert_to_last_garp_ms", "advert_to_last_vip_added_ms"]


def test_the_table_shows_the_timer_figures() -> None:
    measures = FailoverMeasures(
        0.35, 0.361, 0.352, 0.36, 36, True, 0.0002, due_to_advert=0.0015, due_to_garp=0.0021
    )
    table = format_table([ScenarioResult(Scenario.KILL, 1, "a", "b", measures)])
    heading, row = table.splitlines()
    assert "due>advert ms" in heading and "due>GARP ms" in heading
    assert " 1.5 " in row and " 2.1 " in row
