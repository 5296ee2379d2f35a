"""The health-check pool: runs every distinct check on its own schedule, publishes verdicts.

One `ProbeScheduler` (pure: a heap of due times and a limit on probes in flight) decides what
starts when; `CheckPool` drives it with a single `loop.call_at` timer, runs each probe, feeds the
result to the check's `CheckState` and turns the state's events into one verdict per real server
(`RealServerVerdict`), which subscribers (the IPVS side) receive when it changes.

Most probes run as a task each. A `CallbackProbe` (TCP) runs without one, on the pool's shared
`TcpConnector`, and reports to a callback: thousands of probes a second cost too much as tasks.

A check that several real servers share (same probe, parameters and timing: `CheckKey`) runs
once; its result counts for each of them. Operators drain a real server, not a check: a
drained real server is Disabled whatever its checks say, which a shared check could not express
per real server. The operator's state comes merged from its sources (`lvsha.checks.admin`,
`set_admins`); `disable`/`enable` are a drain of their own, kept for tools and tests.

A real server in maintenance is in Maintenance (out of the IPVS table). A check whose every real
server is in maintenance is paused: out of the schedule, its probe in flight cancelled. When one
of them is ready again the check is due at once, and its real servers are judged from the state
the check had.

Besides verdicts, the pool tells the operator's side (`subscribe_health`) what it should hear
of a real server's health, as `HealthReport`s. Every change of health is one, except at first:
a real server's health at start (or when a reload adds it) is a guess (alpha, or no probe yet)
unless the IPVS table a previous checker left says how it stood (a presumption). Then:

- its first verdict, healthy, is no news when it was guessed (it was not known to be down), so
  it is not reported; a recovery from a presumed "out of service" is;
- found unhealthy, it is reported, as keepalived reports DOWN for a server failing at start:
  a change from a guessed or presumed healthy, and also a real server that started unhealthy
  (alpha, or out of service in the table) once one of its checks ends a failing round, whose
  report then says unhealthy -> unhealthy with that check's reason.

A script check refused to run (`ProbeResult.refused`) is a `ScriptRefusal` to the listeners of
`subscribe_refusals`, once per episode: again only after a result that was not refused.
Probe durations are counted by check type (`durations`).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import resource
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar, runtime_checkable

from lvsha.checks.admin import AdminChange, AdminState
from lvsha.checks.durations import CheckDurations
from lvsha.checks.flaplog import CoalescingLog
from lvsha.checks.result import ProbeResult
from lvsha.checks.state import (
    PRESUMED_DOWN_REASON,
    PRESUMED_UP_REASON,
    CheckEvent,
    CheckState,
    CheckStatus,
    CheckTransitionError,
    Presumption,
    in_service,
    initial_health,
    presumed_status,
    real_server_status,
)
from lvsha.checks.targets import CheckKey, CheckPlan, CheckTarget, Probe, ProbeTools
from lvsha.checks.tcp_fast import DeadlineTimer, ProbeCallback, TcpConnector
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.daemon.overrides import Mode
from lvsha.stats import RecentSamples

log = logging.getLogger(__name__)

FILE_RESERVE = 256
"""File descriptors the pool leaves to the rest of the process (sockets, logs, scripts)."""
MIN_IN_FLIGHT = 64
DEFAULT_HANG_MARGIN = 1.0
"""Seconds past a check's timeout after which the pool gives up on a probe that did not."""
DEFAULT_LATENESS_WINDOW = 10_000
REVIVE_LIMIT = 60.0
"""Seconds a check a reload stopped keeps its state for a reload that brings it back (a
rollback): older, it starts afresh."""

K = TypeVar("K")


class LatenessStats(RecentSamples):
    """How late probes started (start time - due time), over the last `window` starts."""

    def __init__(self, window: int = DEFAULT_LATENESS_WINDOW):
        super().__init__(window)
        self.throttled = 0
        """Starts that waited for a free slot under the limit on probes in flight."""

    @property
    def starts(self) -> int:
        """Probe starts since the pool started."""
        return self.count

    def record_start(self, lateness: float, throttled: bool) -> None:
        self.record(lateness)
        self.throttled += throttled


def in_flight_budget() -> int:
    """How many probes may be in flight at once: what the file-descriptor limit allows.

    Each check has at most one probe in flight, so with enough descriptors nothing is held
    back; a lower fixed cap would make every check late whenever many servers time out at
    once (keepalived has none). The daemon raises its soft limit to the hard one first.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(MIN_IN_FLIGHT, soft - FILE_RESERVE)


def raise_file_limit() -> int:
    """Raise this process's soft file-descriptor limit to its hard limit; returns the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass(frozen=True, slots=True)
class ProbeStart(Generic[K]):
    key: K
    due: float
    started_at: float
    throttled: bool
    """It was due while every slot was taken."""


