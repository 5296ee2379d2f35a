"""Real-server and quorum hooks: the operator's scripts the checker runs when a real server
goes up or down (`notify_up`, `notify_down`) and when a virtual service gains or loses quorum
(`quorum_up`, `quorum_down`), as keepalived's checker does.

When they run (keepalived's ipwrapper.c in 2.2, except where said):

- a real server's checks find it down (healthy -> unhealthy), or up again (unhealthy ->
  healthy). A server that starts unhealthy (`alpha`, or out of service in the IPVS table a
  previous checker left) runs notify_down when its first failing round ends and notify_up when
  it comes up. A start on guessed health runs nothing: a server up from the start was never
  down. An operator's drain or maintenance is no health change: the hooks run on what the
  checks say once it ends, if that differs from what they said before.
- a service loses quorum, or gains it (also the first time after an `alpha` start);
- a reload that removes a real server that is up runs its notify_down, and one that removes a
  service holding quorum runs its quorum_down (with the removed configuration's hooks);
- lvsha stops: for a virtual server with `omega`, notify_down of its real servers that are up,
  then quorum_down if it holds quorum (keepalived also runs quorum_down of a service that lost
  quorum long before; lvsha does not: that hook has run already).

keepalived passes no arguments; the hooks run with their configured argv, as the global
`script_user` under script security (`lvsha.scripts`), and learn what happened from their
environment (`LVSHA_NOTIFY_*`, `LVSHA_VS`, `LVSHA_RS_*`). Unlike keepalived, which starts them
without waiting, the hooks of one real server (or one service) run one at a time in the order
their transitions happened, each killed with its process group after HOOK_TIMEOUT; those of
different servers run side by side, at most MAX_RUNNING at once. Queuing never waits: the
checker's loop goes on. A hook that fails or hangs is logged; one refused (script security,
not found, unknown user) is logged and told as a `script_refused` event, once per episode.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import shlex
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from lvsha.alerts.events import FieldValue
from lvsha.checks.pool import CheckPool, HealthReport
from lvsha.checks.targets import real_server_id, virtual_service_id, virtual_service_label
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict, host_port
from lvsha.config.base import Command
from lvsha.config.model import LvshaConfig
from lvsha.ipvs.model import ServiceKey
from lvsha.ipvs.specs import group_service_keys, service_key
from lvsha.ipvs.syncer import IpvsSyncer, QuorumChange
from lvsha.scripts import SCRIPT_PATH, ScriptCommand, run_hook

log = logging.getLogger(__name__)

HOOK_TIMEOUT = 10.0
"""Seconds a hook may run before it is killed (a VRRP notify hook's default)."""
LANE_LIMIT = 16
"""Hook runs waiting at most per real server or service; a flapping server reaches this only
while its hooks hang. When full, the oldest waiting run is dropped: the newest transitions
describe what holds now."""
MAX_RUNNING = 16
"""Hooks running at once, over every real server and service: a whole farm failing at once
does not fork a thousand scripts at the same moment."""
STOP_BUDGET = 5.0
"""Seconds a stopping checker waits for its hooks (omega's among them); the rest are killed."""

REFUSED_EVENT = "script_refused"
PROCESS = "checker"


@dataclass(frozen=True, slots=True)
class HookRun:
    """One run of one hook."""

    hook: str
    """notify_up, notify_down, quorum_up or quorum_down."""
    command: ScriptCommand
    environment: tuple[tuple[str, str], ...]
    subject: str
    """Whose hook it is, for logs: "192.0.2.21:80 of web (TCP 192.0.2.10:80)"."""
    timeout: float = HOOK_TIMEOUT

    @property
    def script(self) -> str:
        """The command line as configured: what logs and events name the hook by."""
        return shlex.join(self.command.argv)

    def describe(self) -> str:
        return f"{self.hook} hook of {self.subject}"


RunCallback = Callable[[HookRun, str | None], None]
"""on_run(run, refusal): after each run, why it was refused (not started), or None when it
ran, whatever its exit status."""


class HookLanes:
    """Runs hooks one at a time per lane, in the order queued; lanes run side by side, at most
    `max_running` hooks at once. `submit` never waits; call it from the event loop."""

    def __init__(
        self,
        on_run: RunCallback | None = None,
        *,
        lane_limit: int = LANE_LIMIT,
        max_running: int = MAX_RUNNING,
    ) -> None:
        if lane_limit < 1 or max_running < 1:
            raise ValueError("lane_limit and max_running must be >= 1")
        self._on_run = on_run
        self._lane_limit = lane_limit
        self._slots = asyncio.Semaphore(max_running)
        self._lanes: dict[Hashable, collections.deque[HookRun]] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}
        self._closing = False
        self.ran = 0
        """Runs started or refused since the start."""

    @property
    def waiting(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    def submit(self, lane: Hashable, run: HookRun) -> None:
        if self._closing:
            log.warning("%s not run: the checker is stopping", run.describe())
            return
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = collections.deque()
        if len(queue) >= self._lane_limit:
            dropped = queue.popleft()
            log.error(
                "hook queue of %s full (%d waiting): dropped the oldest, the %s",
                run.subject,
                self._lane_limit,
                dropped.describe(),
            )
        queue.append(run)
        if lane not in self._workers:
            worker = asyncio.get_running_loop().create_task(
                self._work(lane, queue), name=f"hooks of {run.subject}"
            )
            self._workers[lane] = worker

    async def close(self, budget: float = STOP_BUDGET) -> None:
        """Take no more; let what is queued run for up to `budget` seconds, then kill the rest."""
        self._closing = True
        workers = list(self._workers.values())
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=budget)
        if late:
            log.warning(
                "stopping: %d hooks still running after %g s killed, %d waiting not run",
                len(late),
                budget,
                self.waiting,
            )
            for worker in late:
                worker.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _work(self, lane: Hashable, queue: collections.deque[HookRun]) -> None:
        try:
            while queue:
                run = queue.popleft()
                async with self._slots:
                    try:
                        await self._execute(run)
                    except Exception:
                        log.exception("%s failed", run.describe())
        finally:
            del self._workers[lane]
            if self._lanes.get(lane) is queue:
                del self._lanes[lane]

    async def _execute(self, run: HookRun) -> None:
        tell = None if self._on_run is None else functools.partial(self._on_run, run)
        await run_hook(
            run.command,
            dict(run.environment),
            run.timeout,
            what=run.describe(),
            logger=log,
            tell=tell,
        )


