"""The asyncio adapter of one VRRP instance: one machine, one timer, its socket and addresses.

It feeds the machine events stamped with the loop's monotonic clock and carries out the
actions it returns. Adverts go out at once; address changes and announcements run in order
on one task, so a gratuitous ARP never precedes the address it announces. When an announcement
round waits behind the VIPs being added, each VIP's frame of that round goes out as soon as the
kernel has acknowledged that VIP, before anything else (the other VIPs, logging).

A reload changes a running instance in place (`reconfigure`, `set_advert`, `set_garp`,
`add_ahead`, `set_held`): a master adds its new VIPs before the reload commits, announces them
once it has, and lets go of the dropped ones last. An address another instance holds now (a VIP
moved between instances, or listed by two) is never taken off: `claimed_elsewhere` says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from lvsha.net.addresses import AddressError, AddressPort, InterfaceNotFoundError, VipOutcome
from lvsha.net.announce import AnnounceError, Announcer
from lvsha.net.garp import AnnouncementSchedule, GarpSettings
from lvsha.vrrp.deadline import deadline_timer
from lvsha.vrrp.events import (
    Action,
    AddVips,
    Announce,
    Event,
    RemoveVips,
    SendAdvert,
    TimerFired,
    VirtualAddress,
    VrrpState,
)
from lvsha.vrrp.machine import InstanceParams, VrrpMachine
from lvsha.vrrp.params import HeldAddress, HeldKey
from lvsha.vrrp.wire import Advert

log = logging.getLogger("lvsha.vrrp")

HANDOVER_GRACE = 0.1
"""Seconds a master that steps down for another keeps answering for its VIPs.

The new master's first advert goes out before its VIPs are added and announced; the old one
hears that advert first, and clients keep sending to the old MAC until the new GARP lands.
Letting go a little later loses no traffic; both holding the VIPs for those milliseconds is
harmless, as clients follow the newest announcement. Not applied on FAULT or shutdown
timeouts, where there is no new master to wait for."""


ARRIVAL_CORRECTION_MAX = 0.01
"""Seconds an advert's kernel arrival time may move its handling back. Reading an advert takes
well under this; more means the wall clock (which the kernel stamps with) stepped between the
arrival and the reading, or the process was stopped: then the reading time is the safe one, as
timers run from it later, never earlier, than they should."""


class AdvertSender(Protocol):
    def send(self, advert: Advert) -> None: ...

    def prepare(self, advert: Advert) -> None:
        """Encode `advert` ahead of sending it."""
        ...


ClaimCheck = Callable[["InstanceRunner", HeldKey], bool]
"""claimed_elsewhere(runner, key): another instance holds this address now: leave it on."""


@dataclass(slots=True)
class HeldChange:
    """The outcome of a reload's add (`add_ahead`) or removal (`set_held`) of VIPs."""

    done: list[tuple[HeldAddress, VipOutcome]] = field(default_factory=list)
    failed: list[tuple[HeldAddress, str]] = field(default_factory=list)
    skipped: bool = False
    """The mastership ended before the add could finish (its removal takes care of it)."""


@dataclass(frozen=True, slots=True)
class _AnnounceRound:
    """One announcement of every held VIP (one frame each), or of `only` these."""

    only: frozenset[HeldKey] | None = None


@dataclass(frozen=True, slots=True)
class _AfterAdd:
    """What follows a takeover's adds once the frames are out: logging, and giving back any
    VIP that turned out to be someone else's."""

    added: tuple[HeldAddress, ...]
    failed: tuple[tuple[HeldAddress, str], ...]


@dataclass(frozen=True, slots=True)
class _AddHeld:
    """A reload's add of VIPs for the mastership it was queued under."""

    held: tuple[HeldAddress, ...]
    outcome: asyncio.Future[HeldChange]


@dataclass(frozen=True, slots=True)
class _RemoveHeld:
    """A reload's removal of VIPs the instance no longer holds (or rolling back an add)."""

    held: tuple[HeldAddress, ...]
    outcome: asyncio.Future[HeldChange]


