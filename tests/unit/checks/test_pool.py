from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import re
import resource
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from lvsha.checks.http import HttpClient
from lvsha.checks.pool import (
    FILE_RESERVE,
    MIN_IN_FLIGHT,
    CheckPool,
    LatenessStats,
    ProbeScheduler,
    in_flight_budget,
)
from lvsha.checks.result import ProbeResult
from lvsha.checks.state import (
    PRESUMED_DOWN_REASON,
    CheckParams,
    CheckTransitionError,
    Presumption,
)
from lvsha.checks.targets import (
    CheckPlan,
    CheckTarget,
    ProbeTools,
    TcpProbe,
    check_plan,
)
from lvsha.checks.tcp_fast import ProbeCallback, TcpConnector
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.config import load_text

# The pure scheduler, on a hand-stepped clock.


def test_scheduler_starts_due_probes_in_due_order() -> None:
    scheduler: ProbeScheduler[str] = ProbeScheduler(max_in_flight=10)
    for key, due in [("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 2.0)]:
        scheduler.schedule(key, due)
    assert scheduler.next_wakeup() == 1.0
    assert scheduler.start_due(0.5) == []
    starts = scheduler.start_due(2.5)
    assert [s.key for s in starts] == ["b", "c", "d"]
    assert [s.started_at - s.due for s in starts] == [1.5, 0.5, 0.5]
    assert not any(s.throttled for s in starts)
    assert scheduler.next_wakeup() == 3.0
    assert scheduler.in_flight == 3
    assert scheduler.finished("b", 2.6, next_due=4.0) == []
    assert [s.key for s in scheduler.start_due(4.0)] == ["a", "b"]


def test_scheduler_holds_probes_beyond_the_limit_until_a_slot_frees() -> None:
    scheduler: ProbeScheduler[int] = ProbeScheduler(max_in_flight=2)
    for key in range(5):
        scheduler.schedule(key, 0.0)
    assert [s.key for s in scheduler.start_due(0.0)] == [0, 1]
    assert scheduler.next_wakeup() is None  # nothing can start before a probe finishes
    freed = scheduler.finished(0, 0.75, next_due=10.0)
    assert [(s.key, s.started_at - s.due, s.throttled) for s in freed] == [(2, 0.75, True)]
    assert [s.key for s in scheduler.finished(1, 1.0, next_due=None)] == [3]
    assert scheduler.lateness.throttled == 2
    assert scheduler.lateness.starts == 4
    assert scheduler.waiting == 2  # 4, and 0 again at 10.0


def test_scheduler_refuses_a_key_twice() -> None:
    scheduler: ProbeScheduler[str] = ProbeScheduler(max_in_flight=10)
    scheduler.schedule("a", 1.0)
    with pytest.raises(ValueError, match="already"):
        scheduler.schedule("a", 2.0)
    scheduler.start_due(1.0)
    with pytest.raises(ValueError, match="in flight"):
        scheduler.schedule("a", 2.0)


def test_in_flight_budget_follows_the_file_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = {"soft": 65536}
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limits["soft"], 1 << 20))
    assert in_flight_budget() == 65536 - FILE_RESERVE
    limits["soft"] = 100
    assert in_flight_budget() == MIN_IN_FLIGHT
    limits["soft"] = resource.RLIM_INFINITY
    assert in_flight_budget() >= 1 << 20


def test_lateness_quantiles_over_a_bounded_window() -> None:
    stats = LatenessStats(window=100)
    assert stats.p50 == 0.0
    for value in range(1, 101):
        stats.record_start(float(value), throttled=False)
    assert (stats.p50, stats.p99, stats.max) == (50.0, 99.0, 100.0)
    for _ in range(100):
        stats.record_start(0.0, throttled=True)
    assert (stats.p99, stats.max, stats.starts, stats.throttled) == (0.0, 100.0, 200, 100)


# The pool, on the real event loop, with fake probes.


