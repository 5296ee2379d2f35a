"""Everything VRRP in one process: instances, trackers, sync groups and notify hooks.

Tracked files (`lvsha.vrrp.track_file`) are watched by one inotify watcher for every
instance; their `init` values are written at start-up only, as keepalived writes them when it
reads its configuration (so a VRRP process restarted by the parent writes them again).

The engine builds one InstanceRunner per configured instance, feeds them link changes,
tracker verdicts, received adverts and sync-group orders, and reports each state change to
the log, the notify hooks and the parent process (which serves the event stream: no
client-facing socket lives in the VRRP process).

`apply` runs a new configuration live (a reload). Instances are matched by identity
(interface, VRID, family), never by name. What each change costs:

- in place, nothing on the wire changes: a new name (logs, reports, metrics, hooks), notify
  hooks, GARP settings (from the next announcement spell), the initial state, track scripts,
  tracked interfaces and files and their weights (a file new or moved is read at the commit),
  sync group membership;
- in place, the machine follows at once by the RFC rules: the priority (to and from 255
  too: the base priority under tracking), preempt and preempt_delay, the advert interval (a
  master's next advert comes at most one new interval away), VRRPv2 authentication, the VIPs:
  a master adds new ones before the reload commits, announces them, and takes the dropped ones
  off last; a backup only changes what it would hold;
- rebuilt (stopped as at shutdown, a master sending priority 0, and started again): a new
  version, source address or unicast peers, since they need another socket or router;
- another identity (interface, VRID or family changed) is one instance removed and one added.

A VIP moved between two instances of this director is never absent: the new holder adds it
first, and no instance takes off an address another instance holds now. If the new holder is
a backup here while the old one was master, the VIP leaves this director: it belongs to the
other director's master of the new instance.

A reload is transactional up to its commit: everything that can fail is done first (sockets of
new instances opened, the settings of changed ones built, new VIPs of masters added); a
failure there undoes what this reload did and leaves every instance running as before. After
the commit only the removal of dropped VIPs can fail: the outcome then says what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address
from typing import Any, Literal, Protocol

from lvsha.config.model import LvshaConfig
from lvsha.config.vrrp import Notify, VrrpInstance, vmac_interface_name
from lvsha.messages import Message, VrrpStateChanged
from lvsha.net.addresses import AddressPort
from lvsha.net.announce import Announcer
from lvsha.net.garp import GarpSettings
from lvsha.net.links import LinkChanged as LinkEvent
from lvsha.net.nft import FirewallError, NoAcceptFilter
from lvsha.net.sysctl import ensure_accept_local
from lvsha.net.vmac import NetlinkVmacs, VmacPort, VmacSpec
from lvsha.scripts import ScriptCommand
from lvsha.vrrp.events import (
    Action,
    Address,
    Event,
    FaultChanged,
    Handover,
    LinkChanged,
    PriorityChanged,
    Shutdown,
    Startup,
    StateChanged,
    VrrpState,
)
from lvsha.vrrp.instance import HeldChange, InstanceRunner
from lvsha.vrrp.machine import InstanceParams, VrrpMachine
from lvsha.vrrp.notify import Notifier, NotifyHooks, NotifyState, Transition
from lvsha.vrrp.params import (
    FILE_PREFIX,
    INTERFACE_PREFIX,
    SCRIPT_PREFIX,
    HeldAddress,
    HeldKey,
    advert_for,
    changed_settings,
    garp_settings,
    held_addresses,
    instance_identity,
    instance_params,
    is_address_owner,
    multicast_group,
    no_accept_addresses,
    rebuild_reason,
    receiving_instance,
    source_address,
    sync_group_of,
    tracked_files,
    tracked_scripts,
    trackers,
)
from lvsha.vrrp.receive import DropLog, advert_event
from lvsha.vrrp.script_events import ScriptRefusals
from lvsha.vrrp.socket import (
    AdvertHandler,
    DropHandler,
    SocketDropReason,
    VrrpSocket,
    VrrpSocketSettings,
)
from lvsha.vrrp.syncgroup import MemberSnapshot, SyncGroup
from lvsha.vrrp.track_file import TrackFileWatcher, write_initial
from lvsha.vrrp.track_script import TrackScriptParams, TrackScriptRunner
from lvsha.vrrp.tracking import AnyTracker, FileTracker, Reading, TrackingState
from lvsha.vrrp.wire import (
    Advert,
    AdvertDropError,
    DropCounter,
    DropReason,
    ReceivedAdvert,
    ReceivingInstance,
    check_advert_for_instance,
)

__all__ = [
    "AdvertSocket",
    "ApplyOutcome",
    "StartupError",
    "VrrpEngine",
    "notify_hooks",
]

log = logging.getLogger("lvsha.vrrp")

_NOTIFY_STATES = {
    VrrpState.MASTER: NotifyState.MASTER,
    VrrpState.BACKUP: NotifyState.BACKUP,
    VrrpState.FAULT: NotifyState.FAULT,
}

STOP_GRACE = 0.5
"""Seconds past a leaving master's Master_Down_Interval before it is closed regardless."""


class StartupError(RuntimeError):
    """The engine cannot start an instance (missing interface, no source address...)."""


class AdvertSocket(Protocol):
    """What the engine needs of an instance's socket (VrrpSocket; a fake in unit tests)."""

    drops: DropCounter
    ignored: Counter[SocketDropReason]
    """Valid adverts the socket itself did not deliver (not ours to hear), by reason."""

    def start(self, on_advert: AdvertHandler, on_drop: DropHandler | None = None) -> None: ...

    def send(self, advert: Advert) -> None: ...

    def prepare(self, advert: Advert) -> None: ...

    def read_pending(self) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Heard:
    """The last advert an instance accepted from another router (for status)."""

    source: Address
    priority: int
    advert_interval: float
    at: float
    """Loop time it was read."""


