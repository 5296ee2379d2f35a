"""The VRRP socket edge in network namespaces: lvsha to lvsha, and lvsha with keepalived 2.2.7.

Hosts sit on one lab bridge. Each socket is opened inside its host's namespace (`host.call`)
and then read from this test's event loop. The keepalived tests run Debian's keepalived as
the peer: it must decode what lvsha sends (its state proves it) and lvsha must decode what
keepalived sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from lvsha.drill.lab import Host, Lab
from lvsha.vrrp.socket import (
    IPTOS_PREC_INTERNETCONTROL,
    SocketDropReason,
    VrrpSocket,
    VrrpSocketSettings,
)
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    VRRP_MULTICAST_IPV6,
    Advert,
    AuthType,
    DropReason,
    IpAddress,
    ReceivedAdvert,
    ReceivingInstance,
    VrrpVersion,
    check_advert_for_instance,
    encode_advert,
)
from tests.netns.keepalived import Keepalived, KeepalivedInstance

pytestmark = pytest.mark.netns

HOST_NUMBERS = {"a": 1, "b": 2, "c": 3, "k": 11, "l": 12}
"""Lab hosts: a, b and c talk lvsha to lvsha; k runs keepalived and l lvsha in interop tests."""
V4 = {name: IPv4Address(f"192.0.2.{n}") for name, n in HOST_NUMBERS.items()}
V6_GLOBAL = {name: IPv6Address(f"2001:db8::{n:x}") for name, n in HOST_NUMBERS.items()}
LINK_LOCAL = {name: IPv6Address(f"fe80::{n:x}") for name, n in HOST_NUMBERS.items()}
VIPS_V4 = (IPv4Address("192.0.2.100"), IPv4Address("192.0.2.101"))
VIPS_V6 = (IPv6Address("2001:db8::100"),)
RECEIVE_TIMEOUT = 3.0


def add_host(lab: Lab, name: str) -> Host:
    """A lab host with its HOST_NUMBERS addresses and an already usable fixed link-local one."""
    host = lab.add_host(name, f"{V4[name]}/24", f"{V6_GLOBAL[name]}/64")
    # The kernel's own link-local is tentative for a second (DAD); VRRPv3 over IPv6 needs one now.
    host.ip("-6", "address", "flush", "dev", "eth0", "scope", "link")
    host.ip("-6", "address", "add", f"{LINK_LOCAL[name]}/64", "dev", "eth0", "nodad")
    return host


def source_of(name: str, family: int) -> IpAddress:
    return V4[name] if family == 4 else LINK_LOCAL[name]


def ifindex(host: Host) -> int:
    return host.call(lambda: socket.if_nametoindex("eth0"))


class Inbox:
    """The callback a socket delivers to, as a queue the test awaits."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ReceivedAdvert] = asyncio.Queue()

    def __call__(self, received: ReceivedAdvert) -> None:
        self.queue.put_nowait(received)

    async def next(self, timeout: float = RECEIVE_TIMEOUT) -> ReceivedAdvert:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def empty(self) -> bool:
        return self.queue.empty()


OpenSocket = Callable[[Host, VrrpSocketSettings], tuple[VrrpSocket, Inbox]]