# --- what the configuration says ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hooks:
    """The hooks of one real server or one service, with what their environment says."""

    up: ScriptCommand | None
    down: ScriptCommand | None
    environment: tuple[tuple[str, str], ...]
    subject: str
    omega: bool


@dataclass(frozen=True, slots=True)
class HookBook:
    """Every hook of a configuration: real servers and services that have one (or `omega`)."""

    real_servers: Mapping[RealServerId, _Hooks]
    services: Mapping[ServiceKey, _Hooks]
    omega: frozenset[ServiceKey]
    """Services with `omega`: their down hooks run when lvsha stops."""


def hook_book(config: LvshaConfig) -> HookBook:
    """The hooks of `config` (pure). Costs a loop over the real servers, and nothing more for
    those without hooks."""
    glob = config.global_

    def command(argv: Command | None) -> ScriptCommand | None:
        if argv is None:
            return None
        return ScriptCommand(
            argv=argv, user=glob.script_user, script_security=glob.enable_script_security
        )

    real_servers: dict[RealServerId, _Hooks] = {}
    services: dict[ServiceKey, _Hooks] = {}
    omega: set[ServiceKey] = set()
    for vs in config.virtual_servers:
        # A group's members share one quorum, told once under any member's key: the hooks are
        # found under each, and omega's stop runs them once (under the first).
        keys = (
            group_service_keys(vs, config.virtual_server_groups[vs.group])
            if vs.group is not None
            else (service_key(vs),)
        )
        key = keys[0]
        label = virtual_service_label(vs)
        named = f"{vs.name} ({key})" if vs.name else str(key)
        if vs.group is not None:
            named = f"{vs.name or vs.group} (group {vs.group})"
        service_env = (("LVSHA_VS", label), ("LVSHA_VS_NAME", vs.name or vs.group or ""))
        if vs.omega:
            omega.add(key)
        if vs.quorum_up is not None or vs.quorum_down is not None:
            hooks = _Hooks(
                command(vs.quorum_up), command(vs.quorum_down), service_env, named, vs.omega
            )
            services.update(dict.fromkeys(keys, hooks))
        if not any(
            rs.notify_up is not None or rs.notify_down is not None for rs in vs.real_servers
        ):
            continue
        identity = virtual_service_id(vs)
        for rs in vs.real_servers:
            if rs.notify_up is None and rs.notify_down is None:
                continue
            rs_id = real_server_id(vs, rs, identity)
            environment = (
                *service_env,
                ("LVSHA_RS_ADDRESS", rs_id.address),
                ("LVSHA_RS_PORT", str(rs_id.port)),
            )
            subject = f"{host_port(rs_id.address, rs_id.port)} of {named}"
            real_servers[rs_id] = _Hooks(
                command(rs.notify_up), command(rs.notify_down), environment, subject, vs.omega
            )
    return HookBook(real_servers, services, frozenset(omega))