@dataclass(eq=False)
class _Instance:
    """One running instance and what the engine keeps for it."""

    name: str
    config: VrrpInstance
    runner: InstanceRunner
    socket: AdvertSocket
    tracking: TrackingState
    hooks: NotifyHooks
    group: str | None
    receiving: ReceivingInstance
    drop_log: DropLog
    multicast_group: Address | None = None
    """The group its socket sends to and joined (None: unicast)."""
    previous_receiving: ReceivingInstance | None = None
    """What adverts were checked against before a reload changed it (the VIP list, a v2
    interval or password): accepted too until the peer's adverts match the new one, since the
    peer is reloaded apart from us and a backup must not take over meanwhile."""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the machine is back in INITIALIZE after a Shutdown."""
    told_previous: bool = False
    retiring: bool = False
    """Removed or replaced by a reload: leaving, no longer one of `VrrpEngine.instances`."""
    closed: bool = False
    since: float | None = None
    """Loop time of the last state change (None: it never left INITIALIZE)."""
    reason: str = ""
    """Why the last state change happened."""
    adverts_received: int = 0
    """Adverts from other routers that passed every check and went to the machine."""
    priority_zero_received: int = 0
    """Of those, the ones with priority 0 (the master leaving)."""
    transitions: Counter[tuple[VrrpState, VrrpState]] = field(default_factory=Counter)
    """State changes by (from, to), for the metrics."""
    heard: _Heard | None = None

    @property
    def interface(self) -> str:
        return self.config.interface


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """What `VrrpEngine.apply` did: `ok` when the new configuration runs entirely; otherwise
    `errors` says why, and `left` says what state was left where the old configuration could
    not be restored completely (empty when it was)."""

    ok: bool
    summary: str
    """One line of what changed (or would have)."""
    errors: tuple[str, ...] = ()
    left: str = ""


@dataclass
class _InPlace:
    """A running instance's new settings, all built (validated) before anything changes."""

    record: _Instance
    name: str
    config: VrrpInstance
    params: InstanceParams
    advert: Advert
    receiving: ReceivingInstance
    held: list[HeldAddress]
    hooks: NotifyHooks
    garp: GarpSettings
    group: str | None
    trackers: list[AnyTracker]
    changes: list[str]
    additions: list[HeldAddress] = field(default_factory=list)
    """VIPs to put on before the commit (the instance is master and does not have them)."""
    ahead: HeldChange | None = None


@dataclass
class _Plan:
    """A reload, matched by identity: what stays, what is rebuilt, added and removed."""

    unchanged: list[_Instance] = field(default_factory=list)
    in_place: list[_InPlace] = field(default_factory=list)
    built: list[_Instance] = field(default_factory=list)
    """New instances (added or rebuilt), sockets open, not started."""
    retiring: list[_Instance] = field(default_factory=list)
    scripts_started: dict[str, TrackScriptRunner] = field(default_factory=dict)
    scripts_stopped: list[str] = field(default_factory=list)
    scripts_closing: list[TrackScriptRunner] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    handed_over: set[str] = field(default_factory=set)
    """Names of rebuilt instances whose old instance was handed over: they start so."""


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


def script_command(config: LvshaConfig, name: str) -> ScriptCommand:
    script = config.vrrp_scripts[name]
    glob = config.global_
    return ScriptCommand(
        script.command,
        user=script.user or glob.script_user,
        script_security=glob.enable_script_security,
    )


def script_params(config: LvshaConfig, name: str) -> TrackScriptParams:
    script = config.vrrp_scripts[name]
    return TrackScriptParams(script.interval, script.timeout, script.rise, script.fall)


def _describe_vips(old: VrrpInstance, new: VrrpInstance) -> str:
    before = {h.key for h in held_addresses(old)}
    after = {h.key for h in held_addresses(new)}
    gained, lost = len(after - before), len(before - after)
    return f"VIPs +{gained} -{lost}" if gained or lost else "VIP settings"


