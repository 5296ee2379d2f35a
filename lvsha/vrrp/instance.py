"""The asyncio adapter of one VRRP instance: one machine, one timer, its socket and addresses.

It feeds the machine events stamped with the loop's monotonic clock and carries out the
actions it returns. Adverts go out at once; address changes and announcements run in order
on one task, so a gratuitous ARP never precedes the address it announces. When an announcement
round waits behind the VIPs being added, each VIP's frame of that round goes out as soon as the
kernel has acknowledged that VIP, before anything else (the other VIPs, logging).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lvsha.net.addresses import AddressError, AddressPort, InterfaceNotFoundError, VipOutcome
from lvsha.net.announce import AnnounceError, Announcer
from lvsha.net.garp import AnnouncementSchedule, GarpSettings
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
from lvsha.vrrp.machine import VrrpMachine
from lvsha.vrrp.wire import Advert

log = logging.getLogger("lvsha.vrrp")

HANDOVER_GRACE = 0.1
"""Seconds a master that steps down for another keeps answering for its VIPs.

The new master's first advert goes out before its VIPs are added and announced; the old one
hears that advert first, and clients keep sending to the old MAC until the new GARP lands.
Letting go a little later loses no traffic; both holding the VIPs for those milliseconds is
harmless, as clients follow the newest announcement. Not applied on FAULT or shutdown
timeouts, where there is no new master to wait for."""

TIMER_EARLY = 0.002
"""The kernel may run a normal process's timer up to 0.1% of its timeout late (epoll timer
slack); waking this much plus 0.15% early and re-arming for the exact deadline keeps
Master_Down_Interval exact without real-time scheduling."""


class AdvertSender(Protocol):
    def send(self, advert: Advert) -> None: ...


@dataclass(frozen=True, slots=True)
class HeldAddress:
    """A VIP the master holds: where it goes and with which label."""

    address: VirtualAddress
    interface: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class _AnnounceRound:
    """One announcement of every held VIP (one frame each)."""


_Work = AddVips | RemoveVips | _AnnounceRound


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
    ) -> None:
        """`read_input` reads the adverts waiting in the socket, feeding them in; it is called
        before a timeout is acted on."""
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
        self._timer: asyncio.TimerHandle | None = None
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
        self._worker = asyncio.create_task(self._do_work(), name=f"vrrp-{self.name}-vips")
        self.send_errors = 0

    @property
    def state(self) -> VrrpState:
        return self.machine.state

    def feed(self, event: Event) -> None:
        """Hand one event to the machine now and carry out what it asks."""
        for action in self.machine.handle(event, self._loop.time()):
            self._execute(action)
        self._rearm()

    def _execute(self, action: Action) -> None:
        if isinstance(action, SendAdvert):
            self._send(action.priority)
        elif isinstance(action, AddVips):
            if self._pending_removal is not None:
                # Master again within the grace: the VIPs never left.
                self._pending_removal.cancel()
                self._pending_removal = None
            self._work.put_nowait((self._mastership, action))
        elif isinstance(action, RemoveVips):
            self._schedule = None
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
        self._on_action(self, action)

    def _remove_after_grace(self, action: RemoveVips) -> None:
        self._pending_removal = None
        self._work.put_nowait((self._mastership, action))

    def _send(self, priority: int) -> None:
        a = self._advert
        try:
            self._sender.send(
                Advert(
                    version=a.version,
                    vrid=a.vrid,
                    priority=priority,
                    advert_interval=a.advert_interval,
                    addresses=a.addresses,
                    auth_type=a.auth_type,
                    auth_data=a.auth_data,
                )
            )
        except OSError as exc:
            # A lost advert is tolerated by VRRP; a dead link shows up as a link event.
            self.send_errors += 1
            if self.send_errors == 1 or self.send_errors % 100 == 0:
                log.warning("%s: advert not sent (%d so far): %s", self.name, self.send_errors, exc)

    def _announce_due(self) -> None:
        if self._schedule is None:
            return
        for _ in range(self._schedule.due(self._loop.time())):
            self._rounds_queued += 1
            self._work.put_nowait((self._mastership, _AnnounceRound()))

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = [
            d
            for d in (
                self.machine.next_deadline(),
                self._schedule.next_deadline() if self._schedule else None,
            )
            if d is not None
        ]
        if deadlines:
            deadline = min(deadlines)
            ahead = deadline - self._loop.time()
            if ahead > TIMER_EARLY:
                deadline -= TIMER_EARLY + ahead * 0.0015
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
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
        self._rearm()  # woken early on purpose: re-arm for what is left

    async def _do_work(self) -> None:
        while (item := await self._work.get()) is not None:
            mastership, work = item
            what = type(work).__name__.lstrip("_")
            if mastership != self._mastership and not isinstance(work, RemoveVips):
                # Queued while master, and no longer master: the removal queued since
                # takes care of what was added; nothing more is added or announced.
                if isinstance(work, _AnnounceRound):
                    self._rounds_queued -= 1
                log.debug("%s: %s skipped: no longer master", self.name, what)
                continue
            try:
                await self._apply(work, mastership)
            except (InterfaceNotFoundError, AddressError, AnnounceError) as exc:
                # The world, not lvsha: an interface gone or down, a kernel refusal.
                log.error("%s: %s failed: %s", self.name, what, exc)
            except Exception:
                log.exception("%s: %s failed", self.name, what)

    async def _apply(self, work: _Work, mastership: int) -> None:
        if isinstance(work, AddVips):
            for held in self._held:
                if mastership != self._mastership:
                    break  # stepped down while adding: add no more
                outcome = await self._addresses.add_vip(held.interface, held.address, held.label)
                if mastership != self._mastership:
                    # Stepped down while the kernel added it: never announce it now; the
                    # removal queued since takes it off.
                    if outcome is VipOutcome.ADDED:
                        log.info(
                            "%s: added %s to %s, no longer master: not announced",
                            self.name,
                            held.address,
                            held.interface,
                        )
                    break
                if self._rounds_queued and outcome is not VipOutcome.NOT_OURS:
                    await self._announce_early(held)
                if outcome is VipOutcome.ADDED:
                    log.info("%s: added %s to %s", self.name, held.address, held.interface)
        elif isinstance(work, RemoveVips):
            for held in self._held:
                await self._addresses.remove_vip(held.interface, held.address)
        else:
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
                    await self._announcer.announce(interface, due)

    async def _announce_early(self, held: HeldAddress) -> None:
        """Send `held`'s frame of the queued round now; the round then skips it."""
        try:
            await self._announcer.announce(held.interface, [held.address])
        except AnnounceError as exc:
            log.error("%s: announcing %s failed: %s", self.name, held.address, exc)
            return  # the round tries it again
        self._announced_early.add(held.address)

    async def close(self) -> None:
        """Stop the timer and the work queue, after finishing what is queued (a removal
        waiting out its grace is done now)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending_removal is not None:
            self._pending_removal.cancel()
            self._pending_removal = None
            self._work.put_nowait((self._mastership, RemoveVips(())))
        self._work.put_nowait(None)
        await self._worker