class ProbeScheduler(Generic[K]):
    """Which probes start when. Pure: time comes in as `now`; nothing here reads a clock.

    Each key is either waiting for its due time, in flight, or (once `finished` gives no next
    due time) idle. Due probes start in due-time order while fewer than `max_in_flight` are in
    flight; the rest start as slots free up.
    """

    def __init__(self, max_in_flight: int, lateness: LatenessStats | None = None):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.lateness = lateness if lateness is not None else LatenessStats()
        self._due: list[tuple[float, int, K]] = []
        self._scheduled: set[K] = set()
        self._in_flight: set[K] = set()
        self._sequence = 0
        self._held_until = -math.inf
        """The last time due probes found no free slot: those due by then were throttled."""

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        return len(self._due)

    def schedule(self, key: K, due: float) -> None:
        if key in self._scheduled or key in self._in_flight:
            raise ValueError(f"{key!r} is already scheduled or in flight")
        self._scheduled.add(key)
        # The sequence number keeps equal due times in scheduling order and keys uncompared.
        heapq.heappush(self._due, (due, self._sequence, key))
        self._sequence += 1

    def next_wakeup(self) -> float | None:
        """When `start_due` next has something to start; None: nothing until a probe finishes."""
        if not self._due or len(self._in_flight) >= self.max_in_flight:
            return None
        return self._due[0][0]

    def start_due(self, now: float) -> list[ProbeStart[K]]:
        """The probes to start now; they count as in flight until `finished`."""
        starts: list[ProbeStart[K]] = []
        while self._due and self._due[0][0] <= now:
            if len(self._in_flight) >= self.max_in_flight:
                self._held_until = now
                break
            due, _, key = heapq.heappop(self._due)
            self._scheduled.remove(key)
            self._in_flight.add(key)
            throttled = due <= self._held_until
            self.lateness.record_start(now - due, throttled)
            starts.append(ProbeStart(key, due, now, throttled))
        return starts

    def finished(self, key: K, now: float, next_due: float | None) -> list[ProbeStart[K]]:
        """`key`'s probe is over; schedule its next one, and start what its slot lets start."""
        self._in_flight.remove(key)
        if next_due is not None:
            self.schedule(key, next_due)
        return self.start_due(now)

    def forget(self, keys: Iterable[K]) -> None:
        """Drop `keys`, waiting or in flight (their probes cancelled): they start no more, and
        their slots are free (`start_due` fills them)."""
        gone = set(keys)
        self._in_flight -= gone
        if not gone.isdisjoint(self._scheduled):
            self._scheduled -= gone
            self._due = [entry for entry in self._due if entry[2] not in gone]
            heapq.heapify(self._due)


VerdictListener = Callable[[RealServerVerdict], None]


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A real server's health as the operator should hear of it (see the module docstring)."""

    old: Health
    verdict: RealServerVerdict
    """The new health, with the reason and check that decided it."""


@dataclass(frozen=True, slots=True)
class ScriptRefusal:
    """A script check that was refused to run (first of an episode)."""

    check: str
    """The check as `describe` says it, e.g. "script /usr/local/bin/check-db"."""
    probe: Probe
    reason: str
    real_servers: tuple[RealServerId, ...]


HealthListener = Callable[[HealthReport], None]
RefusalListener = Callable[[ScriptRefusal], None]


class InFlightProbe(Protocol):
    def cancel(self) -> None:
        """Stop the probe and release what it holds; its callback is not called."""


@runtime_checkable
class CallbackProbe(Protocol):
    """A probe that runs without a task: started on the pool's connector, it calls `on_done`
    once with its result, from the event loop and never from inside `start`."""

    def start(self, connector: TcpConnector, on_done: ProbeCallback) -> InFlightProbe: ...


class _Check:
    """One distinct check: its probe, its state, and the real servers that use it."""

    __slots__ = (
        "callback_probe",
        "description",
        "due",
        "frozen_at",
        "index",
        "key",
        "kind",
        "misbehaving",
        "origins",
        "real_servers",
        "refused",
        "run",
        "state",
        "target",
    )

    def __init__(self, index: int, target: CheckTarget):
        self.index = index
        """Never reused: a stale reference to a stopped check finds nothing under it."""
        self.key = target.key
        self.target = target
        """The first target of the check: its probe, parameters and warm-up are the key's."""
        self.description = target.probe.describe()
        self.kind = self.description.split(" ", 1)[0]
        """The check type as metrics label it: tcp, http, https, script and so on."""
        self.origins: list[str] = []
        self.real_servers: list[RealServerId] = []
        self.frozen_at = math.inf
        """When a reload stopped it (it may be revived, state and all, until REVIVE_LIMIT)."""
        self.state: CheckState | None = None
        self.misbehaving = False
        """The probe raised or hung last time; logged once until it behaves again."""
        self.refused = False
        """Its last result was a refusal to run (reported once until a result is not)."""
        self.due = 0.0
        """When the probe in flight (or the last one) was due to start."""
        probe = target.probe
        self.callback_probe = probe if isinstance(probe, CallbackProbe) else None
        self.run: _CallbackRun | None = None
        """The callback probe in flight."""