def _describe(old: VrrpInstance, new: VrrpInstance) -> list[str]:
    said: list[str] = []
    for key in changed_settings(old, new):
        if key == "priority":
            said.append(f"priority {old.priority} -> {new.priority}")
        elif key in ("virtual_ipaddresses", "virtual_ipaddresses_excluded"):
            vips = _describe_vips(old, new)
            if vips not in said:
                said.append(vips)
        else:
            said.append(key)
    return said


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
        open_socket: Callable[[VrrpSocketSettings], AdvertSocket] = VrrpSocket.open,
        accept_local: Callable[[str], object] = ensure_accept_local,
        handed_over: Collection[str] = (),
        on_status_change: Callable[[], None] | None = None,
        script_refusals: ScriptRefusals | None = None,
        no_accept: NoAcceptFilter | None = None,
        vmacs: VmacPort | None = None,
    ) -> None:
        """`open_socket` and `accept_local` are the kernel edges: tests pass fakes.
        `handed_over` names the instances handed over (`lvsha handover`) from the start: they
        never become master until `set_handover` no longer names them. `on_status_change` is
        called (synchronously, after the wire actions of the moment) whenever something
        `status` shows changed: a state, a handover, an effective priority, a fault reason,
        the master heard; it must be cheap (schedule the work, do not do it).
        `script_refusals` hears how each track script run went (refused or run), and that a
        reload changed the VRRP configuration (a script still refused is reported again).
        `no_accept` drops packets to the VIPs of instances with accept: false (lvsha.net.nft);
        without it such instances refuse to start.
        `vmacs` creates and removes the VMAC interfaces of instances with use_vmac (default:
        the kernel's, through netlink)."""
        self.config = config
        self._vmacs: VmacPort = vmacs if vmacs is not None else NetlinkVmacs()
        self._addresses = addresses
        self._announcer = announcer
        self._notifier = notifier
        self._report = report
        self._open_socket = open_socket
        self._accept_local = accept_local
        self.instances: dict[str, _Instance] = {}
        """The configured instances by name."""
        self._records: dict[InstanceRunner, _Instance] = {}
        """Every instance with a runner, the leaving ones too."""
        self._groups: dict[str, SyncGroup] = {
            n: SyncGroup(n, g.instances) for n, g in config.sync_groups.items()
        }
        self._group_state: dict[str, VrrpState] = {}
        self._scripts: dict[str, TrackScriptRunner] = {}
        self._links: dict[str, bool] = {}
        self._files = TrackFileWatcher(self._file_changed)
        self._pending: deque[tuple[_Instance, Event, float | None]] = deque()
        self._dispatching = False
        self._retirements: set[asyncio.Task[None]] = set()
        self._applying = asyncio.Lock()
        self._on_status_change = on_status_change
        self._script_refusals = script_refusals
        self._handover: set[str] = self._expand_handover(handed_over, config)
        """The instances handed over, sync groups expanded (see `set_handover`)."""
        self._no_accept = no_accept

    # Start-up.

    async def start(self, link_states: Mapping[str, bool]) -> None:
        """Open every instance's socket and start it; `link_states` from the link monitor.

        First, every address an earlier process added and left behind comes off: each
        instance starts in INITIALIZE, which holds no VIP, and a backup must never hold one."""
        await self._addresses.reconcile()
        # Before any VIP can be added; this also clears what a crashed run left.
        await self._set_no_accept(no_accept_addresses(self.config), "start")
        self._links.update(link_states)
        self._initialise_track_files()
        self._files.set_files(tracked_files(self.config))
        for name in self.config.vrrp_instances:
            self.instances[name] = await self._build(self.config, name)
        for name in tracked_scripts(self.config):
            self._scripts[name] = self._script_runner(
                name, script_command(self.config, name), script_params(self.config, name)
            )
            self._scripts[name].start()
        self._sync_handover()  # before Startup: a handed-over instance comes up as backup
        for record in self.instances.values():
            self._launch(record)

    def _initialise_track_files(self) -> None:
        """Write each track file's `init` where it is missing (or always, with
        init_overwrite), at start-up only: a reload writes none, as in keepalived."""
        for name, track_file in self.config.vrrp_track_files.items():
            if track_file.init is None:
                continue
            problem = write_initial(track_file.file, track_file.init, track_file.init_overwrite)
            if problem is not None:
                log.warning("track file %s: %s", name, problem)

    @property
    def track_file_values(self) -> Mapping[str, int]:
        """The number each watched track file holds, by name."""
        return self._files.values

    async def _set_no_accept(self, addresses: frozenset[Address], when: str) -> None:
        """Drop packets to `addresses` from now on (StartupError if it cannot)."""
        if self._no_accept is None:
            if addresses:
                raise StartupError(
                    f"{when}: accept: false is configured but this VRRP engine has no packet filter"
                )
            return
        try:
            await self._no_accept.set_addresses(addresses)
        except FirewallError as exc:
            said = str(exc)
            what = "" if said.startswith("accept: false") else "accept: false: "
            raise StartupError(f"{when}: {what}{said}") from None

    def _script_runner(
        self, name: str, command: ScriptCommand, params: TrackScriptParams
    ) -> TrackScriptRunner:
        return TrackScriptRunner(
            name,
            command,
            params,
            self._script_changed,
            on_run=None if self._script_refusals is None else self._script_refusals.track_script,
        )

    @property
    def scripts(self) -> Mapping[str, TrackScriptRunner]:
        """The track scripts running, by name (the ones some instance tracks)."""
        return self._scripts

    async def _build(self, config: LvshaConfig, name: str) -> _Instance:
        """An instance with its socket open and reading, not started (INITIALIZE)."""
        inst = config.vrrp_instances[name]
        family: Literal[4, 6] = 6 if inst.family == "ipv6" else 4
        source = source_address(inst)
        if source is None or family == 6:
            found = await self._primary_address(inst.interface, family)
            source = found if family == 6 or source is None else source
        params = instance_params(config, name, source)
        machine = VrrpMachine(params)
        group = multicast_group(config, inst)
        vmac = vmac_interface_name(inst)
        if vmac is not None:
            await self._ensure_vmac(name, inst, vmac, source)
        settings = VrrpSocketSettings(
            vmac or inst.interface,
            source,
            tuple(inst.unicast_peers),
            group,
            # Adverts are received on the VMAC either way (see lvsha.net.vmac).
            send_interface=inst.interface if vmac is not None and inst.vmac_xmit_base else None,
        )
        found_trackers = trackers(config, name)
        # A track script starts in INIT: it applies no weight until its first result, so its
        # initial "health" is whichever leaves the priority alone (keepalived does the same).
        tracking = TrackingState(
            inst.priority, found_trackers, {t.name: self._health(t) for t in found_trackers}
        )
        if family == 4 and not is_address_owner(inst):
            # A returning owner advertises from the address we may hold as its VIP: Linux
            # drops such packets without accept_local, and we would never step down.
            await asyncio.to_thread(self._accept_local, inst.interface)
        try:
            sock = self._open_socket(settings)
        except OSError as exc:
            raise StartupError(
                f"{name}: cannot open the VRRP socket on {inst.interface}: {exc}"
            ) from None
        held = held_addresses(inst)
        self._prepare_announcements(name, held)
        runner = InstanceRunner(
            machine,
            advert=advert_for(inst),
            sender=sock,
            addresses=self._addresses,
            announcer=self._announcer,
            held=held,
            garp=garp_settings(inst),
            on_action=self._on_action,
            read_input=sock.read_pending,
            claimed_elsewhere=self._claimed_elsewhere,
        )
        glob = config.global_
        record = _Instance(
            name,
            inst,
            runner,
            sock,
            tracking,
            notify_hooks(inst.notify, glob.script_user, glob.enable_script_security),
            sync_group_of(config, name),
            receiving_instance(inst, config.global_.vrrp.strict),
            DropLog.on_running_loop(name),
            group,
        )
        self._records[runner] = record
        own = frozenset({source})
        clock = asyncio.get_running_loop().time

        def on_advert(received: ReceivedAdvert) -> None:
            # The socket is open before Startup and after Shutdown (Initialize): the receive
            # path drops what the machine cannot take; the socket catches anything else.
            event = advert_event(
                received,
                self._receiving_for(record, received),
                own,
                sock.drops,
                state=record.runner.state,
            )
            if event is None:
                return
            self._feed(record, event, received.received_at)
            # Bookkeeping for status after the machine (and the wire) had the advert.
            record.adverts_received += 1
            if event.priority == 0:
                record.priority_zero_received += 1
            heard = record.heard
            if heard is None:
                record.heard = _Heard(event.source, event.priority, event.advert_interval, clock())
                self._status_changed()
                return
            if heard.source != event.source or heard.priority != event.priority:
                self._status_changed()
            heard.source, heard.priority = event.source, event.priority
            heard.advert_interval, heard.at = event.advert_interval, clock()

        sock.start(on_advert, on_drop=record.drop_log)
        return record

    async def _ensure_vmac(self, name: str, inst: VrrpInstance, vmac: str, source: Address) -> None:
        """The instance's VMAC interface, up, before its socket opens on it. An IPv6 VMAC
        gets the interface's link-local address: adverts leave from it (RFC 5798 5.1.2.1)."""
        spec = VmacSpec(
            vmac,
            inst.interface,
            inst.virtual_router_id,
            inst.family,
            link_local=source if isinstance(source, IPv6Address) else None,
            ipv6=any(h.interface == vmac and h.address.version == 6 for h in held_addresses(inst)),
        )
        try:
            await self._vmacs.ensure(spec)
        except OSError as exc:
            raise StartupError(f"{name}: cannot set up its VMAC interface {vmac}: {exc}") from None

    async def _release_vmac(self, record: _Instance) -> None:
        """Delete a closed instance's VMAC interface, unless another instance (the one a
        reload rebuilt in its place) uses it."""
        vmac = vmac_interface_name(record.config)
        if vmac is None:
            return
        if any(
            not other.closed and vmac_interface_name(other.config) == vmac
            for other in [*self._records.values(), *self.instances.values()]
            if other is not record
        ):
            return
        try:
            await self._vmacs.remove(vmac)
        except OSError as exc:
            log.warning("%s: cannot remove its VMAC interface %s: %s", record.name, vmac, exc)

    @staticmethod
    def _receiving_for(record: _Instance, received: ReceivedAdvert) -> ReceivingInstance:
        """The checks a received advert goes through: the new ones, or right after a reload
        the ones before it, when only those pass (a peer not reloaded yet)."""
        previous = record.previous_receiving
        if previous is None:
            return record.receiving
        try:
            check_advert_for_instance(received, record.receiving)
        except AdvertDropError:
            try:
                check_advert_for_instance(received, previous)
            except AdvertDropError:
                return record.receiving
            if not record.told_previous:
                record.told_previous = True
                log.warning(
                    "%s: %s still advertises the configuration before the reload: accepted "
                    "until it advertises this one (reload it too)",
                    record.name,
                    received.source,
                )
            return previous
        record.previous_receiving = None  # the peer runs what we run now
        return record.receiving

    def _health(self, tracker: AnyTracker) -> Reading:
        """A new tracker's health: its link's state, its script's last result (neutral
        until the script has one), or its file's number."""
        if isinstance(tracker, FileTracker):
            return self._files.value(tracker.name.removeprefix(FILE_PREFIX))
        if tracker.name.startswith(INTERFACE_PREFIX):
            return self._links.get(tracker.name.removeprefix(INTERFACE_PREFIX), False)
        runner = self._scripts.get(tracker.name.removeprefix(SCRIPT_PREFIX))
        known = runner.state.healthy if runner is not None and runner.state is not None else None
        return known if known is not None else tracker.weight <= 0

    def _prepare_announcements(self, name: str, held: Iterable[HeldAddress]) -> None:
        held = list(held)
        # What a takeover sends the kernel and writes to the ledger, built now too.
        self._addresses.prepare([(h.interface, h.address, h.attributes) for h in held])
        try:
            for interface in dict.fromkeys(h.interface for h in held):
                # Build the frames now, not at failover (and learn early of a bad interface).
                self._announcer.prepare(
                    interface, [h.address for h in held if h.interface == interface]
                )
        except OSError as exc:
            log.warning("%s: cannot prepare announcements yet: %s", name, exc)

    def _launch(self, record: _Instance) -> None:
        for event in record.tracking.initial_events():
            self._feed(record, event)
        if not self._primary_link_up(record):
            self._feed(record, LinkChanged(up=False))
        self._feed(record, Startup())

    def _primary_link_up(self, record: _Instance) -> bool:
        """Whether the instance's own interface counts as up: always with dont_track_primary
        (its link going down then puts it in no FAULT, as keepalived's)."""
        return record.config.dont_track_primary or self._links.get(record.interface, False)

    async def _primary_address(self, interface: str, family: Literal[4, 6]) -> Address:
        """The interface's source address; IPv6 link-local addresses need DAD to finish."""
        for _ in range(50):
            found = await self._addresses.primary_address(interface, family)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        what = "link-local IPv6" if family == 6 else "IPv4"
        raise StartupError(f"{interface} has no {what} address to send VRRP adverts from")

    # Running.

    def _feed(self, record: _Instance, event: Event, at: float | None = None) -> None:
        """Feed one event, then every sync-group order it caused, in order, never reentrantly;
        `at` is when it happened (an advert's arrival), when known."""
        self._pending.append((record, event, at))
        self._drain()

    def _drain(self) -> None:
        # Orders also come from actions a runner's own timer caused, outside _feed.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                target, next_event, at = self._pending.popleft()
                if not target.closed:
                    target.runner.feed(next_event, at)
                    if isinstance(next_event, PriorityChanged):
                        self._status_changed()
        finally:
            self._dispatching = False

    def _on_action(self, runner: InstanceRunner, action: Action) -> None:
        record = self._records.get(runner)
        if record is None:
            return
        if isinstance(action, StateChanged):
            self._state_changed(record, action)
        elif isinstance(action, FaultChanged):
            self._status_changed()
        group = self._groups.get(record.group) if record.group is not None else None
        if group is not None:
            orders = group.on_action(record.name, action)
            self._pending.extend(
                (self.instances[order.member], order.event, None)
                for order in orders
                if order.member in self.instances
            )
            if orders:
                # After the runner's current feed returns: SyncGroup orders go "before any
                # other event", and call_soon runs before the next I/O callback.
                asyncio.get_running_loop().call_soon(self._drain)

    def _claimed_elsewhere(self, runner: InstanceRunner, key: HeldKey) -> bool:
        return any(r is not runner and r.holds(key) for r in self._records)

    def _state_changed(self, record: _Instance, change: StateChanged) -> None:
        machine = record.runner.machine
        record.since = asyncio.get_running_loop().time()
        record.reason = change.reason
        record.transitions[change.old, change.new] += 1
        self._status_changed()
        log.info(
            "%s: %s -> %s (%s), priority %d%s",
            record.name,
            change.old.name,
            change.new.name,
            change.reason,
            machine.priority,
            " (leaving: removed or replaced by a reload)" if record.retiring else "",
        )
        if change.new is VrrpState.INITIALIZE:
            record.stopped.set()
        if record.retiring and self.instances.get(record.name) is not None:
            return  # the name is another instance's now: the parent hears that one only
        self._report(
            VrrpStateChanged(
                record.name, change.old.name, change.new.name, change.reason, machine.priority
            )
        )
        if record.retiring:
            return  # its stop hook has run
        if change.new is VrrpState.MASTER and record.name in self._handover:
            self._handover_failed(record)  # the machine clears its flag when it fails
        state = _NOTIFY_STATES.get(change.new)
        if state is not None:
            transition = Transition.instance(record.name, state, machine.priority)
            self._notifier.notify(record.hooks, transition)
        if record.group is not None:
            self._group_changed(record.group)

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
        tracker = SCRIPT_PREFIX + script
        for record in self.instances.values():
            if any(t.script == script for t in record.config.track_scripts):
                for event in record.tracking.set_health(tracker, healthy):
                    self._feed(record, event)

    def _file_changed(self, name: str, value: int) -> None:
        tracker = FILE_PREFIX + name
        for record in self.instances.values():
            if any(t.file == name for t in record.config.track_files):
                for event in record.tracking.set_health(tracker, value):
                    self._feed(record, event)
                self._status_changed()

    def link_changed(self, change: LinkEvent) -> None:
        """A watched interface went up or down."""
        log.info("link %s %s", change.interface, "up" if change.up else "down")
        self._links[change.interface] = change.up
        tracked = INTERFACE_PREFIX + change.interface
        for record in self.instances.values():
            if record.interface == change.interface and not record.config.dont_track_primary:
                self._feed(record, LinkChanged(up=change.up))
            if any(t.interface == change.interface for t in record.config.track_interfaces):
                for event in record.tracking.set_health(tracked, change.up):
                    self._feed(record, event)

    @property
    def link_states(self) -> Mapping[str, bool]:
        """What the engine knows of its interfaces' links."""
        return dict(self._links)

    # Handover (`lvsha handover`).

    @property
    def handed_over(self) -> frozenset[str]:
        """The instances handed over now, sync groups expanded."""
        return frozenset(self._handover)

    def set_handover(self, names: Collection[str]) -> None:
        """The instances handed over to the peer, all of them: the others are not (or no
        longer). A sync group moves as one: naming a member hands over every member. Names
        not configured are warned of and ignored. A master sends priority 0 and becomes
        backup once the new master is heard; a backup stays backup; a handover no longer
        asked for is cancelled (see lvsha.vrrp.machine)."""
        self._handover = self._expand_handover(names, self.config)
        self._sync_handover()
        self._status_changed()

    def _expand_handover(self, names: Collection[str], config: LvshaConfig) -> set[str]:
        found: set[str] = set()
        for name in names:
            if name not in config.vrrp_instances:
                log.warning("handover of %s ignored: no such VRRP instance", name)
                continue
            group = sync_group_of(config, name)
            found.update(config.sync_groups[group].instances if group is not None else (name,))
        return found

    def _sync_handover(self) -> None:
        """Tell each instance whose handover flag differs from the set."""
        for name, record in self.instances.items():
            wanted = name in self._handover
            if record.runner.machine.handed_over == wanted or record.closed:
                continue
            if record.runner.state is not VrrpState.INITIALIZE:
                log.info("%s: %s", name, "handed over" if wanted else "handover cancelled")
            self._feed(record, Handover(active=wanted))

    def _handover_failed(self, record: _Instance) -> None:
        """A handed-over master heard no new master and stays master (the machine cleared its
        flag): the rest of its sync group, handed over with it, is taken back too."""
        members = {record.name}
        if record.group is not None and record.group in self.config.sync_groups:
            members.update(self.config.sync_groups[record.group].instances)
        log.warning(
            "%s: handover failed (no new master heard): master again%s",
            record.name,
            f", and so is the handover of sync group {record.group} cancelled"
            if len(members) > 1
            else "",
        )
        self._handover -= members
        for name in sorted(members - {record.name}):
            other = self.instances.get(name)
            if other is not None and other.runner.machine.handed_over:
                self._pending.append((other, Handover(active=False), None))
        if self._pending:
            # Inside this instance's feed: after it, as sync group orders are.
            asyncio.get_running_loop().call_soon(self._drain)

    # Status (`lvsha status`).

    def _status_changed(self) -> None:
        if self._on_status_change is not None:
            self._on_status_change()

    def status(self) -> list[dict[str, Any]]:
        """Every configured instance, as the `vrrp_instance` definition of
        lvsha/api/schemas/status.json has it. Reads what the engine keeps: no I/O."""
        offset = time.time() - asyncio.get_running_loop().time()
        return [self._instance_status(r, offset) for r in self.instances.values()]

    @staticmethod
    def _instance_status(record: _Instance, offset: float) -> dict[str, Any]:
        """`offset` turns a loop time into a wall-clock time."""
        runner = record.runner
        machine = runner.machine
        params = machine.params
        tracking = record.tracking
        trackers = []
        for tracker in tracking.trackers:
            effect = tracking.effect(tracker.name)
            shown: dict[str, Any] = {
                "tracker": tracker.name.replace(":", " ", 1),
                "healthy": effect is not None
                if isinstance(tracker, FileTracker)
                else bool(tracking.health(tracker.name)),
                "weight": tracker.weight,
                "effect": effect or 0,
            }
            if isinstance(tracker, FileTracker):
                shown["value"] = int(tracking.health(tracker.name))
                shown["reverse"] = tracker.reverse
            trackers.append(shown)
        master: dict[str, Any] | None = None
        if machine.state is VrrpState.MASTER:
            master = {
                "address": str(params.primary_address),
                "priority": machine.priority,
                "advert_interval": params.advert_interval,
                "heard_at": None,
                "self": True,
            }
        elif record.heard is not None:
            heard = record.heard
            master = {
                "address": str(heard.source),
                "priority": heard.priority,
                "advert_interval": heard.advert_interval,
                "heard_at": heard.at + offset,
                "self": False,
            }
        drops = {
            reason.value: count
            for reason, count in record.socket.drops.snapshot().items()
            # Taken all the same (lvsha.vrrp.wire.address_list_difference): not a drop.
            if count and reason is not DropReason.ADDRESS_LIST_MISMATCH
        }
        drops.update((reason.value, n) for reason, n in record.socket.ignored.items() if n)
        return {
            "name": record.name,
            "interface": record.config.interface,
            "vrid": params.vrid,
            "family": record.config.family,
            "version": params.version,
            "state": machine.state.name,
            "since": None if record.since is None else record.since + offset,
            "reason": record.reason,
            "base_priority": tracking.base_priority,
            "effective_priority": machine.priority,
            "trackers": trackers,
            "handed_over": machine.handed_over,
            "master": master,
            "vips": [str(held.address) for held in runner.held],
            "advert_interval": params.advert_interval,
            "adverts_sent": runner.adverts_sent,
            "adverts_received": record.adverts_received,
            "drops": drops,
            "fault_reasons": sorted(reason.value for reason in machine.fault_reasons),
            "vmac_interface": vmac_interface_name(record.config),
        }

    # Live reconfiguration.

    async def apply(
        self, new: LvshaConfig, link_states: Mapping[str, bool] | None = None
    ) -> ApplyOutcome:
        """Run `new` from now on, changing only what differs (see the module's notes).
        `link_states` covers interfaces the running configuration did not watch. One apply
        at a time; the event loop keeps running meanwhile."""
        async with self._applying:
            self._links.update(link_states or {})
            return await self._apply(new)

    async def _apply(self, new: LvshaConfig) -> ApplyOutcome:
        plan = await self._prepare(new)
        summary = "; ".join(plan.summary) or "no VRRP change"
        before, after = no_accept_addresses(self.config), no_accept_addresses(new)
        if before | after != before and not plan.errors:
            # The new no-accept VIPs are dropped before any of them can be added; the old
            # ones stay dropped until they are off (after the commit).
            try:
                await self._set_no_accept(before | after, "reload")
            except StartupError as exc:
                plan.errors.append(str(exc))
        if plan.errors:
            await self._discard(plan)
            return ApplyOutcome(False, summary, tuple(plan.errors))
        errors, left = await self._add_ahead(plan)
        if errors:
            await self._discard(plan)
            await self._restore_no_accept(before, after)
            return ApplyOutcome(False, summary, tuple(errors), "; ".join(left))
        removals = self._commit(plan, new)
        errors, left = [], []
        for change, removal in removals:
            outcome = await removal
            for held, why in outcome.failed:
                errors.append(
                    f"{change.name}: cannot take {held.address} off {held.interface}: {why}"
                )
                left.append(
                    f"{held.address} stays on {held.interface} though {change.name} no longer "
                    "holds it"
                )
        for script in plan.scripts_closing:
            await script.close()
        if after != before | after:
            try:
                await self._set_no_accept(after, "reload")
            except StartupError as exc:
                errors.append(str(exc))
                left.append(
                    "packets to "
                    + ", ".join(map(str, sorted(before - after, key=str)))
                    + " are still dropped"
                )
        if errors:
            left.insert(0, "the new configuration runs")
            return ApplyOutcome(False, summary, tuple(errors), "; ".join(left))
        return ApplyOutcome(True, summary)

    async def _restore_no_accept(
        self, before: frozenset[Address], after: frozenset[Address]
    ) -> None:
        """A reload that does not go ahead: back to the running configuration's addresses."""
        if before | after == before:
            return
        try:
            await self._set_no_accept(before, "reload undone")
        except StartupError as exc:
            log.error("%s (packets to its new no-accept VIPs are still dropped)", exc)

    async def _prepare(self, new: LvshaConfig) -> _Plan:
        """Match, build and validate everything; nothing that runs is touched."""
        plan = _Plan()
        old_by_identity = {instance_identity(r.config): r for r in self.instances.values()}
        rebuild: list[tuple[_Instance, str, str]] = []
        added: list[str] = []
        for name, inst in new.vrrp_instances.items():
            record = old_by_identity.pop(instance_identity(inst), None)
            if record is None:
                added.append(name)
                continue
            why = rebuild_reason(record.config, inst)
            group = multicast_group(new, inst)
            if why is None and group != record.multicast_group:
                why = f"multicast group {record.multicast_group} -> {group}"
            if why is not None:
                rebuild.append((record, name, why))
                if record.runner.machine.handed_over:
                    plan.handed_over.add(name)
                continue
            try:
                change = self._in_place(record, name, new)
            except ValueError as exc:
                plan.errors.append(f"{name}: {exc}")
                continue
            if change is None:
                plan.unchanged.append(record)
            else:
                plan.in_place.append(change)
                plan.summary.append(f"{record.name}: {', '.join(change.changes)}")
                owner_no_more = is_address_owner(record.config) and not is_address_owner(inst)
                if owner_no_more and inst.family == "ipv4":
                    # A returning owner's adverts come from our VIP: see _build.
                    await asyncio.to_thread(self._accept_local, inst.interface)
        plan.retiring = [r for r, _, _ in rebuild] + list(old_by_identity.values())
        plan.summary += [f"{r.name}: restarted as {n} ({why})" for r, n, why in rebuild]
        plan.summary += [f"added {name}" for name in added]
        plan.summary += [f"removed {r.name}" for r in old_by_identity.values()]
        self._prepare_scripts(new, plan)
        for name in [*added, *(n for _, n, _ in rebuild)]:
            try:
                plan.built.append(await self._build(new, name))
            except (StartupError, ValueError, OSError) as exc:
                plan.errors.append(str(exc) if isinstance(exc, StartupError) else f"{name}: {exc}")
        return plan

    def _in_place(self, record: _Instance, name: str, new: LvshaConfig) -> _InPlace | None:
        """The new settings of a running instance, or None when nothing of it changed."""
        inst = new.vrrp_instances[name]
        old = record.config
        glob = new.global_
        params = instance_params(new, name, record.runner.machine.params.primary_address)
        found_trackers = trackers(new, name)
        hooks = notify_hooks(inst.notify, glob.script_user, glob.enable_script_security)
        group = sync_group_of(new, name)
        changes = _describe(old, inst)
        if name != record.name:
            changes.insert(0, f"renamed {name}")
        if group != record.group:
            changes.append(f"sync group {record.group} -> {group}")
        if found_trackers != list(record.tracking.trackers) and "track_scripts" not in changes:
            changes.append("tracking weights")
        if hooks != record.hooks and "notify" not in changes:
            changes.append("notify hooks")
        receiving = receiving_instance(inst, glob.vrrp.strict)
        refuses = receiving.refuse_address_mismatch
        if refuses != record.receiving.refuse_address_mismatch and "skip_check_adv_addr" not in (
            changes
        ):
            changes.append("strict")
        if not changes:
            return None
        change = _InPlace(
            record,
            name,
            inst,
            params,
            advert_for(inst),
            receiving,
            held_addresses(inst),
            hooks,
            garp_settings(inst),
            group,
            found_trackers,
            changes,
        )
        runner = record.runner
        if runner.machine.holds_vips:
            have = {h.key for h in runner.held}
            change.additions = [h for h in change.held if h.key not in have]
        return change

    def _prepare_scripts(self, new: LvshaConfig, plan: _Plan) -> None:
        wanted = tracked_scripts(new)
        for name in wanted:
            running = self._scripts.get(name)
            try:
                command, params = script_command(new, name), script_params(new, name)
            except ValueError as exc:
                plan.errors.append(f"vrrp script {name}: {exc}")
                continue
            if running is not None and running.command == command and running.params == params:
                continue
            plan.scripts_started[name] = self._script_runner(name, command, params)
            plan.summary.append(f"vrrp script {name} {'restarted' if running else 'started'}")
        plan.scripts_stopped = [n for n in self._scripts if n not in wanted]
        plan.summary += [f"vrrp script {n} stopped" for n in plan.scripts_stopped]

    async def _add_ahead(self, plan: _Plan) -> tuple[list[str], list[str]]:
        """Masters put on their new VIPs before the commit; a refusal takes back what this
        reload added. Returns (errors, what is left)."""
        pending = [
            (change, change.record.runner.add_ahead(change.additions))
            for change in plan.in_place
            if change.additions
        ]
        errors: list[str] = []
        for change, future in pending:
            change.ahead = await future
            errors += [
                f"{change.name}: cannot add {held.address} to {held.interface}: {why}"
                for held, why in change.ahead.failed
            ]
        if not errors:
            return [], []
        left: list[str] = []
        for change, _ in pending:
            assert change.ahead is not None
            undone = await change.record.runner.undo_add_ahead(change.ahead)
            left += [
                f"{held.address} stays on {held.interface} (added for {change.name}; taking it "
                f"off failed: {why})"
                for held, why in undone.failed
            ]
        return errors, left

    async def _discard(self, plan: _Plan) -> None:
        """Close what `_prepare` built for a reload that does not go ahead."""
        for record in plan.built:
            await self._close(record)

    def _commit(
        self, plan: _Plan, new: LvshaConfig
    ) -> list[tuple[_InPlace, asyncio.Future[HeldChange]]]:
        """Switch to `new`, synchronously (no await: the loop sees the old configuration or
        the new one, never a mix), start what is new and let go of what is gone."""
        self._drain()  # sync group orders still queued belong to the old configuration
        for change in plan.in_place:
            record = change.record
            record.name = change.name
            record.config = change.config
            record.hooks = change.hooks
            strictness = change.receiving.refuse_address_mismatch
            if replace(record.receiving, refuse_address_mismatch=strictness) != change.receiving:
                # A peer not reloaded yet still advertises the old settings: taken meanwhile,
                # under the new strictness (strict alone changes nothing the peer sends).
                previous = record.previous_receiving or record.receiving
                record.previous_receiving = replace(previous, refuse_address_mismatch=strictness)
                record.told_previous = False
            elif record.previous_receiving is not None:
                record.previous_receiving = replace(
                    record.previous_receiving, refuse_address_mismatch=strictness
                )
            record.receiving = change.receiving
            record.group = change.group
            record.drop_log.instance = change.name
        for record in plan.retiring:
            record.retiring = True
            record.group = None
        running = [*plan.unchanged, *(c.record for c in plan.in_place), *plan.built]
        by_name = {record.name: record for record in running}
        self.instances = {name: by_name[name] for name in new.vrrp_instances}
        # A group with the same members keeps its state and hears everything from here on;
        # one whose membership changed is formed below, from its members' states.
        old_groups, self._groups = self._groups, {}
        old_members = {n: g.instances for n, g in self.config.sync_groups.items()}
        for name, group in new.sync_groups.items():
            restarted = {r.name for r in plan.built} & set(group.instances)
            if old_members.get(name) == group.instances and not restarted:
                self._groups[name] = old_groups[name]
        self.config = new
        self._files.set_files(tracked_files(new))
        for change in plan.in_place:
            if "dont_track_primary" in change.changes:
                # The instance's own link counts again, or no longer.
                self._feed(change.record, LinkChanged(up=self._primary_link_up(change.record)))
        for change in plan.in_place:
            runner = change.record.runner
            runner.reconfigure(change.params)
            runner.set_advert(change.advert)
            runner.set_garp(change.garp)
            healthy = {t.name: self._health(t) for t in change.trackers}
            for event in change.record.tracking.reconfigure(
                change.config.priority, change.trackers, healthy
            ):
                self._feed(change.record, event)
        self._follow_file_values(plan.built)
        self._resume_groups(new)
        removals = [(c, c.record.runner.set_held(c.held)) for c in plan.in_place]
        for record in plan.retiring:
            self._retire(record)
        # Cancelled now, so no result of a script that changed or went reaches the trackers.
        for name in [*plan.scripts_stopped, *plan.scripts_started]:
            old = self._scripts.pop(name, None)
            if old is not None:
                old.cancel()
                plan.scripts_closing.append(old)
        for name, script in plan.scripts_started.items():
            self._scripts[name] = script
            script.start()
        if self._script_refusals is not None and plan.summary:
            # The VRRP configuration changed: a script still refused is reported once more.
            self._script_refusals.reset()
        # Handed over stays handed over, by name from here on (a renamed instance keeps its
        # machine, a rebuilt one starts so); a sync group that gained members hands them over.
        kept = {name for name, r in self.instances.items() if r.runner.machine.handed_over}
        built = {r.name for r in plan.built if r.name in plan.handed_over | self._handover}
        self._handover = self._expand_handover(kept | built, new)
        self._sync_handover()
        for record in plan.built:
            self._launch(record)
        return removals

    def _follow_file_values(self, built: list[_Instance]) -> None:
        """After a reload: a tracked file that is new, or now at another path, was read by
        the watcher only now. Running instances hear its number; the ones built for this
        reload take it before they start (their launch feeds what tracking says)."""
        values = self._files.values
        for record in self.instances.values():
            for tracker in record.tracking.trackers:
                if not isinstance(tracker, FileTracker):
                    continue
                value = values.get(tracker.name.removeprefix(FILE_PREFIX), 0)
                if record.tracking.health(tracker.name) == value:
                    continue
                events = record.tracking.set_health(tracker.name, value)
                if record not in built:
                    for event in events:
                        self._feed(record, event)

    def _resume_groups(self, new: LvshaConfig) -> None:
        """Sync groups whose membership changed, picking up each member's state."""
        for name, group in new.sync_groups.items():
            if name in self._groups:
                continue
            members = {
                m: MemberSnapshot(
                    self.instances[m].runner.state,
                    self.instances[m].runner.machine.fault_reasons,
                    self.instances[m].runner.machine.ready_for_master,
                )
                for m in group.instances
            }
            self._groups[name], orders = SyncGroup.resume(name, members)
            for order in orders:
                self._pending.append((self.instances[order.member], order.event, None))
        self._group_state = {n: s for n, s in self._group_state.items() if n in new.sync_groups}
        self._drain()

    def _retire(self, record: _Instance) -> None:
        """Stop a removed or replaced instance as at shutdown, in the background: a master
        sends priority 0 and keeps its VIPs until a new master is heard."""
        self._notifier.notify(
            record.hooks,
            Transition.instance(record.name, NotifyState.STOP, record.runner.machine.priority),
        )
        if record.runner.state is VrrpState.INITIALIZE:
            record.stopped.set()
        else:
            self._feed(record, Shutdown())
        task = asyncio.get_running_loop().create_task(
            self._finish_retiring(record), name=f"vrrp-{record.name}-leaving"
        )
        self._retirements.add(task)
        task.add_done_callback(self._retirements.discard)

    async def _finish_retiring(self, record: _Instance) -> None:
        limit = record.runner.machine.master_down_interval() + STOP_GRACE
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.stopped.wait(), limit)
        await self._close(record)

    async def _close(self, record: _Instance) -> None:
        if record.closed:
            return
        record.closed = True
        record.socket.close()
        await record.runner.close()
        self._records.pop(record.runner, None)
        await self._release_vmac(record)

    # Stopping.

    async def stop(self) -> None:
        """Leave gracefully: masters send priority 0 and keep their VIPs until a new master is
        heard (bounded by Master_Down_Interval), then every instance is closed. A reload in
        progress finishes first."""
        async with self._applying:
            await self._stop()

    async def _stop(self) -> None:
        self._files.close()
        for runner in self._scripts.values():
            await runner.close()
        deadline = 0.0
        for record in self.instances.values():
            machine = record.runner.machine
            if machine.state is VrrpState.INITIALIZE:
                record.stopped.set()
            else:
                self._feed(record, Shutdown())
            deadline = max(deadline, machine.master_down_interval())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.stopped.wait() for r in self.instances.values())),
                deadline + STOP_GRACE,
            )
        for name, record in self.instances.items():
            self._notifier.notify(
                record.hooks,
                Transition.instance(name, NotifyState.STOP, record.runner.machine.priority),
            )
            await self._close(record)
        if self._retirements:
            await asyncio.gather(*self._retirements, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._notifier.close()
        if self._no_accept is not None:
            # Every VIP is off now: nothing is left to drop packets for.
            try:
                await self._no_accept.remove()
            except FirewallError as exc:
                log.error("cannot remove the accept: false rules: %s", exc)
