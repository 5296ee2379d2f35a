from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsha.checks.result import ProbeResult
from lvsha.checks.state import (
    CheckEvent,
    CheckParams,
    CheckState,
    CheckStatus,
    CheckTransitionError,
    Disabled,
    Down,
    Enabled,
    Presumption,
    Up,
    WeightChanged,
    in_service,
    initial_health,
    presumed_status,
    real_server_status,
)

PASS = ProbeResult(True, "tcp connect ok", 0.0)
REFUSED = ProbeResult(False, "tcp connect refused", 0.0)
TIMEOUT = ProbeResult(False, "tcp connect timeout after 3.0 s", 3.0)


def params(**overrides: object) -> CheckParams:
    base = CheckParams(interval=10.0, timeout=3.0, retries=0, delay_before_retry=1.0)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


class Clock:
    """Hand-stepped time; each probe is fed at the moment the check asked for it."""

    def __init__(self, check: CheckState):
        self.check = check

    def probe(self, result: ProbeResult) -> list[CheckEvent]:
        return self.check.probe_completed(result, self.check.next_probe_at + result.latency)

    def rounds(self, result: ProbeResult, count: int) -> list[CheckEvent]:
        events: list[CheckEvent] = []
        for _ in range(count):
            events += self.probe(result)
        return events


def test_without_alpha_starts_unknown_in_service_and_first_pass_is_up() -> None:
    check = CheckState(params(), now=100.0)
    assert check.status is CheckStatus.UNKNOWN
    assert in_service(check.status)
    assert check.next_probe_at == 100.0
    assert check.probe_completed(PASS, 100.0) == [Up("tcp connect ok", 100.0)]
    assert (check.status, check.next_probe_at) == (CheckStatus.UP, 110.0)


def test_the_last_probe_result_is_kept_with_its_time_retries_included() -> None:
    check = CheckState(params(retries=1), now=0.0)
    assert (check.last_result, check.last_result_at) == (None, None)
    check.probe_completed(PASS, 0.5)
    assert (check.last_result, check.last_result_at) == (PASS, 0.5)
    check.probe_completed(TIMEOUT, 13.0)  # a failed attempt, retried: the round is not over
    assert (check.last_result, check.last_result_at) == (TIMEOUT, 13.0)


def test_without_alpha_first_failed_round_is_down_without_fall_grace() -> None:
    check = CheckState(params(fall=3), now=0.0)
    assert check.probe_completed(REFUSED, 0.0) == [Down("tcp connect refused", 0.0)]
    assert check.status is CheckStatus.DOWN


def test_alpha_starts_down_and_needs_rise_passes() -> None:
    check = CheckState(params(alpha=True, rise=3), now=0.0)
    clock = Clock(check)
    assert check.status is CheckStatus.DOWN
    assert not in_service(check.status)
    assert clock.rounds(PASS, 2) == []
    assert check.status is CheckStatus.DOWN
    assert clock.probe(PASS) == [Up("tcp connect ok", 20.0)]


def test_rise_counts_consecutive_passes_only() -> None:
    check = CheckState(params(alpha=True, rise=2), now=0.0)
    clock = Clock(check)
    clock.probe(PASS)
    clock.probe(REFUSED)
    assert clock.probe(PASS) == []
    assert check.status is CheckStatus.DOWN
    assert clock.probe(PASS) == [Up("tcp connect ok", 30.0)]


def test_rise_one_brings_a_flapping_server_back_at_once_like_keepalived() -> None:
    check = CheckState(params(), now=0.0)
    clock = Clock(check)
    clock.probe(PASS)
    assert clock.probe(REFUSED) == [Down("tcp connect refused", 10.0)]
    assert clock.probe(PASS) == [Up("tcp connect ok", 20.0)]


def test_fall_needs_consecutive_failed_rounds() -> None:
    check = CheckState(params(fall=3), now=0.0)
    clock = Clock(check)
    clock.probe(PASS)
    assert clock.rounds(REFUSED, 2) == []
    clock.probe(PASS)
    assert clock.rounds(REFUSED, 2) == []
    assert check.status is CheckStatus.UP
    assert check.consecutive_failures == 2
    assert clock.probe(TIMEOUT) == [Down("tcp connect timeout after 3.0 s", 63.0)]