class FakeProbes:
    """Shared behaviour and records of every FakeProbe of a test."""

    def __init__(self) -> None:
        self.outcome: dict[str, str] = {}
        """"ok" (the default), "fail", "raise", "hang" or "weight N"."""
        self.delay = 0.0
        self.calls: list[tuple[str, float]] = []
        self.running = 0
        self.max_running = 0
        self.cancelled: list[str] = []

    def count(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)

    def times(self, name: str) -> list[float]:
        return [at for called, at in self.calls if called == name]


@dataclass(frozen=True)
class FakeProbe:
    name: str
    probes: FakeProbes = field(compare=False, hash=False, repr=False)

    def describe(self) -> str:
        return f"fake {self.name}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        probes = self.probes
        probes.calls.append((self.name, started))
        probes.running += 1
        probes.max_running = max(probes.max_running, probes.running)
        try:
            outcome = probes.outcome.get(self.name, "ok")
            if probes.delay:
                await asyncio.sleep(probes.delay)  # the probe's work
            if outcome == "hang":
                await asyncio.Event().wait()
            if outcome == "raise":
                raise RuntimeError("boom")
            weight = int(outcome.split()[1]) if outcome.startswith("weight") else None
            ok = outcome != "fail"
            return ProbeResult(ok, f"fake {outcome}", loop.time() - started, weight)
        except asyncio.CancelledError:
            probes.cancelled.append(self.name)
            raise
        finally:
            probes.running -= 1


class FakeRun:
    def __init__(self, probe: FakeCallbackProbe):
        self.probe = probe
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.probe.probes.cancelled.append(self.probe.name)


@dataclass(frozen=True)
class FakeCallbackProbe:
    """A probe the pool runs without a task: it answers through `on_done` from the loop."""

    name: str
    probes: FakeProbes = field(compare=False, hash=False, repr=False)

    def describe(self) -> str:
        return f"fake callback {self.name}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        raise AssertionError("a callback probe must not run as a task")

    def start(self, connector: TcpConnector, on_done: ProbeCallback) -> FakeRun:
        assert isinstance(connector, TcpConnector)
        self.probes.calls.append((self.name, asyncio.get_running_loop().time()))
        outcome = self.probes.outcome.get(self.name, "ok")
        if outcome == "raise":
            raise RuntimeError("boom")
        run = FakeRun(self)
        if outcome != "hang":
            result = ProbeResult(outcome != "fail", f"fake {outcome}", 0.0)
            asyncio.get_running_loop().call_soon(on_done, result)
            if outcome == "twice":
                asyncio.get_running_loop().call_soon(on_done, ProbeResult(False, "again", 0.0))
        return run


QUICK = CheckParams(interval=0.05, timeout=1.0, retries=0)
SLOW = CheckParams(interval=100.0, timeout=1.0, retries=0)


def fake_target(
    probes: FakeProbes,
    name: str,
    params: CheckParams = SLOW,
    *,
    vs: int = 0,
    address: str = "192.0.2.1",
    warmup: float = 0.0,
) -> CheckTarget:
    return CheckTarget(
        RealServerId(f"vs{vs}", address, 80),
        FakeProbe(name, probes),
        params,
        warmup,
        f"test {name}",
    )


def plan_of(*targets: CheckTarget) -> CheckPlan:
    return CheckPlan(targets, tuple(dict.fromkeys(t.real_server for t in targets)))


@pytest.fixture
def probes() -> FakeProbes:
    return FakeProbes()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., CheckPool]]:
    made: list[CheckPool] = []

    def make(plan: CheckPlan, **options: object) -> CheckPool:
        pool = CheckPool(plan, **options)  # type: ignore[arg-type]
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


async def next_verdict(
    queue: asyncio.Queue[RealServerVerdict],
    real_server: RealServerId,
    health: Health,
    timeout: float = 5.0,
) -> RealServerVerdict:
    async with asyncio.timeout(timeout):
        while True:
            verdict = await queue.get()
            if verdict.real_server == real_server and verdict.health is health:
                return verdict


