"""The instance adapter on a real event loop with in-memory addresses and announcer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from lvsha.net.addresses import MemoryAddresses, MemoryInterface, VipOutcome
from lvsha.net.announce import Announced, RecordingAnnouncer
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
from lvsha.vrrp.instance import HANDOVER_GRACE, HeldAddress, InstanceRunner
from lvsha.vrrp.machine import InstanceParams, VrrpMachine
from lvsha.vrrp.wire import Advert, VrrpVersion

VIP = IPv4Interface("192.0.2.100/24")
PEER = IPv4Address("192.0.2.200")


class Sent:
    def __init__(self) -> None:
        self.adverts: list[Advert] = []

    def send(self, advert: Advert) -> None:
        self.adverts.append(advert)


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


def announcements(run: InstanceRunner) -> list[object]:
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


async def test_a_mastership_that_ended_before_its_vips_were_added_adds_and_announces_nothing() -> (
    None
):
    # Master for a moment (here: an owner whose link drops at once; in the chaos bench, a
    # backup woken from SIGSTOP whose master-down timer had run out): the add and the
    # announcements queued for that moment must not run once it is over, or a backup
    # answers ARP for the VIP and sends clients away from the real master.
    run, addresses = runner(priority=255)
    run.feed(Startup())
    assert run.state is VrrpState.MASTER
    run.feed(LinkChanged(up=False))
    assert run.machine.state is VrrpState.FAULT
    await run.close()  # works off the whole queue
    assert not holds(addresses)
    assert addresses.ledger.entries() == frozenset()
    assert announcements(run) == []


async def test_fault_removes_the_vips_at_once() -> None:
    run, addresses = runner()
    await become_master(run, addresses)
    run.feed(LinkChanged(up=False))
    await wait_for(lambda: not holds(addresses), HANDOVER_GRACE / 2)
    await run.close()


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
    """Memory addresses that log each add into a shared journal."""

    def __init__(self, journal: list[str], *args: Any) -> None:
        super().__init__(*args)
        self.journal = journal

    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: str | None = None
    ) -> VipOutcome:
        outcome = await super().add_vip(interface, vip, label)
        self.journal.append(f"add {vip.ip}")
        await asyncio.sleep(0)  # a real add waits for the kernel's acknowledgement
        return outcome


class OrderedAnnouncer(RecordingAnnouncer):
    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    async def announce(self, interface: str, addresses: Iterable[Announced]) -> None:
        listed = list(addresses)
        self.journal.extend(f"announce {IPv4Interface(a).ip}" for a in listed)
        await super().announce(interface, listed)


async def test_each_vip_is_announced_right_after_its_add_and_once_per_round() -> None:
    vips = (VIP, IPv4Interface("192.0.2.101/24"), IPv4Interface("192.0.2.102/24"))
    params = InstanceParams(
        name="VI",
        vrid=7,
        version=3,
        priority=100,
        advert_interval=0.05,
        primary_address=IPv4Address("192.0.2.11"),
        vips=vips,
    )
    journal: list[str] = []
    addresses = OrderedAddresses(journal, {"eth0": MemoryInterface(2, "02:00:00:00:00:01")})
    announcer = OrderedAnnouncer(journal)
    run = InstanceRunner(
        VrrpMachine(params),
        advert=Advert(VrrpVersion.V3, 7, 100, 5, tuple(v.ip for v in vips)),
        sender=Sent(),
        addresses=addresses,
        announcer=announcer,
        held=[HeldAddress(vip, "eth0") for vip in vips],
        garp=GarpSettings(burst=2, delay=0),
        on_action=lambda runner, action: None,
    )
    run.feed(Startup())
    await wait_for(lambda: len(journal) == 3 + 2 * 3, 2)
    first_round = [f"{verb} {vip.ip}" for vip in vips for verb in ("add", "announce")]
    second_round = [f"announce {vip.ip}" for vip in vips]
    assert journal == first_round + second_round
    await run.close()
    assert len(journal) == 9  # no frame sent twice within a round


class SlowAddresses(MemoryAddresses):
    """Adds only when the test says so: a step down can happen while the kernel adds."""

    def __init__(self) -> None:
        super().__init__({"eth0": MemoryInterface(2, "02:00:00:00:00:01")})
        self.adding = asyncio.Event()
        self.proceed = asyncio.Event()

    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: str | None = None
    ) -> VipOutcome:
        self.adding.set()
        await self.proceed.wait()
        return await super().add_vip(interface, vip, label)


async def test_a_step_down_while_the_vip_is_being_added_announces_nothing() -> None:
    addresses = SlowAddresses()
    run, _ = runner(priority=255, addresses=addresses)
    run.feed(Startup())  # the owner: master at once, the add starts
    await asyncio.wait_for(addresses.adding.wait(), 2)
    run.feed(LinkChanged(up=False))  # gone while the kernel adds
    addresses.proceed.set()
    await run.close()
    assert announcements(run) == []
    assert not holds(addresses)


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
