"""The status bench's figures, its reading of -X importtime and of status answers, its verdicts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.status import (
    STATUS_SCHEMA,
    Spread,
    Tally,
    latency_verdict,
    load_holds,
    parse_importtime,
    percentile,
    required_keys,
    spread_clients,
    status_problem,
    status_ready,
)


def test_percentile_is_the_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 31)]
    assert percentile(ordered, 90) == 27.0
    assert percentile(ordered, 99) == 30.0
    assert percentile(ordered, 0) == 1.0
    assert percentile([5.0], 90) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_spread_of_unsorted_samples() -> None:
    spread = Spread.of([0.05, 0.01, 0.03, 0.02, 0.04])
    assert spread == Spread(5, 0.03, 0.05, 0.05, 0.05)
    with pytest.raises(ValueError):
        Spread.of([])


def test_latency_verdict_judges_the_median_against_150_ms() -> None:
    line, holds = latency_verdict("lvsha status", Spread(30, 0.040, 0.160, 0.2, 0.3))
    assert holds
    assert "median   40.0 ms" in line
    assert "p90  160.0 ms" in line
    assert "max  300.0 ms" in line
    assert "target < 150 ms" in line
    assert line.endswith("HOLDS")
    line, holds = latency_verdict("lvsha status", Spread(30, 0.150, 0.150, 0.15, 0.15))
    assert not holds
    assert line.endswith("FAILS")


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:       800 |      12900 | site
import time:       400 |       6600 | lvsha.cli
import time:      2100 |       2300 |   typing
Traceback-looking noise | not | numbers
something else entirely
"""


def test_parse_importtime_sorts_by_cumulative_time() -> None:
    assert parse_importtime(IMPORTTIME, count=3) == [
        (12900, 800, "site"),
        (6600, 400, "lvsha.cli"),
        (2300, 2100, "typing"),
    ]
    assert parse_importtime("") == []


def status_answer(**changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ok": True,
        "generation": 1,
        "digest": "0" * 64,
        "file": "/etc/lvsha/lvsha.yaml",
        "version": "0.1.0",
        "host": "lab-a",
        "now": 1.0,
        "children": ["vrrp", "checker"],
        "vrrp": {"updated_at": 1.0, "instances": [{"name": "VI_1", "state": "MASTER"}]},
        "services": {
            "updated_at": 1.0,
            "error": None,
            "virtual_servers": [{"real_servers": [{"checks": [{"at": 1.0}, {"at": 2.0}]}]}],
        },
        "overrides": [],
        "handover": {},
        "bgp": None,
    }
    answer.update(changes)
    return answer


def test_required_keys_come_from_the_status_schema() -> None:
    required = required_keys(json.loads(Path(STATUS_SCHEMA).read_text(encoding="utf-8")))
    assert {"ok", "generation", "vrrp", "services"} <= set(required)
    assert status_problem(status_answer(), required) is None


def test_status_problem_names_what_is_wrong() -> None:
    required = ["ok", "generation", "vrrp"]
    assert status_problem([], required) == "not a JSON object"
    assert status_problem({"ok": False, "error": "busy"}, required) == "not ok: busy"
    answer = status_answer()
    del answer["generation"]
    assert status_problem(answer, required) == "missing generation"


def test_status_ready_waits_for_both_children_a_master_and_every_first_probe() -> None:
    assert status_ready(status_answer())
    assert status_ready(status_answer(vrrp=None, services=None))
    assert not status_ready(status_answer(ok=False))
    assert not status_ready(status_answer(vrrp={"updated_at": None, "instances": []}))
    assert not status_ready(
        status_answer(vrrp={"updated_at": 1.0, "instances": [{"state": "BACKUP"}]})
    )
    assert not status_ready(
        status_answer(services={"updated_at": None, "error": "starting", "virtual_servers": []})
    )
    unprobed = {"real_servers": [{"checks": [{"at": 1.0}, {"at": None}]}]}
    assert not status_ready(
        status_answer(services={"updated_at": 1.0, "error": None, "virtual_servers": [unprobed]})
    )


def test_tally_adds_up_and_crosses_a_pipe_as_json() -> None:
    one = Tally(2, [0.01, 0.03], Counter({"refused": 1}), Counter({3: 1}))
    other = Tally(1, [0.02], Counter({"refused": 2, "HTTP 503: busy": 1}), Counter({3: 1, 7: 2}))
    one.add(other)
    assert one.done == 3
    assert sorted(one.latencies) == [0.01, 0.02, 0.03]
    assert one.errors == Counter({"refused": 3, "HTTP 503: busy": 1})
    assert one.error_seconds == Counter({3: 2, 7: 2})
    assert Tally.from_json(one.to_json()) == one


def test_tally_summary() -> None:
    text = Tally(4, [0.01, 0.02, 0.03, 0.04], Counter({"x": 3}), Counter({1: 2, 0: 1})).summary(2)
    assert text.startswith(
        "4 requests answered in 2.0 s (2/s), 3 errors (in 2 of the run's seconds, the first at "
        "+0 s); latency median 25.0 ms"
    )
    assert "p99 40.0 ms" in text
    assert "max 40.0 ms" in text
    assert Tally().summary(1.0) == "0 requests answered in 1.0 s (0/s), 0 errors"


def test_spread_clients_deals_every_client_to_a_worker() -> None:
    assert spread_clients(200, 2) == [100, 100]
    assert spread_clients(7, 3) == [3, 2, 2]
    assert spread_clients(2, 8) == [1, 1]
    assert spread_clients(5, 0) == [5]


def test_load_holds_only_without_a_state_change_and_with_answers() -> None:
    assert load_holds({"a": [], "b": []}, 0, 100)
    assert not load_holds({"a": [], "b": ["BACKUP -> MASTER"]}, 0, 100)
    assert not load_holds({"a": [], "b": []}, 1, 100)
    assert not load_holds({"a": [], "b": []}, 0, 0)
