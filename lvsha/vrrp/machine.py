"""The VRRP state machine of one instance (RFC 5798 section 6, RFC 3768 section 6).

Pure and synchronous: `handle(event, now)` takes an event and the monotonic time in seconds,
returns the actions to carry out, and `next_deadline()` says when to deliver the next
`TimerFired`. It opens no socket and never reads the clock.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lvsha.vrrp.events import (
    Action,
    Address,
    AddVips,
    AdvertReceived,
    Announce,
    Event,
    FaultChanged,
    FaultReason,
    Handover,
    LinkChanged,
    PriorityChanged,
    ReadyForMaster,
    RemoveVips,
    SendAdvert,
    Shutdown,
    Startup,
    StateChanged,
    SyncGroupBackup,
    SyncGroupFault,
    SyncGroupMaster,
    TimerFired,
    TrackingFault,
    VirtualAddress,
    VrrpState,
)

OWNER_PRIORITY = 255
"""RFC 5798 section 5.2.4: reserved for the router that owns the virtual addresses."""

RELEASE_PRIORITY = 0
"""RFC 5798 section 5.2.4: the master stops participating; backups take over after Skew_Time."""


class InitialState(enum.Enum):
    BACKUP = "backup"
    MASTER = "master"


class VrrpError(Exception):
    """Base of the errors the machine raises; it is left unchanged when it raises one."""


class UnexpectedEventError(VrrpError):
    """The machine's current state cannot take this event: a bug in whoever fed it."""


class InvalidEventError(VrrpError):
    """The event does not fit this instance (wrong address family, not in a sync group)."""


class ClockWentBackwardsError(VrrpError):
    pass


def advert_interval_units(version: Literal[2, 3], seconds: float) -> int:
    """The advert interval as the wire carries it: whole seconds 1..255 in v2 (RFC 3768
    section 5.3.7), centiseconds 1..4095 in v3 (RFC 5798 section 5.2.7). Raises ValueError
    for a value the version cannot carry. `lvsha.vrrp.params` hands it to everyone else."""
    if version == 2:
        if seconds != int(seconds) or not 1 <= seconds <= 255:
            raise ValueError(f"v2 advert interval {seconds} s is not 1..255 s")
        return int(seconds)
    centis = seconds * 100
    if abs(centis - round(centis)) > 1e-6 or not 1 <= round(centis) <= 4095:
        raise ValueError(f"v3 advert interval {seconds} s is not 0.01..40.95 s in steps of 0.01 s")
    return round(centis)


def skew_time(version: Literal[2, 3], priority: int, master_adver_interval: float) -> float:
    """RFC 3768 section 6.1 (v2) and RFC 5798 section 6.1 (v3)."""
    if version == 2:
        return (256 - priority) / 256
    return ((256 - priority) * master_adver_interval) / 256


def master_down_interval(
    version: Literal[2, 3], priority: int, master_adver_interval: float
) -> float:
    """RFC 3768 / RFC 5798 section 6.1: three missed adverts plus Skew_Time."""
    return 3 * master_adver_interval + skew_time(version, priority, master_adver_interval)


