"""The checker child: health checks, the IPVS syncer and the connection sync daemon.

Started by the parent (`lvsha run`) as `python -m lvsha.daemon.checker_process CONFIG`. It
never shares a loop with VRRP; it learns the VRRP role from the parent, which relays the VRRP
child's state messages, so the kernel's sync daemon can follow it. The parent's first message
(`VrrpRoles`) says the roles it last heard: a checker restarted on the master starts the
master sync daemon, not the backup one.

A reload reaches the checker as `ApplyConfig`, taken in order with the other messages, one at
a time (`Checker.apply`). Each part moves to the new configuration changing only what differs:
the check pool (unchanged checks keep their state and schedule), the maintenance drains, the
IPVS table (one pass, which the reload waits for: only changed entries get operations) and the
sync daemon. If the kernel refuses part of it, every part goes back to the configuration it
ran before and the answer (`ConfigApplied`) says why, and what was left if going back failed.

Operator overrides (`SetOverrides`: drain, maint) are taken in the same order, merged with the
maintenance files (`lvsha.checks.admin.AdminBook`) and followed by one IPVS pass before the
answer (`OverridesApplied`). A `StatusRequest` is answered out of that order, at once, even
while a reload runs: the status is built from what the checker holds and a fresh read of the
kernel's connection counters (requests arriving while a read is in flight share it). A
`Ping` is answered with a `Pong` at once, out of order too: the parent feeds the systemd
watchdog only while the children's loops answer.

What the operator should hear of (a real server's health, a service's quorum, a refused
script: `lvsha.ipvs.events`) goes to the parent as `ChildEvent`s, one buffered write each,
never waited for. The metrics textfile (`RUN_DIR/metrics-checker.prom`, every
`METRICS_INTERVAL` seconds) is rendered in slices from what the checker holds: the connection
counters come from the syncer's periodic re-read of the table (or a status request's read),
never from a dump of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from lvsha.alerts.events import FieldValue
from lvsha.checks.admin import AdminBook
from lvsha.checks.maintenance import MaintenanceWatcher
from lvsha.checks.metrics import FAMILIES, check_duration_samples
from lvsha.checks.pool import CheckPool, PlanIndex, PlanIndexer, index_plan, raise_file_limit
from lvsha.checks.targets import CheckPlan, CheckTarget, check_plan, virtual_server_checks
from lvsha.checks.verdict import Health, RealServerId
from lvsha.config import LvshaConfig
from lvsha.daemon.channel import ParentChannel
from lvsha.daemon.child import (
    add_config_arguments,
    child_config,
    die_with_parent,
    stop_within,
)
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.metrics import LoopLag, Sample, export_periodically, summary
from lvsha.daemon.overrides import Override, OverrideError
from lvsha.daemon.overrides import decode as decode_overrides
from lvsha.daemon.overrides import load as load_overrides
from lvsha.gcpause import collector_paused
from lvsha.ipvs.events import CheckerEvents, ServiceLabels
from lvsha.ipvs.hooks import LvsHooks
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.metrics import real_server_samples, virtual_server_samples
from lvsha.ipvs.model import ConnectionTable, ServiceKey
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.port import IpvsError, IpvsTablePort
from lvsha.ipvs.specs import ConfiguredService, configured_services, configured_services_of
from lvsha.ipvs.status import status_body
from lvsha.ipvs.syncd import (
    MemorySyncDaemons,
    NetlinkSyncDaemons,
    SyncDaemonFollower,
    SyncDaemonPort,
    SyncSettings,
    sync_settings,
)
from lvsha.ipvs.syncer import IpvsSyncer, OnStop, presumptions
from lvsha.messages import (
    ApplyConfig,
    CheckerStatus,
    ChildEvent,
    ChildReady,
    ConfigApplied,
    Message,
    MessageError,
    OverridesApplied,
    Ping,
    Pong,
    ServiceQuorum,
    SetOverrides,
    StatusRequest,
    VrrpRoles,
    VrrpStateChanged,
)
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.params import InstanceIdentity, instance_identity

log = logging.getLogger("lvsha.checker")

STOP_LIMIT = 15.0
"""Seconds a stopping checker has before it ends itself."""

ROLES_WAIT = 2.0
"""Seconds from start-up to wait for the parent's `VrrpRoles` before the sync daemon starts
(as a backup) without them."""

DIGEST_SHOWN = 12
"""Hex digits of a configuration's SHA-256 that the log shows."""

