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
import enum
import importlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvsha.config import DEFAULT_MAX_SIZE, ConfigError, LvshaConfig
from lvsha.daemon import overrides
from lvsha.daemon.child import log_problems
from lvsha.daemon.control import CONTROL_SOCKET, AccessRules, ControlServer
from lvsha.daemon.events import EventStream, EventStreamError
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.metrics import Blocks, LoopLag, Sample, merge_blocks, parse, render
from lvsha.daemon.operations import Operations
from lvsha.daemon.prometheus import MAIN_FAMILIES, MetricsEndpoint, bind, build_labels
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
from lvsha.daemon.watchdog import Watchdog, interval_from_env
from lvsha.messages import (
    ChildEvent,
    Message,
    Pong,
    ServiceQuorum,
    SetHandover,
    VrrpRoles,
    VrrpStateChanged,
)
from lvsha.net.nft import MISSING_NFT

if TYPE_CHECKING:
    from lvsha.alerts.dispatch import Alerts
    from lvsha.bgp.announcer import Announcer
    from lvsha.daemon.reload_plan import ReloadPlan

log = logging.getLogger("lvsha")

DEFAULT_STATE_DIR = "/var/lib/lvsha"

AFTER_SPAWN_IMPORTS = ("aiohttp.web", "lvsha.daemon.reload_plan", "lvsha.alerts.dispatch")
"""What the parent needs only once its children run (the control API's server, the reload
planner with the check targets and probes it compares, the alert sinks): imported after
spawning them, so a VRRP child does not wait for them (bench/startup.py)."""