def test_retry_asks_for_an_early_attempt_and_a_pass_saves_the_round() -> None:
    check = CheckState(params(retries=2, delay_before_retry=1.5), now=0.0)
    check.probe_completed(PASS, 0.0)
    assert check.probe_completed(REFUSED, 10.0) == []
    assert check.failed_attempts == 1
    assert check.next_probe_at == 11.5
    assert check.probe_completed(REFUSED, 11.5) == []
    assert check.next_probe_at == 13.0
    assert check.probe_completed(PASS, 13.0) == []
    assert check.status is CheckStatus.UP
    assert check.failed_attempts == 0
    assert check.consecutive_failures == 0
    assert check.next_probe_at == 23.0


def test_round_fails_only_when_every_attempt_failed() -> None:
    check = CheckState(params(retries=2, delay_before_retry=1.0), now=0.0)
    check.probe_completed(PASS, 0.0)
    assert check.probe_completed(REFUSED, 10.0) == []
    assert check.probe_completed(REFUSED, 11.0) == []
    assert check.probe_completed(TIMEOUT, 15.0) == [Down("tcp connect timeout after 3.0 s", 15.0)]
    # The next round is an interval after the start of the attempt that ended this one.
    assert check.next_probe_at == 22.0


def test_a_down_check_is_not_retried() -> None:
    check = CheckState(params(retries=3, alpha=True, rise=2), now=0.0)
    check.probe_completed(PASS, 0.0)
    assert check.probe_completed(REFUSED, 10.0) == []
    assert check.failed_attempts == 0
    assert check.consecutive_passes == 0
    assert check.next_probe_at == 20.0


def test_next_probe_is_never_in_the_past_after_a_slow_probe() -> None:
    check = CheckState(params(interval=1.0), now=0.0)
    check.probe_completed(ProbeResult(True, "slow", 3.0), 5.0)
    assert check.next_probe_at == 5.0


def test_a_late_start_does_not_push_the_schedule_when_the_due_time_is_known() -> None:
    check = CheckState(params(interval=1.0), now=0.0)
    # Due at 0.0, started 30 ms late, took 1 ms: the next is due at 1.0, not 1.03.
    check.probe_completed(ProbeResult(True, "ok", 0.001), 0.031, due=0.0)
    assert check.next_probe_at == 1.0
    # Without the due time, the start is what the latency implies.
    check.probe_completed(ProbeResult(True, "ok", 0.001), 1.031)
    assert check.next_probe_at == pytest.approx(2.03)


def test_first_probe_time_can_be_staggered() -> None:
    check = CheckState(params(), now=0.0, first_probe_at=4.2)
    assert check.next_probe_at == 4.2


def test_dynamic_weight_emits_weight_changed_only_on_change() -> None:
    check = CheckState(params(), now=0.0)
    weight5 = ProbeResult(True, "script exit status 7, weight 5", 0.0, weight=5)
    assert check.probe_completed(weight5, 0.0) == [
        WeightChanged(5, "script exit status 7, weight 5", 0.0),
        Up("script exit status 7, weight 5", 0.0),
    ]
    assert check.probe_completed(weight5, 10.0) == []
    # Exit 0 keeps the last weight, as keepalived's misc_dynamic does.
    assert check.probe_completed(ProbeResult(True, "script exit status 0", 0.0), 20.0) == []
    assert check.weight == 5
    weight0 = ProbeResult(True, "script exit status 2, weight 0", 0.0, weight=0)
    assert check.probe_completed(weight0, 30.0) == [
        WeightChanged(0, "script exit status 2, weight 0", 30.0)
    ]
    assert check.probe_completed(REFUSED, 40.0) == [Down("tcp connect refused", 40.0)]
    assert check.weight == 0