SLICE = 0.005
"""Seconds of a reload's work the loop does before it lets probes run again."""

METRICS_INTERVAL = 5.0
"""Seconds between two writes of the metrics textfile."""


async def read_parent(channel: ParentChannel, inbox: asyncio.Queue[Message | None]) -> None:
    """Queue what the parent sends from start-up on, so nothing is lost before the follower
    exists; None marks the end (no parent, or it closed the channel). A `Ping` is answered
    here at once instead, whatever the checker is busy with (start-up, a reload): the answer
    says the loop runs, and nothing else."""
    try:
        async for message in channel.messages():
            if isinstance(message, Ping):
                channel.send(Pong(message.serial))
            else:
                inbox.put_nowait(message)
    finally:
        inbox.put_nowait(None)


async def first_message(
    inbox: asyncio.Queue[Message | None], deadline: float
) -> tuple[Message | None, bool]:
    """The parent's first message, or None if the channel ended or `deadline` (loop time)
    passed first; and whether the channel is still open."""
    try:
        async with asyncio.timeout_at(deadline):
            message = await inbox.get()
    except TimeoutError:
        return None, True
    return message, message is not None


class VrrpRoleBook:
    """The VRRP roles the parent reports, kept by instance identity (interface, VRID, family).

    Messages name instances; the book maps a name to its identity through the running
    configuration, or the one before it (a VRRP child that has not applied a reload yet still
    says the old names), so a renamed instance keeps its role. State names become `VrrpState`
    here, once: a name this side does not know (a version skew) is logged and ignored.
    """

    def __init__(self, config: LvshaConfig) -> None:
        self._roles: dict[InstanceIdentity, VrrpState] = {}
        self._names: dict[str, InstanceIdentity] = {}
        self._previous: dict[str, InstanceIdentity] = {}
        self.reconfigure(config)

    def reconfigure(self, config: LvshaConfig) -> None:
        self._previous = self._names
        self._names = {
            name: instance_identity(instance) for name, instance in config.vrrp_instances.items()
        }

    def identity(self, name: str) -> InstanceIdentity | None:
        return self._names.get(name) or self._previous.get(name)

    def role_of(self, name: str) -> VrrpState | None:
        identity = self.identity(name)
        return None if identity is None else self._roles.get(identity)

    def take(self, message: VrrpStateChanged | VrrpRoles) -> list[InstanceIdentity]:
        """Record what `message` says; returns the identities whose role it set."""
        reported = (
            [(message.instance, message.new)]
            if isinstance(message, VrrpStateChanged)
            else list(message.states)
        )
        taken = []
        for name, state_name in reported:
            try:
                state = VrrpState[state_name]
            except KeyError:
                log.error("%s: ignoring unknown VRRP state %r from the parent", name, state_name)
                continue
            identity = self.identity(name)
            if identity is None:
                log.debug("VRRP state of %s, an instance this configuration has not", name)
                continue
            self._roles[identity] = state
            taken.append(identity)
        return taken


@dataclass(frozen=True, slots=True)
class _Derived:
    """What the checker runs of a configuration, derived from it (pure, off the loop)."""

    config: LvshaConfig
    plan: CheckPlan | PlanIndex
    services: tuple[ConfiguredService, ...]


def _derive(config: LvshaConfig) -> _Derived:
    return _Derived(config, check_plan(config), configured_services(config))


