"""`lvsha run`: validate, then supervise the VRRP and checker children until told to stop.

The parent owns the running configuration: it validates the file at start, keeps the text it
validated in a sealed memory file, and starts or restarts children from that snapshot. A
reload (`lvsha reload` on the control socket, or SIGHUP) validates the file again off the
supervising loop and applies it child by child (lvsha.daemon.reload); each applied file is a
new generation. The parent also owns everything that faces a client: the event stream and the
control socket are served here, never in the VRRP process, so no client can take a
descriptor or a moment from VRRP.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lvsha.config import DEFAULT_MAX_SIZE, ConfigError, LvshaConfig
from lvsha.daemon import overrides
from lvsha.daemon.child import log_problems
from lvsha.daemon.control import CONTROL_SOCKET, AccessRules, ControlServer
from lvsha.daemon.events import EventStream, EventStreamError
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.metrics import LoopLag, Sample, export_periodically
from lvsha.daemon.operations import Operations
from lvsha.daemon.reload import (
    ReloadAnswer,
    Reloader,
    Running,
    digest_of,
    renamed_instances,
    validate,
)
from lvsha.daemon.supervisor import ChildSpec, Supervisor, child_argv
from lvsha.daemon.unixsock import SocketPathError
from lvsha.messages import Message, SetHandover, VrrpRoles, VrrpStateChanged

if TYPE_CHECKING:
    from lvsha.daemon.reload_plan import ReloadPlan

log = logging.getLogger("lvsha")

DEFAULT_STATE_DIR = "/var/lib/lvsha"

AFTER_SPAWN_IMPORTS = ("aiohttp.web", "lvsha.daemon.reload_plan")
"""What the parent needs only once its children run (the control API's server, the reload
planner with the check targets and probes it compares): imported after spawning them, so a
VRRP child does not wait for them (bench/startup.py)."""


class _Parent:
    """The parent's state: the configuration its children run, their last VRRP states, the
    stream, and the reloads."""

    def __init__(
        self,
        running: Running,
        run_dir: Path,
        max_size: int,
        dry_run: bool,
        *,
        state_path: Path,
        state: overrides.State,
    ) -> None:
        self.run_dir = run_dir
        self.dry_run = dry_run
        self.state_path = state_path
        self.events = EventStream(str(run_dir / "events.sock"))
        self.roles: dict[str, str] = {}
        """Each VRRP instance's last reported state, for a checker that (re)starts."""
        self.supervisor: Supervisor | None = None
        self.reloader = Reloader(
            running,
            max_size,
            send=self._send,
            children=lambda: [] if self.supervisor is None else self.supervisor.running(),
            add_child=self._add_child,
            remove_child=self._remove_child,
            on_applied=self._applied,
        )
        self.operations = Operations(
            state_path,
            state,
            running=lambda: self.running,
            send=self._send_to,
            children=lambda: [] if self.supervisor is None else self.supervisor.running(),
        )
        self.rules = AccessRules(running.config.global_.control)
        self.control: ControlServer | None = None
        self._signalled: asyncio.Task[None] | None = None
        self._signalled_again = False

    @property
    def running(self) -> Running:
        return self.reloader.running

    def children(self, running: Running) -> list[ChildSpec]:
        return [
            self.child_spec(name, running)
            for name in ("vrrp", "checker")
            if (name == "vrrp" and running.config.vrrp_instances)
            or (name == "checker" and running.config.virtual_servers)
        ]

    def child_spec(self, name: str, running: Running) -> ChildSpec:
        run_dir = ("--run-dir", str(self.run_dir))
        if name == "vrrp":
            source = ("--config-fd", str(running.vrrp_snapshot), "--config-name", running.path)
            intervals = [i.advert_interval for i in running.config.vrrp_instances.values()]
            # A VRRP process that (re)starts must never take over what was handed over.
            handed = [
                word
                for instance in sorted(self.operations.state.handover)
                if instance in running.config.vrrp_instances
                for word in ("--handed-over", instance)
            ]
            return ChildSpec(
                "vrrp",
                child_argv("lvsha.daemon.vrrp_process", *source, *run_dir, *handed),
                # A leaving master may hold its VIPs for a Master_Down_Interval.
                stop_timeout=max([10.0, *(4 * i + 2 for i in intervals)]),
                pass_fds=(running.vrrp_snapshot,),
            )
        source = ("--config-fd", str(running.snapshot), "--config-name", running.path)
        # The overrides in force before its first IPVS pass: a restarted checker must not put
        # a real server in maintenance back into the table, even for a moment.
        state = ("--overrides-file", str(self.state_path))
        argv = child_argv("lvsha.daemon.checker_process", *source, *run_dir, *state)
        return ChildSpec(
            "checker",
            [*argv, "--dry-run"] if self.dry_run else argv,
            pass_fds=(running.snapshot,),
            # VRRP first: two Python start-ups at once would each take longer.
            start_after="vrrp",
        )

    def samples(self, lag: LoopLag) -> list[Sample]:
        events = self.events
        samples = lag.samples("main")
        samples += [
            ("lvsha_event_stream_clients", {}, float(events.clients)),
            ("lvsha_event_stream_connections_total", {}, float(events.connections_total)),
            ("lvsha_event_stream_refused_total", {}, float(events.refused_total)),
            ("lvsha_event_stream_evicted_total", {}, float(events.evicted_total)),
            ("lvsha_event_stream_dropped_slow_total", {}, float(events.dropped_slow_total)),
            ("lvsha_event_stream_accept_errors_total", {}, float(events.accept_errors_total)),
        ]
        running = self.running
        samples.append(("lvsha_config_generation", {}, float(running.generation)))
        samples.append(("lvsha_config_info", {"digest": running.digest, "file": running.path}, 1.0))
        for outcome, count in self.reloader.counts.items():
            samples.append(("lvsha_config_reloads_total", {"outcome": outcome}, float(count)))
        if self.supervisor is not None:
            for child, count in self.supervisor.restarts().items():
                samples.append(("lvsha_child_restarts_total", {"child": child}, float(count)))
        return samples

    def on_message(self, child: str, message: Message) -> None:
        if self.operations.child_message(child, message):
            return
        if child == "vrrp" and isinstance(message, VrrpStateChanged):
            self._vrrp_state(message)
        self.reloader.child_message(child, message)

    def _vrrp_state(self, change: VrrpStateChanged) -> None:
        self.roles[change.instance] = change.new
        self.events.publish(
            "vrrp_state",
            instance=change.instance,
            old=change.old,
            new=change.new,
            reason=change.reason,
            priority=change.priority,
        )
        # The checker follows the VRRP role (the kernel's connection sync daemon).
        self._send("checker", change)

    def _send(self, child: str, message: Message) -> bool:
        return self.supervisor is not None and self.supervisor.send(child, message)

    def _send_to(self, child: str, message: Message) -> bool:
        """For the operations: a handover change also changes how a VRRP process that
        restarts must start."""
        if isinstance(message, SetHandover):
            self._respawn_specs(self.running)
        return self._send(child, message)

    def _respawn_specs(self, running: Running) -> None:
        """Children restarted from now on start from `running` and the state in force."""
        if self.supervisor is not None:
            for spec in self.supervisor.specs():
                fresh = self.child_spec(spec.name, running)
                spec.argv, spec.pass_fds, spec.stop_timeout = (
                    fresh.argv,
                    fresh.pass_fds,
                    fresh.stop_timeout,
                )

    def on_started(self, child: str) -> None:
        if child == "checker":
            # Before anything else: a restarted checker must not guess the role.
            self._send("checker", VrrpRoles(tuple(sorted(self.roles.items()))))
        self.operations.child_started(child)

    def on_exited(self, child: str) -> None:
        self.reloader.child_exited(child)
        self.operations.child_exited(child)
        if child != "vrrp":
            return
        # Whatever the dead process held, it no longer runs VRRP; its successor reconciles
        # the addresses and reports its own states.
        for instance, state in sorted(self.roles.items()):
            if state != "INITIALIZE":
                self._vrrp_state(
                    VrrpStateChanged(instance, state, "INITIALIZE", "VRRP process exited", 0)
                )

    def _add_child(self, name: str, running: Running) -> None:
        if self.supervisor is not None:
            self.supervisor.add(self.child_spec(name, running))

    async def _remove_child(self, name: str) -> None:
        if self.supervisor is not None:
            await self.supervisor.remove(name)
        if name == "vrrp":
            self.roles.clear()

    def _applied(self, old: Running, new: Running, plan: ReloadPlan) -> None:
        """A new configuration runs: children restarted from now on start from it."""
        renamed = renamed_instances(old.config, new.config)
        self.operations.reloaded(renamed)
        self._respawn_specs(new)
        self.rules.update(new.config.global_.control)
        if self.control is not None:
            self.control.regroup()
        for was, now in renamed.items():
            if was in self.roles:
                self.roles[now] = self.roles.pop(was)
        for gone in set(self.roles) - set(new.config.vrrp_instances):
            del self.roles[gone]
        log.info(
            "configuration %s applied from %s (was %s): %s",
            new.describe(),
            new.path,
            old.describe(),
            plan.summary(),
        )
        self.events.publish(
            "config_applied",
            generation=new.generation,
            digest=new.digest,
            file=new.path,
            changes=len(plan.changes),
            cost=plan.cost().value,
        )

    async def reload(self, file: str | None, plan_only: bool) -> ReloadAnswer:
        answer = await self.reloader.reload(file, plan_only=plan_only)
        if answer.target is not None:
            answer.overrides = self.operations.plan_lines(answer.target)
        if answer.outcome in ("invalid", "failed", "refused"):
            for line in [*answer.errors, *answer.left]:
                log.error("reload: %s", line)
            log.error(
                "reload of %s %s: still running %s",
                answer.file,
                answer.outcome,
                self.running.describe(),
            )
            self.events.publish(
                "config_refused",
                outcome=answer.outcome,
                file=answer.file,
                generation=self.running.generation,
                errors=len(answer.errors),
            )
        return answer

    def on_sighup(self) -> None:
        if self._signalled is not None and not self._signalled.done():
            self._signalled_again = True
            return
        self._signalled = asyncio.create_task(self._sighup())

    async def _sighup(self) -> None:
        while True:
            self._signalled_again = False
            log.info("SIGHUP: reloading %s", self.running.path)
            await self.reload(None, plan_only=False)
            if not self._signalled_again:
                return