def test_maintenance_reports_disabled_whatever_the_probes_say() -> None:
    check = CheckState(params(), now=0.0)
    check.probe_completed(PASS, 0.0)
    assert check.disable("operator drain", 5.0) == [Disabled("operator drain", 5.0)]
    assert check.status is CheckStatus.DISABLED
    assert not in_service(check.status)
    assert check.probe_completed(REFUSED, 10.0) == []
    assert check.probe_completed(ProbeResult(True, "w", 0.0, weight=9), 20.0) == []
    assert check.probe_completed(REFUSED, 30.0) == []
    assert check.status is CheckStatus.DISABLED
    assert check.health is CheckStatus.DOWN
    assert check.enable("operator undrain", 35.0) == [
        Enabled(CheckStatus.DOWN, 9, "operator undrain", 35.0)
    ]
    assert (check.status, check.weight) == (CheckStatus.DOWN, 9)
    assert check.probe_completed(PASS, 40.0) == [Up("tcp connect ok", 40.0)]


def test_enable_before_any_round_returns_to_unknown() -> None:
    check = CheckState(params(), now=0.0)
    check.disable("drain", 0.0)
    assert check.enable("undrain", 1.0) == [Enabled(CheckStatus.UNKNOWN, None, "undrain", 1.0)]


def test_inputs_a_status_cannot_take_raise() -> None:
    check = CheckState(params(), now=0.0)
    with pytest.raises(CheckTransitionError):
        check.enable("not drained", 0.0)
    check.disable("drain", 0.0)
    with pytest.raises(CheckTransitionError):
        check.disable("again", 1.0)


def test_time_going_backwards_raises() -> None:
    check = CheckState(params(), now=10.0)
    with pytest.raises(ValueError, match="backwards"):
        check.probe_completed(PASS, 9.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"interval": 0.0},
        {"timeout": -1.0},
        {"retries": -1},
        {"delay_before_retry": -0.1},
        {"rise": 0},
        {"fall": 0},
    ],
)
def test_params_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        params(**bad)


def test_real_server_status_precedence() -> None:
    up, down, unknown, disabled = (
        CheckStatus.UP,
        CheckStatus.DOWN,
        CheckStatus.UNKNOWN,
        CheckStatus.DISABLED,
    )
    assert real_server_status([]) is up
    assert real_server_status([up, up]) is up
    assert real_server_status([up, unknown]) is unknown
    assert real_server_status([unknown, down, up]) is down
    assert real_server_status([down, disabled]) is disabled
    assert in_service(real_server_status([up, unknown]))
    assert not in_service(real_server_status([up, down]))
    assert not in_service(real_server_status([up, disabled]))


# Property test: random results, timings and maintenance windows.

step = st.one_of(
    st.tuples(
        st.just("probe"),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 5)),
        st.floats(0.0, 4.0),
    ),
    st.tuples(st.just("toggle"), st.just(False), st.none(), st.floats(0.0, 4.0)),
)


@settings(max_examples=300, deadline=None)
@given(
    retries=st.integers(0, 3),
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    alpha=st.booleans(),
    steps=st.lists(step, max_size=80),
)
def test_invariants_over_random_results(
    retries: int,
    rise: int,
    fall: int,
    alpha: bool,
    steps: list[tuple[str, bool, int | None, float]],
) -> None:
    p = params(retries=retries, rise=rise, fall=fall, alpha=alpha)
    check = CheckState(p, now=0.0)
    reported = check.status
    last_weight: int | None = None
    passes_in_a_row = 0
    failures_in_a_row = 0
    now = 0.0
    for kind, ok, weight, latency in steps:
        if kind == "toggle":
            now += latency
            if check.status is CheckStatus.DISABLED:
                events = check.enable("undrain", now)
                assert events == [Enabled(check.health, check.weight, "undrain", now)]
            else:
                events = check.disable("drain", now)
                assert events == [Disabled("drain", now)]
        else:
            now = max(now, check.next_probe_at) + latency
            health_before = check.health
            result = ProbeResult(ok, "pass" if ok else "fail", latency, weight if ok else None)
            events = check.probe_completed(result, now)
            if ok:
                passes_in_a_row += 1
                failures_in_a_row = 0
                last_weight = weight if weight is not None else last_weight
            else:
                failures_in_a_row += 1
                passes_in_a_row = 0
            assert check.next_probe_at >= now
            assert 0 <= check.failed_attempts <= retries
            if check.health is CheckStatus.UP and health_before is CheckStatus.DOWN:
                assert passes_in_a_row >= rise
            if check.health is CheckStatus.DOWN and health_before is CheckStatus.UP:
                # Every round of an Up check gets its retries.
                assert failures_in_a_row >= fall * (retries + 1)
            if check.health is CheckStatus.DOWN and health_before is CheckStatus.UNKNOWN:
                assert failures_in_a_row == retries + 1
            if alpha:
                assert check.health is not CheckStatus.UNKNOWN
            for event in events:
                assert isinstance(event, Up | Down | WeightChanged)
                assert event.reason == result.reason
                assert event.at == now
        assert check.weight == last_weight
        # The event stream alone tells a consumer the reported status.
        for event in events:
            match event:
                case Up():
                    assert reported is not CheckStatus.UP
                    reported = CheckStatus.UP
                case Down():
                    assert reported is not CheckStatus.DOWN
                    reported = CheckStatus.DOWN
                case Disabled():
                    reported = CheckStatus.DISABLED
                case Enabled(status=status):
                    reported = status
                case WeightChanged():
                    assert check.status is not CheckStatus.DISABLED
        assert reported is check.status
        assert (check.status is CheckStatus.DISABLED) == (reported is CheckStatus.DISABLED)


