"""Before a fault the backup must be listening, not merely started: a backup whose VRRP engine
starts late would count its start-up as failover time."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys

import pytest

from lvsha.drill.main import DrillOptions, run_drill
from lvsha.drill.scenarios import Scenario
from tests.netns.drill_helpers import STANDIN_COMMAND, namespaces_with

pytestmark = pytest.mark.netns

INTERVAL = 0.1
MASTER_DOWN_B = 3 * INTERVAL + (256 - 100) * INTERVAL / 256
LATE = 0.15
"""Scheduling slack on a small shared machine; far below the backup's start-up delay."""
BACKUP_START_DELAY = 3.0
# lvsha run, but director b's process sleeps first: running, yet not in BACKUP for a while.
SLOW_BACKUP_COMMAND = (
    "sh", "-c", f'case "$0" in *director-b*) sleep {BACKUP_START_DELAY};; esac; exec "$@"',
    "{config}", sys.executable, "-m", "lvsha", "run", "{config}", "--run-dir", "{run_dir}",
)  # fmt: skip


@pytest.fixture
def prefix() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    return f"lv{secrets.token_hex(3)}"


def test_a_kill_waits_for_a_slow_backup_to_report_backup(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    options = DrillOptions(
        director_command=SLOW_BACKUP_COMMAND,
        event_stream=True,
        scenarios=(Scenario.KILL,),
        json=True,
        lab_prefix=prefix,
    )
    status = run_drill(options)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert namespaces_with(prefix) == []
    (run,) = json.loads(out)["runs"]
    assert (run["old_master"], run["new_master"]) == ("a", "b")
    # b took over a Master_Down_Interval after a's last advert, not after its own start-up.
    assert MASTER_DOWN_B - 0.02 <= run["last_advert_to_advert_ms"] / 1000 <= MASTER_DOWN_B + LATE


def test_a_director_that_never_reports_its_state_fails_the_scenario(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The stand-in writes no event stream: asked to follow one, the drill cannot see BACKUP.
    options = DrillOptions(
        director_command=STANDIN_COMMAND,
        event_stream=True,
        scenarios=(Scenario.KILL,),
        lab_prefix=prefix,
        start_timeout=1.0,
    )
    assert run_drill(options) == 1
    out, err = capsys.readouterr()
    assert "kill run 1 failed: not within" in out
    assert "b reporting state BACKUP" in out
    assert namespaces_with(prefix) == []
    kept = err.split("director logs are in ")[1].split()[0]
    shutil.rmtree(kept)