def state_lines(state: overrides.State, config: LvshaConfig) -> list[str]:
    """The overrides and handovers in force, for the start-up log."""
    lines = [
        f"{o.mode.value} {o.selector.describe()}" + (f" by {o.by}" if o.by else "")
        for o in state.overrides
    ]
    lines += [f"handover {name} ({by})" for name, by in sorted(state.handover.items())]
    return lines


def run(
    config_path: str,
    run_dir: str,
    dry_run: bool = False,
    max_config_size: int = DEFAULT_MAX_SIZE,
    state_dir: str = DEFAULT_STATE_DIR,
) -> int:
    setup_logging("main")
    try:
        text, config = validate(config_path, max_config_size)
    except ConfigError as exc:
        log_problems(exc, log, "not starting")
        return 1
    state_path = Path(state_dir) / overrides.STATE_FILE
    try:
        state = overrides.load(state_path)
    except overrides.OverrideError as exc:
        log.error(
            "not starting: the state file %s: it holds the drains, maintenance and handovers "
            "operators set; fix it, or move it away to start without them",
            exc,
        )
        return 1
    for line in state_lines(state, config):
        log.info("in force from %s: %s", state_path, line)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    running = Running.start(config_path, text, config, 1, digest_of(text))
    log.info("configuration %s from %s", running.describe(), config_path)
    parent = _Parent(
        running, Path(run_dir), max_config_size, dry_run, state_path=state_path, state=state
    )
    try:
        return asyncio.run(_supervise(parent))
    finally:
        parent.running.close()


