"""Admin state from two sources (maintenance files, API overrides) merged in `AdminBook`, and
what the pool does with it: drain (Disabled, checks running), maint (Maintenance, checks no
ready real server shares paused, due at once when ready again)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from lvsha.checks.admin import AdminBook, AdminChange, AdminState
from lvsha.checks.maintenance import MaintenanceWatcher
from lvsha.checks.pool import CheckPool
from lvsha.checks.state import CheckParams, CheckTransitionError
from lvsha.checks.targets import CheckPlan
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.daemon.overrides import Mode, Override, Selector
from tests.unit.checks.test_pool import FakeProbes, fake_target, plan_of, wait_for

WEB_21 = RealServerId("192.0.2.10:80/tcp", "192.0.2.21", 80, "web")
WEB_22 = RealServerId("192.0.2.10:80/tcp", "192.0.2.22", 80, "web")
TLS_21 = RealServerId("192.0.2.10:443/tcp", "192.0.2.21", 443, "tls")


def override(
    mode: Mode,
    address: str,
    reason: str = "",
    *,
    by: str = "",
    at: float = 1.0,
    port: int | None = None,
    virtual_server: str | None = None,
) -> Override:
    return Override(mode, Selector(address, port, virtual_server), reason, by, at)


def drain(address: str, reason: str = "", **options: Any) -> Override:
    return override(Mode.DRAIN, address, reason, **options)


def maint(address: str, reason: str = "", **options: Any) -> Override:
    return override(Mode.MAINT, address, reason, **options)


class FakePool:
    def __init__(self, real_servers: tuple[RealServerId, ...]) -> None:
        self.real_servers = real_servers
        self.state: dict[RealServerId, AdminState] = {}
        self.calls: list[list[AdminChange]] = []

    def is_configured(self, real_server: RealServerId) -> bool:
        return real_server in self.real_servers

    def set_admins(self, changes: Sequence[AdminChange]) -> None:
        self.calls.append(list(changes))
        for real_server, admin, _ in changes:
            if admin is None:
                self.state.pop(real_server, None)
            else:
                self.state[real_server] = admin


def test_maint_beats_drain_and_the_api_is_reported_where_both_drain() -> None:
    pool = FakePool((WEB_21, WEB_22, TLS_21))
    book = AdminBook(pool)
    book.disable(WEB_21, "maintenance file /m/192.0.2.21 (owner root)")
    assert pool.state == {
        WEB_21: AdminState(Mode.DRAIN, "file", "maintenance file /m/192.0.2.21 (owner root)")
    }
    changed = book.set_overrides(
        [maint("192.0.2.21", "disk", by="alice (uid 1000)", port=80), drain("192.0.2.22")]
    )
    assert changed == [WEB_21, WEB_22]
    assert pool.state == {
        WEB_21: AdminState(Mode.MAINT, "api", "disk (by alice (uid 1000))"),
        WEB_22: AdminState(Mode.DRAIN, "api", "lvsha drain"),
    }
    # Both sources drain WEB_22: the API's is reported; the file's comes through when it goes.
    calls = len(pool.calls)
    book.disable(WEB_22, "maintenance file /m/192.0.2.22 (owner root)")
    assert len(pool.calls) == calls  # nothing changes for the pool
    assert book.admin_of(WEB_22) == AdminState(Mode.DRAIN, "api", "lvsha drain")
    book.set_overrides([maint("192.0.2.21", "disk", by="alice (uid 1000)", port=80)])
    assert pool.state[WEB_22] == AdminState(
        Mode.DRAIN, "file", "maintenance file /m/192.0.2.22 (owner root)"
    )
    # Lifting the maint leaves the file's drain; removing the file then makes it ready.
    book.set_overrides([])
    assert pool.state[WEB_21].mode is Mode.DRAIN and pool.state[WEB_21].source == "file"
    assert pool.calls[calls + 1] == [(WEB_21, pool.state[WEB_21], pool.state[WEB_21].reason)]
    book.enable(WEB_21, "maintenance file /m/192.0.2.21 removed")
    assert pool.calls[-1] == [(WEB_21, None, "maintenance file /m/192.0.2.21 removed")]
    assert book.admin_of(WEB_21) is None
    # The file source keeps the pool's old errors, which the watcher relies on.
    with pytest.raises(CheckTransitionError):
        book.enable(WEB_21, "again")
    with pytest.raises(CheckTransitionError):
        book.disable(WEB_22, "again")
    with pytest.raises(KeyError):
        book.disable(RealServerId("x", "192.0.2.99", 80), "unknown")


def test_an_unchanged_set_of_overrides_changes_nothing() -> None:
    pool = FakePool((WEB_21, TLS_21))
    book = AdminBook(pool)
    overrides = [drain("192.0.2.21", at=1.0), drain("192.0.2.21", "later", at=2.0)]
    assert book.set_overrides(overrides) == [WEB_21, TLS_21]
    assert pool.state[TLS_21].reason == "later"  # the latest of one mode
    assert book.set_overrides(overrides) == []
    assert len(pool.calls) == 1


def test_overrides_follow_a_reload_that_adds_and_removes_real_servers() -> None:
    pool = FakePool((WEB_21,))
    book = AdminBook(pool)
    book.set_overrides([maint("192.0.2.21")])
    book.disable(WEB_21, "file")
    pool.real_servers = (WEB_22, TLS_21)  # a reload: WEB_21 gone, TLS_21 new
    assert book.resolve() == [WEB_21, TLS_21]
    assert pool.state == {TLS_21: AdminState(Mode.MAINT, "api", "lvsha maint")}
    assert pool.calls[-1][0] == (WEB_21, None, "no override selects it any more")
    # The watcher lets go of the file of a real server a reload removed: nothing to tell.
    calls = len(pool.calls)
    book.enable(WEB_21, "maintenance file left by a reload")
    assert len(pool.calls) == calls
    pool.real_servers = (WEB_21, WEB_22, TLS_21)  # it comes back: the override holds again
    assert book.resolve() == [WEB_21]
    assert pool.state[WEB_21].mode is Mode.MAINT


def test_a_watcher_drives_the_book_as_it_drove_the_pool(tmp_path: Path) -> None:
    pool = FakePool((WEB_21, WEB_22))
    book = AdminBook(pool)
    book.set_overrides([drain("192.0.2.22", "api")])
    watcher = MaintenanceWatcher(book, tmp_path)
    (tmp_path / "192.0.2.21").write_text("swap\n")
    (tmp_path / "192.0.2.22").touch()
    watcher.poll()
    assert pool.state[WEB_21].source == "file" and pool.state[WEB_21].reason.endswith(": swap")
    assert pool.state[WEB_22].source == "api"
    assert watcher.drained.keys() == {WEB_21, WEB_22}
    (tmp_path / "192.0.2.21").unlink()
    (tmp_path / "192.0.2.22").unlink()
    watcher.poll()
    assert WEB_21 not in pool.state
    assert pool.state[WEB_22] == AdminState(Mode.DRAIN, "api", "api")


# On the real pool, with fake probes.

QUICK = CheckParams(interval=0.01, timeout=1.0, retries=0)


@pytest.fixture
async def made() -> AsyncIterator[Callable[[CheckPlan], CheckPool]]:
    pools: list[CheckPool] = []

    def make(plan: CheckPlan) -> CheckPool:
        pool = CheckPool(plan, rng=random.Random(1))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


def healths(pool: CheckPool) -> dict[str, Health]:
    return {f"{rs.virtual_service} {rs.address}": v.health for rs, v in pool.verdicts().items()}


async def test_maint_pauses_checks_no_ready_real_server_needs_and_ready_resumes_them(
    made: Callable[[CheckPlan], CheckPool],
) -> None:
    probes = FakeProbes()
    alone = fake_target(probes, "alone", QUICK, address="192.0.2.1")
    shared_a = fake_target(probes, "shared", QUICK, vs=0, address="192.0.2.2")
    shared_b = fake_target(probes, "shared", QUICK, vs=1, address="192.0.2.2")
    other = fake_target(probes, "other", QUICK, address="192.0.2.3")
    pool = made(plan_of(alone, shared_a, shared_b, other))
    book = AdminBook(pool)
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)
    pool.start()
    await wait_for(lambda: probes.count("alone") >= 2 and probes.count("shared") >= 2, "rounds")
    probes.outcome["alone"] = "fail"
    await wait_for(
        lambda: pool.verdicts()[alone.real_server].health is Health.UNHEALTHY, "alone down"
    )
    probes.outcome["alone"] = "ok"
    book.set_overrides([maint("192.0.2.1", "rack move"), maint("192.0.2.2", virtual_server="vs0")])
    assert pool.verdicts()[alone.real_server].health is Health.MAINTENANCE
    assert pool.verdicts()[alone.real_server].reason == "rack move"
    assert pool.verdicts()[shared_a.real_server].health is Health.MAINTENANCE
    assert pool.verdicts()[shared_b.real_server].health is Health.HEALTHY
    assert pool.is_paused(alone.key) and not pool.is_paused(shared_a.key)
    assert [r.status for r in pool.check_reports(alone.real_server)] == ["paused"]
    paused_at = probes.count("alone")
    shared_at, other_at = probes.count("shared"), probes.count("other")
    # Time passes: the others run on (the shared check serves a ready real server too).
    await wait_for(
        lambda: probes.count("other") >= other_at + 5 and probes.count("shared") >= shared_at + 5,
        "rounds of the checks still running",
    )
    assert probes.count("alone") == paused_at
    # Ready: due at once, and judged from the state the check had (down) until it speaks.
    before = len(published)
    book.set_overrides([maint("192.0.2.2", virtual_server="vs0")])
    assert published[before].real_server == alone.real_server
    assert published[before].health is Health.UNHEALTHY
    assert not pool.is_paused(alone.key)
    loop = asyncio.get_running_loop()
    ready_at = loop.time()
    await wait_for(lambda: probes.count("alone") > paused_at, "the resumed probe")
    assert probes.times("alone")[paused_at] - ready_at < QUICK.interval
    await wait_for(lambda: pool.verdicts()[alone.real_server].health is Health.HEALTHY, "alone up")
    (report,) = pool.check_reports(alone.real_server)
    assert report.status == "up" and report.last_result is not None and report.last_result.ok


async def test_maint_cancels_a_probe_in_flight_and_drain_keeps_probing(
    made: Callable[[CheckPlan], CheckPool],
) -> None:
    probes = FakeProbes()
    slow = fake_target(probes, "slow", QUICK, address="192.0.2.1")
    drained = fake_target(probes, "drained", QUICK, address="192.0.2.2")
    probes.outcome["slow"] = "hang"
    pool = made(plan_of(slow, drained))
    book = AdminBook(pool)
    pool.start()
    await wait_for(lambda: probes.count("slow") == 1 and pool.in_flight >= 1, "a hung probe")
    book.set_overrides([maint("192.0.2.1"), drain("192.0.2.2", "slow disk")])
    await wait_for(lambda: probes.cancelled == ["slow"], "the cancelled probe")
    assert pool.verdicts()[drained.real_server].health is Health.DISABLED
    assert pool.admin_of(drained.real_server) == AdminState(Mode.DRAIN, "api", "slow disk")
    count = probes.count("drained")
    await wait_for(lambda: probes.count("drained") >= count + 3, "probes while drained")
    assert probes.count("slow") == 1  # never probed again while in maintenance


async def test_a_reload_adds_a_real_server_an_override_puts_in_maintenance(
    made: Callable[[CheckPlan], CheckPool],
) -> None:
    probes = FakeProbes()
    first = fake_target(probes, "first", QUICK, address="192.0.2.1")
    pool = made(plan_of(first))
    book = AdminBook(pool)
    pool.start()
    book.set_overrides([maint("192.0.2.2")])
    assert pool.verdicts()[first.real_server].health is Health.HEALTHY
    added = fake_target(probes, "added", QUICK, address="192.0.2.2")
    pool.reconfigure(plan_of(first, added))
    assert book.resolve() == [added.real_server]
    assert pool.verdicts()[added.real_server].health is Health.MAINTENANCE
    assert pool.is_paused(added.key)
    await wait_for(lambda: probes.count("first") >= 5, "rounds of the other check")
    assert probes.count("added") == 0
    # A reload that keeps it in maintenance but gives its check to a ready server resumes it.
    shared = fake_target(probes, "added", QUICK, vs=1, address="192.0.2.3")
    pool.reconfigure(plan_of(first, added, shared))
    assert book.resolve() == []
    assert not pool.is_paused(added.key)
    await wait_for(lambda: probes.count("added") >= 1, "the check a ready server needs")