async def test_first_rounds_spread_over_the_warmup_in_seeded_order(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    names = [f"c{i}" for i in range(40)]
    warmup = 0.3
    plan = plan_of(
        *(
            fake_target(probes, name, address=f"192.0.2.{i}", warmup=warmup)
            for i, name in enumerate(names)
        )
    )
    pool = pools(plan, rng=random.Random(7))
    expected = random.Random(7)
    offsets = {name: expected.uniform(0.0, warmup) for name in names}
    started = asyncio.get_running_loop().time()
    pool.start()
    await wait_for(lambda: len(probes.calls) == 40, "every first probe")
    assert [name for name, _ in probes.calls] == sorted(names, key=offsets.__getitem__)
    for name, at in probes.calls:
        assert started + offsets[name] <= at < started + offsets[name] + 0.5, name
    spread = max(at for _, at in probes.calls) - min(at for _, at in probes.calls)
    assert spread > warmup / 2
    assert pool.lateness.starts == 40 and pool.lateness.throttled == 0


async def test_a_failing_round_retries_before_going_down(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    params = CheckParams(interval=100.0, timeout=1.0, retries=2, delay_before_retry=0.05)
    target = fake_target(probes, "flaky", params)
    probes.outcome["flaky"] = "fail"
    pool = pools(plan_of(target))
    queue = pool.verdict_queue()
    pool.start()
    assert (await queue.get()).health is Health.HEALTHY  # Unknown: in service until a round ends
    verdict = await next_verdict(queue, target.real_server, Health.UNHEALTHY)
    times = probes.times("flaky")
    assert len(times) == 3
    # Retries are due `delay_before_retry` after the attempt's scheduled start, so a start
    # that ran late (a loaded machine) shortens the gap by its lateness, no more.
    late = pool.lateness.max
    assert all(later - earlier >= 0.049 - late for earlier, later in itertools.pairwise(times))
    assert verdict.reason == "fake fail"
    assert verdict.check == "fake flaky"


async def test_probes_in_flight_stay_within_the_limit(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    probes.delay = 0.05
    plan = plan_of(*(fake_target(probes, f"c{i}", address=f"192.0.2.{i}") for i in range(20)))
    pool = pools(plan, max_in_flight=5)
    pool.start()
    await wait_for(lambda: len(probes.calls) == 20 and probes.running == 0, "all 20 probes")
    assert probes.max_running == 5
    assert pool.lateness.starts == 20
    assert pool.lateness.throttled == 15
    assert pool.lateness.max >= 0.05 * 3  # the last five waited for three batches
    assert pool.in_flight == 0


async def test_a_hanging_probe_is_cut_and_fails(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    target = fake_target(probes, "stuck", CheckParams(interval=100.0, timeout=0.05, retries=0))
    probes.outcome["stuck"] = "hang"
    pool = pools(plan_of(target), hang_margin=0.05)
    queue = pool.verdict_queue()
    pool.start()
    verdict = await next_verdict(queue, target.real_server, Health.UNHEALTHY)
    assert verdict.reason == "probe hung: no verdict after 0.1 s"
    assert probes.cancelled == ["stuck"]
    assert pool.in_flight == 0


async def test_a_raising_probe_fails_is_logged_once_and_the_pool_goes_on(
    probes: FakeProbes, pools: Callable[..., CheckPool], caplog: pytest.LogCaptureFixture
) -> None:
    bad = fake_target(probes, "bad", QUICK, address="192.0.2.1")
    good = fake_target(probes, "good", QUICK, address="192.0.2.2")
    probes.outcome["bad"] = "raise"
    pool = pools(plan_of(bad, good))
    queue = pool.verdict_queue()
    with caplog.at_level(logging.ERROR, logger="lvsha.checks.pool"):
        pool.start()
        verdict = await next_verdict(queue, bad.real_server, Health.UNHEALTHY)
        assert verdict.reason == "probe error: RuntimeError: boom"
        await wait_for(lambda: probes.count("bad") >= 4 and probes.count("good") >= 4, "rounds")
    raised = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(raised) == 1
    assert raised[0].exc_info is not None
    probes.outcome["bad"] = "ok"
    await next_verdict(queue, bad.real_server, Health.HEALTHY)
    assert pool.verdicts()[good.real_server].health is Health.HEALTHY


async def test_a_check_shared_by_two_virtual_servers_runs_once_and_judges_both(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    first = fake_target(probes, "shared", vs=0)
    second = fake_target(probes, "shared", vs=1)
    probes.outcome["shared"] = "fail"
    pool = pools(plan_of(first, second))
    assert pool.distinct_checks == 1
    queue = pool.verdict_queue()
    pool.start()
    down = [
        await next_verdict(queue, first.real_server, Health.UNHEALTHY),
        await next_verdict(queue, second.real_server, Health.UNHEALTHY),
    ]
    assert [v.reason for v in down] == ["fake fail", "fake fail"]
    assert probes.count("shared") == 1


async def test_verdicts_follow_a_check_down_and_back_up_after_rise(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    target = fake_target(probes, "web", CheckParams(interval=0.02, timeout=1.0, retries=0, rise=3))
    pool = pools(plan_of(target))
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)
    pool.start()
    await wait_for(lambda: probes.count("web") >= 2, "two passing rounds")
    assert [v.health for v in published] == [Health.HEALTHY]
    probes.outcome["web"] = "fail"
    await wait_for(lambda: len(published) == 2, "the down verdict")
    failing_since = probes.count("web")
    probes.outcome["web"] = "ok"
    await wait_for(lambda: len(published) == 3, "the up verdict")
    assert [v.health for v in published] == [Health.HEALTHY, Health.UNHEALTHY, Health.HEALTHY]
    assert probes.count("web") - failing_since >= 3  # three passing rounds, as rise says
    (state,) = pool.check_states().values()
    assert state.consecutive_passes >= 3


async def test_dynamic_weight_of_a_check_is_published(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    weighted = fake_target(probes, "script", QUICK)
    plain = fake_target(probes, "tcp", QUICK)
    probes.outcome["script"] = "weight 5"
    pool = pools(plan_of(weighted, plain))
    queue = pool.verdict_queue()
    pool.start()
    assert (await queue.get()).weight is None
    verdict = await asyncio.wait_for(queue.get(), 5.0)
    assert (verdict.health, verdict.weight, verdict.check) == (Health.HEALTHY, 5, "fake script")
    assert verdict.verdict.weight == 5


async def test_an_operator_disables_and_enables_a_real_server(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    target = fake_target(probes, "web", QUICK)
    pool = pools(plan_of(target))
    queue = pool.verdict_queue()
    pool.start()
    await queue.get()
    pool.disable(target.real_server, "swap the disk")
    disabled = queue.get_nowait()
    assert (disabled.health, disabled.reason) == (Health.DISABLED, "swap the disk")
    with pytest.raises(CheckTransitionError):
        pool.disable(target.real_server, "again")
    probes.outcome["web"] = "fail"
    await wait_for(lambda: probes.count("web") >= 3, "probes while drained")
    assert pool.verdicts()[target.real_server].health is Health.DISABLED
    pool.enable(target.real_server, "disk swapped")
    assert queue.get_nowait().health is Health.UNHEALTHY  # what the probes said meanwhile
    with pytest.raises(CheckTransitionError):
        pool.enable(target.real_server, "again")
    with pytest.raises(KeyError):
        pool.disable(RealServerId("vs9", "192.0.2.99", 80), "unknown")


class RecordingHttpClient(HttpClient):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        await super().close()


async def test_close_cancels_probes_and_leaves_no_task(probes: FakeProbes) -> None:
    names = [f"c{i}" for i in range(5)]
    for name in names:
        probes.outcome[name] = "hang"
    plan = plan_of(
        *(fake_target(probes, n, SLOW, address=f"192.0.2.{i}") for i, n in enumerate(names))
    )
    http = RecordingHttpClient()
    pool = CheckPool(plan, tools=ProbeTools(http=http))
    pool.start()
    await wait_for(lambda: probes.running == 5, "five probes in flight")
    await pool.close()
    assert sorted(probes.cancelled) == names
    assert http.closed
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert probes.running == 0


# Real TCP probes through the pool.


@pytest.fixture
def free_ports() -> Iterator[list[int]]:
    held: list[socket.socket] = []
    ports = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in held:
        sock.close()
    yield ports


class AcceptAndClose:
    """A TCP server on the running loop that closes each connection as soon as it accepts it.

    Synchronous, unlike asyncio.start_server: nothing of it is left to the garbage collector
    when the test ends, which would close sockets under a later test counting its fds.
    """

    def __init__(self, port: int):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.setblocking(False)
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except BlockingIOError:
                return
            connection.close()

    def close(self) -> None:
        if self._listener.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()


async def test_tcp_checks_through_the_pool(
    free_ports: list[int], pools: Callable[..., CheckPool]
) -> None:
    servers = {port: AcceptAndClose(port) for port in free_ports}
    try:
        config = load_text(
            "virtual_servers:\n"
            "  - address: 192.0.2.80\n"
            "    port: 80\n"
            "    protocol: TCP\n"
            "    check_defaults: {interval: 50ms, timeout: 1s, retries: 0, rise: 2, warmup: 0}\n"
            "    forwarding: NAT\n"
            "    real_servers:\n"
            + "".join(
                f"      - {{address: 127.0.0.1, port: {port}, checks: [{{type: tcp}}]}}\n"
                for port in free_ports
            )
        )
        pool = pools(check_plan(config))
        queue = pool.verdict_queue()
        pool.start()
        victim = RealServerId("192.0.2.80:80/tcp", "127.0.0.1", free_ports[1])
        servers[free_ports[1]].close()
        down = await next_verdict(queue, victim, Health.UNHEALTHY)
        assert down.reason == "tcp connect refused"
        assert down.check == f"tcp 127.0.0.1:{free_ports[1]}"

        passes_at_up: list[int] = []

        def on_verdict(verdict: RealServerVerdict) -> None:
            if verdict.real_server == victim and verdict.health is Health.HEALTHY:
                (state,) = [
                    s for k, s in pool.check_states().items() if k.probe.describe() == down.check
                ]
                passes_at_up.append(state.consecutive_passes)

        pool.subscribe(on_verdict)
        servers[free_ports[1]] = AcceptAndClose(free_ports[1])
        up = await next_verdict(queue, victim, Health.HEALTHY)
        assert up.reason == "tcp connect ok"
        assert passes_at_up == [2]
        service = "192.0.2.80:80/tcp"
        others = [
            RealServerId(service, "127.0.0.1", port) for port in (free_ports[0], free_ports[2])
        ]
        assert all(pool.verdicts()[rs].health is Health.HEALTHY for rs in others)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # TCP probes run without tasks
    finally:
        for server in servers.values():
            server.close()


# Callback probes: the pool's guarantees hold for them as for probes run as tasks.


async def test_callback_probe_results_fan_out_without_a_task(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    first = CheckTarget(
        RealServerId("vs0", "192.0.2.1", 80), FakeCallbackProbe("web", probes), QUICK, 0.0, "t0"
    )
    second = CheckTarget(
        RealServerId("vs1", "192.0.2.1", 80), FakeCallbackProbe("web", probes), QUICK, 0.0, "t1"
    )
    pool = pools(plan_of(first, second))
    assert pool.distinct_checks == 1
    queue = pool.verdict_queue()
    pool.start()
    await wait_for(lambda: probes.count("web") >= 3, "three passing rounds")
    assert asyncio.all_tasks() == {asyncio.current_task()}
    probes.outcome["web"] = "fail"
    down = [
        await next_verdict(queue, first.real_server, Health.UNHEALTHY),
        await next_verdict(queue, second.real_server, Health.UNHEALTHY),
    ]
    assert [(v.reason, v.check) for v in down] == [("fake fail", "fake callback web")] * 2


async def test_a_raising_callback_probe_fails_is_logged_once_and_goes_on(
    probes: FakeProbes, pools: Callable[..., CheckPool], caplog: pytest.LogCaptureFixture
) -> None:
    target = CheckTarget(
        RealServerId("vs0", "192.0.2.1", 80), FakeCallbackProbe("bad", probes), QUICK, 0.0, "t"
    )
    probes.outcome["bad"] = "raise"
    pool = pools(plan_of(target))
    queue = pool.verdict_queue()
    with caplog.at_level(logging.ERROR, logger="lvsha.checks.pool"):
        pool.start()
        verdict = await next_verdict(queue, target.real_server, Health.UNHEALTHY)
        assert verdict.reason == "probe error: RuntimeError: boom"
        await wait_for(lambda: probes.count("bad") >= 4, "more rounds")
    assert len([r for r in caplog.records if "raised" in r.getMessage()]) == 1
    assert pool.in_flight <= 1
    probes.outcome["bad"] = "ok"
    await next_verdict(queue, target.real_server, Health.HEALTHY)


async def test_a_hanging_callback_probe_is_cut_and_cancelled(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    params = CheckParams(interval=100.0, timeout=0.05, retries=0)
    target = CheckTarget(
        RealServerId("vs0", "192.0.2.1", 80), FakeCallbackProbe("stuck", probes), params, 0.0, "t"
    )
    probes.outcome["stuck"] = "hang"
    pool = pools(plan_of(target), hang_margin=0.05)
    queue = pool.verdict_queue()
    pool.start()
    verdict = await next_verdict(queue, target.real_server, Health.UNHEALTHY)
    assert verdict.reason == "probe hung: no verdict after 0.1 s"
    assert probes.cancelled == ["stuck"]
    assert pool.in_flight == 0


async def test_a_second_verdict_of_a_callback_probe_is_ignored(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    target = CheckTarget(
        RealServerId("vs0", "192.0.2.1", 80), FakeCallbackProbe("twice", probes), SLOW, 0.0, "t"
    )
    probes.outcome["twice"] = "twice"
    pool = pools(plan_of(target))
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)
    pool.start()
    await wait_for(lambda: probes.count("twice") == 1, "the probe")
    await asyncio.sleep(0.05)  # room for the second verdict to (wrongly) count
    (state,) = pool.check_states().values()
    assert (state.consecutive_passes, state.consecutive_failures) == (1, 0)
    assert [v.health for v in published] == [Health.HEALTHY]
    assert probes.count("twice") == 1


async def test_close_cancels_callback_probes_in_flight(probes: FakeProbes) -> None:
    names = [f"c{i}" for i in range(3)]
    for name in names:
        probes.outcome[name] = "hang"
    targets = [
        CheckTarget(
            RealServerId("vs0", f"192.0.2.{i}", 80), FakeCallbackProbe(n, probes), SLOW, 0.0, n
        )
        for i, n in enumerate(names)
    ]
    pool = CheckPool(plan_of(*targets))
    pool.start()
    await wait_for(lambda: len(probes.calls) == 3, "three probes in flight")
    await pool.close()
    assert sorted(probes.cancelled) == names


async def test_close_leaves_no_tcp_socket_open() -> None:
    # A full accept queue: Linux drops the SYNs, so every probe stays in flight until closed.
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        params = CheckParams(interval=100.0, timeout=30.0, retries=0)
        targets = [
            CheckTarget(
                RealServerId("vs0", "127.0.0.1", port + i),
                TcpProbe("127.0.0.1", port, 30.0, s),
                params,
                0.0,
                f"t{i}",
            )
            for i, s in enumerate([None, "127.0.0.2", "127.0.0.3", "127.0.0.4"])
        ]
        before = set(os.listdir("/proc/self/fd"))
        pool = CheckPool(plan_of(*targets))
        pool.start()
        await wait_for(lambda: pool.in_flight == 4, "four connects in flight")
        assert len(set(os.listdir("/proc/self/fd")) - before) >= 4
        await pool.close()
        assert set(os.listdir("/proc/self/fd")) == before
    finally:
        listener.close()
        for filler in fillers:
            filler.close()


async def test_a_flapping_real_server_is_logged_once_then_summarised(
    probes: FakeProbes, pools: Callable[..., CheckPool], caplog: pytest.LogCaptureFixture
) -> None:
    target = fake_target(probes, "web", CheckParams(interval=0.01, timeout=1.0, retries=0))
    probes.outcome["web"] = "fail"
    pool = pools(plan_of(target))
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)

    def flap(verdict: RealServerVerdict) -> None:
        probes.outcome["web"] = "ok" if verdict.health is Health.UNHEALTHY else "fail"

    pool.subscribe(flap)
    with caplog.at_level(logging.INFO, logger="lvsha.checks.pool"):
        pool.start()
        # the first change is logged as it happens, with its reason
        await wait_for(lambda: len(published) >= 2, "the first down verdict")
        changes = [r.getMessage() for r in caplog.records if "192.0.2.1:80" in r.getMessage()]
        assert changes == ["vs0 192.0.2.1:80: healthy -> unhealthy (fake web: fake fail)"]
        await wait_for(lambda: len(published) >= 21, "20 changes")
        await pool.close()
    changes = [r.getMessage() for r in caplog.records if "192.0.2.1:80" in r.getMessage()]
    assert len(changes) == 2, changes
    assert re.fullmatch(
        r"vs0 192\.0\.2\.1:80: flapped \d+ times in the last \d+ s, now "
        r"(healthy|unhealthy) \(fake web: fake (ok|fail)\)",
        changes[1],
    ), changes[1]


async def test_real_servers_start_as_presumed_until_their_checks_speak(
    probes: FakeProbes, pools: Callable[..., CheckPool]
) -> None:
    # One check shared by a real server that was serving (at a dynamic weight) and one that
    # was out; another real server was out with an alpha check of its own.
    params = CheckParams(interval=100.0, timeout=1.0, retries=0, alpha=True, rise=2)
    serving = fake_target(probes, "shared", params, vs=0, warmup=0.3)
    out = fake_target(probes, "shared", params, vs=1, warmup=0.3)
    alone = fake_target(probes, "alone", params, address="192.0.2.9", warmup=0.3)
    pool = pools(plan_of(serving, out, alone), rng=random.Random(1))
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)
    pool.start(
        {
            serving.real_server: Presumption(up=True, weight=7),
            out.real_server: Presumption(up=False),
            alone.real_server: Presumption(up=False),
        }
    )
    assert [(v.health, v.weight) for v in published] == [
        (Health.HEALTHY, 7),
        (Health.UNHEALTHY, None),
        (Health.UNHEALTHY, None),
    ]
    assert published[1].reason == PRESUMED_DOWN_REASON
    await wait_for(lambda: probes.count("shared") == 1 and probes.count("alone") == 1, "rounds")
    await wait_for(lambda: len(published) == 5, "the shared check's first round")
    # The shared check passed once: both its real servers follow it (the weight is its own,
    # none: the configured one); the lone check needs rise (2) passes, having been out.
    assert [(v.real_server, v.health, v.weight) for v in published[3:]] == [
        (serving.real_server, Health.HEALTHY, None),
        (out.real_server, Health.HEALTHY, None),
    ]
    assert pool.verdicts()[alone.real_server].health is Health.UNHEALTHY