class _CallbackRun:
    """One start of a callback probe; its `deliver` is the probe's `on_done`."""

    __slots__ = ("check", "done", "hung_at", "pool", "probe", "started_at")

    def __init__(self, pool: CheckPool, check: _Check, started_at: float):
        self.pool = pool
        self.check = check
        self.started_at = started_at
        self.hung_at = math.inf
        self.probe: InFlightProbe | None = None
        self.done = False
        """A result arrived, or the pool gave up on the probe (hung, closed)."""

    def deliver(self, result: ProbeResult) -> None:
        if self.done:
            return  # too late: the pool has counted the probe as hung, or is closed
        self.done = True
        check = self.check
        check.run = None
        self.probe = None  # the probe holds `deliver`: no cycle left for the collector
        check.misbehaving = False
        self.pool._complete(check, result)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One check of a real server as `lvsha status` shows it."""

    description: str
    status: str
    """unknown, up, down, disabled (CheckStatus) or paused."""
    last_result: ProbeResult | None
    last_result_at: float | None
    """Loop time the last probe ended."""


@dataclass(frozen=True, slots=True)
class PoolChange:
    """What `CheckPool.reconfigure` changed."""

    kept: int
    """Checks that run on as they were: state, counters and schedule."""
    started: tuple[CheckKey, ...]
    """Checks new to the pool (or whose parameters changed: a new key), starting afresh."""
    revived: tuple[CheckKey, ...]
    """Checks the previous reload stopped, running again with the state they had."""
    stopped: tuple[CheckKey, ...]
    """Checks no real server uses any more (probes in flight cancelled)."""
    added: tuple[RealServerId, ...]
    removed: tuple[RealServerId, ...]
    rejudged: tuple[RealServerId, ...]
    """Real servers kept whose set of checks changed."""

    def describe(self) -> str:
        return (
            f"checks: {self.kept} kept, {len(self.started)} started, {len(self.revived)} "
            f"revived, {len(self.stopped)} stopped; real servers: {len(self.added)} added, "
            f"{len(self.removed)} removed, {len(self.rejudged)} with other checks"
        )


class _Group:
    """The targets of one check key."""

    __slots__ = ("origins", "real_servers", "target")

    def __init__(self, target: CheckTarget) -> None:
        self.target = target
        """The first target of the key."""
        self.origins: list[str] = []
        self.real_servers: dict[RealServerId, None] = {}
        """An ordered set."""


@dataclass(frozen=True, slots=True)
class PlanIndex:
    """A plan's targets grouped by check key, as the pool runs them (`index_plan`)."""

    plan: CheckPlan
    groups: dict[CheckKey, _Group]
    checks_of: dict[RealServerId, tuple[CheckKey, ...]]


def index_plan(plan: CheckPlan) -> PlanIndex:
    """Group `plan` for `CheckPool.reconfigure` (pure)."""
    indexer = PlanIndexer()
    for target in plan.targets:
        indexer.add(target)
    return indexer.index(plan)


class PlanIndexer:
    """`index_plan` a target at a time, for a caller that builds a large index in slices."""

    def __init__(self) -> None:
        self._groups: dict[CheckKey, _Group] = {}
        self._keys_of: dict[RealServerId, list[CheckKey]] = {}

    def add(self, target: CheckTarget) -> None:
        key = target.key
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(target)
        group.origins.append(target.origin)
        real_server = target.real_server
        group.real_servers[real_server] = None
        keys = self._keys_of.get(real_server)
        if keys is None:
            keys = self._keys_of[real_server] = []
        if key not in keys:
            keys.append(key)

    def index(self, plan: CheckPlan) -> PlanIndex:
        """The index of `plan`, whose targets have all been added."""
        keys_of = self._keys_of
        checks_of = {rs: tuple(keys_of.get(rs, ())) for rs in plan.real_servers}
        return PlanIndex(plan, self._groups, checks_of)


