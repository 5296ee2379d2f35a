"""A reload moves the check pool to another plan and changes only what differs (issue 10).

Unchanged checks keep their state, counters and schedule; a check whose key changed starts
again, alone; added ones start as at start-up; removed ones stop with their probes cancelled.
Real servers are identified by virtual service, address and port, so inserting a virtual
server before others restarts and re-judges nobody. Drains survive.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path

from lvsha.checks.maintenance import MaintenanceWatcher
from lvsha.checks.pool import CheckPool
from lvsha.checks.state import CheckParams, CheckStatus
from lvsha.checks.targets import CheckKey, CheckTarget, check_plan
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.config import load_text
from tests.unit.checks.test_pool import (
    QUICK,
    SLOW,
    FakeCallbackProbe,
    FakeProbe,
    FakeProbes,
    plan_of,
    pools,
    probes,
    wait_for,
)

__all__ = ["pools", "probes"]  # fixtures, imported for pytest

WEB = "192.0.2.80:80/tcp"
MAIL = "192.0.2.80:25/tcp"


def target(
    probes: FakeProbes,
    name: str,
    params: CheckParams = SLOW,
    *,
    service: str = WEB,
    address: str = "192.0.2.1",
    callback: bool = False,
) -> CheckTarget:
    probe = FakeCallbackProbe(name, probes) if callback else FakeProbe(name, probes)
    real_server = RealServerId(service, address, 80)
    return CheckTarget(real_server, probe, params, 0.0, f"{service} {address} {name}")


def recorder(pool: CheckPool) -> list[RealServerVerdict]:
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)
    return published


async def test_unchanged_checks_keep_state_and_schedule_a_changed_one_restarts_alone(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    steady = target(probes, "steady", address="192.0.2.1")
    retimed = target(probes, "retimed", address="192.0.2.2")
    probes.outcome["steady"] = "fail"
    pool = pools(plan_of(steady, retimed))
    pool.start()
    await wait_for(lambda: probes.count("steady") == probes.count("retimed") == 1, "rounds")
    await wait_for(lambda: pool.verdicts()[steady.real_server].health is Health.UNHEALTHY, "down")
    states = pool.check_states()
    steady_state = states[steady.key]
    before = (
        steady_state.status,
        steady_state.consecutive_failures,
        steady_state.next_probe_at,
        steady_state.reason,
    )
    published = recorder(pool)

    faster = target(probes, "retimed", CheckParams(interval=50.0, timeout=1.0, retries=0))
    faster = CheckTarget(retimed.real_server, faster.probe, faster.params, 0.0, retimed.origin)
    added = target(probes, "added", address="192.0.2.3")
    change = pool.reconfigure(plan_of(steady, faster, added))

    assert (change.kept, change.started) == (1, (faster.key, added.key))
    assert change.stopped == (retimed.key,)
    assert change.added == (added.real_server,)
    assert change.rejudged == (retimed.real_server,)
    await wait_for(lambda: probes.count("added") == 1, "the added check's first round")
    await wait_for(lambda: probes.count("retimed") == 2, "the changed check's new first round")
    states = pool.check_states()
    assert states[steady.key] is steady_state
    assert (
        steady_state.status,
        steady_state.consecutive_failures,
        steady_state.next_probe_at,
        steady_state.reason,
    ) == before
    assert probes.count("steady") == 1  # nothing out of schedule
    assert retimed.key not in states and states[faster.key].params.interval == 50.0
    # The unchanged real server was not judged again; the new one was, as at start-up.
    assert steady.real_server not in {v.real_server for v in published}
    assert published[0].real_server == added.real_server
    assert pool.distinct_checks == 3


async def test_a_virtual_server_inserted_before_others_restarts_and_rejudges_nobody() -> None:
    web = """
  - name: web
    address: 192.0.2.80
    port: 80
    protocol: TCP
    real_servers:
      - {address: 127.0.0.1, port: 9, checks: [{type: tcp, interval: 100s, warmup: 0s}]}
      - {address: 127.0.0.2, port: 9, checks: [{type: tcp, interval: 100s, warmup: 0s}]}