@dataclass(frozen=True, slots=True)
class InstanceParams:
    """One VRRP instance's settings as plain values; the config layer maps to this."""

    name: str
    vrid: int
    version: Literal[2, 3]
    priority: int
    """Base priority, before tracking; 255 makes this router the address owner."""
    advert_interval: float
    """Seconds. v2: whole seconds 1..255; v3: centiseconds, 0.01..40.95."""
    primary_address: Address
    vips: tuple[VirtualAddress, ...]
    preempt: bool = True
    preempt_delay: float = 0.0
    """Seconds a backup keeps accepting a lower-priority master before preempting it."""
    initial_state: InitialState = InitialState.BACKUP
    sync_group: str | None = None
    reassert: bool = True
    """A master answers a lower-priority advert with its own advert and a GARP round (as
    keepalived); False (strict mode) discards it, as RFC 5798 6.4.3 says."""

    def __post_init__(self) -> None:
        where = f"VRRP instance {self.name!r}"
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"{where}: vrid {self.vrid} outside 1..255")
        if self.version not in (2, 3):
            raise ValueError(f"{where}: VRRP version {self.version} is neither 2 nor 3")
        if not 1 <= self.priority <= 255:
            raise ValueError(f"{where}: priority {self.priority} outside 1..255")
        self._check_advert_interval(where)
        if not self.vips:
            raise ValueError(f"{where}: no virtual addresses")
        family = self.primary_address.version
        if self.version == 2 and family != 4:
            raise ValueError(f"{where}: VRRP version 2 carries IPv4 only (RFC 3768)")
        for vip in self.vips:
            if vip.version != family:
                raise ValueError(
                    f"{where}: virtual address {vip} is IPv{vip.version} but the primary "
                    f"address {self.primary_address} is IPv{family}"
                )
        if self.preempt_delay < 0:
            raise ValueError(f"{where}: preempt_delay {self.preempt_delay} is negative")
        if self.preempt_delay and not self.preempt:
            raise ValueError(f"{where}: preempt_delay has no meaning with nopreempt")
        if not self.preempt and self.priority == OWNER_PRIORITY:
            raise ValueError(f"{where}: the address owner (priority 255) always preempts")
        # keepalived ignores both with `state MASTER` (with a warning): we refuse instead.
        if self.initial_state is InitialState.MASTER and (not self.preempt or self.preempt_delay):
            raise ValueError(f"{where}: nopreempt and preempt_delay need initial state BACKUP")

    def _check_advert_interval(self, where: str) -> None:
        try:
            advert_interval_units(self.version, self.advert_interval)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


@dataclass(slots=True)
class _Memory:
    """Everything that changes; copied before each event so a raise leaves it untouched."""

    state: VrrpState
    priority: int
    master_adver_interval: float
    fault_reasons: frozenset[FaultReason] = frozenset()
    deadline: float | None = None
    master_down_reason: str = ""
    preempt_hold_until: float | None = None
    ready_for_master: bool = False
    last_now: float = -math.inf
    reasserted_at: float = -math.inf
    """When a master last answered a lower-priority advert (re-assertion)."""
    answered_release_at: float = -math.inf
    """When a master last answered a priority-0 advert."""
    answers_suppressed: int = 0
    handed_over: bool = False
    """`lvsha handover`: stays (or becomes) backup and never takes over until cancelled."""
    releasing_for_handover: bool = False
    """In RELEASING for a handover (back to MASTER if no new master is heard, to BACKUP when
    one is), not for a shutdown (to INITIALIZE either way)."""


