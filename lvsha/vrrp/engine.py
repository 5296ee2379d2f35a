"""Everything VRRP in one process: instances, trackers, sync groups and notify hooks.

The engine builds one InstanceRunner per configured instance, feeds them link changes,
tracker verdicts, received adverts and sync-group orders, and reports each state change to
the log, the notify hooks and the parent process (which serves the event stream: no
client-facing socket lives in the VRRP process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lvsha.checks.script import ScriptCommand
from lvsha.config.model import LvshaConfig
from lvsha.config.vrrp import Notify
from lvsha.messages import Message, VrrpStateChanged
from lvsha.net.addresses import AddressPort
from lvsha.net.announce import Announcer
from lvsha.net.garp import GarpSettings
from lvsha.net.links import LinkChanged as LinkEvent
from lvsha.net.sysctl import ensure_accept_local
from lvsha.vrrp.events import (
    Action,
    Address,
    Event,
    LinkChanged,
    Shutdown,
    Startup,
    StateChanged,
    VrrpState,
)
from lvsha.vrrp.instance import HeldAddress, InstanceRunner
from lvsha.vrrp.machine import VrrpMachine
from lvsha.vrrp.notify import Notifier, NotifyHooks, NotifyState, Transition
from lvsha.vrrp.params import (
    INTERFACE_PREFIX,
    SCRIPT_PREFIX,
    advert_for,
    instance_params,
    is_address_owner,
    receiving_instance,
    source_address,
    sync_group_of,
    trackers,
)
from lvsha.vrrp.receive import DropLog, advert_event
from lvsha.vrrp.socket import VrrpSocket, VrrpSocketSettings
from lvsha.vrrp.syncgroup import SyncGroup
from lvsha.vrrp.track_script import TrackScriptParams, TrackScriptRunner
from lvsha.vrrp.tracking import TrackingState
from lvsha.vrrp.wire import ReceivedAdvert

log = logging.getLogger("lvsha.vrrp")

_NOTIFY_STATES = {
    VrrpState.MASTER: NotifyState.MASTER,
    VrrpState.BACKUP: NotifyState.BACKUP,
    VrrpState.FAULT: NotifyState.FAULT,
}


class StartupError(RuntimeError):
    """The engine cannot start an instance (missing interface, no source address...)."""


@dataclass
class _Instance:
    runner: InstanceRunner
    socket: VrrpSocket
    tracking: TrackingState
    interface: str
    hooks: NotifyHooks
    group: str | None
    states: list[str] = field(default_factory=list)


def notify_hooks(notify: Notify, user: str | None, security: bool) -> NotifyHooks:
    def command(argv: tuple[str, ...] | None) -> ScriptCommand | None:
        return None if argv is None else ScriptCommand(argv, user=user, script_security=security)

    return NotifyHooks(
        master=command(notify.master),
        backup=command(notify.backup),
        fault=command(notify.fault),
        stop=command(notify.stop),
        any=command(notify.any),
        timeout=notify.timeout,
    )


class VrrpEngine:
    """All VRRP instances of one configuration, on one event loop."""

    def __init__(
        self,
        config: LvshaConfig,
        *,
        addresses: AddressPort,
        announcer: Announcer,
        notifier: Notifier,
        report: Callable[[Message], None],
    ) -> None:
        self.config = config
        self._addresses = addresses
        self._announcer = announcer
        self._notifier = notifier
        self._report = report
        self.instances: dict[str, _Instance] = {}
        self._groups = {n: SyncGroup(n, g.instances) for n, g in config.sync_groups.items()}
        self._group_state: dict[str, VrrpState] = {}
        self._scripts: list[TrackScriptRunner] = []
        self._pending: deque[tuple[str, Event]] = deque()
        self._dispatching = False

    async def start(self, link_states: dict[str, bool]) -> None:
        """Open every instance's socket and start it; `link_states` from the link monitor.

        First, every address an earlier process added and left behind comes off: each
        instance starts in INITIALIZE, which holds no VIP, and a backup must never hold one."""
        await self._addresses.reconcile()
        for name in self.config.vrrp_instances:
            self.instances[name] = await self._build(name, link_states)
        glob = self.config.global_
        for name in {
            t.script for inst in self.config.vrrp_instances.values() for t in inst.track_scripts
        }:
            script = self.config.vrrp_scripts[name]
            runner = TrackScriptRunner(
                name,
                ScriptCommand(
                    script.command,
                    user=script.user or glob.script_user,
                    script_security=glob.enable_script_security,
                ),
                TrackScriptParams(script.interval, script.timeout, script.rise, script.fall),
                self._script_changed,
            )
            self._scripts.append(runner)
            runner.start()
        for name, instance in self.instances.items():
            for event in instance.tracking.initial_events():
                self._feed(name, event)
            if not link_states.get(instance.interface, False):
                self._feed(name, LinkChanged(up=False))
            self._feed(name, Startup())

    async def _build(self, name: str, link_states: dict[str, bool]) -> _Instance:
        inst = self.config.vrrp_instances[name]
        family: Literal[4, 6] = 6 if inst.family == "ipv6" else 4
        source = source_address(inst)
        if source is None or family == 6:
            found = await self._primary_address(inst.interface, family)
            source = found if family == 6 or source is None else source
        params = instance_params(self.config, name, source)
        machine = VrrpMachine(params)
        settings = VrrpSocketSettings(inst.interface, source, tuple(inst.unicast_peers))
        if family == 4 and not is_address_owner(inst):
            # A returning owner advertises from the address we may hold as its VIP: Linux
            # drops such packets without accept_local, and we would never step down.
            ensure_accept_local(inst.interface)
        try:
            sock = VrrpSocket.open(settings)
        except OSError as exc:
            raise StartupError(
                f"{name}: cannot open the VRRP socket on {inst.interface}: {exc}"
            ) from None
        held = [
            HeldAddress(vip.address, vip.device or inst.interface, vip.label)
            for vip in [*inst.virtual_ipaddresses, *inst.virtual_ipaddresses_excluded]
        ]
        try:
            for interface in dict.fromkeys(h.interface for h in held):
                # Build the frames now: the first one costs ~100 ms (scapy), not at failover.
                self._announcer.prepare(
                    interface, [h.address for h in held if h.interface == interface]
                )
        except OSError as exc:
            log.warning("%s: cannot prepare announcements yet: %s", name, exc)
        garp = inst.garp
        runner = InstanceRunner(
            machine,
            advert=advert_for(inst),
            sender=sock,
            addresses=self._addresses,
            announcer=self._announcer,
            held=held,
            garp=GarpSettings(
                garp.burst, garp.interval, garp.delay, garp.refresh, garp.refresh_burst
            ),
            on_action=self._on_action,
            read_input=sock.read_pending,
        )
        found_trackers = trackers(self.config, name)
        # A track script starts in INIT: it applies no weight until its first result, so its
        # initial "health" is whichever leaves the priority alone (keepalived does the same).
        initial = {
            t.name: (
                link_states.get(t.name.removeprefix(INTERFACE_PREFIX), False)
                if t.name.startswith(INTERFACE_PREFIX)
                else t.weight <= 0
            )
            for t in found_trackers
        }
        tracking = TrackingState(inst.priority, found_trackers, initial)
        receiving = receiving_instance(inst)
        own = frozenset({source})

        def on_advert(received: ReceivedAdvert) -> None:
            # The socket is open before Startup and after Shutdown (Initialize): the receive
            # path drops what the machine cannot take; the socket catches anything else.
            event = advert_event(received, receiving, own, sock.drops, state=runner.state)
            if event is not None:
                self._feed(name, event)

        sock.start(on_advert, on_drop=DropLog.on_running_loop(name))
        glob = self.config.global_
        return _Instance(
            runner,
            sock,
            tracking,
            inst.interface,
            notify_hooks(inst.notify, glob.script_user, glob.enable_script_security),
            sync_group_of(self.config, name),
        )

    async def _primary_address(self, interface: str, family: Literal[4, 6]) -> Address:
        """The interface's source address; IPv6 link-local addresses need DAD to finish."""
        for _ in range(50):
            found = await self._addresses.primary_address(interface, family)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        what = "link-local IPv6" if family == 6 else "IPv4"
        raise StartupError(f"{interface} has no {what} address to send VRRP adverts from")

    def _feed(self, name: str, event: Event) -> None:
        """Feed one event, then every sync-group order it caused, in order, never reentrantly."""
        self._pending.append((name, event))
        self._drain()

    def _drain(self) -> None:
        # Orders also come from actions a runner's own timer caused, outside _feed.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                target, next_event = self._pending.popleft()
                self.instances[target].runner.feed(next_event)
        finally:
            self._dispatching = False

    def _on_action(self, runner: InstanceRunner, action: Action) -> None:
        instance = self.instances.get(runner.name)
        if instance is None:
            return
        if isinstance(action, StateChanged):
            self._state_changed(runner.name, instance, action)
        if instance.group is not None:
            orders = self._groups[instance.group].on_action(runner.name, action)
            self._pending.extend((order.member, order.event) for order in orders)
            if orders:
                # After the runner's current feed returns: SyncGroup orders go "before any
                # other event", and call_soon runs before the next I/O callback.
                asyncio.get_running_loop().call_soon(self._drain)

    def _state_changed(self, name: str, instance: _Instance, change: StateChanged) -> None:
        machine = instance.runner.machine
        log.info(
            "%s: %s -> %s (%s), priority %d",
            name,
            change.old.name,
            change.new.name,
            change.reason,
            machine.priority,
        )
        self._report(
            VrrpStateChanged(
                name, change.old.name, change.new.name, change.reason, machine.priority
            )
        )
        state = _NOTIFY_STATES.get(change.new)
        if state is not None:
            transition = Transition.instance(name, state, machine.priority)
            self._notifier.notify(instance.hooks, transition)
        if instance.group is not None:
            self._group_changed(instance.group)

    def _group_changed(self, group: str) -> None:
        members = self.config.sync_groups[group].instances
        states = {self.instances[m].runner.state for m in members if m in self.instances}
        if len(states) != 1:
            return
        (state,) = states
        if self._group_state.get(group) == state or state not in _NOTIFY_STATES:
            return
        self._group_state[group] = state
        glob = self.config.global_
        hooks = notify_hooks(
            self.config.sync_groups[group].notify, glob.script_user, glob.enable_script_security
        )
        self._notifier.notify(hooks, Transition.group(group, _NOTIFY_STATES[state]))

    def _script_changed(self, script: str, healthy: bool, reason: str) -> None:
        log.info("vrrp script %s: %s (%s)", script, "healthy" if healthy else "failed", reason)
        for name, instance in self.instances.items():
            tracker = SCRIPT_PREFIX + script
            if any(t.script == script for t in self.config.vrrp_instances[name].track_scripts):
                for event in instance.tracking.set_health(tracker, healthy):
                    self._feed(name, event)

    def link_changed(self, change: LinkEvent) -> None:
        """A watched interface went up or down."""
        log.info("link %s %s", change.interface, "up" if change.up else "down")
        for name, instance in self.instances.items():
            if instance.interface == change.interface:
                self._feed(name, LinkChanged(up=change.up))
            tracked = INTERFACE_PREFIX + change.interface
            inst = self.config.vrrp_instances[name]
            if any(t.interface == change.interface for t in inst.track_interfaces):
                for event in instance.tracking.set_health(tracked, change.up):
                    self._feed(name, event)

    async def stop(self) -> None:
        """Leave gracefully: masters send priority 0 and keep their VIPs until a new master is
        heard (bounded by Master_Down_Interval), then every instance is closed."""
        for runner in self._scripts:
            await runner.close()
        deadline = 0.0
        for name, instance in self.instances.items():
            machine = instance.runner.machine
            if machine.state is not VrrpState.INITIALIZE:
                self._feed(name, Shutdown())
            deadline = max(deadline, machine.master_down_interval())
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline + 0.5
        while loop.time() < until and any(
            i.runner.state is not VrrpState.INITIALIZE for i in self.instances.values()
        ):
            await asyncio.sleep(0.01)
        for name, instance in self.instances.items():
            self._notifier.notify(
                instance.hooks,
                Transition.instance(name, NotifyState.STOP, instance.runner.machine.priority),
            )
            instance.socket.close()
            await instance.runner.close()
        with contextlib.suppress(Exception):
            await self._notifier.close()