@pytest.fixture
async def open_socket() -> AsyncIterator[OpenSocket]:
    """Open a started VrrpSocket inside a host's namespace; all are closed at teardown."""
    opened: list[VrrpSocket] = []

    def open_in(host: Host, settings: VrrpSocketSettings) -> tuple[VrrpSocket, Inbox]:
        vrrp_socket = host.call(lambda: VrrpSocket.open(settings))
        opened.append(vrrp_socket)
        inbox = Inbox()
        vrrp_socket.start(inbox)
        return vrrp_socket, inbox

    yield open_in
    for vrrp_socket in opened:
        vrrp_socket.close()


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Await `predicate` on the event loop (sockets keep reading meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


class PlainRawSender:
    """A bare raw socket that sends encoded adverts with any TTL: what VrrpSocket never does."""

    def __init__(self, host: Host, source: IpAddress, ttl: int, loop: bool = False) -> None:
        self.source = source
        self.ifindex = ifindex(host)
        self.sock = host.call(lambda: self._open(source, ttl, loop))

    def _open(self, source: IpAddress, ttl: int, loop: bool) -> socket.socket:
        if isinstance(source, IPv4Address):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
            sock.bind((str(source), 0))
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
            sock.bind((str(source), 0, 0, self.ifindex))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        return sock

    def send(self, advert: Advert, destination: IpAddress) -> None:
        payload = encode_advert(advert, self.source, destination)
        if isinstance(destination, IPv4Address):
            self.sock.sendto(payload, (str(destination), 0))
        else:
            self.sock.sendto(payload, (str(destination), 0, 0, self.ifindex))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_senders() -> Iterator[list[PlainRawSender]]:
    senders: list[PlainRawSender] = []
    yield senders
    for sender in senders:
        sender.close()


def group(family: int) -> IpAddress:
    return VRRP_MULTICAST_IPV4 if family == 4 else VRRP_MULTICAST_IPV6


def advert_for(version: VrrpVersion, family: int, **changes: Any) -> Advert:
    interval = 1 if version is VrrpVersion.V2 else 100
    advert = Advert(version, 42, 150, interval, VIPS_V4 if family == 4 else VIPS_V6)
    return replace(advert, **changes)


# lvsha to lvsha


@dataclass(frozen=True)
class Case:
    version: VrrpVersion
    family: int
    unicast: bool
    password: bytes = b""

    def __str__(self) -> str:
        mode = "unicast" if self.unicast else "multicast"
        auth = "-pass" if self.password else ""
        return f"v{self.version.value}-ipv{self.family}-{mode}{auth}"


CASES = [
    Case(VrrpVersion.V2, 4, unicast=False),
    Case(VrrpVersion.V2, 4, unicast=False, password=b"s3cret"),
    Case(VrrpVersion.V2, 4, unicast=True, password=b"8charpwd"),
    Case(VrrpVersion.V3, 4, unicast=False),
    Case(VrrpVersion.V3, 4, unicast=True),
    Case(VrrpVersion.V3, 6, unicast=False),
    Case(VrrpVersion.V3, 6, unicast=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_what_one_socket_sends_the_other_receives(
    lab: Lab, open_socket: OpenSocket, case: Case
) -> None:
    a, b = add_host(lab, "a"), add_host(lab, "b")
    a_source, b_source = source_of("a", case.family), source_of("b", case.family)
    a_socket, a_inbox = open_socket(
        a, VrrpSocketSettings("eth0", a_source, (b_source,) if case.unicast else ())
    )
    b_socket, b_inbox = open_socket(
        b, VrrpSocketSettings("eth0", b_source, (a_source,) if case.unicast else ())
    )
    auth = (AuthType.SIMPLE_PASSWORD, case.password) if case.password else (AuthType.NONE, b"")
    sent = advert_for(case.version, case.family, auth_type=auth[0], auth_data=auth[1])

    sent_at = time.monotonic()
    a_socket.send(sent)
    received = await b_inbox.next()

    # The kernel's arrival time, on the machines' clock: after the send, before the read.
    assert received.received_at is not None
    assert sent_at <= received.received_at <= time.monotonic()
    assert received.advert == sent
    assert received.source == a_source
    assert received.destination == (b_source if case.unicast else group(case.family))
    assert received.checksum == int.from_bytes(
        encode_advert(sent, a_source, received.destination)[6:8], "big"
    )
    # The other way too; a's own advert never came back to it (multicast loop is off).
    answer = replace(sent, priority=100)
    b_socket.send(answer)
    assert (await a_inbox.next()).advert == answer
    assert a_inbox.empty() and b_inbox.empty()
    assert a_socket.drops.total == b_socket.drops.total == 0
    assert sum(a_socket.ignored.values()) == sum(b_socket.ignored.values()) == 0


@pytest.mark.parametrize("family", [4, 6])
async def test_source_is_pinned_to_the_configured_address(
    lab: Lab, open_socket: OpenSocket, family: int
) -> None:
    a, b = add_host(lab, "a"), add_host(lab, "b")
    # Host a gets a second address: each socket must send from its own, not the kernel's pick.
    second = IPv4Address("192.0.2.51") if family == 4 else IPv6Address("fe80::a2")
    a.ip("address", "add", f"{second}/{24 if family == 4 else 64}", "dev", "eth0", "nodad")
    _, b_inbox = open_socket(b, VrrpSocketSettings("eth0", source_of("b", family)))
    for source, priority in ((source_of("a", family), 10), (second, 20)):
        sender, _ = open_socket(a, VrrpSocketSettings("eth0", source))
        sender.send(advert_for(VrrpVersion.V3, family, priority=priority))
        received = await b_inbox.next()
        assert (received.source, received.advert.priority) == (source, priority)


@pytest.mark.parametrize("family", [4, 6])
async def test_ttl_below_255_is_dropped_and_counted(
    lab: Lab, open_socket: OpenSocket, raw_senders: list[PlainRawSender], family: int
) -> None:
    a, b = add_host(lab, "a"), add_host(lab, "b")
    b_socket, b_inbox = open_socket(b, VrrpSocketSettings("eth0", source_of("b", family)))
    advert = advert_for(VrrpVersion.V3, family)
    for ttl in (64, 255):
        raw_senders.append(PlainRawSender(a, source_of("a", family), ttl))
    hop_64, hop_255 = raw_senders

    hop_64.send(advert, group(family))
    await eventually(
        lambda: b_socket.drops[DropReason.TTL_NOT_255] == 1, RECEIVE_TIMEOUT, "TTL 64 drop"
    )
    # The same bytes with TTL 255 pass, so the TTL alone made the difference.
    hop_255.send(advert, group(family))
    assert (await b_inbox.next()).advert == advert
    assert b_inbox.empty()
    assert b_socket.drops.total == 1


async def test_own_source_and_strangers_are_ignored(
    lab: Lab, open_socket: OpenSocket, raw_senders: list[PlainRawSender]
) -> None:
    a, b, c = add_host(lab, "a"), add_host(lab, "b"), add_host(lab, "c")
    advert = advert_for(VrrpVersion.V3, 4)
    b_socket, b_inbox = open_socket(b, VrrpSocketSettings("eth0", V4["b"]))
    _, a_inbox = open_socket(a, VrrpSocketSettings("eth0", V4["a"]))
    # Something on b sends with b's own address, looped back to b: b must not listen to itself.
    raw_senders.append(PlainRawSender(b, V4["b"], 255, loop=True))
    raw_senders[0].send(advert, VRRP_MULTICAST_IPV4)
    assert (await a_inbox.next()).source == V4["b"]
    await eventually(
        lambda: b_socket.ignored[SocketDropReason.OWN_ADVERT] == 1, RECEIVE_TIMEOUT, "own"
    )

    # A unicast socket hears only its peers: c is not one of b's.
    unicast_b, unicast_b_inbox = open_socket(b, VrrpSocketSettings("eth0", V4["b"], (V4["a"],)))
    c_socket, _ = open_socket(c, VrrpSocketSettings("eth0", V4["c"], (V4["b"],)))
    a_unicast, _ = open_socket(a, VrrpSocketSettings("eth0", V4["a"], (V4["b"],)))
    c_socket.send(advert)
    a_unicast.send(advert)
    assert (await unicast_b_inbox.next()).source == V4["a"]
    await eventually(
        lambda: unicast_b.ignored[SocketDropReason.NOT_A_UNICAST_PEER] == 1,
        RECEIVE_TIMEOUT,
        "stranger ignored",
    )
    # The multicast socket on b saw both unicast packets too and set them aside.
    await eventually(
        lambda: b_socket.ignored[SocketDropReason.UNICAST_ON_MULTICAST_SOCKET] == 2,
        RECEIVE_TIMEOUT,
        "unicast on the multicast socket",
    )
    assert b_inbox.empty() and unicast_b_inbox.empty()


async def test_socket_options_match_keepalived(lab: Lab, open_socket: OpenSocket) -> None:
    a = add_host(lab, "a")
    v4, _ = open_socket(a, VrrpSocketSettings("eth0", V4["a"]))
    v6, _ = open_socket(a, VrrpSocketSettings("eth0", LINK_LOCAL["a"]))
    with socket.socket(fileno=socket.dup(v4.fileno())) as sock:
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == IPTOS_PREC_INTERNETCONTROL
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 255
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 255
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
    with socket.socket(fileno=socket.dup(v6.fileno())) as sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 0xC0
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS) == 255
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 255
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP) == 0


async def test_close_stops_reading(lab: Lab, open_socket: OpenSocket) -> None:
    a = add_host(lab, "a")
    vrrp_socket, _ = open_socket(a, VrrpSocketSettings("eth0", V4["a"]))
    descriptor = vrrp_socket.fileno()
    vrrp_socket.close()
    assert vrrp_socket.fileno() == -1
    assert not asyncio.get_running_loop().remove_reader(descriptor)
    vrrp_socket.close()


# Interop with keepalived 2.2.7

needs_keepalived = pytest.mark.skipif(
    shutil.which("keepalived") is None, reason="needs keepalived (apt-get install keepalived)"
)
STARTUP_TIMEOUT = 10.0
MARGIN = 1.0
"""Slack for scheduling on a busy machine when a transition must come within a bound."""


@dataclass(frozen=True)
class Peering:
    """A keepalived instance and the lvsha adverts that match it, one VRRP version and family."""

    version: VrrpVersion
    family: int
    interval: float
    password: str | None = None
    unicast: bool = False

    def __str__(self) -> str:
        extra = ("-pass" if self.password else "") + ("-unicast" if self.unicast else "")
        return f"v{self.version.value}-ipv{self.family}{extra}"

    def keepalived(self, **changes: Any) -> KeepalivedInstance:
        if self.family == 4:
            vips = tuple(f"{vip}/24" for vip in VIPS_V4)
        else:
            vips = tuple(f"{vip}/64" for vip in VIPS_V6)
        instance = KeepalivedInstance(
            vrid=42,
            priority=100,
            virtual_addresses=vips,
            advert_interval=self.interval,
            version=2 if self.version is VrrpVersion.V2 else 3,
            auth_pass=self.password,
            unicast_source=str(source_of("k", self.family)) if self.unicast else None,
            unicast_peers=(str(source_of("l", self.family)),) if self.unicast else (),
        )
        return replace(instance, **changes)

    def advert(self, priority: int, **changes: Any) -> Advert:
        wire_interval = round(self.interval * (1 if self.version is VrrpVersion.V2 else 100))
        advert = Advert(
            self.version, 42, priority, wire_interval, VIPS_V4 if self.family == 4 else VIPS_V6
        )
        if self.password:
            password = self.password.encode()
            advert = replace(advert, auth_type=AuthType.SIMPLE_PASSWORD, auth_data=password)
        return replace(advert, **changes)

    def receiving_instance(self) -> ReceivingInstance:
        """lvsha's view of the same virtual router, for `check_advert_for_instance`."""
        advert = self.advert(100)
        return ReceivingInstance(
            advert.vrid,
            advert.version,
            advert.advert_interval,
            frozenset(advert.addresses),
            auth_type=advert.auth_type,
            auth_password=advert.auth_data,
        )

    def lvsha_settings(self) -> VrrpSocketSettings:
        peers = (source_of("k", self.family),) if self.unicast else ()
        return VrrpSocketSettings("eth0", source_of("l", self.family), peers)


PEERINGS = [
    Peering(VrrpVersion.V2, 4, 1.0),
    Peering(VrrpVersion.V2, 4, 1.0, password="s3cret"),
    Peering(VrrpVersion.V3, 4, 0.25),
    Peering(VrrpVersion.V3, 6, 0.25),
]

RunKeepalived = Callable[[Host, KeepalivedInstance], Keepalived]


@pytest.fixture
def run_keepalived() -> Iterator[RunKeepalived]:
    """Start keepalived in a lab host; every one started is stopped at teardown."""
    started: list[Keepalived] = []

    def run(host: Host, instance: KeepalivedInstance) -> Keepalived:
        keepalived = Keepalived(host, instance)
        started.append(keepalived)
        keepalived.start()
        return keepalived

    yield run
    for keepalived in started:
        keepalived.stop()


class Advertiser:
    """Sends one advert every interval from the test's event loop, as a master would."""

    def __init__(self, send: Callable[[Advert], None], advert: Advert, every: float) -> None:
        self.send, self.advert, self.every = send, advert, every
        self.sent_at: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.sent_at.append(time.monotonic())
            self.send(self.advert)
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> Advertiser:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def holds(condition: Callable[[], bool], duration: float, what: str) -> None:
    """Fail as soon as `condition` stops holding during `duration` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert condition(), what
        await asyncio.sleep(0.02)


async def entered(keepalived: Keepalived, state: str, since: float, timeout: float) -> float:
    """When keepalived entered `state` at or after `since`; fails after `timeout` s."""
    await eventually(
        lambda: keepalived.entered(state, since) is not None,
        timeout,
        f"keepalived entering {state}; its log:\n{keepalived.log_text()}",
    )
    entry = keepalived.entered(state, since)
    assert entry is not None
    return entry.at


def lab_pair(lab: Lab) -> tuple[Host, Host]:
    """Host k runs keepalived, host l runs the lvsha socket."""
    return add_host(lab, "k"), add_host(lab, "l")


@pytest.mark.interop
@needs_keepalived
@pytest.mark.parametrize("peering", PEERINGS, ids=str)
async def test_lvsha_decodes_keepalived_adverts(
    lab: Lab, open_socket: OpenSocket, run_keepalived: RunKeepalived, peering: Peering
) -> None:
    k, l_host = lab_pair(lab)
    instance = peering.keepalived(state="MASTER", priority=150)
    _, inbox = open_socket(l_host, peering.lvsha_settings())
    run_keepalived(k, instance)

    received = await inbox.next(STARTUP_TIMEOUT + instance.master_down_interval)

    assert received.advert == peering.advert(150)
    assert received.source == source_of("k", peering.family)
    assert received.destination == group(peering.family)
    check_advert_for_instance(received, peering.receiving_instance())  # raises if refused
    # Every advert until it stops is the same; keepalived's interval is what it says.
    second = await inbox.next(instance.advert_interval + MARGIN)
    assert second.advert == received.advert


@pytest.mark.interop
@needs_keepalived
@pytest.mark.parametrize("peering", PEERINGS, ids=str)
async def test_keepalived_follows_lvsha_adverts(
    lab: Lab, open_socket: OpenSocket, run_keepalived: RunKeepalived, peering: Peering
) -> None:
    k, l_host = lab_pair(lab)
    instance = peering.keepalived(state="BACKUP", priority=100)
    master_down = instance.master_down_interval
    lvsha, _ = open_socket(l_host, peering.lvsha_settings())

    async with Advertiser(lvsha.send, peering.advert(200), instance.advert_interval) as ours:
        keepalived = run_keepalived(k, instance)
        await entered(keepalived, "BACKUP", 0.0, STARTUP_TIMEOUT)
        await holds(
            lambda: keepalived.entered("MASTER") is None,
            3 * master_down,
            f"keepalived stays BACKUP under our priority 200; log:\n{keepalived.log_text()}",
        )
    last_sent = ours.sent_at[-1]

    # Silence: it takes over once its master-down timer, restarted by our last advert, runs out.
    became_master = await entered(keepalived, "MASTER", last_sent, master_down + MARGIN)
    assert became_master - last_sent >= master_down - 0.25

    # A higher priority master reappears: keepalived steps back to BACKUP at once.
    async with Advertiser(lvsha.send, peering.advert(200), instance.advert_interval) as ours:
        back = await entered(keepalived, "BACKUP", became_master, instance.advert_interval + MARGIN)
        assert back - ours.sent_at[0] < MARGIN

    # Priority 0 (we resign): it takes over after its skew time, not a full master-down interval.
    resigned = time.monotonic()  # before sending: keepalived's answer can be read before we resume
    lvsha.send(peering.advert(0))
    bound = instance.skew_time + min(0.5, (master_down - instance.advert_interval) / 2)
    took_over = await entered(keepalived, "MASTER", resigned, master_down + MARGIN)
    assert took_over - resigned <= bound, keepalived.log_text()
    assert keepalived.find_line(r"Backup received priority 0 advertisement", resigned), (
        keepalived.log_text()
    )


@dataclass(frozen=True)
class Mismatch:
    """Adverts keepalived must refuse, and the log line that shows it read and refused them."""

    name: str
    peering: Peering
    advert_changes: dict[str, Any]
    keepalived_says: str
    ttl: int = 255

    def __str__(self) -> str:
        return self.name


V2_PASS = Peering(VrrpVersion.V2, 4, 1.0, password="s3cret")
V3_V4 = Peering(VrrpVersion.V3, 4, 0.25)
V3_V6 = Peering(VrrpVersion.V3, 6, 0.25)
MISMATCHES = [
    Mismatch("v2-wrong-password", V2_PASS, {"auth_data": b"wrongpw"}, r"invalid passwd"),
    Mismatch(
        "v2-no-auth",
        V2_PASS,
        {"auth_type": AuthType.NONE, "auth_data": b""},
        r"received a 0 auth, expecting 1",
    ),
    Mismatch(
        "v2-interval",
        Peering(VrrpVersion.V2, 4, 1.0),
        {"advert_interval": 2},
        r"advertisement interval mismatch",
    ),
    Mismatch("v3-wrong-vrid", V3_V4, {"vrid": 43}, r"Unknown VRID\(43\)"),
    Mismatch(
        "v3-v2-advert",
        V3_V4,
        {"version": VrrpVersion.V2, "advert_interval": 1},
        r"wrong version\. Received 2 and expect 3",
    ),
    Mismatch(
        "v3-wrong-addresses",
        V3_V4,
        {"addresses": (IPv4Address("192.0.2.200"), IPv4Address("192.0.2.201"))},
        r"not present in MASTER advert: 192\.0\.2\.100",
    ),
    Mismatch("v3-ipv4-ttl-64", V3_V4, {}, r"invalid TTL/HL\. Received 64", ttl=64),
    Mismatch("v3-ipv6-hop-limit-64", V3_V6, {}, r"invalid TTL/HL\. Received 64", ttl=64),
]


@pytest.mark.interop
@needs_keepalived
@pytest.mark.parametrize("mismatch", MISMATCHES, ids=str)
async def test_keepalived_ignores_mismatched_adverts(
    lab: Lab,
    open_socket: OpenSocket,
    raw_senders: list[PlainRawSender],
    run_keepalived: RunKeepalived,
    mismatch: Mismatch,
) -> None:
    k, l_host = lab_pair(lab)
    peering = mismatch.peering
    instance = peering.keepalived(state="BACKUP", priority=100)
    advert = peering.advert(200, **mismatch.advert_changes)
    if mismatch.ttl == 255:
        lvsha, _ = open_socket(l_host, peering.lvsha_settings())
        send = lvsha.send
    else:
        sender = PlainRawSender(l_host, source_of("l", peering.family), mismatch.ttl)
        raw_senders.append(sender)

        def send(advert: Advert) -> None:
            sender.send(advert, group(peering.family))

    async with Advertiser(send, advert, instance.advert_interval):
        keepalived = run_keepalived(k, instance)
        started = await entered(keepalived, "BACKUP", 0.0, STARTUP_TIMEOUT)
        # Our priority 200 would hold it in BACKUP (see above); refused, it takes over on time.
        await entered(keepalived, "MASTER", started, instance.master_down_interval + MARGIN)
        await eventually(
            lambda: keepalived.find_line(mismatch.keepalived_says) is not None,
            instance.advert_interval + MARGIN,
            f"keepalived logging {mismatch.keepalived_says!r}; its log:\n{keepalived.log_text()}",
        )


@pytest.mark.interop
@needs_keepalived
async def test_unicast_with_keepalived(
    lab: Lab, open_socket: OpenSocket, run_keepalived: RunKeepalived
) -> None:
    peering = Peering(VrrpVersion.V3, 4, 0.25, unicast=True)
    k, l_host = lab_pair(lab)
    instance = peering.keepalived(state="BACKUP", priority=100)
    lvsha, inbox = open_socket(l_host, peering.lvsha_settings())

    async with Advertiser(lvsha.send, peering.advert(200), instance.advert_interval) as ours:
        keepalived = run_keepalived(k, instance)
        await entered(keepalived, "BACKUP", 0.0, STARTUP_TIMEOUT)
        await holds(
            lambda: keepalived.entered("MASTER") is None,
            3 * instance.master_down_interval,
            f"keepalived stays BACKUP under unicast priority 200; log:\n{keepalived.log_text()}",
        )
    await entered(keepalived, "MASTER", ours.sent_at[-1], instance.master_down_interval + MARGIN)
    received = await inbox.next()
    assert received.advert == peering.advert(100)
    assert (received.source, received.destination) == (V4["k"], V4["l"])
