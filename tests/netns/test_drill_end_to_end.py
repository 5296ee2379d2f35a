"""The whole drill against the stand-in director: every scenario converges and measures what
the stand-in's timers say it should, and the lab is gone afterwards."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import pytest

from lvsha.drill.main import DrillOptions, run_drill
from lvsha.drill.scenarios import Scenario
from tests.netns.drill_helpers import STANDIN_COMMAND, namespaces_with, processes_mentioning

pytestmark = pytest.mark.netns

INTERVAL = 0.1
MASTER_DOWN_B = 3 * INTERVAL + (256 - 100) * INTERVAL / 256
MASTER_DOWN_A = 3 * INTERVAL + (256 - 150) * INTERVAL / 256
SKEW_B = (256 - 100) * INTERVAL / 256
LATE = 0.1
"""Scheduling slack: two Python processes and the drill share a small machine."""


@pytest.fixture
def prefix() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    return f"lv{secrets.token_hex(3)}"


def test_every_scenario_against_the_standin(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    options = DrillOptions(director_command=STANDIN_COMMAND, json=True, lab_prefix=prefix)
    status = run_drill(options)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert namespaces_with(prefix) == []
    assert processes_mentioning(f"lvsha-drill-{prefix}") == []

    report = json.loads(out)
    runs: dict[str, dict[str, Any]] = {run["scenario"]: run for run in report["runs"]}
    assert list(runs) == ["kill", "link-cut", "graceful-stop", "master-returns"]
    assert all(run["error"] is None and run["recovered"] for run in runs.values())

    for name in ("kill", "link-cut"):
        run = runs[name]
        assert (run["old_master"], run["new_master"]) == ("a", "b")
        # b takes over Master_Down_Interval after the last advert it heard from a.
        assert (
            MASTER_DOWN_B - 0.02 <= run["last_advert_to_advert_ms"] / 1000 <= MASTER_DOWN_B + LATE
        )
        # The fault came up to one interval after that advert.
        assert (
            MASTER_DOWN_B - INTERVAL - 0.02
            <= run["fault_to_advert_ms"] / 1000
            <= MASTER_DOWN_B + LATE
        )
        assert (
            run["fault_to_advert_ms"] <= run["fault_to_garp_ms"] <= run["fault_to_advert_ms"] + 100
        )
        # Nothing answers from the fault until b's GARP: an outage of about that long.
        assert run["outage_ms"] >= run["fault_to_garp_ms"] - 30
        assert run["lost_probes"] >= run["outage_ms"] / 10 - 5

    graceful = runs["graceful-stop"]
    # The priority-0 advert makes b take over after its skew time, and a answers meanwhile.
    assert SKEW_B - 0.02 <= graceful["last_advert_to_advert_ms"] / 1000 <= SKEW_B + LATE
    assert graceful["fault_to_advert_ms"] / 1000 <= SKEW_B + LATE
    assert graceful["outage_ms"] <= 100

    returns = runs["master-returns"]
    assert (returns["old_master"], returns["new_master"]) == ("b", "a")
    # a starts as backup: process start-up plus its own Master_Down_Interval.
    assert returns["fault_to_advert_ms"] / 1000 >= MASTER_DOWN_A
    assert returns["fault_to_garp_ms"] >= returns["fault_to_advert_ms"]


def test_faults_timed_from_the_masters_advert(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the fault half an interval after an advert, a kill's takeover comes
    Master_Down_Interval minus that half interval after it, every time."""
    phase = INTERVAL / 2
    options = DrillOptions(
        director_command=STANDIN_COMMAND,
        json=True,
        lab_prefix=prefix,
        scenarios=(Scenario.KILL,),
        repetitions=2,
        fault_after_advert=phase,
    )
    status = run_drill(options)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert namespaces_with(prefix) == []
    for run in json.loads(out)["runs"]:
        assert MASTER_DOWN_B - phase - 0.01 <= run["fault_to_advert_ms"] / 1000
        assert run["fault_to_advert_ms"] / 1000 <= MASTER_DOWN_B - phase + LATE
        # The stand-in's adverts are timed by its own timer: it is due when it fires.
        assert run["due_to_advert_ms"] is not None and run["due_to_advert_ms"] < LATE * 1000