"""
    mail = """
  - name: mail
    address: 192.0.2.80
    port: 25
    protocol: TCP
    real_servers:
      - {address: 127.0.0.3, port: 9, checks: [{type: tcp, interval: 100s, warmup: 0s}]}
"""
    before = check_plan(load_text("virtual_servers:" + web))
    after = check_plan(load_text("virtual_servers:" + mail + web))
    assert set(before.real_servers) < set(after.real_servers)
    pool = CheckPool(before)
    try:
        pool.start()
        await wait_for(lambda: all(s.spoken for s in pool.check_states().values()), "rounds")
        verdicts = dict(pool.verdicts())
        states = pool.check_states()
        published = recorder(pool)
        change = pool.reconfigure(after)
        assert (change.kept, len(change.started), change.stopped, change.rejudged) == (
            2,
            1,
            (),
            (),
        )
        assert [str(rs) for rs in change.added] == ["mail 127.0.0.3:9"]
        assert all(pool.check_states()[key] is state for key, state in states.items())
        assert {v.real_server for v in published} == set(change.added)
        assert {rs: pool.verdicts()[rs] for rs in verdicts} == verdicts
    finally:
        await pool.close()


async def test_a_removed_check_is_stopped_its_probes_in_flight_cancelled(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    kept = target(probes, "kept", address="192.0.2.1")
    stuck = target(probes, "stuck", address="192.0.2.2")
    stuck_callback = target(probes, "stuck-cb", address="192.0.2.3", callback=True)
    probes.outcome["stuck"] = probes.outcome["stuck-cb"] = "hang"
    pool = pools(plan_of(kept, stuck, stuck_callback))
    pool.start()
    await wait_for(lambda: pool.in_flight == 2 and probes.count("kept") == 1, "hanging probes")
    change = pool.reconfigure(plan_of(kept))
    assert set(change.stopped) == {stuck.key, stuck_callback.key}
    assert set(change.removed) == {stuck.real_server, stuck_callback.real_server}
    assert pool.in_flight == 0
    await pool.stopped_probes()
    assert sorted(probes.cancelled) == ["stuck", "stuck-cb"]
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert set(pool.verdicts()) == {kept.real_server}
    assert pool.real_servers == (kept.real_server,)


async def test_a_shared_check_follows_its_real_servers_and_runs_once(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    in_web = target(probes, "shared", QUICK, service=WEB)
    in_mail = target(probes, "shared", QUICK, service=MAIL)
    probes.outcome["shared"] = "fail"
    pool = pools(plan_of(in_web, in_mail))
    pool.start()
    await wait_for(lambda: probes.count("shared") >= 2, "rounds")
    state = pool.check_states()[in_web.key]
    # The web server leaves; a third virtual service gets the same server, same check.
    in_dns = target(probes, "shared", QUICK, service="192.0.2.80:53/udp")
    change = pool.reconfigure(plan_of(in_mail, in_dns))
    assert (change.kept, change.started, change.stopped) == (1, (), ())
    assert pool.distinct_checks == 1
    assert pool.check_states()[in_web.key] is state
    # The newcomer shares the check's state at once: Down, as the check is.
    assert pool.verdicts()[in_dns.real_server].health is Health.UNHEALTHY
    assert in_web.real_server not in pool.verdicts()
    calls = probes.count("shared")
    probes.outcome["shared"] = "ok"
    await wait_for(
        lambda: all(
            pool.verdicts()[t.real_server].health is Health.HEALTHY for t in (in_mail, in_dns)
        ),
        "both up on the shared check",
    )
    assert probes.count("shared") <= calls + 2  # once per round, not once per real server


async def test_a_changed_check_keeps_its_real_server_in_service_until_it_speaks(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    alpha = CheckParams(interval=0.05, timeout=1.0, retries=0, rise=2, alpha=True)
    web = target(probes, "web", alpha)
    pool = pools(plan_of(web))
    pool.start()
    await wait_for(lambda: pool.verdicts()[web.real_server].health is Health.HEALTHY, "up")
    published = recorder(pool)
    probes.delay = 0.2  # the changed check's first round takes a while
    slower = CheckParams(interval=0.1, timeout=1.0, retries=0, rise=2, alpha=True)
    changed = CheckTarget(web.real_server, web.probe, slower, 0.0, web.origin)
    change = pool.reconfigure(plan_of(changed))
    assert change.started == (changed.key,) and change.rejudged == (web.real_server,)
    new_state = pool.check_states()[changed.key]
    # With alpha a new check starts Down; presumed from how its server stood, it starts
    # Unknown and the server stays in service until the check has spoken.
    assert new_state.status is CheckStatus.UNKNOWN
    assert pool.verdicts()[web.real_server].health is Health.HEALTHY
    probes.outcome["web"] = "fail"
    await wait_for(lambda: new_state.spoken, "the changed check's first round")
    assert pool.verdicts()[web.real_server].health is Health.UNHEALTHY
    assert [v.health for v in published] == [Health.UNHEALTHY]


async def test_a_rollback_revives_stopped_checks_with_their_state(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    kept = target(probes, "kept", address="192.0.2.1")
    dropped = target(probes, "dropped", address="192.0.2.2")
    probes.outcome["dropped"] = "fail"
    pool = pools(plan_of(kept, dropped))
    pool.start()
    await wait_for(lambda: probes.count("dropped") == 1, "a round")
    await wait_for(lambda: pool.verdicts()[dropped.real_server].health is Health.UNHEALTHY, "d")
    state = pool.check_states()[dropped.key]
    due = state.next_probe_at
    pool.reconfigure(plan_of(kept))
    back = pool.reconfigure(plan_of(kept, dropped))
    assert (back.revived, back.started) == ((dropped.key,), ())
    assert pool.check_states()[dropped.key] is state
    assert state.next_probe_at == due  # not probed again before its time
    assert pool.verdicts()[dropped.real_server].health is Health.UNHEALTHY
    await asyncio.sleep(0.05)  # a probe out of schedule would be due at once
    assert probes.count("dropped") == 1


async def test_drains_survive_reloads(
    probes: FakeProbes, pools: Callable[..., CheckPool], tmp_path: Path
) -> None:
    operator = target(probes, "operator", QUICK, address="192.0.2.1")
    other = target(probes, "other", QUICK, address="192.0.2.2")
    pool = pools(plan_of(operator, other))
    pool.start()
    pool.disable(operator.real_server, "by hand")
    # Kept: still drained.
    pool.reconfigure(plan_of(operator, other, target(probes, "x", address="192.0.2.9")))
    assert pool.verdicts()[operator.real_server].health is Health.DISABLED
    # Removed, then brought back by a later reload: still drained, until enabled.
    pool.reconfigure(plan_of(other))
    pool.reconfigure(plan_of(operator, other))
    assert pool.verdicts()[operator.real_server].health is Health.DISABLED
    pool.enable(operator.real_server, "done")
    assert pool.verdicts()[operator.real_server].health is Health.HEALTHY

    # A maintenance file drains a real server new in a reload before it reaches IPVS (the
    # refresh `paused` yields runs before the reload's IPVS pass), and a removed real server
    # it drained is let go.
    (tmp_path / "192.0.2.7").write_text("new server, not ready\n")
    (tmp_path / "192.0.2.2").write_text("old server\n")
    watcher = MaintenanceWatcher(pool, tmp_path)
    await watcher.refresh()
    assert pool.is_drained(other.real_server)
    newcomer = target(probes, "newcomer", QUICK, address="192.0.2.7")
    async with watcher.paused() as refresh:
        pool.reconfigure(plan_of(operator, newcomer))
        await refresh()
    assert pool.verdicts()[newcomer.real_server].health is Health.DISABLED
    assert set(watcher.drained) == {newcomer.real_server}
    assert not pool.is_drained(other.real_server)


def test_a_check_key_is_hashed_once_and_never_carries_its_hash_across_processes() -> None:
    key = target(FakeProbes(), "k").key
    copy = pickle.loads(pickle.dumps(key))
    assert copy == key and hash(copy) == hash(key)
    # Rebuilt from its fields, so hashed again where it is unpickled.
    assert key.__reduce__() == (CheckKey, (key.probe, key.params, key.warmup))