class VrrpMachine:
    """One VRRP instance. Feed it events in time order; carry out the actions in order."""

    def __init__(self, params: InstanceParams) -> None:
        self.params = params
        self._m = _Memory(
            state=VrrpState.INITIALIZE,
            priority=params.priority,
            master_adver_interval=params.advert_interval,
        )

    @property
    def state(self) -> VrrpState:
        return self._m.state

    @property
    def priority(self) -> int:
        """The effective priority (base priority adjusted by tracking)."""
        return self._m.priority

    @property
    def fault_reasons(self) -> frozenset[FaultReason]:
        return self._m.fault_reasons

    @property
    def master_adver_interval(self) -> float:
        return self._m.master_adver_interval

    @property
    def reassertions_suppressed(self) -> int:
        """Adverts a master heard and did not answer, past one answer per advert interval."""
        return self._m.answers_suppressed

    @property
    def holds_vips(self) -> bool:
        return self._m.state in (VrrpState.MASTER, VrrpState.RELEASING)

    @property
    def handed_over(self) -> bool:
        """Handed over to the peer (`Handover`): never master until the handover is cancelled.
        A handover that fails (no new master heard while releasing) clears it."""
        return self._m.handed_over

    @property
    def ready_for_master(self) -> bool:
        """A sync group member whose Master_Down_Timer ran out, waiting for the others."""
        return self._m.ready_for_master

    def skew_time(self) -> float:
        return skew_time(self.params.version, self._m.priority, self._m.master_adver_interval)

    def master_down_interval(self) -> float:
        return master_down_interval(
            self.params.version, self._m.priority, self._m.master_adver_interval
        )

    def next_deadline(self) -> float | None:
        return self._m.deadline

    @property
    def last_now(self) -> float:
        """The time of the last event handled (-inf before the first)."""
        return self._m.last_now

    def handle(self, event: Event, now: float) -> list[Action]:
        """Handle one event at `now`; a timer already due runs first, as it happened first."""
        if now < self._m.last_now:
            raise ClockWentBackwardsError(f"{self.params.name}: now {now} < {self._m.last_now}")
        self._check_fits_instance(event)
        saved = copy.copy(self._m)
        try:
            if isinstance(event, TimerFired):
                # The loop may wake us a little early (clock resolution): nothing due yet.
                self._handler(TimerFired)
                actions = self._run_due_timer(now)
            else:
                actions = self._run_due_timer(now)
                actions += self._handler(type(event))(self, event, now)
                actions += self._run_due_timer(now)
        except VrrpError:
            self._m = saved
            raise
        self._m.last_now = now
        return actions

    def reconfigure(self, params: InstanceParams, now: float) -> list[Action]:
        """Take new settings in the current state (a live reload), returning what to carry out.

        The name, VIPs, base priority, preemption, advert interval, initial state and sync
        group may change; the VRID, version and primary address may not (another socket,
        another router: the caller starts a new instance instead). The base priority is only
        recorded: the effective one comes from tracking, as PriorityChanged. A master adopts a
        shorter advert interval from its next advert; a v2 backup's Master_Down_Interval follows
        the new interval (a v3 backup keeps the interval its master advertises). Leaving a sync
        group clears a fault the group imposed."""
        old = self.params
        if now < self._m.last_now:
            raise ClockWentBackwardsError(f"{old.name}: now {now} < {self._m.last_now}")
        for what in ("vrid", "version", "primary_address"):
            if getattr(params, what) != getattr(old, what):
                raise InvalidEventError(
                    f"{old.name}: {what} cannot change in place "
                    f"({getattr(old, what)} -> {getattr(params, what)})"
                )
        saved = copy.copy(self._m)
        try:
            actions: list[Action] = []
            self.params = params
            self._retime(old, now)
            if old.sync_group is not None and params.sync_group is None:
                self._m.ready_for_master = False
                actions += self._set_fault(FaultReason.SYNC_GROUP, False, now)
        except VrrpError:
            self.params = old
            self._m = saved
            raise
        self._m.last_now = now
        return actions

    def _retime(self, old: InstanceParams, now: float) -> None:
        """Move the running timers for a changed advert interval or preempt delay."""
        new = self.params
        m = self._m
        if new.advert_interval != old.advert_interval:
            if m.state is VrrpState.MASTER and m.deadline is not None:
                m.deadline = min(m.deadline, now + new.advert_interval)
            elif m.state is VrrpState.BACKUP and new.version == 2:
                # RFC 3768: a v2 backup's Master_Down_Interval uses its own advert interval.
                before = self.master_down_interval()
                m.master_adver_interval = new.advert_interval
                if m.deadline is not None:
                    m.deadline += self.master_down_interval() - before
        if new.preempt_delay != old.preempt_delay and m.preempt_hold_until is not None:
            if new.preempt_delay:
                m.preempt_hold_until += new.preempt_delay - old.preempt_delay
            else:
                m.preempt_hold_until = None

    def _handler(self, event_type: type[Any]) -> _Handler:
        handler = TRANSITIONS.get((self._m.state, event_type))
        if handler is None:
            raise UnexpectedEventError(
                f"{self.params.name}: state {self._m.state.value} cannot take {event_type.__name__}"
            )
        return handler

    def _run_due_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._m.deadline is not None and self._m.deadline <= now:
            actions += self._handler(TimerFired)(self, TimerFired(), now)
        return actions

    def _check_fits_instance(self, event: Event) -> None:
        name = self.params.name
        if isinstance(event, AdvertReceived):
            if event.source.version != self.params.primary_address.version:
                raise InvalidEventError(
                    f"{name}: advert from IPv{event.source.version} address {event.source} "
                    f"for an IPv{self.params.primary_address.version} instance"
                )
        elif (
            isinstance(event, SyncGroupFault | SyncGroupBackup | SyncGroupMaster)
            and self.params.sync_group is None
        ):
            raise InvalidEventError(f"{name}: {type(event).__name__} but not in a sync group")

    # Transitions shared by several handlers.

    def _transition(self, new: VrrpState, reason: str) -> list[Action]:
        old = self._m.state
        self._m.state = new
        actions: list[Action] = [StateChanged(old, new, reason)]
        if self._m.ready_for_master:
            self._m.ready_for_master = False
            actions.append(ReadyForMaster(ready=False))
        return actions

    def _enter_backup(self, now: float, reason: str, master_down_after: float) -> list[Action]:
        actions = self._transition(VrrpState.BACKUP, reason)
        self._m.preempt_hold_until = None
        if self._m.handed_over:
            self._m.deadline = None  # handed over: no Master_Down_Timer, never master
        else:
            self._arm_master_down(now, master_down_after, "master down timer expired")
        return actions

    def _arm_master_down(self, now: float, after: float, reason: str) -> None:
        self._m.deadline = now + after
        self._m.master_down_reason = reason

    def _enter_master(self, now: float, reason: str) -> list[Action]:
        # RFC 5798 section 6.4.2: the advert goes first so the old master has stepped down
        # (and dropped the VIPs) by the time our gratuitous ARP / NA lands. Back from a
        # handover's RELEASING the VIPs are still on: adding them again finds them there
        # (already ours) and changes nothing; the announcements repair the peer's takeover.
        vips = self.params.vips
        self._m.releasing_for_handover = False
        actions = self._transition(VrrpState.MASTER, reason)
        actions += [SendAdvert(self._m.priority), AddVips(vips), Announce(vips)]
        self._m.deadline = now + self.params.advert_interval
        return actions

    def _master_to_backup(self, now: float, reason: str, *, handover: bool = False) -> list[Action]:
        self._m.releasing_for_handover = False
        actions = self._transition(VrrpState.BACKUP, reason)
        actions.append(RemoveVips(self.params.vips, handover=handover))
        self._m.preempt_hold_until = None
        if self._m.handed_over:
            self._m.deadline = None
        else:
            self._arm_master_down(now, self.master_down_interval(), "master down timer expired")
        return actions

    def _release_vips(self, reason: str, *, handover: bool = False) -> list[Action]:
        self._m.releasing_for_handover = False
        actions = self._transition(VrrpState.INITIALIZE, reason)
        actions.append(RemoveVips(self.params.vips, handover=handover))
        self._m.deadline = None
        return actions

    def _come_up(self, now: float, reason: str, *, at_startup: bool) -> list[Action]:
        """Leave Initialize or Fault for Backup, or straight for Master as the owner."""
        self._m.master_adver_interval = self.params.advert_interval
        owner = self._m.priority == OWNER_PRIORITY
        if self._m.handed_over:
            # Whatever it would do otherwise (the owner, `state MASTER`): backup, no timer.
            return self._enter_backup(now, f"{reason}: handed over", 0.0)
        if owner and at_startup and self.params.sync_group is None:
            # RFC 5798 / RFC 3768 section 6.4.1: the owner becomes master at once.
            return self._enter_master(now, f"{reason}: address owner")
        if owner and at_startup:
            # A sync group member waits for the others (sync group rules): due at once.
            return self._enter_backup(now, f"{reason}: address owner in a sync group", 0.0)
        if owner or (at_startup and self.params.initial_state is InitialState.MASTER):
            # keepalived: `state MASTER` (and an owner leaving fault) waits one advert
            # interval, plus the least Skew_Time, to hear any current master, then takes over.
            wait = self._m.master_adver_interval + skew_time(
                self.params.version, OWNER_PRIORITY, self._m.master_adver_interval
            )
            why = "address owner" if owner else "initial state master"
            return self._enter_backup(now, f"{reason}: {why}", wait)
        return self._enter_backup(now, reason, self.master_down_interval())

    def _set_fault(self, reason: FaultReason, active: bool, now: float) -> list[Action]:
        old = self._m.fault_reasons
        new = old | {reason} if active else old - {reason}
        if new == old:
            return []
        self._m.fault_reasons = new
        actions: list[Action] = [FaultChanged(new)]
        state = self._m.state
        if new and not old:
            actions += self._enter_fault(now, reason)
        elif old and not new and state is VrrpState.FAULT:
            actions += self._come_up(now, f"{reason.value} cleared", at_startup=False)
        return actions

    def _enter_fault(self, now: float, reason: FaultReason) -> list[Action]:
        state = self._m.state
        if state is VrrpState.INITIALIZE:
            return []
        if state is VrrpState.RELEASING and self._m.releasing_for_handover:
            # Still running: in fault, as a master would be; priority 0 has gone already.
            self._m.releasing_for_handover = False
            actions = self._transition(VrrpState.FAULT, f"{reason.value} while handing over")
            self._m.deadline = None
            actions.append(RemoveVips(self.params.vips))
            return actions
        if state is VrrpState.RELEASING:
            return self._release_vips(f"{reason.value} while releasing")
        actions = self._transition(VrrpState.FAULT, reason.value)
        self._m.deadline = None
        if state is VrrpState.MASTER:
            # keepalived sends priority 0 when a master goes to fault, so the backups take
            # over after Skew_Time; pointless when our own link is down.
            if reason is not FaultReason.LINK_DOWN:
                actions.append(SendAdvert(RELEASE_PRIORITY))
            actions.append(RemoveVips(self.params.vips))
        return actions

    def _discards_advert(self, advert: AdvertReceived) -> bool:
        # RFC 3768 section 7.1: a v2 advert with another interval MUST be discarded.
        return self.params.version == 2 and advert.advert_interval != self.params.advert_interval

    def _outranks_us(self, advert: AdvertReceived) -> bool:
        # RFC 5798 section 6.4.3: priority first, then the primary address as an unsigned number.
        if advert.priority != self._m.priority:
            return advert.priority > self._m.priority
        return int(advert.source) > int(self.params.primary_address)

    def _accepts_master(self, advert: AdvertReceived, now: float) -> bool:
        """RFC 5798 section 6.4.2, with keepalived's preempt_delay holding preemption back."""
        if not self.params.preempt or advert.priority >= self._m.priority:
            return True
        if self.params.preempt_delay:
            hold = self._m.preempt_hold_until
            return hold is None or now < hold
        return False

    def _update_preempt_hold(self, advert: AdvertReceived, now: float) -> None:
        # keepalived: the delay runs from the first lower-priority advert heard since entering
        # Backup (at startup: the current master's first advert); a higher master resets it.
        if not self.params.preempt_delay:
            return
        if advert.priority >= self._m.priority:
            self._m.preempt_hold_until = None
        elif self._m.preempt_hold_until is None:
            self._m.preempt_hold_until = now + self.params.preempt_delay

    # Handlers, one per (state, event type); see TRANSITIONS below.

    def _initialize_startup(self, event: Startup, now: float) -> list[Action]:
        if self._m.fault_reasons:
            reasons = ", ".join(sorted(r.value for r in self._m.fault_reasons))
            return self._transition(VrrpState.FAULT, f"startup: {reasons}")
        return self._come_up(now, "startup", at_startup=True)

    def _record_priority(self, event: PriorityChanged, now: float) -> list[Action]:
        # A master advertises the new priority from its next advert on, so that a higher
        # backup can preempt it.
        self._m.priority = event.priority
        return []

    def _link_changed(self, event: LinkChanged, now: float) -> list[Action]:
        return self._set_fault(FaultReason.LINK_DOWN, not event.up, now)

    def _tracking_fault(self, event: TrackingFault, now: float) -> list[Action]:
        return self._set_fault(FaultReason.TRACKING, event.active, now)

    def _sync_group_fault(self, event: SyncGroupFault, now: float) -> list[Action]:
        return self._set_fault(FaultReason.SYNC_GROUP, event.active, now)

    def _stop(self, event: Shutdown, now: float) -> list[Action]:
        # RFC 5798 section 6.4.2: a backup cancels its Master_Down_Timer, back to Initialize.
        self._m.deadline = None
        return self._transition(VrrpState.INITIALIZE, "shutdown")

    def _backup_advert(self, event: AdvertReceived, now: float) -> list[Action]:
        if self._discards_advert(event):
            return []
        if self._m.handed_over:
            # Heard (for status), never acted on: no Master_Down_Timer to restart or cut short.
            if self.params.version == 3 and event.priority != RELEASE_PRIORITY:
                self._m.master_adver_interval = event.advert_interval
            return []
        if event.priority == RELEASE_PRIORITY:
            # RFC 5798 section 6.4.2: the master is leaving; take over after Skew_Time.
            self._arm_master_down(
                now, self.skew_time(), f"master {event.source} released (priority 0)"
            )
            return []
        if not self._accepts_master(event, now):
            # RFC 5798 section 6.4.2: preempt a lower-priority master by letting the
            # Master_Down_Timer run out.
            return []
        if self.params.version == 3:
            self._m.master_adver_interval = event.advert_interval
        self._arm_master_down(now, self.master_down_interval(), "master down timer expired")
        self._update_preempt_hold(event, now)
        if self._m.ready_for_master:
            self._m.ready_for_master = False
            return [ReadyForMaster(ready=False)]
        return []

    def _backup_master_down(self, event: TimerFired, now: float) -> list[Action]:
        if self.params.sync_group is None:
            return self._enter_master(now, self._m.master_down_reason)
        # keepalived: a sync group member only becomes master once every member wants to.
        self._arm_master_down(now, self.master_down_interval(), self._m.master_down_reason)
        if self._m.ready_for_master:
            return []
        self._m.ready_for_master = True
        return [ReadyForMaster(ready=True)]

    def _backup_priority(self, event: PriorityChanged, now: float) -> list[Action]:
        # Skew_Time follows the priority: move the running timer by the difference (keepalived).
        old_interval = self.master_down_interval()
        self._m.priority = event.priority
        if self._m.deadline is not None:
            self._m.deadline += self.master_down_interval() - old_interval
        return []

    def _backup_follow_group(self, event: SyncGroupMaster, now: float) -> list[Action]:
        if self._m.handed_over:
            # Never granted in practice (a handed-over member is not ready for master, and
            # the engine hands a sync group over as a whole): stays backup regardless.
            return []
        return self._enter_master(now, f"sync group {self.params.sync_group} became master")

    def _answer_due(self, last: float, now: float) -> bool:
        """At most one answer of each kind per advert interval, whatever arrives: a flood of
        adverts must not turn the master into an amplifier (one advert and one GARP round
        sent per packet heard). The unanswered ones are counted."""
        if now - last >= self.params.advert_interval:
            return True
        self._m.answers_suppressed += 1
        return False

    def _master_advert(self, event: AdvertReceived, now: float) -> list[Action]:
        if self._discards_advert(event):
            return []
        if event.priority == RELEASE_PRIORITY:
            # RFC 5798 section 6.4.3: answer at once and restart the Adver_Timer, so backups
            # that heard the priority 0 hear a master before their Skew_Time runs out. Once
            # per interval: our periodic advert covers any more within it. Kept apart from
            # re-assertions, so a lower-priority flood cannot starve this answer.
            if not self._answer_due(self._m.answered_release_at, now):
                return []
            self._m.answered_release_at = now
            self._m.deadline = now + self.params.advert_interval
            return [SendAdvert(self._m.priority)]
        if self._outranks_us(event):
            # RFC 5798 section 6.4.3: a v3 backup adopts the new master's interval.
            if self.params.version == 3:
                self._m.master_adver_interval = event.advert_interval
            return self._master_to_backup(
                now,
                f"higher priority master {event.source} (priority {event.priority})",
                handover=True,
            )
        if event.source == self.params.primary_address:
            # Our own address with our own priority: a looped-back advert or an address clash.
            return []
        # RFC 5798 section 6.4.3 (and RFC 3768) say discard; like keepalived we re-assert
        # at once, which also repairs ARP and neighbour caches after a split brain heals.
        # One re-assertion per advert interval does that job; more only amplifies a flood.
        # In strict mode we discard, as the RFCs (and keepalived's vrrp_strict) do.
        if not self.params.reassert:
            return []
        if not self._answer_due(self._m.reasserted_at, now):
            return []
        self._m.reasserted_at = now
        return [SendAdvert(self._m.priority), Announce(self.params.vips)]

    def _master_adver_timer(self, event: TimerFired, now: float) -> list[Action]:
        # RFC 5798 section 6.4.3: from `now`, not the old deadline, so a late wake-up
        # sends one advert and not a burst.
        self._m.deadline = now + self.params.advert_interval
        return [SendAdvert(self._m.priority)]

    def _master_shutdown(self, event: Shutdown, now: float) -> list[Action]:
        # RFC 5798 section 6.4.3: send priority 0 and stop advertising. Make-before-break:
        # keep the VIPs until the new master is heard, at most one Master_Down_Interval.
        return self._start_releasing(now, "shutdown: sent priority 0", for_handover=False)

    def _start_releasing(self, now: float, reason: str, *, for_handover: bool) -> list[Action]:
        actions = self._transition(VrrpState.RELEASING, reason)
        actions.append(SendAdvert(RELEASE_PRIORITY))
        self._m.releasing_for_handover = for_handover
        self._m.deadline = now + self.master_down_interval()
        return actions

    # Handover: the flag in every state; a master leaves as at shutdown, but to BACKUP.

    def _set_handed_over(self, event: Handover) -> bool:
        """Record the flag; whether it changed."""
        if event.active == self._m.handed_over:
            return False
        self._m.handed_over = event.active
        return True

    def _handover_flag_only(self, event: Handover, now: float) -> list[Action]:
        # Initialize, Fault, and a shutdown's RELEASING: `_come_up` reads the flag later.
        self._set_handed_over(event)
        return []

    def _backup_handover(self, event: Handover, now: float) -> list[Action]:
        if not self._set_handed_over(event):
            return []
        if not event.active:
            # Normal VRRP from here: a master still heard re-arms the timer with each advert,
            # a lower one is preempted (with preempt) when it runs out.
            self._arm_master_down(now, self.master_down_interval(), "master down timer expired")
            return []
        self._m.deadline = None
        self._m.preempt_hold_until = None
        if self._m.ready_for_master:
            self._m.ready_for_master = False
            return [ReadyForMaster(ready=False)]
        return []

    def _master_handover(self, event: Handover, now: float) -> list[Action]:
        if not self._set_handed_over(event):
            return []
        return self._start_releasing(now, "handover: sent priority 0", for_handover=True)

    def _releasing_handover(self, event: Handover, now: float) -> list[Action]:
        if not self._set_handed_over(event) or event.active:
            return []
        if not self._m.releasing_for_handover:
            return []  # a shutdown goes on
        return self._enter_master(now, "handover cancelled: master again")

    def _master_follow_group(self, event: SyncGroupBackup, now: float) -> list[Action]:
        return self._master_to_backup(
            now, f"sync group {self.params.sync_group}: a member went to backup"
        )

    def _fault_advert(self, event: AdvertReceived, now: float) -> list[Action]:
        # A router in fault takes no part in the election (keepalived drops these too).
        return []

    def _releasing_advert(self, event: AdvertReceived, now: float) -> list[Action]:
        if self._discards_advert(event) or event.priority == RELEASE_PRIORITY:
            # Another router leaving as well: keep waiting for the new master.
            return []
        if self._m.releasing_for_handover:
            if self.params.version == 3:
                self._m.master_adver_interval = event.advert_interval
            return self._master_to_backup(
                now, f"handover: new master {event.source} heard", handover=True
            )
        return self._release_vips(f"new master {event.source} heard", handover=True)

    def _releasing_timeout(self, event: TimerFired, now: float) -> list[Action]:
        if self._m.releasing_for_handover:
            # Nobody took over: giving the VIPs up now would leave them to nobody.
            self._m.handed_over = False
            return self._enter_master(
                now,
                "handover failed: no new master heard within the master down interval; "
                "staying master",
            )
        return self._release_vips("no new master heard within the master down interval")

    def _releasing_shutdown(self, event: Shutdown, now: float) -> list[Action]:
        return self._release_vips("shutdown repeated: releasing the VIPs at once")