# Restart: starting from how the IPVS table showed each real server.

UP_, DOWN_ = CheckStatus.UP, CheckStatus.DOWN
UNKNOWN_ = CheckStatus.UNKNOWN


@pytest.mark.parametrize(
    ("alpha", "presumed_up", "initial"),
    [
        (False, [], UNKNOWN_),  # a first start: today's semantics
        (True, [], DOWN_),
        (False, [False], DOWN_),  # it was out: it stays out, alpha or not
        (True, [False], DOWN_),
        (True, [True], UNKNOWN_),  # it was serving: in service until its first round
        (False, [True], UNKNOWN_),
        (True, [False, True], UNKNOWN_),  # shared with one that was serving
        (False, [False, False], DOWN_),
    ],
)
def test_initial_health(alpha: bool, presumed_up: list[bool], initial: CheckStatus) -> None:
    assert initial_health(alpha, presumed_up) is initial


def test_a_check_presumed_down_stays_down_until_rise_passes() -> None:
    check = CheckState(params(rise=2, retries=2), now=0.0, initial=DOWN_)
    assert check.status is DOWN_ and not check.spoken
    assert "out of service in the IPVS table" in check.reason
    clock = Clock(check)
    assert clock.probe(PASS) == []
    assert check.spoken and check.status is DOWN_
    assert clock.probe(PASS) == [Up("tcp connect ok", 10.0)]


def test_a_check_presumed_up_in_an_alpha_check_is_settled_by_its_first_round() -> None:
    check = CheckState(params(alpha=True, rise=3, fall=3), now=0.0, initial=UNKNOWN_)
    assert in_service(check.status)
    assert Clock(check).probe(PASS) == [Up("tcp connect ok", 0.0)]  # no rise wait: it served
    failing = CheckState(params(alpha=True, rise=3, fall=3), now=0.0, initial=UNKNOWN_)
    assert Clock(failing).probe(REFUSED) == [Down("tcp connect refused", 0.0)]


def test_a_check_cannot_start_up_or_disabled() -> None:
    for status in (UP_, CheckStatus.DISABLED):
        with pytest.raises(ValueError, match="starts Unknown or Down"):
            CheckState(params(), now=0.0, initial=status)


@pytest.mark.parametrize(
    ("status", "spoken", "presumption", "counted"),
    [
        (UNKNOWN_, False, None, UNKNOWN_),
        (UNKNOWN_, False, Presumption(up=True), UP_),
        (UNKNOWN_, False, Presumption(up=False), DOWN_),  # shared, but this one was out
        (DOWN_, False, Presumption(up=False), DOWN_),
        (UP_, True, Presumption(up=False), UP_),  # it has spoken
        (DOWN_, True, Presumption(up=True), DOWN_),
        (CheckStatus.DISABLED, False, Presumption(up=True), CheckStatus.DISABLED),
    ],
)
def test_presumed_status(
    status: CheckStatus, spoken: bool, presumption: Presumption | None, counted: CheckStatus
) -> None:
    assert presumed_status(status, spoken, presumption) is counted