EARLY_EVENTS = 1000
"""Events kept for the alert sinks while they are not set up yet (the first moments after the
children start): more would be a storm the sinks would digest anyway."""
CHILD_FILES = {"vrrp": "metrics-vrrp.prom", "checker": "metrics-checker.prom"}


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
        self.bgp: Announcer | None = None
        """Announces the configuration's `bgp:` routes through FRR (None: it has none)."""
        self._bgp_leaving: asyncio.Task[None] | None = None
        """The withdrawal a reload that removed `bgp:` started."""
        self.quorum_held: frozenset[str] | None = None
        """The checker's last `ServiceQuorum` (None: no checker runs, or it has not said):
        kept for an announcer a reload makes after the checker applied the file."""
        self.operations = Operations(
            state_path,
            state,
            running=lambda: self.running,
            send=self._send_to,
            children=lambda: [] if self.supervisor is None else self.supervisor.running(),
            bgp=lambda: self.bgp,
        )
        self.rules = AccessRules(running.config.global_.control)
        self.control: ControlServer | None = None
        self.alerts: Alerts | None = None
        self._early: list[tuple[str, dict[str, Any], float]] = []
        self.early_dropped = 0
        self.watchdog: Watchdog | None = None
        self.metrics: MetricsEndpoint | None = None
        self.lag = LoopLag()
        self._child_metrics: dict[str, tuple[tuple[int, int, int], Blocks]] = {}
        self._build: dict[str, str] | None = None
        """lvsha's and Python's versions, looked up at the first scrape (importlib.metadata
        is not worth delaying the children for)."""
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

    def publish(self, event_type: str, **fields: Any) -> None:
        """An event: on the stream, and to the alert sinks."""
        self.events.publish(event_type, **fields)
        plain = {key: _plain(value) for key, value in fields.items()}
        if self.alerts is not None:
            self.alerts.submit(event_type, plain, time.time())
        elif len(self._early) < EARLY_EVENTS:
            self._early.append((event_type, plain, time.time()))
        else:
            self.early_dropped += 1

    async def move_metrics(self, listen: str | None) -> None:
        """A reload changed metrics.listen: serve on the new address, or stop serving. When
        the new address cannot be bound, the old endpoint keeps serving."""
        new: MetricsEndpoint | None = None
        if listen is not None:
            try:
                new = MetricsEndpoint(listen, bind(listen), self.scrape)
                await new.serve()
            except OSError as exc:
                log.error("metrics endpoint not moved, still as before: %s", exc)
                return
        old, self.metrics = self.metrics, new
        if old is not None:
            await old.close()
            log.info("metrics no longer served on %s", old.listen)

    def start_alerts(self, alerts: Alerts) -> None:
        """The sinks are set up: they get what happened meanwhile, then every event."""
        self.alerts = alerts
        early, self._early = self._early, []
        for event_type, fields, wall_time in early:
            alerts.submit(event_type, fields, wall_time)
        if self.early_dropped:
            log.warning(
                "alerts: %d events of the first moments were not alerted (more than %d)",
                self.early_dropped,
                EARLY_EVENTS,
            )

    def samples(self) -> list[Sample]:
        events = self.events
        samples = self.lag.samples("main")
        if self._build is None:
            self._build = build_labels()
        samples.append(("lvsha_build_info", self._build, 1.0))
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
                up = float(self.supervisor.alive(child))
                samples.append(("lvsha_child_up", {"child": child}, up))
        if self.watchdog is not None:
            samples.append(("lvsha_watchdog_fed_total", {}, float(self.watchdog.fed_total)))
            withheld = float(self.watchdog.withheld_total)
            samples.append(("lvsha_watchdog_withheld_total", {}, withheld))
        if self.bgp is not None:
            samples += self.bgp.samples()
        return samples

    def scrape_main(self) -> str:
        """The parent's own figures, for its text file."""
        samples = self.samples()
        families = dict(MAIN_FAMILIES)
        if self.alerts is not None:
            from lvsha.alerts.dispatch import FAMILIES  # noqa: PLC0415 - imported by now

            samples += self.alerts.samples()
            families.update(FAMILIES)
        return render(samples, families)

    def scrape(self) -> str:
        """The exposition for GET /metrics: the parent's figures now, and the last file each
        running child wrote (parsed once per version of the file: the checker's, with
        thousands of real servers, is rewritten every 5 s and may be scraped far more often)."""
        parsed: list[Blocks] = [parse(self.scrape_main())]
        ages: list[Sample] = []
        now = time.time()
        for child, name in CHILD_FILES.items():
            if self.supervisor is None or not self.supervisor.alive(child):
                continue
            try:
                with (self.run_dir / name).open() as file:
                    stat = os.fstat(file.fileno())
                    version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                    cached = self._child_metrics.get(child)
                    if cached is None or cached[0] != version:
                        cached = (version, parse(file.read()))
                        self._child_metrics[child] = cached
            except OSError:
                continue  # not written yet
            parsed.append(cached[1])
            age = max(0.0, now - stat.st_mtime)
            ages.append(("lvsha_metrics_snapshot_age_seconds", {"process": child}, age))
        parsed.insert(1, parse(render(ages, MAIN_FAMILIES)))
        return merge_blocks(parsed)

    def on_message(self, child: str, message: Message) -> None:
        if isinstance(message, Pong):
            if self.watchdog is not None:
                self.watchdog.pong(child, message.serial)
            return
        if isinstance(message, ChildEvent):
            self._child_event(child, message)
            return
        if isinstance(message, ServiceQuorum):
            if child == "checker":
                self.quorum_held = frozenset(message.held)
                if self.bgp is not None:
                    self.bgp.set_held(self.quorum_held)
            return
        if self.operations.child_message(child, message):
            return
        if child == "vrrp" and isinstance(message, VrrpStateChanged):
            self._vrrp_state(message)
        self.reloader.child_message(child, message)

    def _child_event(self, child: str, event: ChildEvent) -> None:
        try:
            fields = json.loads(event.fields)
        except ValueError:
            fields = None
        if not isinstance(fields, dict) or not all(
            value is None or isinstance(value, str | int | float | bool)
            for value in fields.values()
        ):
            log.error("%s child sent a malformed %s event: %r", child, event.type, event.fields)
            return
        fields.pop("type", None)
        self.publish(
            event.type,
            **{key: value for key, value in fields.items() if key not in ("seq", "time")},
        )

    def _vrrp_state(self, change: VrrpStateChanged) -> None:
        self.roles[change.instance] = change.new
        self.publish(
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

    def on_restart(self, child: str, how: str, restarts: int) -> None:
        self.publish("child_restarted", child=child, status=how, restarts=restarts)

    def on_started(self, child: str) -> None:
        if self.watchdog is not None:
            self.watchdog.started(child)
        if child == "checker":
            # Before anything else: a restarted checker must not guess the role.
            self._send("checker", VrrpRoles(tuple(sorted(self.roles.items()))))
        self.operations.child_started(child)

    def on_exited(self, child: str) -> None:
        self.reloader.child_exited(child)
        self.operations.child_exited(child)
        if child == "checker":
            # No checker, no quorum known: nothing is announced until its successor reports.
            self.quorum_held = None
            if self.bgp is not None:
                self.bgp.set_held(None)
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

    def start_bgp(self) -> None:
        """Announce the configuration's `bgp:` routes (a drain in force stays in force)."""
        config = self.running.config
        if config.bgp is None or self.bgp is not None:
            return
        from lvsha.bgp.announcer import Announcer  # noqa: PLC0415 - only with bgp:
        from lvsha.config.bgp import advice, announced_addresses  # noqa: PLC0415

        for key, warning in advice(config.bgp, config.virtual_servers):
            log.warning("%s: %s", key, warning)
        self.bgp = Announcer(
            config.bgp,
            announced_addresses(config.bgp, config.virtual_servers),
            self.run_dir,
            drained=self.operations.state.bgp_handover is not None,
            run=None if self.supervisor is None else self.supervisor.run_process,
            publish=lambda event_type, fields: self.publish(event_type, **fields),
        )
        self.bgp.set_held(self.quorum_held)
        self.bgp.start()

    async def stop_bgp(self) -> None:
        """Withdraw what is announced (GRACEFUL_SHUTDOWN first): lvsha stops, or a reload
        removed `bgp:`."""
        announcer, self.bgp = self.bgp, None
        if announcer is not None:
            await announcer.stop()

    def _reconfigure_bgp(self, config: LvshaConfig) -> None:
        if config.bgp is None:
            if self.bgp is not None:
                self._bgp_leaving = asyncio.get_running_loop().create_task(self.stop_bgp())
            return
        if self.bgp is None:
            self.start_bgp()
            return
        from lvsha.config.bgp import advice, announced_addresses  # noqa: PLC0415

        for key, warning in advice(config.bgp, config.virtual_servers):
            log.warning("%s: %s", key, warning)
        self.bgp.reconfigure(config.bgp, announced_addresses(config.bgp, config.virtual_servers))

    def _applied(self, old: Running, new: Running, plan: ReloadPlan) -> None:
        """A new configuration runs: children restarted from now on start from it."""
        self._reconfigure_bgp(new.config)
        renamed = renamed_instances(old.config, new.config)
        self.operations.reloaded(renamed)
        self._respawn_specs(new)
        self.rules.update(new.config.global_.control)
        if self.control is not None:
            self.control.regroup()
        if self.alerts is not None:
            self.alerts.update(new.config)
        if self.watchdog is not None:
            self.watchdog.set_bound(new.config.global_.watchdog_bound)
        listen = new.config.global_.metrics.listen
        if listen != old.config.global_.metrics.listen:
            asyncio.get_running_loop().create_task(self.move_metrics(listen))
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
        self.publish(
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
            self.publish(
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


def _plain(value: object) -> str | int | float | bool | None:
    """A field as the alert sinks take it: JSON's scalars, enums by value, others as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    return str(value)


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
    # The VRRP child would refuse it too (lvsha.net.nft), but only after starting.
    no_accept = [n for n, i in config.vrrp_instances.items() if not i.accept and i.priority < 255]
    if no_accept and shutil.which("nft") is None:
        log.error("not starting: vrrp_instances %s: %s", ", ".join(no_accept), MISSING_NFT)
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
    metrics_sock: socket.socket | None = None
    what = "control socket"
    try:
        # Bound before any child starts: a path or port we cannot use stops lvsha before VRRP
        # runs. Clients wait in the backlog until it serves, once the children are spawned.
        control.bind()
        what = "metrics endpoint"
        listen = parent.running.config.global_.metrics.listen
        if listen is not None:
            metrics_sock = bind(listen)
    except (SocketPathError, OSError) as exc:
        log.error("not starting: %s: %s", what, exc)
        await control.close()
        await parent.events.close()
        return 1
    supervisor = Supervisor(
        parent.children(parent.running),
        on_message=parent.on_message,
        on_reload=parent.on_sighup,
        on_started=parent.on_started,
        on_exited=parent.on_exited,
        on_restart=parent.on_restart,
        on_stopping=parent.stop_bgp,
    )
    parent.supervisor = supervisor
    parent.start_bgp()
    parent.lag.start()
    exporter = asyncio.create_task(
        _export_main(parent.run_dir / "metrics-main.prom", parent), name="metrics-main"
    )
    watchdog_interval = interval_from_env()
    watching: asyncio.Task[None] | None = None
    if watchdog_interval is not None:
        parent.watchdog = Watchdog(
            watchdog_interval,
            parent.running.config.global_.watchdog_bound,
            send=supervisor.send,
            alive=supervisor.alive,
        )
        watching = asyncio.create_task(parent.watchdog.run(), name="watchdog")
    supervising = asyncio.create_task(supervisor.run(), name="supervisor")
    try:
        await _after_spawn(parent, supervisor, supervising, control, metrics_sock)
        return await supervising
    finally:
        if not supervising.done():  # _after_spawn raised: stop the children
            supervisor.stop(1)
            await asyncio.gather(supervising, return_exceptions=True)
        for task in (exporter, watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        parent.lag.stop()
        if parent.metrics is not None:
            await parent.metrics.close()
        elif metrics_sock is not None:
            metrics_sock.close()
        if parent.alerts is not None:
            await parent.alerts.close()
        await control.close()
        await parent.events.close()


async def _export_main(path: Path, parent: _Parent) -> None:
    """The parent's own figures as a text file too, like the children's."""
    from lvsha.daemon.metrics import write_atomically  # noqa: PLC0415

    try:
        while True:
            with contextlib.suppress(OSError):
                write_atomically(path, parent.scrape_main())
            await asyncio.sleep(5.0)
    finally:
        with contextlib.suppress(OSError):
            write_atomically(path, parent.scrape_main())


async def _after_spawn(
    parent: _Parent,
    supervisor: Supervisor,
    supervising: asyncio.Task[int],
    control: ControlServer,
    metrics_sock: socket.socket | None,
) -> None:
    """Once the children are spawned: import what only the parent's later work needs (in a
    thread, so the loop keeps relaying the children's first messages), then set up the alert
    sinks and serve the control API and the metrics."""
    spawned = asyncio.create_task(supervisor.spawned())
    await asyncio.wait({spawned, supervising}, return_when=asyncio.FIRST_COMPLETED)
    spawned.cancel()
    if supervising.done():
        return
    for module in AFTER_SPAWN_IMPORTS:
        await asyncio.to_thread(importlib.import_module, module)
    from lvsha.alerts.dispatch import Alerts  # noqa: PLC0415 - imported just above

    alerts = Alerts(parent.running.config)
    await alerts.start()
    parent.start_alerts(alerts)
    try:
        if metrics_sock is not None:
            listen = parent.running.config.global_.metrics.listen
            assert listen is not None
            parent.metrics = MetricsEndpoint(listen, metrics_sock, parent.scrape)
            await parent.metrics.serve()
        await control.serve()
    except OSError as exc:
        log.error("stopping: control socket or metrics endpoint: %s", exc)
        supervisor.stop(1)
