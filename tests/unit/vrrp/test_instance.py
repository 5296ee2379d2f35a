"""The instance adapter on a real event loop with in-memory addresses and announcer."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address
from typing import Any

import pytest

from lvsha.net.addresses import MemoryAddresses, MemoryInterface, VipRequest, VipResult
from lvsha.net.announce import Announced, Announcement, RecordingAnnouncer
from lvsha.net.garp import GarpSettings
from lvsha.vrrp.events import (
    Action,
    AdvertReceived,
    Event,
    LinkChanged,
    Startup,
    StateChanged,
    TimerFired,
    VirtualAddress,
    VrrpState,
)
from lvsha.vrrp.instance import (
    ARRIVAL_CORRECTION_MAX,
    HANDOVER_GRACE,
    HeldAddress,
    InstanceRunner,
)
from lvsha.vrrp.machine import InstanceParams, VrrpMachine
from lvsha.vrrp.socket import SO_TIMESTAMPNS, arrival_time
from lvsha.vrrp.wire import Advert, VrrpVersion

VIP = IPv4Interface("192.0.2.100/24")
PEER = IPv4Address("192.0.2.200")


class Sent:
    def __init__(self) -> None:
        self.adverts: list[Advert] = []
        self.prepared: list[Advert] = []

    def send(self, advert: Advert) -> None:
        self.adverts.append(advert)

    def prepare(self, advert: Advert) -> None:
        self.prepared.append(advert)


class Timed(VrrpMachine):
    """The machine, recording when each TimerFired reached it."""

    def __init__(self, params: InstanceParams) -> None:
        super().__init__(params)
        self.fired: list[tuple[float, float | None]] = []

    def handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, TimerFired):
            self.fired.append((now, self.next_deadline()))
        return super().handle(event, now)


def runner(
    interval: float = 0.05,
    priority: int = 100,
    *,
    addresses: MemoryAddresses | None = None,
    on_action: Callable[[InstanceRunner, Action], None] = lambda runner, action: None,
    read_input: Callable[[], None] | None = None,
) -> tuple[InstanceRunner, MemoryAddresses]:
    params = InstanceParams(
        name="VI",
        vrid=7,
        version=3,
        priority=priority,
        advert_interval=interval,
        primary_address=IPv4Address("192.0.2.11"),
        vips=(VIP,),
    )
    if addresses is None:
        addresses = MemoryAddresses({"eth0": MemoryInterface(2, "02:00:00:00:00:01")})
    return (
        InstanceRunner(
            Timed(params),
            advert=Advert(VrrpVersion.V3, 7, priority, round(interval * 100), (VIP.ip,)),
            sender=Sent(),
            addresses=addresses,
            announcer=RecordingAnnouncer(),
            held=[HeldAddress(VIP, "eth0")],
            garp=GarpSettings(burst=1, delay=0),
            on_action=on_action,
            read_input=read_input,
        ),
        addresses,
    )


def announcements(run: InstanceRunner) -> list[Announcement]:
    announcer = run._announcer
    assert isinstance(announcer, RecordingAnnouncer)
    return list(announcer.announcements)


def holds(addresses: MemoryAddresses) -> bool:
    return any(a.address == VIP for a in addresses.interfaces["eth0"].addresses)


async def wait_for(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def become_master(run: InstanceRunner, addresses: MemoryAddresses) -> None:
    run.feed(Startup())
    await wait_for(lambda: run.state is VrrpState.MASTER and holds(addresses), 2)


async def test_stepping_down_for_a_heard_master_keeps_the_vips_for_the_grace() -> None:
    run, addresses = runner()
    await become_master(run, addresses)
    loop = asyncio.get_running_loop()
    run.feed(AdvertReceived(PEER, 200, 0.05))
    stepped_down = loop.time()
    assert run.state is VrrpState.BACKUP
    await asyncio.sleep(HANDOVER_GRACE / 2)
    assert holds(addresses)  # still answering while the new master announces itself
    await wait_for(lambda: not holds(addresses), 2)
    assert loop.time() - stepped_down >= HANDOVER_GRACE
    await run.close()


async def test_becoming_master_again_within_the_grace_keeps_the_vips() -> None:
    run, addresses = runner()
    await become_master(run, addresses)
    run.feed(AdvertReceived(PEER, 200, 0.05))
    # the new master vanishes at once: we take over again before the grace ends
    await wait_for(lambda: run.state is VrrpState.MASTER, 2)
    await asyncio.sleep(HANDOVER_GRACE * 1.5)
    assert holds(addresses)
    await run.close()


async def test_a_mastership_that_ended_within_one_event_adds_and_announces_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backup woken from a stall (SIGSTOP, a paused VM) counts its timeout before the advert
    # that waited, then steps down within the same event: the takeover's add and frames must
    # not happen for that moment, or a backup answers ARP for the VIP and sends clients away
    # from the real master.
    states: list[VrrpState] = []
    run, addresses = runner(
        on_action=lambda runner, action: (
            states.append(action.new) if isinstance(action, StateChanged) else None
        )
    )
    run.feed(Startup())
    assert run.state is VrrpState.BACKUP
    loop = asyncio.get_running_loop()
    due = run.machine.next_deadline()
    assert due is not None
    stalled = due + 0.01 - loop.time()
    real = loop.time
    monkeypatch.setattr(loop, "time", lambda: real() + stalled)  # the clock after the stall
    run.feed(AdvertReceived(PEER, 200, 0.05))
    monkeypatch.undo()
    assert states == [VrrpState.BACKUP, VrrpState.MASTER, VrrpState.BACKUP]
    await run.close()  # works off the whole queue
    assert not holds(addresses)
    assert addresses.ledger.entries() == frozenset()
    assert announcements(run) == []


async def test_an_owner_master_at_start_up_adds_and_announces_within_the_call() -> None:
    # The takeover path: by the time feed() returns, the advert is sent, the VIP is on and its
    # first frame is out, before any task has run.
    run, addresses = runner(priority=255)
    run.feed(Startup())
    assert run.state is VrrpState.MASTER
    assert holds(addresses)
    assert [a.addresses for a in announcements(run)] == [(VIP.ip,)]
    sender = run._sender
    assert isinstance(sender, Sent) and len(sender.adverts) == 1
    await run.close()
    assert len(announcements(run)) == 1  # burst 1: the round skips what went out early


async def test_timers_never_fire_before_their_deadline() -> None:
    run, addresses = runner(interval=0.2)
    await become_master(run, addresses)
    machine = run.machine
    assert isinstance(machine, Timed)
    await wait_for(lambda: len(machine.fired) >= 5, 3)
    for now, deadline in machine.fired:
        assert deadline is not None and now >= deadline
    await run.close()


class OrderedAddresses(MemoryAddresses):
    """Memory addresses that log each add and removal into a shared journal."""

    def __init__(self, journal: list[str], *args: Any) -> None:
        super().__init__(*args)
        self.journal = journal

    def add_vips(self, vips: Sequence[VipRequest]) -> list[VipResult]:
        results = super().add_vips(vips)
        self.journal.extend(f"add {vip.ip}" for _, vip, _ in vips)
        return results

    def remove_vips(self, vips: Sequence[tuple[str, VirtualAddress]]) -> list[VipResult | None]:
        results = super().remove_vips(vips)
        self.journal.extend(f"remove {vip.ip}" for _, vip in vips)
        return results


class OrderedAnnouncer(RecordingAnnouncer):
    """Records each frame in a shared journal; `hold` keeps announcement rounds waiting."""

    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    def announce_now(
        self, interface: str, addresses: Iterable[Announced]
    ) -> list[IPv4Address | IPv6Address]:
        sent = super().announce_now(interface, addresses)
        self.journal.extend(f"announce {a}" for a in sent)
        return sent

    async def announce(self, interface: str, addresses: Iterable[Announced]) -> None:
        if self.hold is not None:
            self.held.set()
            await self.hold.wait()
        await super().announce(interface, addresses)


def ordered_runner(
    vips: Sequence[IPv4Interface], garp: GarpSettings, priority: int = 100
) -> tuple[InstanceRunner, list[str], OrderedAnnouncer]:
    params = InstanceParams(
        name="VI",
        vrid=7,
        version=3,
        priority=priority,
        advert_interval=0.05,
        primary_address=IPv4Address("192.0.2.11"),
        vips=tuple(vips),
    )
    journal: list[str] = []
    announcer = OrderedAnnouncer(journal)
    run = InstanceRunner(
        VrrpMachine(params),
        advert=Advert(VrrpVersion.V3, 7, priority, 5, tuple(v.ip for v in vips)),
        sender=Sent(),
        addresses=OrderedAddresses(journal, {"eth0": MemoryInterface(2, "02:00:00:00:00:01")}),
        announcer=announcer,
        held=[HeldAddress(vip, "eth0") for vip in vips],
        garp=garp,
        on_action=lambda runner, action: None,
    )
    return run, journal, announcer


async def test_all_vips_are_added_at_once_then_announced_once_per_round() -> None:
    vips = (VIP, IPv4Interface("192.0.2.101/24"), IPv4Interface("192.0.2.102/24"))
    run, journal, _ = ordered_runner(vips, GarpSettings(burst=2, delay=0))
    run.feed(Startup())
    await wait_for(lambda: len(journal) == 3 + 2 * 3, 2)
    adds = [f"add {vip.ip}" for vip in vips]
    frames = [f"announce {vip.ip}" for vip in vips]
    assert journal == adds + frames + frames
    await run.close()
    assert len(journal) == 9  # no frame sent twice within a round


async def test_a_takeover_while_the_last_spell_is_still_being_worked_off_waits_for_it() -> None:
    # The worker is busy (a round of announcements waiting on a full socket), a fault queues
    # the removal, and the owner comes back: its add must follow that removal, never pass it.
    run, journal, announcer = ordered_runner((VIP,), GarpSettings(burst=2, delay=0), 255)
    announcer.hold = asyncio.Event()
    run.feed(Startup())  # the owner: master at once; the first frame goes with the add
    await asyncio.wait_for(announcer.held.wait(), 2)  # the second round waits in the worker
    run.feed(LinkChanged(up=False))  # removal queued behind it
    run.feed(LinkChanged(up=True))
    await wait_for(lambda: run.state is VrrpState.MASTER, 2)  # add queued behind that
    assert journal == [f"add {VIP.ip}", f"announce {VIP.ip}"]
    announcer.hold.set()
    await wait_for(lambda: len(journal) >= 6, 2)
    await run.close()
    assert journal[:6] == [
        f"add {VIP.ip}",
        f"announce {VIP.ip}",
        f"announce {VIP.ip}",  # the round that was already on its way
        f"remove {VIP.ip}",
        f"add {VIP.ip}",
        f"announce {VIP.ip}",
    ]


async def test_adverts_waiting_in_the_socket_go_in_before_a_timeout() -> None:
    # A backup whose master-down timer ran out while it was stopped, with the master's
    # adverts waiting unread: it may count the timeout first, but steps down within the same
    # callback, so nothing of that moment's mastership is added or announced.
    states: list[VrrpState] = []
    waiting = [AdvertReceived(PEER, 200, 0.05)]

    def read_input() -> None:
        while waiting:
            run.feed(waiting.pop())

    run, addresses = runner(
        on_action=lambda runner, action: (
            states.append(action.new) if isinstance(action, StateChanged) else None
        ),
        read_input=read_input,
    )
    run.feed(Startup())
    await wait_for(lambda: not waiting, 2)  # the master-down timer ran, the advert went in
    assert run.state is VrrpState.BACKUP
    assert VrrpState.MASTER in states  # the timeout still counted first, for a moment
    await run.close()
    assert announcements(run) == []
    assert not holds(addresses)


async def test_master_down_runs_from_the_advert_s_arrival_not_its_reading() -> None:
    run, _ = runner()
    run.feed(Startup())
    loop = asyncio.get_running_loop()
    arrived = loop.time() - 0.004  # read 4 ms after the kernel had it
    run.feed(AdvertReceived(PEER, 200, 0.05), at=arrived)
    deadline = run.machine.next_deadline()
    assert deadline == pytest.approx(arrived + run.machine.master_down_interval())
    # Never before an event already handled: the machine's clock does not go back.
    run.feed(AdvertReceived(PEER, 200, 0.05), at=arrived - 0.001)
    assert run.machine.last_now >= arrived
    # Nor further back than a reading can take: a wall clock stepped between the arrival and
    # the reading (the kernel stamps with it) moves no timer earlier than the reading's.
    stepped = loop.time() - 3600.0
    run.feed(AdvertReceived(PEER, 200, 0.05), at=stepped)
    assert run.machine.last_now >= loop.time() - ARRIVAL_CORRECTION_MAX - 0.001
    await run.close()


def test_arrival_time_is_read_from_the_kernel_stamp() -> None:
    now_wall, now_monotonic = time.time(), time.monotonic()
    stamp = struct.pack("=qq", int(now_wall), int((now_wall % 1) * 1e9))
    arrived = arrival_time([(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)])
    assert arrived == pytest.approx(now_monotonic, abs=0.01)
    assert arrival_time([(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, b"\xff\0\0\0")]) is None