async def _derive_paced(config: LvshaConfig) -> _Derived:
    """`_derive`, indexed for the pool, a virtual server at a time with the loop running
    between slices. Not in a thread: CPU work in another thread makes every system call of
    the loop's probes wait for the GIL (up to the 5 ms switch interval each), which stalls the
    loop longer than doing the work on it in slices (bench/reload_checker.py)."""
    loop = asyncio.get_running_loop()
    targets: list[CheckTarget] = []
    real_servers: list[RealServerId] = []
    services: list[ConfiguredService] = []
    indexer = PlanIndexer()
    until = loop.time() + SLICE
    for vs_index, vs in enumerate(config.virtual_servers):
        vs_targets, vs_real_servers = virtual_server_checks(config, vs_index, vs)
        for target in vs_targets:
            indexer.add(target)
        targets += vs_targets
        real_servers += vs_real_servers
        services.extend(configured_services_of(vs, config.virtual_server_groups))
        if loop.time() >= until:
            await asyncio.sleep(0)
            until = loop.time() + SLICE
    plan = CheckPlan(tuple(targets), tuple(real_servers))
    return _Derived(config, indexer.index(plan), tuple(services))


class HeldUntilReady:
    """Sends to the parent, held until it has heard `ChildReady` (`release`): a real server
    found down while the checks start is reported once the parent knows the child is up."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self._held: list[Message] | None = []

    def send(self, message: Message) -> None:
        if self._held is not None:
            self._held.append(message)
        else:
            self._send(message)

    def release(self) -> None:
        held, self._held = self._held, None
        for message in held or ():
            self._send(message)


def _sync_target(config: LvshaConfig) -> tuple[str, SyncSettings] | None:
    sync = config.global_.lvs_sync_daemon
    return None if sync is None else (sync.vrrp_instance, sync_settings(sync))


class Checker:
    """The checker's parts for one configuration, and their move to the next (`apply`).

    Construct, `await start()`, then `await start_sync_daemon(...)` once the roles are known,
    `on_message` for each parent message, `await stop()`. `send` takes the events for the
    parent (`ChildEvent`) and must not wait; without it they are dropped.
    """

    def __init__(
        self,
        config: LvshaConfig,
        table: IpvsTablePort,
        daemons: SyncDaemonPort,
        maintenance_directory: Path,
        *,
        pool: CheckPool | None = None,
        send: Callable[[Message], None] | None = None,
    ) -> None:
        derived = _derive(config)
        self.config = config
        self.daemons = daemons
        self.pool = pool if pool is not None else CheckPool(self._plan(derived))
        self._index: CheckPlan | PlanIndex = derived.plan
        """The running plan (indexed once a reload has indexed it)."""
        glob = config.global_
        self.syncer = IpvsSyncer(
            table,
            derived.services,
            resync_interval=glob.ipvs.resync_interval,
            on_stop=OnStop(glob.ipvs.on_stop),
            drain_removed=glob.ipvs.drain_removed,
        )
        self.table = table
        self.admin = AdminBook(self.pool)
        """Both sources of admin state (maintenance files, API overrides), merged."""
        self.watcher = MaintenanceWatcher(self.admin, maintenance_directory)
        self._counter_read: asyncio.Task[ConnectionTable | None] | None = None
        self._counters_read: tuple[float, ConnectionTable] | None = None
        """The last counters a status request read, and when (loop time)."""
        self._send = send
        self.labels = ServiceLabels(self.syncer)
        """How metrics and events name each virtual server."""
        self.events = CheckerEvents(self.pool, self.syncer, self._send_event, self.labels)
        # Before the pool starts: its first verdicts are where each real server's hooks start.
        self.hooks = LvsHooks(config, self.pool, self.syncer, self._send_event)
        """notify_up / notify_down of real servers, quorum_up / quorum_down of services."""
        self._quorum_sent: tuple[str, ...] | None = None
        self.syncer.subscribe_quorum(self._quorum_changed, every_change=True)
        self.roles = VrrpRoleBook(config)
        self.follower: SyncDaemonFollower | None = None
        self.generation: int | None = None
        """The generation of the last configuration applied; None: the one started with."""

    @staticmethod
    def _plan(derived: _Derived) -> CheckPlan:
        return derived.plan.plan if isinstance(derived.plan, PlanIndex) else derived.plan

    async def start(self, overrides: Sequence[Override] = ()) -> None:
        """Adopt the kernel's table, start the checks and the first IPVS pass. `overrides`:
        the operator's, in force before the first pass (the parent's `SetOverrides` replaces
        them). Raises IpvsError if the table cannot be read."""
        if overrides:
            self.admin.set_overrides(overrides)
        observed = await self.syncer.read_table()
        # A restart starts each real server as the table a previous checker left shows it.
        presumed = presumptions(self.syncer.services, observed)
        if presumed:
            log.info(
                "%d real servers start as the IPVS table shows them until their checks have "
                "spoken: %d in service, %d out",
                len(presumed),
                sum(p.up for p in presumed.values()),
                sum(not p.up for p in presumed.values()),
            )
        # Subscribe before starting, or verdicts published in between would be lost.
        self.pool.subscribe(self.syncer.on_verdict)
        self.pool.start(presumed)
        # Before the first plan, so a drained real server stays drained across a restart.
        await self.watcher.refresh()
        await self.syncer.start(self.pool.verdicts().values(), observed)

    async def start_sync_daemon(self, first: Message | None) -> Message | None:
        """Start following the VRRP role, if configured, from the parent's first message; a
        first message that is not `VrrpRoles` is taken after, and its answer returned."""
        if isinstance(first, VrrpRoles):
            self.roles.take(first)
        target = _sync_target(self.config)
        if target is not None:
            instance, settings = target
            self.follower = SyncDaemonFollower(self.daemons, instance, settings)
            await self.follower.start(self.roles.role_of(instance))
        if first is not None and not isinstance(first, VrrpRoles):
            return await self.on_message(first)
        return None

    def _quorum_changed(self, _: object) -> None:
        # Told before the syncer records the new state: report once this pass is over.
        asyncio.get_running_loop().call_soon(self.report_quorum)

    def report_quorum(self) -> None:
        """Tell the parent which virtual servers hold quorum, when it announces them over
        BGP and the set changed since the last report."""
        if self.config.bgp is None or self._send is None:
            return
        quorum = self.syncer.quorum
        held = tuple(
            sorted(
                {
                    service.name
                    for service in self.syncer.services
                    if service.name is not None and service.key in quorum and quorum[service.key].up
                }
            )
        )
        if held != self._quorum_sent:
            self._quorum_sent = held
            self._send(ServiceQuorum(held))

    def _send_event(self, event_type: str, fields: dict[str, FieldValue]) -> None:
        if self._send is not None:
            self._send(ChildEvent(event_type, json.dumps(fields, separators=(",", ":"))))

    async def stop(self) -> None:
        self.events.close()
        # Before the syncer stops: omega's hooks run while the services are still there.
        await self.hooks.stop(self._quorum_held())
        await self.syncer.stop()
        await self.pool.close()
        if self.follower is not None:
            await self.follower.stop()

    @overload
    async def on_message(self, message: ApplyConfig) -> ConfigApplied: ...

    @overload
    async def on_message(self, message: SetOverrides) -> OverridesApplied: ...

    @overload
    async def on_message(self, message: StatusRequest) -> CheckerStatus: ...

    @overload
    async def on_message(self, message: Ping) -> Pong: ...

    @overload
    async def on_message(self, message: Message) -> Message | None: ...

    async def on_message(self, message: Message) -> Message | None:
        """Take one parent message; an `ApplyConfig` or `SetOverrides` is applied before this
        returns, and its answer returned (a `StatusRequest` too, though `follow_parent` answers
        those out of order)."""
        match message:
            case VrrpStateChanged() | VrrpRoles():
                taken = self.roles.take(message)
                follower = self.follower
                if follower is not None and self.roles.identity(follower.instance) in taken:
                    role = self.roles.role_of(follower.instance)
                    assert role is not None
                    await follower.follow(role)
            case ApplyConfig():
                return await self.apply(message)
            case SetOverrides():
                return await self.set_overrides(message)
            case StatusRequest():
                return await self.status(message)
            case Ping():
                return Pong(message.serial)
            case _:
                log.debug("ignoring %s from the parent", type(message).__name__)
        return None

    async def set_overrides(self, message: SetOverrides) -> OverridesApplied:
        """Take the operator's overrides, all of them, and wait for the IPVS pass that follows
        them; the answer names what could not be done. Never raises."""
        try:
            overrides = decode_overrides(message.body)
        except (OverrideError, RecursionError) as error:
            log.error("overrides (serial %d) refused: %s", message.serial, error)
            return OverridesApplied(message.serial, (f"overrides refused: {error}",))
        try:
            changed = self.admin.set_overrides(overrides)
            services = {key for rs in changed for key in self.syncer.services_of(rs)}
            refusals = await self.syncer.sync_now()
        except Exception as error:  # a bug: say so rather than leave the parent waiting
            log.exception("applying overrides (serial %d) failed", message.serial)
            return OverridesApplied(message.serial, (f"internal error: {error!r}",))
        log.info(
            "overrides (serial %d): %d in force, %d real servers changed",
            message.serial,
            len(overrides),
            len(changed),
        )
        errors = tuple(
            f"IPVS: {refusal}"
            for refusal in refusals
            if refusal.service is None or refusal.service in services
        )
        return OverridesApplied(message.serial, errors)

    async def status(self, message: StatusRequest) -> CheckerStatus:
        """Every virtual server as `lvsha status` shows it, with fresh connection counters."""
        counters = await self.connection_counters()
        return CheckerStatus(message.serial, await status_body(self.pool, self.syncer, counters))

    async def connection_counters(self) -> ConnectionTable | None:
        """The kernel's connection counters, read now, or by the read in flight if there is
        one (None: the read failed)."""
        task = self._counter_read
        if task is None:
            task = self._counter_read = asyncio.create_task(
                self._read_counters(), name="connection counters"
            )

            def done(finished: asyncio.Task[ConnectionTable | None]) -> None:
                if self._counter_read is finished:
                    self._counter_read = None

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _read_counters(self) -> ConnectionTable | None:
        try:
            counters = await self.table.destination_counters()
        except IpvsError as error:
            log.warning("cannot read the IPVS connection counters: %s", error)
            return None
        self._counters_read = (asyncio.get_running_loop().time(), counters)
        return counters

    def latest_counters(self) -> tuple[float, ConnectionTable] | None:
        """The connection counters last read (by the syncer's re-read of the table or for a
        status request, whichever came later), and when (loop time); None: none read yet."""
        syncer = self.syncer
        latest = self._counters_read
        read_at = syncer.counters_read_at
        if (
            syncer.counters is not None
            and read_at is not None
            and (latest is None or read_at >= latest[0])
        ):
            return read_at, syncer.counters
        return latest

    async def apply(self, message: ApplyConfig) -> ConfigApplied:
        """Run the configuration `message` carries from now on; see the module docstring."""
        # A reload builds a whole configuration's worth of (acyclic) objects: with the cyclic
        # collector on, that triggers full collections of 50-120 ms each at 10,000 real
        # servers, stalling the loop. Off for the reload; what it built is frozen after.
        with collector_paused(freeze=True):
            return await self._apply(message)

    async def _apply(self, message: ApplyConfig) -> ConfigApplied:
        loop = asyncio.get_running_loop()
        began = loop.time()
        digest = message.digest[:DIGEST_SHOWN]
        name = f"configuration generation {message.generation} (sha256 {digest})"
        try:
            config = message.config()
            new = await _derive_paced(config)
        except MessageError as error:
            log.error("%s refused: %s", name, error)
            return ConfigApplied(message.generation, False, (str(error),))
        except Exception as error:  # a bug; nothing has changed yet
            log.exception("%s: deriving what to run failed", name)
            return ConfigApplied(message.generation, False, (f"internal error: {error!r}",))
        old = _Derived(self.config, self._index, self.syncer.services)
        try:
            errors, summary = await self._move(old, new)
        except Exception as error:  # a bug: go back, and say so rather than die
            log.exception("%s: applying it failed", name)
            errors, summary = [f"internal error: {type(error).__name__}: {error}"], ""
        if not errors:
            self.config = new.config
            self._index = new.plan
            self.generation = message.generation
            self._quorum_sent = None  # the parent's announcer may have just been made
            self.report_quorum()
            log.info("%s applied: %s (in %.3f s)", name, summary, loop.time() - began)
            return ConfigApplied(message.generation, True)
        for error_text in errors:
            log.error("%s: %s", name, error_text)
        left = await self._go_back(old, new)
        if left:
            log.error("%s: going back to the running configuration left %s", name, left)
        else:
            log.warning("%s refused; the running configuration is unchanged", name)
        return ConfigApplied(message.generation, False, tuple(errors), left)

    def _quorum_held(self) -> dict[ServiceKey, bool]:
        return {key: state.up for key, state in self.syncer.quorum.items()}

    async def _move(self, old: _Derived, new: _Derived) -> tuple[list[str], str]:
        """Move every part from `old` to `new`; the errors (nothing: done) and a summary."""
        quorum_before = self._quorum_held()
        async with self.watcher.paused() as refresh:
            change = self.pool.reconfigure(new.plan)
            # New real servers an override or a maintenance file selects enter as they say,
            # before they reach IPVS.
            self.admin.resolve()
            await refresh()
        operations = dict(self.syncer.operations)
        refusals = await self.syncer.apply_config(
            new.services,
            verdicts=self.pool.verdicts().values(),
            drain_removed=new.config.global_.ipvs.drain_removed,
        )
        if refusals:
            return [f"IPVS: {refusal}" for refusal in refusals], ""
        errors = await self._move_sync_daemon(new.config)
        if errors:
            return errors, ""
        self.syncer.resync_interval = new.config.global_.ipvs.resync_interval
        self.syncer.on_stop = OnStop(new.config.global_.ipvs.on_stop)
        self.hooks.reconfigure(new.config, frozenset(self.pool.real_servers), quorum_before)
        done = {
            kind: count - operations.get(kind, 0)
            for kind, count in self.syncer.operations.items()
            if count > operations.get(kind, 0)
        }
        ipvs = ", ".join(f"{count} {kind}" for kind, count in sorted(done.items())) or "none"
        return [], f"{change.describe()}; IPVS operations: {ipvs}"

    async def _move_sync_daemon(self, config: LvshaConfig) -> list[str]:
        """Follow the instance and settings `config` names (by identity, through the book)."""
        self.roles.reconfigure(config)
        target = _sync_target(config)
        follower = self.follower
        if target is None:
            if follower is not None:
                self.follower = None
                await follower.stop()
            return []
        instance, settings = target
        role = self.roles.role_of(instance)
        if follower is None:
            self.follower = follower = SyncDaemonFollower(self.daemons, instance, settings)
            follower.role = role
            return await follower.converge()
        return await follower.reconfigure(instance, settings, role)

    async def _go_back(self, old: _Derived, new: _Derived) -> str:
        """Put every part back as `old` runs it; what could not be, as one line (empty: all)."""
        index = old.plan if isinstance(old.plan, PlanIndex) else index_plan(old.plan)
        async with self.watcher.paused() as refresh:
            self.pool.reconfigure(index)
            self.admin.resolve()
            await refresh()
        left = await self.syncer.apply_config(
            old.services,
            verdicts=self.pool.verdicts().values(),
            drain_removed=old.config.global_.ipvs.drain_removed,
        )
        errors = await self._move_sync_daemon(old.config)
        return "; ".join([*(f"IPVS: {refusal}" for refusal in left), *errors])


SLOPPY_TCP = Path("/proc/sys/net/ipv4/vs/sloppy_tcp")


def sloppy_tcp(path: Path = SLOPPY_TCP) -> None:
    """Directors behind ECMP routers take over each other's flows when one leaves or joins:
    IPVS must accept a TCP flow it did not see start (net.ipv4.vs.sloppy_tcp=1)."""
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
            log.info("net.ipv4.vs.sloppy_tcp set to 1: flows moved from another director go on")
    except OSError as exc:
        log.error(
            "net.ipv4.vs.sloppy_tcp not set (%s): flows the routers move from another director "
            "will be reset here",
            exc.strerror or exc,
        )


def metric_samples(checker: Checker, lag: LoopLag) -> Iterator[Sample]:
    """Every sample of the checker's textfile (families: `lvsha.checks.metrics.FAMILIES`), a
    generator: `render_sliced` lets the loop run between slices of it."""
    pool, syncer = checker.pool, checker.syncer
    yield from lag.samples("checker")
    yield from summary("lvsha_check_lateness_seconds", {}, pool.lateness)
    yield from summary("lvsha_ipvs_detection_to_kernel_seconds", {}, syncer.latency)
    yield from check_duration_samples(pool.durations)
    yield ("lvsha_checks_distinct", {}, float(pool.distinct_checks))
    yield ("lvsha_checks_in_flight", {}, float(pool.in_flight))
    verdicts = pool.verdicts()
    healthy = sum(1 for v in verdicts.values() if v.health is Health.HEALTHY)
    yield ("lvsha_real_servers", {"health": "healthy"}, float(healthy))
    yield ("lvsha_real_servers", {}, float(len(pool.real_servers)))
    for operation, count in syncer.operations.items():
        yield ("lvsha_ipvs_operations_total", {"operation": operation}, float(count))
    yield ("lvsha_ipvs_errors_total", {}, float(syncer.errors))
    yield ("lvsha_ipvs_drift_repairs_total", {}, float(syncer.drift_repairs))
    yield ("lvsha_ipvs_order_repairs_total", {}, float(syncer.order_repairs))
    labels = checker.labels.labels()
    yield from virtual_server_samples(syncer, labels)
    latest = checker.latest_counters()
    counters = None
    if latest is not None:
        read_at, counters = latest
        age = asyncio.get_running_loop().time() - read_at
        yield ("lvsha_ipvs_counters_age_seconds", {}, max(0.0, age))
    yield from real_server_samples(verdicts, syncer, labels, counters)


async def serve(
    config: LvshaConfig,
    run_dir: Path,
    channel: ParentChannel,
    dry_run: bool,
    overrides: Sequence[Override] = (),
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop() -> None:
        # The parent kills a checker after 10 s (ChildSpec.stop_timeout); with no parent
        # left, the checker must end itself.
        stop_within(STOP_LIMIT)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    await channel.open()
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()
    reader = asyncio.create_task(read_parent(channel, inbox), name="parent-reader")
    roles_deadline = loop.time() + ROLES_WAIT
    lag = LoopLag()
    lag.start()
    table: IpvsTablePort
    daemons: SyncDaemonPort
    if dry_run:
        table, daemons = MemoryIpvsTable(), MemorySyncDaemons(_interface_mtus())
        log.info("dry run: the IPVS table and sync daemon are kept in memory only")
    else:
        netlink_table, netlink_daemons = NetlinkIpvsTable(), NetlinkSyncDaemons()
        try:
            await netlink_table.open()
            await netlink_daemons.open()
        except IpvsError as exc:
            log.error("cannot reach the kernel's IPVS: %s (is the ip_vs module loadable?)", exc)
            return 1
        table, daemons = netlink_table, netlink_daemons
    # One descriptor per probe in flight: as many as the hard limit allows (see CheckPool).
    raise_file_limit()
    outbox = HeldUntilReady(channel.send)
    checker = Checker(config, table, daemons, run_dir / "maintenance", send=outbox.send)
    try:
        await checker.start(overrides)
    except IpvsError as exc:
        log.error("cannot read or apply the IPVS table: %s", exc)
        await checker.pool.close()
        return 1
    checker.report_quorum()
    if config.bgp is not None and not dry_run:
        sloppy_tcp()
    first: Message | None = None
    if config.global_.lvs_sync_daemon is not None:
        first, open_ = await first_message(inbox, roles_deadline)
        if first is None and open_:
            log.warning(
                "no VRRP roles from the parent within %g s: starting the sync daemon as backup",
                ROLES_WAIT,
            )
    first_answer = await checker.start_sync_daemon(first)
    # Everything built so far (the plan, thousands of checks and their states) lives as long as
    # the process: keep it out of the cyclic collector, whose full passes over it would
    # otherwise stall the loop for 100 ms and more at 10,000 checks.
    gc.collect()
    gc.freeze()

    tasks = [
        asyncio.create_task(follow_parent(checker, inbox, channel.send), name="parent-messages"),
        asyncio.create_task(checker.watcher.run(), name="maintenance"),
        asyncio.create_task(
            export_periodically(
                run_dir / "metrics-checker.prom",
                lambda: metric_samples(checker, lag),
                FAMILIES,
                METRICS_INTERVAL,
            ),
            name="metrics",
        ),
    ]
    channel.send(ChildReady())
    if first_answer is not None:
        channel.send(first_answer)  # the parent's first message was not VrrpRoles
    outbox.release()
    log.info(
        "checker running: %d checks (%d distinct) on %d real servers",
        len(checker.pool.plan.targets),
        checker.pool.distinct_checks,
        len(checker.pool.real_servers),
    )
    await stop.wait()
    reader.cancel()
    for task in tasks:
        task.cancel()
    for task in [reader, *tasks]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await checker.stop()
    lag.stop()
    if isinstance(table, NetlinkIpvsTable):
        await table.close()
    if isinstance(daemons, NetlinkSyncDaemons):
        await daemons.close()
    channel.close()
    return 0


async def follow_parent(
    checker: Checker,
    inbox: asyncio.Queue[Message | None],
    send: Callable[[Message], None],
) -> None:
    """Take the parent's messages until the channel ends. In order, one at a time: an
    ApplyConfig or SetOverrides is answered before the next is taken. A StatusRequest is
    answered out of that order, as soon as it is built, reload or not; a Ping at once (those
    `read_parent` has not answered already)."""
    ordered: asyncio.Queue[Message | None] = asyncio.Queue()
    answering: set[asyncio.Task[None]] = set()

    async def take(message: Message) -> None:
        try:
            answer = await checker.on_message(message)
        except Exception:  # a bug: the next message is still taken
            log.exception("handling %s from the parent failed", type(message).__name__)
            return
        if answer is not None:
            send(answer)

    async def in_order() -> None:
        while (message := await ordered.get()) is not None:
            await take(message)

    worker = asyncio.create_task(in_order(), name="parent-messages-in-order")
    try:
        while (message := await inbox.get()) is not None:
            if isinstance(message, Ping):
                send(Pong(message.serial))
            elif isinstance(message, StatusRequest):
                task = asyncio.create_task(take(message), name=f"status {message.serial}")
                answering.add(task)
                task.add_done_callback(answering.discard)
            else:
                ordered.put_nowait(message)
        ordered.put_nowait(None)
        await worker
        if answering:
            await asyncio.gather(*answering, return_exceptions=True)
    finally:
        worker.cancel()
        for task in answering:
            task.cancel()


def _interface_mtus() -> dict[str, int]:
    """This network namespace's interfaces and their MTUs, so a dry run's sync daemon refuses
    and defaults as the kernel would."""
    mtus: dict[str, int] = {}
    for _, name in socket.if_nameindex():
        try:
            mtus[name] = int(Path(f"/sys/class/net/{name}/mtu").read_text())
        except (OSError, ValueError):
            mtus[name] = 1500
    return mtus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvsha-checker")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="/run/lvsha")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument(
        "--overrides-file",
        type=Path,
        help="the operator overrides' state file, in force from the first IPVS pass on",
    )
    args = parser.parse_args(argv)
    setup_logging("checker")
    die_with_parent(log)
    config = child_config(parser, args, log)
    if config is None:
        return 1
    overrides: list[Override] = []
    if args.overrides_file is not None:
        try:
            overrides = load_overrides(args.overrides_file).overrides
        except OverrideError as error:
            log.error("starting without overrides until the parent sends them: %s", error)
    channel = ParentChannel()
    try:
        return asyncio.run(serve(config, Path(args.run_dir), channel, args.dry_run, overrides))
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