__all__ = ["HANDOVER_GRACE", "HeldAddress", "HeldChange", "HeldKey", "InstanceRunner"]

_Work = AddVips | RemoveVips | _AnnounceRound | _AfterAdd | _AddHeld | _RemoveHeld


class InstanceRunner:
    """Runs one VRRP instance's machine on the event loop."""

    def __init__(
        self,
        machine: VrrpMachine,
        *,
        advert: Advert,
        sender: AdvertSender,
        addresses: AddressPort,
        announcer: Announcer,
        held: Sequence[HeldAddress],
        garp: GarpSettings,
        on_action: Callable[[InstanceRunner, Action], None],
        read_input: Callable[[], None] | None = None,
        claimed_elsewhere: ClaimCheck | None = None,
    ) -> None:
        """`read_input` reads the adverts waiting in the socket, feeding them in; it is called
        before a timeout is acted on. `claimed_elsewhere` is asked before each removal."""
        self.machine = machine
        self._read_input = read_input
        self.name = machine.params.name
        self._advert = advert
        self._sender = sender
        self._addresses = addresses
        self._announcer = announcer
        self._held = tuple(held)
        self._garp = garp
        self._on_action = on_action
        self._loop = asyncio.get_running_loop()
        self._timer = deadline_timer(self._loop, self._on_timer)
        self._schedule: AnnouncementSchedule | None = None
        self._work: asyncio.Queue[tuple[int, _Work] | None] = asyncio.Queue()
        self._mastership = 0
        """Counts departures from mastership. Queued work carries the count it was queued
        under: an add or an announcement queued for a mastership that has already ended is
        skipped, so a router that is master for a moment never announces as a backup."""
        self._rounds_queued = 0
        """Announcement rounds in the work queue, not yet carried out."""
        self._announced_early: set[VirtualAddress] = set()
        """VIPs whose frame of the next queued round went out right after their add."""
        self._pending_removal: asyncio.TimerHandle | None = None
        self._claimed_elsewhere = claimed_elsewhere
        self._on: dict[HeldKey, HeldAddress] = {}
        """What this instance has put on (or found its own there) and not taken off yet."""
        self._partial: list[tuple[AnnouncementSchedule, frozenset[HeldKey]]] = []
        """Announcements owed for VIPs a reload added while master (refreshes aside, which
        the whole-instance schedule sends for every VIP)."""
        self._busy = False
        self._prepared_priority: int | None = None
        """The worker is carrying out an item (and may be waiting inside it)."""
        self._worker = asyncio.create_task(self._do_work(), name=f"vrrp-{self.name}-vips")
        self.send_errors = 0
        self.adverts_sent = 0
        """Adverts handed to the socket without an error (priority 0 ones included)."""
        self.priority_zero_sent = 0
        """Of those, the ones with priority 0 (leaving mastership)."""
        self.frames_announced = 0
        """Gratuitous ARP and unsolicited neighbour advertisement frames sent."""
        self.announce_failures = 0
        """Announcements that failed (some or all of their frames not sent)."""

    @property
    def state(self) -> VrrpState:
        return self.machine.state

    @property
    def held(self) -> tuple[HeldAddress, ...]:
        return self._held

    @property
    def advert(self) -> Advert:
        return self._advert

    @property
    def garp(self) -> GarpSettings:
        return self._garp

    def holds(self, key: HeldKey) -> bool:
        """Whether this instance holds the address now: it is master (or releasing) with it."""
        return self.machine.holds_vips and any(h.key == key for h in self._held)

    # A reload's changes, each applied in place.

    def reconfigure(self, params: InstanceParams) -> None:
        """New machine settings (see VrrpMachine.reconfigure); the timer is re-armed only when
        a deadline moved."""
        before = self.machine.next_deadline()
        actions = self.machine.reconfigure(params, self._loop.time())
        self.name = params.name
        self._worker.set_name(f"vrrp-{self.name}-vips")
        self._execute(actions)
        if actions or self.machine.next_deadline() != before:
            self._rearm()

    def set_advert(self, advert: Advert) -> None:
        """What the next adverts carry (VIP list, interval, authentication)."""
        self._advert = advert
        self._prepared_priority = None

    def set_garp(self, garp: GarpSettings) -> None:
        """Announcement settings for the next spell as master and for VIPs a reload adds; the
        spell in progress keeps the settings it started with."""
        self._garp = garp

    def add_ahead(self, held: Sequence[HeldAddress]) -> asyncio.Future[HeldChange]:
        """Put VIPs a reload adds on now, while master, before the reload commits; nothing
        is announced yet (`set_held` does that). Resolves with what was done; a refusal stops
        the adds there."""
        outcome: asyncio.Future[HeldChange] = self._loop.create_future()
        if not self.machine.holds_vips or not held:
            outcome.set_result(HeldChange(skipped=not self.machine.holds_vips))
        else:
            self._work.put_nowait((self._mastership, _AddHeld(tuple(held), outcome)))
        return outcome

    def undo_add_ahead(self, change: HeldChange) -> asyncio.Future[HeldChange]:
        """Roll back `add_ahead`: take off what it added and the instance does not hold."""
        outcome: asyncio.Future[HeldChange] = self._loop.create_future()
        added = frozenset(h.key for h, result in change.done if result is VipOutcome.ADDED)
        mine = {h.key for h in self._held}
        back = tuple(h for h, _ in change.done if h.key not in mine)
        for held in back:
            if held.key not in added:
                self._on.pop(held.key, None)  # found there, not added: only forgotten
        self._work.put_nowait(
            (self._mastership, _RemoveHeld(tuple(h for h in back if h.key in added), outcome))
        )
        return outcome

    def set_held(self, held: Sequence[HeldAddress]) -> asyncio.Future[HeldChange]:
        """The VIPs this instance holds from now on. A master adds what is missing (`add_ahead`
        did, normally), adds again one whose prefix, label, broadcast or scope changed,
        announces the new ones with its GARP settings and takes off the dropped ones, after
        anything queued before; a backup only changes what it would hold (and a
        removal still waiting out its grace takes the dropped ones too). Resolves once the
        dropped VIPs are off."""
        old = {h.key for h in self._held}
        self._held = tuple(held)
        outcome: asyncio.Future[HeldChange] = self._loop.create_future()
        keys = {h.key for h in self._held}
        if not self.machine.holds_vips:
            outcome.set_result(HeldChange())
            return outcome
        # A VIP held now under another prefix, label, broadcast or scope: the kernel edits
        # none of them in place, so it is added again as configured (add_vip does that).
        changed = frozenset(h.key for h in self._held if h.key in self._on and self._on[h.key] != h)
        missing = tuple(h for h in self._held if h.key not in self._on or h.key in changed)
        if missing:
            self._work.put_nowait((self._mastership, _AddHeld(missing, self._loop.create_future())))
        fresh = frozenset(keys - old) | changed
        if fresh and self.machine.state is VrrpState.MASTER:
            # Refreshes stay with the whole-instance schedule, which now includes these.
            settings = replace(self._garp, refresh=0.0)
            self._partial.append((AnnouncementSchedule(settings, self._loop.time()), fresh))
            self._announce_due()
            self._rearm()
        dropped = tuple(h for key, h in self._on.items() if key not in keys)
        self._work.put_nowait((self._mastership, _RemoveHeld(dropped, outcome)))
        return outcome

    def feed(self, event: Event, at: float | None = None) -> None:
        """Hand one event to the machine now and carry out what it asks. `at` is when it
        happened (the kernel's arrival time of an advert), if earlier than now: the machine's
        timers then run from that moment, though never before an event already handled nor
        more than ARRIVAL_CORRECTION_MAX back."""
        now = self._loop.time()
        if at is not None and at < now:
            now = max(at, now - ARRIVAL_CORRECTION_MAX, self.machine.last_now)
        self._execute(self.machine.handle(event, now))
        self._rearm()
        if self.machine.priority != self._prepared_priority:
            # What this router would advertise on taking over, encoded before it has to.
            self._prepared_priority = self.machine.priority
            self._sender.prepare(self._advert_with(self.machine.priority))

    def _execute(self, actions: Sequence[Action]) -> None:
        """The frames first (advert, VIPs, announcements), then everything that only reports
        (state change logs, the parent, notify scripts, sync groups), in the machine's order."""
        for position, action in enumerate(actions):
            if isinstance(action, AddVips) and any(
                isinstance(later, RemoveVips) for later in actions[position + 1 :]
            ):
                # Master for a moment only (a backup woken from a stall counts its timeout
                # before the adverts that waited): queued, so skipped, never added or announced.
                self._work.put_nowait((self._mastership, action))
                continue
            self._carry_out(action)
        for action in actions:
            self._on_action(self, action)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, SendAdvert):
            self._send(action.priority)
        elif isinstance(action, AddVips):
            if self._pending_removal is not None:
                # Master again within the grace: the VIPs never left.
                self._pending_removal.cancel()
                self._pending_removal = None
            if self._work.empty() and not self._busy:
                # The takeover path: added and announced within this callback.
                self._work.put_nowait((self._mastership, self._add_now()))
            else:
                # After what is queued (a removal from the last spell as master, say).
                self._work.put_nowait((self._mastership, action))
        elif isinstance(action, RemoveVips):
            self._schedule = None
            self._partial.clear()
            self._mastership += 1
            if action.handover:
                self._pending_removal = self._loop.call_later(
                    HANDOVER_GRACE, self._remove_after_grace, action
                )
            else:
                self._work.put_nowait((self._mastership, action))
        elif isinstance(action, Announce):
            # A fresh spell of announcements: on becoming master, and when a master
            # re-asserts itself after hearing a lower priority (repairs ARP caches).
            self._schedule = AnnouncementSchedule(self._garp, self._loop.time())
            self._announce_due()

    def _add_now(self) -> _AfterAdd:
        """Put every VIP on in one exchange with the kernel, then send each one's frame of the
        first announcement round at once; bookkeeping waits until the frames are out."""
        held = self._held
        results = self._addresses.add_vips([(h.interface, h.address, h.attributes) for h in held])
        due: dict[str, list[VirtualAddress]] = {}
        added: list[HeldAddress] = []
        failed: list[tuple[HeldAddress, str]] = []
        for one, result in zip(held, results, strict=True):
            if isinstance(result, Exception):
                failed.append((one, str(result)))
                continue
            if result is not VipOutcome.NOT_OURS:
                self._on[one.key] = one
                due.setdefault(one.interface, []).append(one.address)
            if result is VipOutcome.ADDED:
                added.append(one)
        for interface, addresses in due.items():
            try:
                sent = self._announcer.announce_now(interface, addresses)
            except AnnounceError as exc:
                self.announce_failures += 1
                log.error("%s: announcing on %s failed: %s", self.name, interface, exc)
                continue  # the round tries them again
            self.frames_announced += len(sent)
            # Their frame of the round queued next has gone: that round skips them.
            self._announced_early.update(a for a in addresses if a.ip in sent)
        return _AfterAdd(tuple(added), tuple(failed))

    def _remove_after_grace(self, action: RemoveVips) -> None:
        self._pending_removal = None
        self._work.put_nowait((self._mastership, action))

    def _advert_with(self, priority: int) -> Advert:
        a = self._advert
        return Advert(
            version=a.version,
            vrid=a.vrid,
            priority=priority,
            advert_interval=a.advert_interval,
            addresses=a.addresses,
            auth_type=a.auth_type,
            auth_data=a.auth_data,
        )

    def _send(self, priority: int) -> None:
        try:
            self._sender.send(self._advert_with(priority))
            self.adverts_sent += 1
            if priority == 0:
                self.priority_zero_sent += 1
        except OSError as exc:
            # A lost advert is tolerated by VRRP; a dead link shows up as a link event.
            self.send_errors += 1
            if self.send_errors == 1 or self.send_errors % 100 == 0:
                log.warning("%s: advert not sent (%d so far): %s", self.name, self.send_errors, exc)

    def _announce_due(self) -> None:
        now = self._loop.time()
        if self._schedule is not None:
            for _ in range(self._schedule.due(now)):
                self._rounds_queued += 1
                self._work.put_nowait((self._mastership, _AnnounceRound()))
        for schedule, only in self._partial:
            for _ in range(schedule.due(now)):
                self._work.put_nowait((self._mastership, _AnnounceRound(only)))
        self._partial = [p for p in self._partial if p[0].next_deadline() is not None]

    def _rearm(self) -> None:
        deadlines = [
            d
            for d in (
                self.machine.next_deadline(),
                self._schedule.next_deadline() if self._schedule else None,
                *(schedule.next_deadline() for schedule, _ in self._partial),
            )
            if d is not None
        ]
        if deadlines:
            self._timer.arm(min(deadlines))
        else:
            self._timer.cancel()

    def _on_timer(self) -> None:
        due = self.machine.next_deadline()
        if due is not None and due <= self._loop.time() and self._read_input is not None:
            # Adverts already received go in before the timeout is acted on. After a stall
            # (SIGSTOP, a paused VM) the machine still counts the timeout as first, but the
            # step down that the waiting adverts cause then happens in this same callback,
            # before any add or announcement of that moment's mastership can run.
            self._read_input()
            due = self.machine.next_deadline()
        if due is not None and due <= self._loop.time():
            self.feed(TimerFired())  # feed() re-arms
            return
        self._announce_due()
        self._rearm()  # an announcement was due, or the adverts that waited moved the deadline

    async def _do_work(self) -> None:
        while (item := await self._work.get()) is not None:
            mastership, work = item
            what = type(work).__name__.lstrip("_")
            if mastership != self._mastership and not isinstance(
                work, RemoveVips | _RemoveHeld | _AfterAdd
            ):
                # Queued while master, and no longer master: the removal queued since
                # takes care of what was added; nothing more is added or announced.
                if isinstance(work, _AnnounceRound) and work.only is None:
                    self._rounds_queued -= 1
                if isinstance(work, _AddHeld) and not work.outcome.done():
                    work.outcome.set_result(HeldChange(skipped=True))
                log.debug("%s: %s skipped: no longer master", self.name, what)
                continue
            self._busy = True
            try:
                await self._apply(work, mastership)
            except (InterfaceNotFoundError, AddressError, AnnounceError) as exc:
                # The world, not lvsha: an interface gone or down, a kernel refusal.
                log.error("%s: %s failed: %s", self.name, what, exc)
            except Exception:
                log.exception("%s: %s failed", self.name, what)
            finally:
                self._busy = False

    async def _apply(self, work: _Work, mastership: int) -> None:
        if isinstance(work, _AddHeld | _RemoveHeld):
            await self._change_held(work, mastership)
        elif isinstance(work, AddVips):
            await self._after_add(self._add_now(), mastership)
        elif isinstance(work, _AfterAdd):
            await self._after_add(work, mastership)
        elif isinstance(work, RemoveVips):
            # What it holds, and anything still on from before a reload changed that.
            keys = {h.key for h in self._held}
            await self._remove_all(
                [*self._held, *(h for k, h in self._on.items() if k not in keys)]
            )
        elif isinstance(work, _AnnounceRound) and work.only is not None:
            for interface in dict.fromkeys(h.interface for h in self._held):
                if mastership != self._mastership:
                    break
                due = [
                    h.address for h in self._held if h.interface == interface and h.key in work.only
                ]
                if due:
                    await self._announce(interface, due)
        elif isinstance(work, _AnnounceRound):
            self._rounds_queued -= 1
            early, self._announced_early = self._announced_early, set()
            for interface in dict.fromkeys(h.interface for h in self._held):
                if mastership != self._mastership:
                    break
                due = [
                    h.address
                    for h in self._held
                    if h.interface == interface and h.address not in early
                ]
                if due:
                    await self._announce(interface, due)

    async def _announce(self, interface: str, due: list[VirtualAddress]) -> None:
        try:
            await self._announcer.announce(interface, due)
        except AnnounceError:
            self.announce_failures += 1
            raise
        self.frames_announced += len(due)

    async def _after_add(self, work: _AfterAdd, mastership: int) -> None:
        for held in work.added:
            log.info("%s: added %s to %s", self.name, held.address, held.interface)
        for held, why in work.failed:
            log.error(
                "%s: adding %s to %s failed: %s", self.name, held.address, held.interface, why
            )
        if mastership != self._mastership:
            return  # the removal queued since takes them all off
        disowned = await self._addresses.disown_duplicates(
            [(h.interface, h.address) for h in work.added]
        )
        for held in work.added:
            if (held.interface, held.address) in disowned:
                self._on.pop(held.key, None)

    def _stays_on(self, held: HeldAddress) -> bool:
        """Another instance holds this address now: it is left on, and no longer this one's."""
        if self._claimed_elsewhere is None or not self._claimed_elsewhere(self, held.key):
            return False
        self._on.pop(held.key, None)
        log.info(
            "%s: %s stays on %s: another instance holds it", self.name, held.address, held.interface
        )
        return True

    async def _remove_all(self, targets: Sequence[HeldAddress]) -> None:
        """Take VIPs off in one exchange with the kernel, but those another instance holds."""
        leaving = [held for held in targets if not self._stays_on(held)]
        results = self._addresses.remove_vips([(h.interface, h.address) for h in leaving])
        for held, result in zip(leaving, results, strict=True):
            self._on.pop(held.key, None)
            if result is None:
                # Not added by this process: looked at and left alone, or forgotten.
                await self._addresses.remove_vip(held.interface, held.address)
            elif isinstance(result, Exception):
                log.error(
                    "%s: removing %s from %s failed: %s",
                    self.name,
                    held.address,
                    held.interface,
                    result,
                )

    async def _remove(self, held: HeldAddress) -> VipOutcome | None:
        """Take one VIP off, unless another instance holds it now; None when left on."""
        if self._stays_on(held):
            return None
        outcome = await self._addresses.remove_vip(held.interface, held.address)
        self._on.pop(held.key, None)
        return outcome

    async def _change_held(self, work: _AddHeld | _RemoveHeld, mastership: int) -> None:
        """A reload's add or removal: every outcome and failure goes back to the caller."""
        change = HeldChange()
        try:
            for held in work.held:
                if isinstance(work, _AddHeld) and mastership != self._mastership:
                    change.skipped = True
                    break
                try:
                    if isinstance(work, _AddHeld):
                        outcome: VipOutcome | None = await self._addresses.add_vip(
                            held.interface, held.address, held.attributes
                        )
                        if outcome is not VipOutcome.NOT_OURS:
                            self._on[held.key] = held
                        if outcome is VipOutcome.ADDED:
                            log.info("%s: added %s to %s", self.name, held.address, held.interface)
                    else:
                        outcome = await self._remove(held)
                except Exception as exc:
                    if not isinstance(exc, InterfaceNotFoundError | AddressError):
                        log.exception("%s: unexpected failure", self.name)
                    log.error(
                        "%s: %s of %s failed: %s",
                        self.name,
                        type(work).__name__.lstrip("_"),
                        held.address,
                        exc,
                    )
                    change.failed.append((held, str(exc)))
                    if isinstance(work, _AddHeld):
                        break  # the reload rolls back: add no more
                    continue
                if outcome is not None:
                    change.done.append((held, outcome))
        finally:
            if not work.outcome.done():
                work.outcome.set_result(change)

    async def close(self) -> None:
        """Stop the timer and the work queue, after finishing what is queued (a removal
        waiting out its grace is done now)."""
        self._timer.close()
        if self._pending_removal is not None:
            self._pending_removal.cancel()
            self._pending_removal = None
            self._work.put_nowait((self._mastership, RemoveVips(())))
        self._work.put_nowait(None)
        await self._worker