_Handler = Callable[[VrrpMachine, Any, float], list[Action]]

_I, _B, _M, _F, _R = (
    VrrpState.INITIALIZE,
    VrrpState.BACKUP,
    VrrpState.MASTER,
    VrrpState.FAULT,
    VrrpState.RELEASING,
)

TRANSITIONS: dict[tuple[VrrpState, type[Any]], _Handler] = {
    (_I, Startup): VrrpMachine._initialize_startup,
    (_I, PriorityChanged): VrrpMachine._record_priority,
    (_I, LinkChanged): VrrpMachine._link_changed,
    (_I, TrackingFault): VrrpMachine._tracking_fault,
    (_I, SyncGroupFault): VrrpMachine._sync_group_fault,
    (_I, Handover): VrrpMachine._handover_flag_only,
    (_B, AdvertReceived): VrrpMachine._backup_advert,
    (_B, TimerFired): VrrpMachine._backup_master_down,
    (_B, PriorityChanged): VrrpMachine._backup_priority,
    (_B, LinkChanged): VrrpMachine._link_changed,
    (_B, TrackingFault): VrrpMachine._tracking_fault,
    (_B, SyncGroupFault): VrrpMachine._sync_group_fault,
    (_B, SyncGroupMaster): VrrpMachine._backup_follow_group,
    (_B, Shutdown): VrrpMachine._stop,
    (_B, Handover): VrrpMachine._backup_handover,
    (_M, AdvertReceived): VrrpMachine._master_advert,
    (_M, TimerFired): VrrpMachine._master_adver_timer,
    (_M, PriorityChanged): VrrpMachine._record_priority,
    (_M, LinkChanged): VrrpMachine._link_changed,
    (_M, TrackingFault): VrrpMachine._tracking_fault,
    (_M, SyncGroupFault): VrrpMachine._sync_group_fault,
    (_M, SyncGroupBackup): VrrpMachine._master_follow_group,
    (_M, Shutdown): VrrpMachine._master_shutdown,
    (_M, Handover): VrrpMachine._master_handover,
    (_F, AdvertReceived): VrrpMachine._fault_advert,
    (_F, PriorityChanged): VrrpMachine._record_priority,
    (_F, LinkChanged): VrrpMachine._link_changed,
    (_F, TrackingFault): VrrpMachine._tracking_fault,
    (_F, SyncGroupFault): VrrpMachine._sync_group_fault,
    (_F, Shutdown): VrrpMachine._stop,
    (_F, Handover): VrrpMachine._handover_flag_only,
    (_R, AdvertReceived): VrrpMachine._releasing_advert,
    (_R, TimerFired): VrrpMachine._releasing_timeout,
    (_R, PriorityChanged): VrrpMachine._record_priority,
    (_R, LinkChanged): VrrpMachine._link_changed,
    (_R, TrackingFault): VrrpMachine._tracking_fault,
    (_R, SyncGroupFault): VrrpMachine._sync_group_fault,
    (_R, Shutdown): VrrpMachine._releasing_shutdown,
    (_R, Handover): VrrpMachine._releasing_handover,
}
"""The whole machine: what each state does with each event. Anything missing raises."""
