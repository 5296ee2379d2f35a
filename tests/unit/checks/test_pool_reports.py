"""What the pool tells the operator's side: health reports (with the rules for a real
server's first verdicts), script refusals once per episode, and probe durations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from lvsha.checks.pool import CheckPool, HealthReport, ScriptRefusal
from lvsha.checks.result import ProbeResult
from lvsha.checks.state import CheckParams, Presumption
from lvsha.checks.targets import CheckTarget, ProbeTools
from lvsha.checks.verdict import Health, RealServerId
from tests.unit.checks.test_pool import QUICK, FakeProbe, FakeProbes, plan_of, wait_for

ALPHA = CheckParams(interval=0.05, timeout=1.0, retries=0, alpha=True)


@dataclass(frozen=True)
class ScriptLikeProbe(FakeProbe):
    """A fake probe that can also be refused to run, as a script under script security."""

    def describe(self) -> str:
        return f"script /usr/local/bin/{self.name}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        if self.probes.outcome.get(self.name) == "refused":
            self.probes.calls.append((self.name, asyncio.get_running_loop().time()))
            return ProbeResult(False, "script is writable by uid 1000", 0.0, refused=True)
        return await super().run(tools)


def target(
    probes: FakeProbes,
    name: str,
    params: CheckParams = QUICK,
    *,
    address: str = "192.0.2.1",
    script: bool = False,
) -> CheckTarget:
    probe = ScriptLikeProbe(name, probes) if script else FakeProbe(name, probes)
    return CheckTarget(RealServerId("vs0", address, 80), probe, params, 0.0, f"test {name}")


class Heard:
    """What a pool reported, as (old, new, reason, check) tuples, and its refusals."""

    def __init__(self, pool: CheckPool) -> None:
        self.reports: list[HealthReport] = []
        self.refusals: list[ScriptRefusal] = []
        pool.subscribe_health(self.reports.append)
        pool.subscribe_refusals(self.refusals.append)

    async def reached(self, count: int) -> None:
        await wait_for(lambda: len(self.reports) >= count, f"{count} health reports")

    def said(self) -> list[tuple[str, str, str, str | None]]:
        return [
            (r.old.value, r.verdict.health.value, r.verdict.reason, r.verdict.check)
            for r in self.reports
        ]


@pytest.fixture
def probes() -> FakeProbes:
    return FakeProbes()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., CheckPool]]:
    made: list[CheckPool] = []

    def make(*targets: CheckTarget) -> CheckPool:
        pool = CheckPool(plan_of(*targets))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def test_a_real_server_going_down_is_reported_with_its_reason_and_check(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    web = target(probes, "web")
    pool = pools(web)
    heard = Heard(pool)
    pool.start()
    await wait_for(lambda: probes.count("web") >= 2, "passing rounds")
    assert heard.said() == []  # healthy from the start: nothing happened
    probes.outcome["web"] = "fail"
    await wait_for(lambda: len(heard.reports) == 1, "the down report")
    assert heard.said() == [("healthy", "unhealthy", "fake fail", "fake web")]
    assert heard.reports[0].verdict.real_server == web.real_server


async def test_a_flapping_real_server_is_reported_at_each_change(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    pool = pools(target(probes, "web"))
    heard = Heard(pool)
    pool.start()
    await wait_for(lambda: probes.count("web") >= 1, "a first round")
    for count, outcome in enumerate(["fail", "ok", "fail", "ok"], 1):
        probes.outcome["web"] = outcome
        await heard.reached(count)
        assert len(heard.reports) == count
    assert [(old, new) for old, new, _, _ in heard.said()] == [
        ("healthy", "unhealthy"),
        ("unhealthy", "healthy"),
        ("healthy", "unhealthy"),
        ("unhealthy", "healthy"),
    ]


async def test_a_first_verdict_healthy_after_alpha_is_no_news(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    web = target(probes, "web", ALPHA)
    pool = pools(web)
    heard = Heard(pool)
    pool.start()
    assert pool.verdicts()[web.real_server].health is Health.UNHEALTHY  # alpha's guess
    await wait_for(lambda: pool.verdicts()[web.real_server].health is Health.HEALTHY, "rise")
    await wait_for(lambda: probes.count("web") >= 3, "more rounds")
    assert heard.said() == []
    probes.outcome["web"] = "fail"
    await wait_for(lambda: len(heard.reports) == 1, "the down report")
    assert heard.said() == [("healthy", "unhealthy", "fake fail", "fake web")]


async def test_a_real_server_found_unhealthy_at_start_is_reported_once(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    # As keepalived reports DOWN for a server failing at start: with alpha (it started
    # unhealthy, and stays so) and without (it started healthy).
    alpha = target(probes, "alpha", ALPHA, address="192.0.2.1")
    plain = target(probes, "plain", QUICK, address="192.0.2.2")
    probes.outcome.update(alpha="fail", plain="fail")
    pool = pools(alpha, plain)
    heard = Heard(pool)
    pool.start()
    await wait_for(lambda: min(probes.count("alpha"), probes.count("plain")) >= 4, "rounds")
    assert sorted(heard.said()) == [
        ("healthy", "unhealthy", "fake fail", "fake plain"),
        ("unhealthy", "unhealthy", "fake fail", "fake alpha"),
    ]
    # Once found, it is known: its recovery is news.
    probes.outcome["alpha"] = "ok"
    await wait_for(lambda: len(heard.reports) == 3, "the recovery")
    assert heard.said()[-1] == ("unhealthy", "healthy", "fake ok", "fake alpha")


async def test_a_passing_round_short_of_rise_is_not_reported_as_found_unhealthy(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    slow_rise = CheckParams(interval=0.05, timeout=1.0, retries=0, alpha=True, rise=3)
    web = target(probes, "web", slow_rise)
    pool = pools(web)
    heard = Heard(pool)
    pool.start()
    await wait_for(lambda: pool.verdicts()[web.real_server].health is Health.HEALTHY, "rise")
    assert heard.said() == []


async def test_a_recovery_from_out_of_service_in_the_table_is_reported(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    # A restart: the table a previous checker left says one was out, one in service.
    was_out = target(probes, "out", QUICK, address="192.0.2.1")
    was_in = target(probes, "in", QUICK, address="192.0.2.2")
    pool = pools(was_out, was_in)
    heard = Heard(pool)
    pool.start({was_out.real_server: Presumption(up=False), was_in.real_server: Presumption(True)})
    await wait_for(lambda: len(heard.reports) == 1, "the recovery")
    await wait_for(lambda: probes.count("in") >= 3, "rounds of the one in service")
    assert heard.said() == [("unhealthy", "healthy", "fake ok", "fake out")]
    assert heard.reports[0].verdict.real_server == was_out.real_server


async def test_operator_changes_are_reported_with_the_operators_reason(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    web = target(probes, "web")
    pool = pools(web)
    heard = Heard(pool)
    pool.start()
    pool.disable(web.real_server, "swap the disk")
    pool.enable(web.real_server, "disk swapped")
    assert heard.said() == [
        ("healthy", "disabled", "swap the disk", None),
        ("disabled", "healthy", "disk swapped", None),
    ]


async def test_a_real_server_a_reload_adds_follows_the_first_verdict_rules(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    old = target(probes, "old", QUICK, address="192.0.2.1")
    pool = pools(old)
    heard = Heard(pool)
    pool.start()
    added_up = target(probes, "up", ALPHA, address="192.0.2.2")
    added_down = target(probes, "down", ALPHA, address="192.0.2.3")
    probes.outcome["down"] = "fail"
    pool.reconfigure(plan_of(old, added_up, added_down))
    await wait_for(lambda: pool.verdicts()[added_up.real_server].health is Health.HEALTHY, "up")
    await wait_for(lambda: len(heard.reports) == 1, "the one found down")
    assert heard.said() == [("unhealthy", "unhealthy", "fake fail", "fake down")]


async def test_a_refused_script_is_reported_once_per_episode(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    check = target(probes, "check-db", script=True)
    pool = pools(check)
    heard = Heard(pool)
    probes.outcome["check-db"] = "refused"
    pool.start()
    await wait_for(lambda: probes.count("check-db") >= 4, "refused rounds")
    assert len(heard.refusals) == 1
    refusal = heard.refusals[0]
    assert refusal.check == "script /usr/local/bin/check-db"
    assert refusal.reason == "script is writable by uid 1000"
    assert refusal.real_servers == (check.real_server,)
    assert refusal.probe is check.probe
    # The script is fixed: the episode ends; refused again, a new one begins.
    probes.outcome["check-db"] = "ok"
    await wait_for(lambda: probes.count("check-db") >= 6, "rounds that ran")
    assert len(heard.refusals) == 1
    probes.outcome["check-db"] = "refused"
    await wait_for(lambda: len(heard.refusals) == 2, "the second episode")
    # A refusal fails the check like any failed probe.
    assert pool.verdicts()[check.real_server].health is Health.UNHEALTHY


async def test_probe_durations_are_counted_by_check_type(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    probes.delay = 0.003
    pool = pools(target(probes, "web"), target(probes, "db", address="192.0.2.2", script=True))
    # Every configured type is there from the start, at 0 (its series exist before a probe).
    assert {kind: d.count for kind, d in pool.durations.by_type().items()} == {
        "fake": 0,
        "script": 0,
    }
    pool.start()
    await wait_for(lambda: probes.count("web") >= 3 and probes.count("db") >= 3, "rounds")
    await wait_for(lambda: pool.durations.by_type()["script"].count > 0, "a script probe's end")
    by_type = pool.durations.by_type()
    assert set(by_type) == {"fake", "script"}
    fake = by_type["fake"]
    assert fake.count >= 2
    assert fake.total >= fake.count * 0.003
    below_2ms = dict(fake.cumulative())[0.0025]
    assert below_2ms == 0  # every probe took its 3 ms
