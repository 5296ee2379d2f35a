"""A VrrpEngine on in-memory ports and fake sockets, on the test's real event loop."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from lvsha.config import LvshaConfig, load_text
from lvsha.daemon.vrrp_process import LinkWatch
from lvsha.messages import Message, VrrpStateChanged, decode, encode
from lvsha.net.addresses import (
    AddressError,
    AssignedAddress,
    MemoryAddresses,
    MemoryInterface,
    VipAttributes,
    VipOutcome,
    VipRequest,
    VipResult,
)
from lvsha.net.announce import RecordingAnnouncer
from lvsha.net.nft import NoAcceptFilter
from lvsha.vrrp.engine import VrrpEngine
from lvsha.vrrp.events import VirtualAddress, VrrpState
from lvsha.vrrp.notify import Notifier, NotifyHooks, Transition
from lvsha.vrrp.script_events import ScriptRefusals
from lvsha.vrrp.socket import AdvertHandler, DropHandler, SocketDropReason, VrrpSocketSettings
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    Advert,
    DropCounter,
    ReceivedAdvert,
    VrrpVersion,
)

INTERVAL = 0.1
"""Seconds between adverts (VRRPv3)."""
OWN = IPv4Address("192.0.2.1")
PEER = IPv4Address("192.0.2.200")


def vip(last: int) -> str:
    return f"192.0.2.{last}/24"


def instance(vrid: int, *vips: str, **settings: Any) -> dict[str, Any]:
    """An IPv4 VRRPv3 instance on eth0 announcing once on becoming master."""
    return {
        "interface": "eth0",
        "virtual_router_id": vrid,
        "version": 3,
        "advert_interval": INTERVAL,
        "virtual_ipaddresses": list(vips),
        "garp": {"burst": 1, "delay": 0},
        **settings,
    }


def config(instances: dict[str, dict[str, Any]], **top: Any) -> LvshaConfig:
    return load_text(json.dumps({"vrrp_instances": instances, **top}))


class FakeSocket:
    """Records what is sent; `hear` hands the engine an advert from a peer."""

    def __init__(self, settings: VrrpSocketSettings) -> None:
        self.settings = settings
        self.drops = DropCounter()
        self.ignored: Counter[SocketDropReason] = Counter()
        self.sent: list[tuple[float, Advert]] = []
        self.closed = False
        self.heard = 0
        """Adverts handed to the engine through `hear`."""
        self._on_advert: AdvertHandler | None = None

    def start(self, on_advert: AdvertHandler, on_drop: DropHandler | None = None) -> None:
        self._on_advert = on_advert

    def send(self, advert: Advert) -> None:
        self.sent.append((asyncio.get_running_loop().time(), advert))

    def prepare(self, advert: Advert) -> None:
        pass

    def read_pending(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def hear(
        self, vrid: int, priority: int, addresses: Iterable[str], source: IPv4Address = PEER
    ) -> None:
        assert self._on_advert is not None and not self.closed
        advert = Advert(
            VrrpVersion.V3,
            vrid,
            priority,
            round(INTERVAL * 100),
            tuple(IPv4Interface(a).ip for a in addresses),
        )
        self.heard += 1
        self._on_advert(ReceivedAdvert(source, VRRP_MULTICAST_IPV4, advert, 0))


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__()
        self.transitions: list[tuple[NotifyHooks, Transition]] = []

    def notify(self, hooks: NotifyHooks, transition: Transition) -> None:
        self.transitions.append((hooks, transition))


class JournalAddresses(MemoryAddresses):
    """Memory addresses that journal every change and can refuse some."""

    def __init__(self) -> None:
        super().__init__(
            {
                "eth0": MemoryInterface(
                    2, "02:00:00:00:00:01", [AssignedAddress(IPv4Interface("192.0.2.1/24"))]
                ),
                "eth1": MemoryInterface(
                    3, "02:00:00:00:00:02", [AssignedAddress(IPv4Interface("198.51.100.1/24"))]
                ),
            }
        )
        self.journal: list[tuple[str, str, str]] = []
        self.refuse_add: set[str] = set()
        self.refuse_remove: set[str] = set()
        self.after_change: Callable[[], None] = lambda: None

    def on(self, interface: str) -> set[str]:
        return {str(a.address) for a in self.interfaces[interface].addresses}

    def add_vips(self, vips: Sequence[VipRequest]) -> list[VipResult]:
        results: list[VipResult] = []
        for interface, vip, label in vips:
            if str(vip) in self.refuse_add:
                results.append(AddressError(1, f"adding {vip} to {interface}: refused"))
                continue
            results += super().add_vips([(interface, vip, label)])
            self.journal.append(("add", interface, str(vip)))
        self.after_change()
        return results

    def remove_vips(self, vips: Sequence[tuple[str, VirtualAddress]]) -> list[VipResult | None]:
        results: list[VipResult | None] = []
        for interface, vip in vips:
            if str(vip) in self.refuse_remove:
                results.append(AddressError(1, f"removing {vip} from {interface}: refused"))
                continue
            results += super().remove_vips([(interface, vip)])
            self.journal.append(("remove", interface, str(vip)))
        self.after_change()
        return results

    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: VipAttributes | str | None = None
    ) -> VipOutcome:
        await asyncio.sleep(0)  # the kernel answers later
        return await super().add_vip(interface, vip, label)

    async def remove_vip(self, interface: str, vip: VirtualAddress) -> VipOutcome:
        await asyncio.sleep(0)
        return await super().remove_vip(interface, vip)


class Harness:
    """One director's VRRP engine; its peer is the test, through `FakeSocket.hear`."""

    def __init__(self) -> None:
        self.addresses = JournalAddresses()
        self.announcer = RecordingAnnouncer()
        self.notifier = RecordingNotifier()
        self.reports: list[Message] = []
        self.sockets: list[FakeSocket] = []
        self.refuse_socket: set[str] = set()
        self.links = {"eth0": True, "eth1": True}
        self.engine: VrrpEngine | None = None

    def _open(self, settings: VrrpSocketSettings) -> FakeSocket:
        if settings.interface in self.refuse_socket:
            raise PermissionError(1, "Operation not permitted")
        sock = FakeSocket(settings)
        self.sockets.append(sock)
        return sock

    async def start(
        self,
        cfg: LvshaConfig,
        *,
        handed_over: Sequence[str] = (),
        on_status_change: Callable[[], None] | None = None,
        script_refusals: ScriptRefusals | None = None,
        no_accept: NoAcceptFilter | None = None,
    ) -> VrrpEngine:
        self.engine = VrrpEngine(
            cfg,
            addresses=self.addresses,
            announcer=self.announcer,
            notifier=self.notifier,
            report=self.reports.append,
            open_socket=self._open,
            accept_local=lambda interface: None,
            handed_over=handed_over,
            on_status_change=on_status_change,
            script_refusals=script_refusals,
            no_accept=no_accept,
        )
        await self.engine.start(self.links)
        return self.engine

    def socket(self, name: str) -> FakeSocket:
        assert self.engine is not None
        sock = self.engine.instances[name].socket
        assert isinstance(sock, FakeSocket)
        return sock

    def state(self, name: str) -> VrrpState:
        assert self.engine is not None
        return self.engine.instances[name].runner.state

    def state_changes(self) -> list[tuple[str, str, str]]:
        return [(m.instance, m.old, m.new) for m in self.reports if isinstance(m, VrrpStateChanged)]

    def announced(self) -> list[str]:
        return [str(a) for n in self.announcer.announcements for a in n.addresses]

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()


async def wait_for(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


class StaticLinks(LinkWatch):
    """Every interface up; nothing to watch."""

    async def watch(self, interfaces: set[str]) -> Mapping[str, bool]:
        return dict.fromkeys(interfaces, True)


class Channel:
    """The parent's side of a VRRP process's channel: the messages to hand it, and what it
    sent back, each through the codec as on the wire."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages
        self.answers: list[Message] = []

    async def messages(self) -> AsyncIterator[Message]:
        for message in self._messages:
            yield message

    def send(self, message: Message) -> None:
        self.answers.append(decode(encode(message)))