# --- when they run --------------------------------------------------------------------------


class LvsHooks:
    """Listens to the check pool and the IPVS syncer and queues the hooks their changes call
    for (see the module docstring). `reconfigure` after a reload is in force, `stop` at the
    end. `send` takes `script_refused` events (type, fields) and must not wait."""

    def __init__(
        self,
        config: LvshaConfig,
        pool: CheckPool,
        syncer: IpvsSyncer,
        send: Callable[[str, dict[str, FieldValue]], None] | None = None,
        *,
        lanes: HookLanes | None = None,
    ) -> None:
        self.book = hook_book(config)
        self._pool = pool
        self._send = send
        self.lanes = lanes if lanes is not None else HookLanes(self._on_run)
        self._health: dict[RealServerId, bool] = {}
        """What the checks last said of each real server with hooks: True up, False down."""
        self._ran: dict[RealServerId, bool] = {}
        """The last hook queued for each real server: True notify_up, False notify_down."""
        self._refused: dict[str, str] = {}
        """Hooks in a refusal episode (by command line), with the reason told."""
        self._unsubscribers = [
            pool.subscribe(self.on_verdict),
            pool.subscribe_health(self.on_health),
            syncer.subscribe_quorum(self.on_quorum, every_change=True),
        ]

    # Listeners.

    def on_verdict(self, verdict: RealServerVerdict) -> None:
        real_server = verdict.real_server
        if real_server not in self.book.real_servers:
            return
        said = _checks_say(verdict)
        if not said:
            return  # drained or in maintenance: not what the checks say
        before = self._health.get(real_server)
        up = self._health[real_server] = said[real_server]
        if before is not None and before != up:
            self._real_server(real_server, up, verdict.reason)

    def on_health(self, report: HealthReport) -> None:
        """A real server that started unhealthy and whose checks found it so."""
        real_server = report.verdict.real_server
        if (
            real_server in self.book.real_servers
            and report.old is Health.UNHEALTHY
            and report.verdict.health is Health.UNHEALTHY
            and real_server not in self._ran
        ):
            self._health[real_server] = False
            self._real_server(real_server, False, report.verdict.reason)

    def on_quorum(self, change: QuorumChange) -> None:
        hooks = self.book.services.get(change.service.key)
        if hooks is None:
            return
        self._service(change.service.key, hooks, change.quorum.up, change.quorum.live_weight)

    # Life cycle.

    def reconfigure(
        self,
        config: LvshaConfig,
        real_servers: frozenset[RealServerId],
        quorum_before: Mapping[ServiceKey, bool],
    ) -> None:
        """`config` is in force, with `real_servers`; `quorum_before`: whether each service
        held quorum before the reload. Real servers and services the reload removed run their
        down hooks (the old ones) if they were up."""
        old = self.book
        self.book = new = hook_book(config)
        kept = {
            key
            for vs in config.virtual_servers
            for key in (
                group_service_keys(vs, config.virtual_server_groups[vs.group])
                if vs.group is not None
                else (service_key(vs),)
            )
        }
        for real_server, hooks in old.real_servers.items():
            if real_server in real_servers:
                continue
            if self._health.pop(real_server, None) and hooks.down is not None:
                self._queue(real_server, "notify_down", hooks, False, "removed by a reload")
            self._ran.pop(real_server, None)
        # A group's members share one _Hooks: it is gone only when all its members are.
        shared: dict[int, tuple[_Hooks, list[ServiceKey]]] = {}
        for key, hooks in old.services.items():
            shared.setdefault(id(hooks), (hooks, []))[1].append(key)
        for hooks, keys in shared.values():
            if any(key in kept for key in keys) or hooks.down is None:
                continue
            if any(quorum_before.get(key) for key in keys):
                self._queue(keys[0], "quorum_down", hooks, False, "removed by a reload")
        for real_server in list(self._health):
            if real_server not in new.real_servers:
                del self._health[real_server]
                self._ran.pop(real_server, None)
        # Real servers that have hooks from now on start from what their checks say now.
        verdicts = self._pool.verdicts()
        for real_server in new.real_servers:
            verdict = verdicts.get(real_server)
            if real_server not in self._health and verdict is not None:
                self._health.update(_checks_say(verdict))
        self._refused.clear()  # a hook still refused is told of once more

    def real_servers_up(self) -> list[RealServerId]:
        return [rs for rs, up in self._health.items() if up]

    async def stop(self, quorum: Mapping[ServiceKey, bool], budget: float = STOP_BUDGET) -> None:
        """lvsha stops: listen no more, queue omega's down hooks (`quorum`: whether each
        service holds quorum now), and give the hooks queued up to `budget` s."""
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []
        book = self.book
        if book.omega:
            for real_server in self.real_servers_up():
                hooks = book.real_servers[real_server]
                if hooks.omega and hooks.down is not None:
                    self._queue(real_server, "notify_down", hooks, False, "lvsha stops")
            for key in book.omega:
                hooks_of = book.services.get(key)
                if hooks_of is not None and hooks_of.down is not None and quorum.get(key):
                    self._queue(key, "quorum_down", hooks_of, False, "lvsha stops")
        await self.lanes.close(budget)

    # Queuing.

    def _real_server(self, real_server: RealServerId, up: bool, reason: str) -> None:
        self._ran[real_server] = up
        hooks = self.book.real_servers[real_server]
        self._queue(real_server, "notify_up" if up else "notify_down", hooks, up, reason)

    def _service(self, key: ServiceKey, hooks: _Hooks, up: bool, live_weight: int) -> None:
        self._queue(
            key,
            "quorum_up" if up else "quorum_down",
            hooks,
            up,
            f"healthy weight {live_weight}",
        )

    def _queue(self, lane: Hashable, hook: str, hooks: _Hooks, up: bool, reason: str) -> None:
        command = hooks.up if up else hooks.down
        if command is None:
            return
        kind = "VIRTUAL_SERVER" if hook.startswith("quorum") else "REAL_SERVER"
        environment = (
            ("PATH", SCRIPT_PATH),
            ("LVSHA_NOTIFY_TYPE", kind),
            ("LVSHA_NOTIFY_STATE", "UP" if up else "DOWN"),
            ("LVSHA_NOTIFY_REASON", reason),
            *hooks.environment,
        )
        self.lanes.submit(lane, HookRun(hook, command, environment, hooks.subject))

    def _on_run(self, run: HookRun, refusal: str | None) -> None:
        script = run.script
        if refusal is None:
            self._refused.pop(script, None)
            return
        if script in self._refused:
            return
        self._refused[script] = refusal
        if self._send is not None:
            self._send(REFUSED_EVENT, {"process": PROCESS, "script": script, "reason": refusal})


def _checks_say(verdict: RealServerVerdict) -> dict[RealServerId, bool]:
    """{real server: up} as its checks say in `verdict`; empty when the verdict is the
    operator's (drained, in maintenance), which says nothing of them."""
    if verdict.health is Health.HEALTHY:
        return {verdict.real_server: True}
    if verdict.health is Health.UNHEALTHY:
        return {verdict.real_server: False}
    return {}