class CheckPool:
    """Runs a `CheckPlan`: construct, `start()` inside the running loop, `close()` at the end;
    `reconfigure()` in between moves it to another plan, changing only what differs."""

    def __init__(
        self,
        plan: CheckPlan,
        *,
        max_in_flight: int | None = None,
        hang_margin: float = DEFAULT_HANG_MARGIN,
        rng: random.Random | None = None,
        tools: ProbeTools | None = None,
        lateness_window: int = DEFAULT_LATENESS_WINDOW,
    ):
        if hang_margin < 0:
            raise ValueError(f"hang_margin must be >= 0, got {hang_margin}")
        self._plan = plan
        self._hang_margin = hang_margin
        self._rng = rng if rng is not None else random.Random()
        self._tools = tools if tools is not None else ProbeTools()
        self.lateness = LatenessStats(lateness_window)
        self.durations = CheckDurations()
        """How long probes took, by check type (every configured type, 0 until probed)."""
        if max_in_flight is None:
            max_in_flight = in_flight_budget()
        self._scheduler: ProbeScheduler[int] = ProbeScheduler(max_in_flight, self.lateness)
        self._checks: dict[int, _Check] = {}
        """The checks running, by index."""
        self._by_key: dict[CheckKey, _Check] = {}
        self._frozen: dict[CheckKey, _Check] = {}
        """Checks the last reload stopped, kept with their state in case a reload (a rollback)
        brings them back."""
        self._next_index = 0
        index = index_plan(plan)
        for group in index.groups.values():
            check = self._new_check(group.target)
            check.origins = group.origins
            check.real_servers = list(group.real_servers)
        self._keys_of = index.checks_of
        """Each real server's check keys, to compare with a reload's."""
        self._checks_of: dict[RealServerId, list[_Check]] = {
            rs: [self._by_key[key] for key in keys] for rs, keys in index.checks_of.items()
        }
        self._real_servers = tuple(self._checks_of)
        self._drained: dict[RealServerId, str] = {}
        """Drained real servers; a reload keeps those it removes (dormant): the drain holds
        again if they come back, until `enable`."""
        self._admin: dict[RealServerId, AdminState] = {}
        """The merged operator state of real servers not ready (`set_admins`)."""
        self._paused: set[int] = set()
        """Indexes of checks whose every real server is in maintenance: not scheduled."""
        self._presumed: dict[RealServerId, Presumption] = {}
        """How real servers stood before this start, until their checks have all spoken."""
        self._verdicts: dict[RealServerId, RealServerVerdict] = {}
        self._listeners: list[VerdictListener] = []
        self._health_listeners: list[HealthListener] = []
        self._refusal_listeners: list[RefusalListener] = []
        self._unreported: set[RealServerId] = set()
        """Real servers whose health nothing has reported since they started (see the module
        docstring: their first verdicts follow their own rules)."""
        self._guessed: set[RealServerId] = set()
        """Real servers whose health is a guess (alpha, no probe yet), not known."""
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancelled: set[asyncio.Task[None]] = set()
        """Probe tasks of stopped checks, cancelled, until they have ended."""
        self._connector: TcpConnector | None = None
        self._hang_guard: DeadlineTimer[int] | None = None
        """Callback probes in flight by check index, due to be cut if they give no verdict."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self._changes: CoalescingLog[RealServerId, _Change] = CoalescingLog(
            log, _change_line, _flap_line, _unlogged_line
        )
        """Verdict changes as log lines, coalesced while a real server flaps."""

    # Queries.

    @property
    def real_servers(self) -> tuple[RealServerId, ...]:
        """The same tuple until a reload changes the real servers."""
        return self._real_servers

    @property
    def plan(self) -> CheckPlan:
        return self._plan

    @property
    def distinct_checks(self) -> int:
        return len(self._checks)

    @property
    def in_flight(self) -> int:
        return self._scheduler.in_flight

    def verdicts(self) -> Mapping[RealServerId, RealServerVerdict]:
        """The current verdict of every real server (empty before `start`)."""
        return MappingProxyType(self._verdicts)

    def check_states(self) -> dict[CheckKey, CheckState]:
        """Each distinct check's state, read-only by convention (empty before `start`)."""
        return {
            check.key: check.state for check in self._checks.values() if check.state is not None
        }

    def is_drained(self, real_server: RealServerId) -> bool:
        admin = self._admin.get(real_server)
        return real_server in self._drained or (admin is not None and admin.mode is Mode.DRAIN)

    def is_configured(self, real_server: RealServerId) -> bool:
        return real_server in self._checks_of

    def admin_of(self, real_server: RealServerId) -> AdminState | None:
        """The operator's state of `real_server` (None: ready); a `disable` without
        `set_admins` counts as a drain of the file source, which is what drove it before."""
        admin = self._admin.get(real_server)
        if admin is None and real_server in self._drained:
            return AdminState(Mode.DRAIN, "file", self._drained[real_server])
        return admin

    def is_paused(self, key: CheckKey) -> bool:
        check = self._by_key.get(key)
        return check is not None and check.index in self._paused

    def check_reports(self, real_server: RealServerId) -> list[CheckReport]:
        """Each check of `real_server` (none if it is not configured), for the status."""
        reports = []
        paused = self._paused
        for check in self._checks_of.get(real_server, ()):
            state = check.state
            if state is None:
                reports.append(CheckReport(check.description, "unknown", None, None))
                continue
            status = "paused" if check.index in paused else state.status.value
            reports.append(
                CheckReport(check.description, status, state.last_result, state.last_result_at)
            )
        return reports

    # Subscriptions.

    def subscribe(self, listener: VerdictListener) -> Callable[[], None]:
        """Call `listener` with every verdict change from now on; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe_health(self, listener: HealthListener) -> Callable[[], None]:
        """Call `listener` with every `HealthReport` from now on; returns the unsubscriber."""
        self._health_listeners.append(listener)
        return lambda: self._health_listeners.remove(listener)

    def subscribe_refusals(self, listener: RefusalListener) -> Callable[[], None]:
        """Call `listener` with the first `ScriptRefusal` of each episode from now on; returns
        the unsubscriber."""
        self._refusal_listeners.append(listener)
        return lambda: self._refusal_listeners.remove(listener)

    def verdict_queue(self) -> asyncio.Queue[RealServerVerdict]:
        """A queue that first holds every current verdict, then receives each change."""
        queue: asyncio.Queue[RealServerVerdict] = asyncio.Queue()
        for verdict in self._verdicts.values():
            queue.put_nowait(verdict)
        self.subscribe(queue.put_nowait)
        return queue

    # Life cycle.

    def start(self, presumed: Mapping[RealServerId, Presumption] | None = None) -> None:
        """Schedule every check's first round at a random point within its warm-up.

        `presumed` says how real servers stood before this start (from the IPVS table a
        previous checker left): each stays so until its checks have spoken (see
        `lvsha.checks.state`). Real servers without one start as `alpha` says.
        """
        if self._loop is not None:
            raise RuntimeError("the check pool is already started")
        self._loop = asyncio.get_running_loop()
        self._presumed = {
            real_server: presumption
            for real_server, presumption in (presumed or {}).items()
            if real_server in self._checks_of
        }
        now = self._loop.time()
        self._unreported = set(self._checks_of)
        self._guessed = self._unreported - self._presumed.keys()
        for check in self._checks.values():
            self._first_round(check, now)
        if self._any_maintenance():
            self._repause(self._checks.values(), now)
        for real_server in self._checks_of:
            presumption = self._presumed.get(real_server)
            if presumption is None:
                reason = "no probe yet"
            elif presumption.up:
                reason = PRESUMED_UP_REASON
            else:
                reason = PRESUMED_DOWN_REASON
            self._publish(self._judge(real_server, reason, None, now))
        log.info(
            "check pool started: %d checks (%d distinct) for %d real servers",
            len(self._plan.targets),
            len(self._checks),
            len(self._checks_of),
        )
        self._arm()

    def _new_check(self, target: CheckTarget) -> _Check:
        check = _Check(self._next_index, target)
        self.durations.declare(check.kind)
        self._next_index += 1
        self._checks[check.index] = check
        self._by_key[check.key] = check
        return check

    def _first_round(self, check: _Check, now: float) -> None:
        """Start `check` as at start-up: its first round within its warm-up, from the health
        `alpha` or the presumptions of its real servers give it."""
        assert self._loop is not None
        if check.callback_probe is not None and self._connector is None:
            self._connector = TcpConnector(self._loop)
            self._hang_guard = DeadlineTimer(self._loop, self._hangs, self._cut_hung)
        target = check.target
        first_probe_at = now + self._rng.uniform(0.0, target.warmup)
        initial = None
        if any(rs in self._presumed for rs in check.real_servers):
            presumed_up = (
                self._presumed[rs].up for rs in check.real_servers if rs in self._presumed
            )
            initial = initial_health(target.params.alpha, presumed_up)
        check.state = CheckState(target.params, now, first_probe_at, initial)
        self._scheduler.schedule(check.index, first_probe_at)

    def reconfigure(self, plan: CheckPlan | PlanIndex) -> PoolChange:
        """Run `plan` from now on, changing only what differs from the plan running.

        A check whose key is in both plans runs on untouched: its state, counters and schedule
        (a probe in flight completes and counts), whichever real servers use it now. A check
        only the new plan has starts as at start-up, alone; one it no longer has stops (its
        probe in flight is cancelled) and is kept frozen until the next reload, which revives
        it with its state if it brings it back within REVIVE_LIMIT seconds (a rollback).

        A new real server starts as at start-up (`alpha`). A real server kept with a check
        added or changed keeps its verdict until its new checks have spoken, as a restarted
        checker's real servers do (`Presumption`): changing a check's timing does not take a
        healthy server out of service. Drains hold: by identity, so a drained server that a
        reload removes and a later one brings back is still drained.
        """
        if self._closed:
            raise RuntimeError("the check pool is closed")
        now = self._loop.time() if self._loop is not None else 0.0
        index = plan if isinstance(plan, PlanIndex) else index_plan(plan)
        groups = index.groups
        old_checks_of, old_keys_of = self._checks_of, self._keys_of
        # Before anything changes: how kept real servers whose checks change stand now.
        standing: dict[RealServerId, Presumption] = {}
        rejudged: list[RealServerId] = []
        for rs, keys in index.checks_of.items():
            old_keys = old_keys_of.get(rs)
            if old_keys is None or old_keys == keys:
                continue
            rejudged.append(rs)
            if self._loop is not None and any(key not in self._by_key for key in keys):
                standing[rs] = self._standing(rs)
        stopped = [c for key, c in self._by_key.items() if key not in groups]
        for gone in stopped:
            self._stop_check(gone, now)
        self._scheduler.forget(gone.index for gone in stopped)
        frozen, self._frozen = self._frozen, {gone.key: gone for gone in stopped}
        revived: list[CheckKey] = []
        started: list[_Check] = []
        kept = 0
        for key, group in groups.items():
            check = self._by_key.get(key)
            if check is not None:
                kept += 1
            elif (thawed := frozen.pop(key, None)) is not None and (
                now - thawed.frozen_at <= REVIVE_LIMIT
            ):
                check = self._checks[thawed.index] = self._by_key[key] = thawed
                check.frozen_at = math.inf
                revived.append(key)
            else:
                check = self._new_check(group.target)
                started.append(check)
            check.origins = group.origins
            check.real_servers = list(group.real_servers)
        by_key = self._by_key
        self._checks_of = {
            rs: [by_key[key] for key in keys] for rs, keys in index.checks_of.items()
        }
        self._keys_of = index.checks_of
        self._real_servers = tuple(self._checks_of)
        self._plan = index.plan
        added = tuple(rs for rs in self._checks_of if rs not in old_checks_of)
        removed = tuple(rs for rs in old_checks_of if rs not in self._checks_of)
        for rs in removed:
            self._presumed.pop(rs, None)
            self._verdicts.pop(rs, None)
            self._unreported.discard(rs)
            self._guessed.discard(rs)
        self._presumed.update(standing)
        if self._loop is not None:
            self._unreported.update(added)
            self._guessed.update(added)
        if self._loop is not None:
            for key in revived:
                check = self._by_key[key]
                assert check.state is not None
                self._scheduler.schedule(check.index, max(now, check.state.next_probe_at))
            for check in started:
                self._first_round(check, now)
            for rs in rejudged:
                self._publish(self._judge(rs, "checks changed by a reload", None, now))
            for rs in added:
                self._publish(self._judge(rs, "no probe yet", None, now))
            if self._paused or self._any_maintenance():
                # Checks kept, revived or started serve other real servers now.
                self._repause(self._checks.values(), now)
            self._launch(self._scheduler.start_due(now))
            self._arm()
        change = PoolChange(
            kept=kept,
            started=tuple(check.key for check in started),
            revived=tuple(revived),
            stopped=tuple(check.key for check in stopped),
            added=added,
            removed=removed,
            rejudged=tuple(rejudged),
        )
        log.info("check pool reconfigured: %s", change.describe())
        return change

    def _stop_check(self, check: _Check, now: float) -> None:
        """Stop a check a reload dropped: cancel its probe in flight, keep its state."""
        del self._checks[check.index]
        del self._by_key[check.key]
        check.frozen_at = now
        self._paused.discard(check.index)
        self._cancel_probe(check)

    def _cancel_probe(self, check: _Check) -> None:
        """Cancel `check`'s probe in flight, if any; its slot is the caller's to free."""
        if check.run is not None:
            self._abandon(check.run)
        task = self._tasks.pop(check.index, None)
        if task is not None:
            task.cancel()
            self._cancelled.add(task)
            task.add_done_callback(self._cancelled.discard)

    def _standing(self, real_server: RealServerId) -> Presumption:
        """How `real_server` stands by its checks (drains aside), as a presumption."""
        status, weight = self._checks_say(real_server)
        return Presumption(up=in_service(status), weight=weight)

    async def stopped_probes(self) -> None:
        """Wait until the probes of checks a reload stopped have ended (they were cancelled)."""
        if self._cancelled:
            await asyncio.gather(*self._cancelled, return_exceptions=True)

    async def close(self) -> None:
        """Stop scheduling, cancel the probes in flight, close the shared probe resources."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._hang_guard is not None:
            self._hang_guard.close()
        for check in self._checks.values():
            if check.run is not None:
                self._abandon(check.run)
        if self._connector is not None:
            self._connector.close()
        tasks = [*self._tasks.values(), *self._cancelled]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._tools.close()
        self._changes.flush()

    # Operator commands.

    def disable(self, real_server: RealServerId, reason: str) -> None:
        """Drain `real_server`: Disabled until `enable`, its checks running on underneath."""
        self._known(real_server)
        if real_server in self._drained:
            raise CheckTransitionError(f"{real_server} is already disabled")
        self._drained[real_server] = reason
        log.info("%s disabled: %s", real_server, reason)
        self._rejudge(real_server, reason, None)

    def enable(self, real_server: RealServerId, reason: str) -> None:
        """End a drain; also a dormant one, of a real server a reload removed."""
        if real_server not in self._drained:
            self._known(real_server)
            raise CheckTransitionError(f"{real_server} is not disabled")
        del self._drained[real_server]
        if real_server not in self._checks_of:
            log.debug("%s (not configured) enabled: %s", real_server, reason)
            return
        log.info("%s enabled: %s", real_server, reason)
        self._rejudge(real_server, reason, None)

    def set_admin(self, real_server: RealServerId, admin: AdminState | None, reason: str) -> None:
        """`set_admins` for one real server."""
        self.set_admins([(real_server, admin, reason)])

    def set_admins(self, changes: Sequence[AdminChange]) -> None:
        """The operator's merged state of these real servers from now on (None: ready), each
        with the reason its verdict gives. Drain: Disabled, checks running. Maint: Maintenance,
        and the checks no other real server needs are paused; back to ready, they are due at
        once. A real server not configured keeps its state (dormant) until told otherwise."""
        rejudge: list[tuple[RealServerId, str]] = []
        maint_changed: dict[int, _Check] = {}
        for real_server, admin, reason in changes:
            old = self._admin.pop(real_server, None)
            if admin is not None:
                self._admin[real_server] = admin
            if old == admin or real_server not in self._checks_of:
                continue
            what = "ready" if admin is None else f"{admin.mode.value} ({admin.source})"
            log.info("%s: %s: %s", real_server, what, reason)
            rejudge.append((real_server, reason))
            if (old is not None and old.mode is Mode.MAINT) != (
                admin is not None and admin.mode is Mode.MAINT
            ):
                for check in self._checks_of[real_server]:
                    maint_changed[check.index] = check
        if self._loop is None:
            return  # start() pauses and judges
        now = self._loop.time()
        if maint_changed:
            self._repause(maint_changed.values(), now)
            self._launch(self._scheduler.start_due(now))
            self._arm()
        for real_server, reason in rejudge:
            self._publish(self._judge(real_server, reason, None, now))

    def _any_maintenance(self) -> bool:
        return any(admin.mode is Mode.MAINT for admin in self._admin.values())

    def _in_maintenance(self, real_server: RealServerId) -> bool:
        admin = self._admin.get(real_server)
        return admin is not None and admin.mode is Mode.MAINT

    def _repause(self, checks: Iterable[_Check], now: float) -> None:
        """Pause the `checks` whose every real server is in maintenance, resume the others
        that were paused (due now). The caller launches what is due and re-arms."""
        paused: list[int] = []
        for check in checks:
            if check.state is None or self._checks.get(check.index) is not check:
                continue
            wanted = bool(check.real_servers) and all(
                self._in_maintenance(rs) for rs in check.real_servers
            )
            if wanted == (check.index in self._paused):
                continue
            if wanted:
                self._paused.add(check.index)
                self._cancel_probe(check)
                paused.append(check.index)
                log.debug("check %s paused: its real servers are in maintenance", check.description)
            else:
                self._paused.discard(check.index)
                self._scheduler.schedule(check.index, now)
                log.debug("check %s resumed", check.description)
        if paused:
            self._scheduler.forget(paused)

    def _known(self, real_server: RealServerId) -> None:
        if real_server not in self._checks_of:
            raise KeyError(f"no real server {real_server} in the check plan")

    # Scheduling.

    def _arm(self) -> None:
        if self._closed or self._loop is None:
            return
        wakeup = self._scheduler.next_wakeup()
        if wakeup == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wakeup
        self._timer = None if wakeup is None else self._loop.call_at(wakeup, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self._launch(self._scheduler.start_due(self._loop.time()))
        self._arm()

    def _launch(self, starts: Iterable[ProbeStart[int]]) -> None:
        assert self._loop is not None
        for start in starts:
            check = self._checks[start.key]  # forgotten keys never start
            check.due = start.due
            if check.callback_probe is not None:
                self._start_callback_probe(check, check.callback_probe, start.started_at)
                continue
            task = self._loop.create_task(self._run(check), name=f"check {check.description}")
            task.add_done_callback(self._on_task_done)
            self._tasks[check.index] = task

    def _start_callback_probe(self, check: _Check, probe: CallbackProbe, now: float) -> None:
        assert self._loop is not None and self._connector is not None
        assert self._hang_guard is not None and check.state is not None
        run = check.run = _CallbackRun(self, check, now)
        try:
            run.probe = probe.start(self._connector, run.deliver)
        except Exception as error:
            run.done = True
            check.run = None
            result = self._misbehaved(check, error, self._loop.time() - now)
            # Not from here: _launch may be iterating over the starts of another completion.
            self._loop.call_soon(self._complete, check, result)
            return
        if run.done:
            return  # it answered from inside start(), against the contract, but answered
        limit = check.state.params.timeout + self._hang_margin
        run.hung_at = self._hang_guard.add(check.index, now, limit)

    def _hangs(self, index: int, hung_at: float) -> bool:
        check = self._checks.get(index)
        run = None if check is None else check.run
        return run is not None and run.hung_at == hung_at

    def _cut_hung(self, indexes: list[int], now: float) -> None:
        for index in indexes:
            check = self._checks.get(index)
            run = None if check is None else check.run
            if check is None or run is None:
                continue
            assert check.state is not None
            self._abandon(run)
            limit = check.state.params.timeout + self._hang_margin
            self._complete(check, self._hung(check, limit, now - run.started_at))

    def _abandon(self, run: _CallbackRun) -> None:
        """Cancel a callback probe in flight; it counts as over, without a result."""
        run.done = True
        run.check.run = None
        probe, run.probe = run.probe, None
        if probe is not None:
            try:
                probe.cancel()
            except Exception:
                log.exception("check %s: cancelling its probe failed", run.check.description)

    @staticmethod
    def _on_task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("check task %s failed", task.get_name(), exc_info=error)

    async def _run(self, check: _Check) -> None:
        result = await self._probe(check)
        if self._tasks.get(check.index) is not asyncio.current_task():
            return  # a reload stopped the check; the probe ignored its cancellation
        del self._tasks[check.index]
        self._complete(check, result)

    def _complete(self, check: _Check, result: ProbeResult) -> None:
        """A probe of `check` is over: feed its state, start what its slot lets start, judge."""
        if self._closed or self._checks.get(check.index) is not check:
            return
        assert self._loop is not None and check.state is not None
        now = self._loop.time()
        state = check.state
        self.durations.observe(check.kind, result.latency)
        failed_rounds = state.consecutive_failures
        events = state.probe_completed(result, now, check.due)
        starts = self._scheduler.finished(check.index, now, state.next_probe_at)
        if starts:
            self._launch(starts)
        self._arm()
        if result.refused != check.refused:
            check.refused = result.refused
            if result.refused:
                self._refused(check, result.reason)
        if events:
            self._fan_out(check, events, now)
        if self._unreported and state.consecutive_failures > failed_rounds:
            self._found_unhealthy(check, now)

    async def _probe(self, check: _Check) -> ProbeResult:
        """The probe's result; a probe that raises or hangs fails instead of stalling the check."""
        assert self._loop is not None and check.state is not None
        started_at = self._loop.time()
        limit = check.state.params.timeout + self._hang_margin
        guard = asyncio.timeout(limit)
        try:
            async with guard:
                result = await check.target.probe.run(self._tools)
        except Exception as error:
            latency = self._loop.time() - started_at
            if isinstance(error, TimeoutError) and guard.expired():
                return self._hung(check, limit, latency)
            return self._misbehaved(check, error, latency)
        check.misbehaving = False
        return result

    @staticmethod
    def _hung(check: _Check, limit: float, latency: float) -> ProbeResult:
        """A probe gave no verdict within `limit` s: a failed result, logged once until the
        probe behaves again."""
        reason = f"probe hung: no verdict after {limit:g} s"
        if not check.misbehaving:
            log.warning("check %s (%s): %s", check.description, check.origins[0], reason)
        check.misbehaving = True
        return ProbeResult(False, reason, latency)

    @staticmethod
    def _misbehaved(check: _Check, error: Exception, latency: float) -> ProbeResult:
        """A probe raised: a failed result, logged once until the probe behaves again."""
        if not check.misbehaving:
            log.error(
                "check %s (%s) raised; counted as a failed probe",
                check.description,
                check.origins[0],
                exc_info=error,
            )
        check.misbehaving = True
        return ProbeResult(False, f"probe error: {type(error).__name__}: {error}", latency)

    # Verdicts.

    def _fan_out(self, check: _Check, events: list[CheckEvent], now: float) -> None:
        if not events:
            return
        for event in events:
            log.debug("check %s: %s", check.description, event)
        reason = events[-1].reason
        for real_server in check.real_servers:
            self._publish(self._judge(real_server, reason, check.description, now))

    def _rejudge(self, real_server: RealServerId, reason: str, check: str | None) -> None:
        if self._loop is None:
            return  # start() judges every real server
        self._publish(self._judge(real_server, reason, check, self._loop.time()))

    def _judge(
        self, real_server: RealServerId, reason: str, check: str | None, now: float
    ) -> RealServerVerdict:
        status, weight = self._checks_say(real_server)
        admin = self._admin.get(real_server)
        if admin is not None and admin.mode is Mode.MAINT:
            health = Health.MAINTENANCE
        elif admin is not None or real_server in self._drained:
            health = Health.DISABLED
        elif in_service(status):
            health = Health.HEALTHY
        else:
            health = Health.UNHEALTHY
        return RealServerVerdict(real_server, health, weight, reason, check, now)

    def _checks_say(self, real_server: RealServerId) -> tuple[CheckStatus, int | None]:
        """What `real_server`'s checks (or its presumption, until they have spoken) make of
        it, drains aside: its combined status and dynamic weight."""
        states = [c.state for c in self._checks_of[real_server] if c.state is not None]
        presumption = self._presumed.get(real_server)
        if presumption is not None and all(state.spoken for state in states):
            del self._presumed[real_server]  # its checks have all spoken
            presumption = None
        status = real_server_status(
            presumed_status(s.status, s.spoken, presumption) for s in states
        )
        # Several dynamic weights: the lowest, the most cautious reading of them.
        weights = [state.weight for state in states if state.weight is not None]
        weight = min(weights) if weights else None
        if weight is None and presumption is not None and presumption.weight is not None:
            weight = presumption.weight  # the weight it had, until a probe gives one
        return status, weight

    def _publish(self, verdict: RealServerVerdict) -> None:
        previous = self._verdicts.get(verdict.real_server)
        if previous is not None and previous.verdict == verdict.verdict:
            return
        self._verdicts[verdict.real_server] = verdict
        if previous is not None:
            change = _Change(previous.health, verdict)
            log.debug("%s", _change_line(verdict.real_server, change))
            self._changes.changed(verdict.real_server, change)
        for listener in list(self._listeners):
            try:
                listener(verdict)
            except Exception:
                log.exception("verdict listener %r failed", listener)
        if previous is not None and previous.health is not verdict.health:
            self._health_changed(previous.health, verdict)

    # Reports for the operator.

    def _health_changed(self, old: Health, verdict: RealServerVerdict) -> None:
        real_server = verdict.real_server
        if real_server in self._unreported:
            self._unreported.discard(real_server)
            if real_server in self._guessed:
                self._guessed.discard(real_server)
                if verdict.health is Health.HEALTHY:
                    return  # its first verdict: it was never known to be anything else
        self._guessed.discard(real_server)
        self._report(HealthReport(old, verdict))

    def _found_unhealthy(self, check: _Check, now: float) -> None:
        """`check` ended a failing round: real servers it leaves unhealthy, never reported
        since they started, are reported (their verdict did not change: they started so)."""
        assert check.state is not None
        for real_server in check.real_servers:
            if real_server not in self._unreported:
                continue
            current = self._verdicts.get(real_server)
            if current is None or current.health is not Health.UNHEALTHY:
                continue
            self._unreported.discard(real_server)
            self._guessed.discard(real_server)
            reason = check.state.reason
            found = RealServerVerdict(
                real_server, Health.UNHEALTHY, current.weight, reason, check.description, now
            )
            self._report(HealthReport(Health.UNHEALTHY, found))

    def _report(self, report: HealthReport) -> None:
        for listener in list(self._health_listeners):
            try:
                listener(report)
            except Exception:
                log.exception("health listener %r failed", listener)

    def _refused(self, check: _Check, reason: str) -> None:
        refusal = ScriptRefusal(
            check.description, check.target.probe, reason, tuple(check.real_servers)
        )
        for listener in list(self._refusal_listeners):
            try:
                listener(refusal)
            except Exception:
                log.exception("refusal listener %r failed", listener)


@dataclass(frozen=True, slots=True)
class _Change:
    """A verdict change, for the log."""

    before: Health
    verdict: RealServerVerdict

    def now(self) -> str:
        verdict = self.verdict
        weight = "" if verdict.weight is None else f" weight {verdict.weight}"
        check = "" if verdict.check is None else f"{verdict.check}: "
        return f"{verdict.health.value}{weight} ({check}{verdict.reason})"


def _change_line(real_server: RealServerId, change: _Change) -> str:
    return f"{real_server}: {change.before.value} -> {change.now()}"


def _flap_line(real_server: RealServerId, change: _Change, changes: int, span: float) -> str:
    return f"{real_server}: flapped {changes} times in the last {span:.0f} s, now {change.now()}"


def _unlogged_line(changes: int, real_servers: int, span: float) -> str:
    return (
        f"{changes} more verdict changes of {real_servers} real servers in the last "
        f"{span:.0f} s not logged one by one (too many at once; debug level shows each)"
    )