async def _supervise(parent: _Parent) -> int:
    try:
        await parent.events.start()
    except (EventStreamError, OSError) as exc:
        log.error("not starting: event stream: %s", exc)
        return 1
    control = ControlServer(
        str(parent.run_dir / CONTROL_SOCKET),
        parent.reload,
        parent.operations,
        parent.events,
        generation=lambda: parent.running.generation,
        rules=parent.rules,
    )
    parent.control = control
    try:
        # Bound before any child starts: a path we cannot use stops lvsha before VRRP runs.
        # Clients wait in the backlog until it serves, once the children are spawned.
        control.bind()
    except (SocketPathError, OSError) as exc:
        log.error("not starting: control socket: %s", exc)
        await control.close()
        await parent.events.close()
        return 1
    supervisor = Supervisor(
        parent.children(parent.running),
        on_message=parent.on_message,
        on_reload=parent.on_sighup,
        on_started=parent.on_started,
        on_exited=parent.on_exited,
    )
    parent.supervisor = supervisor
    lag = LoopLag()
    lag.start()
    exporter = asyncio.create_task(
        export_periodically(parent.run_dir / "metrics-main.prom", lambda: parent.samples(lag))
    )
    supervising = asyncio.create_task(supervisor.run(), name="supervisor")
    try:
        await _after_spawn(supervisor, supervising, control)
        return await supervising
    finally:
        if not supervising.done():  # _after_spawn raised: stop the children
            supervisor.stop(1)
            await asyncio.gather(supervising, return_exceptions=True)
        exporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exporter
        lag.stop()
        await control.close()
        await parent.events.close()


async def _after_spawn(
    supervisor: Supervisor, supervising: asyncio.Task[int], control: ControlServer
) -> None:
    """Once the children are spawned: import what only the parent's later work needs (in a
    thread, so the loop keeps relaying the children's first messages), then serve the control
    API."""
    spawned = asyncio.create_task(supervisor.spawned())
    await asyncio.wait({spawned, supervising}, return_when=asyncio.FIRST_COMPLETED)
    spawned.cancel()
    if supervising.done():
        return
    for module in AFTER_SPAWN_IMPORTS:
        await asyncio.to_thread(importlib.import_module, module)
    try:
        await control.serve()
    except OSError as exc:
        log.error("stopping: control socket: %s", exc)
        supervisor.stop(1)
