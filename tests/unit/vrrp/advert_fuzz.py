"""A fuzzer for the whole VRRP receive path, shared by test_receive_fuzz.py and
bench/fuzz_adverts.py.

Every configured instance gets the real socket edge (`VrrpSocket`, its reader callback called
as the event loop would call it, over a stand-in raw socket that hands out queued reads the
way the kernel delivers them), the real receive checks and drop log, its machine, and the
sync-group core, dispatched as the engine dispatches them. Every packet reaches every
instance of its family, as on one link. Packets are aimed at the instances (their VRIDs,
versions, VIPs and passwords) with random priorities, intervals and senders, then mutated.
Between packets the instances are started, stopped, faulted and re-prioritised at random, so
adverts arrive in every state, Initialize included. Time is simulated.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, cast

from lvsha.config import load_text
from lvsha.vrrp.events import (
    Action,
    Event,
    LinkChanged,
    PriorityChanged,
    Shutdown,
    Startup,
    TimerFired,
    TrackingFault,
    VrrpState,
)
from lvsha.vrrp.machine import TRANSITIONS, VrrpMachine
from lvsha.vrrp.params import instance_params, receiving_instance, source_address
from lvsha.vrrp.receive import DropLog, advert_event
from lvsha.vrrp.socket import VrrpSocket, VrrpSocketSettings
from lvsha.vrrp.syncgroup import SyncGroup
from lvsha.vrrp.wire import (
    IPPROTO_VRRP,
    VRRP_MULTICAST_IPV4,
    VRRP_MULTICAST_IPV6,
    Advert,
    AuthType,
    IpAddress,
    ReceivedAdvert,
    ReceivingInstance,
    VrrpVersion,
    encode_advert,
)

SINGLE_CONFIGS = {
    "v2": """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    advert_interval: 1
    virtual_ipaddresses: [192.0.2.10/24, 192.0.2.11/24]
    authentication: {type: PASS, password: secret}
""",
    "v3": """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    version: 3
    advert_interval: 20ms
    virtual_ipaddresses: [192.0.2.10/24, 192.0.2.11/24]
""",
    "v3-ipv6": """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    advert_interval: 100ms
    virtual_ipaddresses: ['fe80::10/64', '2001:db8::10/64']
""",
}

MULTI_CONFIG = """\
vrrp_instances:
  VI_V2:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    advert_interval: 1
    virtual_ipaddresses: [192.0.2.10/24]
    authentication: {type: PASS, password: secret}
  VI_EXT:
    interface: eth0
    virtual_router_id: 8
    priority: 150
    version: 3
    advert_interval: 50ms
    virtual_ipaddresses: [192.0.2.20/24, 192.0.2.21/24]
  VI_INT:
    interface: eth0
    virtual_router_id: 9
    priority: 100
    version: 3
    advert_interval: 100ms
    preempt_delay: 1
    virtual_ipaddresses: [192.0.2.30/24]
  VI_OWNER:
    interface: eth0
    virtual_router_id: 10
    priority: 255
    version: 3
    advert_interval: 1
    mcast_src_ip: 192.0.2.40
    virtual_ipaddresses: [192.0.2.40/24]
  VI_V6:
    interface: eth0
    virtual_router_id: 7
    priority: 100
    advert_interval: 200ms
    virtual_ipaddresses: ['fe80::10/64', '2001:db8::10/64']
sync_groups:
  PAIR:
    instances: [VI_EXT, VI_INT]
"""

CONFIGS = {**SINGLE_CONFIGS, "multi": MULTI_CONFIG}

OWN_V4 = IPv4Address("192.0.2.2")
OWN_V6 = IPv6Address("fe80::2")
PEERS_V4 = (IPv4Address("192.0.2.1"), IPv4Address("192.0.2.254"), IPv4Address("192.0.2.40"))
PEERS_V6 = (IPv6Address("fe80::1"), IPv6Address("fe80::ff"))
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IN6_PKTINFO = struct.Struct("=16sI")
_TIME_STEPS = (0.0, 0.0, 0.001, 0.01, 0.05, 0.2, 1.0)


class StandInRawSocket:
    """Hands out queued reads the way the kernel delivers them to a raw VRRP socket: IPv4
    with its IP header, IPv6 as payload plus hop limit and destination as ancillary data;
    neither with the arrival time (the fuzzer's clock is its own)."""

    def __init__(self) -> None:
        self._reads: deque[tuple[bytes, IpAddress, IpAddress, int, bool]] = deque()
        # A real descriptor for the event loop's bookkeeping; nothing is ever written to it.
        self._idle, self._other = socket.socketpair()

    def queue(
        self,
        payload: bytes,
        source: IpAddress,
        destination: IpAddress,
        ttl: int,
        *,
        framed: bool = False,
    ) -> None:
        """`framed`: `payload` is a whole IPv4 packet already (to damage its header)."""
        self._reads.append((payload, source, destination, ttl, framed))

    def recv(self, size: int) -> bytes:
        return self._ipv4(size, self._pop())

    @staticmethod
    def _ipv4(size: int, read: tuple[bytes, IpAddress, IpAddress, int, bool]) -> bytes:
        payload, source, destination, ttl, framed = read
        if framed:
            return payload[:size]
        header = _IPV4_HEADER.pack(
            0x45, 0xC0, 20 + len(payload), 0, 0, ttl, IPPROTO_VRRP, 0,
            source.packed, destination.packed,
        )  # fmt: skip
        return (header + payload)[:size]

    def recvmsg(
        self, size: int, ancillary_size: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[str, int, int, int]]:
        read = self._pop()
        payload, source, destination, ttl, _framed = read
        if source.version == 4:
            return self._ipv4(size, read), [], 0, (str(source), 0, 0, 0)
        ancillary = [
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ttl.to_bytes(4, sys.byteorder)),
            (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(destination.packed, 2)),
        ]
        return payload[:size], ancillary, 0, (f"{source}%eth0", 0, 0, 2)

    def _pop(self) -> tuple[bytes, IpAddress, IpAddress, int, bool]:
        if not self._reads:
            raise BlockingIOError
        return self._reads.popleft()

    def fileno(self) -> int:
        return self._idle.fileno()

    def close(self) -> None:
        self._idle.close()
        self._other.close()


@dataclass
class FuzzInstance:
    name: str
    machine: VrrpMachine
    receiving: ReceivingInstance
    own: IpAddress
    raw: StandInRawSocket
    socket: VrrpSocket
    group: str | None
    vips: tuple[IpAddress, ...]
    password: bytes
    states: set[VrrpState] = field(default_factory=set)


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines = 0
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        if record.exc_info:
            self.tracebacks += 1


@dataclass
class FuzzReport:
    packets: int = 0
    deliveries: int = 0
    """Packets times the instances of their family that heard them."""
    escaped: int = 0
    """Exceptions out of the socket's reader callback: must stay 0."""
    accepted: int = 0
    """AdvertReceived events the machines took."""
    internal_errors: int = 0
    """Exceptions from events the harness fed itself (a bug in the cores, not input)."""
    drops: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    states: dict[str, set[VrrpState]] = field(default_factory=dict)
    reassertions_suppressed: int = 0
    log_lines: int = 0
    tracebacks: int = 0

    @property
    def dropped(self) -> int:
        # An address list that differs is counted with the drops but taken (lvsha.vrrp.wire).
        return sum(n for reason, n in self.drops.items() if reason != "address_list_mismatch")


class AdvertFuzzer:
    """Runs fuzzed packets through every instance of one configuration."""

    def __init__(self, config_text: str, seed: str, *, event_rate: float = 0.02) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.event_rate = event_rate
        self.report = FuzzReport()
        self._pending: deque[tuple[str, Event]] = deque()
        self._dispatching = False
        self._logger = logging.getLogger(f"lvsha.fuzz.{seed}")
        self._logger.propagate = False
        self._logger.setLevel(logging.DEBUG)
        self._handler = _CountingHandler()
        self._logger.handlers[:] = [self._handler]
        config = load_text(config_text)
        self.instances: dict[str, FuzzInstance] = {}
        self._groups = {n: SyncGroup(n, g.instances) for n, g in config.sync_groups.items()}
        self._member_of = {m: n for n, g in config.sync_groups.items() for m in g.instances}
        for name, inst in config.vrrp_instances.items():
            own: IpAddress = source_address(inst) or (OWN_V6 if inst.family == "ipv6" else OWN_V4)
            raw = StandInRawSocket()
            sock = VrrpSocket(cast(socket.socket, raw), VrrpSocketSettings("eth0", own), ifindex=2)
            auth = inst.authentication
            self.instances[name] = FuzzInstance(
                name=name,
                machine=VrrpMachine(instance_params(config, name, own)),
                receiving=receiving_instance(inst),
                own=own,
                raw=raw,
                socket=sock,
                group=self._member_of.get(name),
                vips=tuple(vip.address.ip for vip in inst.virtual_ipaddresses),
                password=auth.password.encode()[:8] if auth else b"",
            )

    # The run

    async def run(self, packets: int) -> FuzzReport:
        """Needs a running loop only for `VrrpSocket.start`; the reader is called directly."""
        for fuzz in self.instances.values():
            drop_log = DropLog(fuzz.name, clock=lambda: self.now, logger=self._logger)
            fuzz.socket.start(self._on_advert_for(fuzz), on_drop=drop_log)
        try:
            for _ in range(packets):
                self._step()
        finally:
            for fuzz in self.instances.values():
                fuzz.socket.close()
                fuzz.raw.close()
        return self._finish()

    def _step(self) -> None:
        rng = self.rng
        self.now += rng.choice(_TIME_STEPS)
        for name, fuzz in self.instances.items():
            deadline = fuzz.machine.next_deadline()
            if deadline is not None and deadline <= self.now:
                self._feed_internal(name, TimerFired())
        if rng.random() < self.event_rate:
            name = rng.choice(list(self.instances))
            event = self._internal_event(self.instances[name])
            if event is not None:
                self._feed_internal(name, event)
        target = rng.choice(list(self.instances.values()))
        payload, source, destination, ttl, framed = self._packet_for(target)
        self.report.packets += 1
        for fuzz in self.instances.values():
            if fuzz.own.version != source.version:
                continue
            self.report.deliveries += 1
            fuzz.raw.queue(payload, source, destination, ttl, framed=framed)
            try:
                # The reader callback, as the event loop calls it when the socket is readable.
                fuzz.socket._read_pending()
            except Exception:
                self.report.escaped += 1
            fuzz.states.add(fuzz.machine.state)

    def _on_advert_for(self, fuzz: FuzzInstance) -> Any:
        own = frozenset({fuzz.own})

        # What the engine's closure does: drop in Initialize, check, then feed.
        def on_advert(received: ReceivedAdvert) -> None:
            event = advert_event(
                received, fuzz.receiving, own, fuzz.socket.drops, state=fuzz.machine.state
            )
            if event is not None:
                self._feed(fuzz.name, event)
                self.report.accepted += 1

        return on_advert

    # Events the engine would feed: timers, start and stop, links, tracking, sync groups

    def _internal_event(self, fuzz: FuzzInstance) -> Event | None:
        rng = self.rng
        state = fuzz.machine.state
        candidates: list[Event] = [
            LinkChanged(up=rng.random() < 0.7),
            TrackingFault(active=rng.random() < 0.3),
            PriorityChanged(rng.choice([1, 50, 100, 120, 150, 254, fuzz.machine.params.priority])),
        ]
        if state is VrrpState.INITIALIZE:
            candidates += [Startup()] * 4
        else:
            candidates.append(Shutdown())
        event = rng.choice(candidates)
        return event if (state, type(event)) in TRANSITIONS else None

    def _feed_internal(self, name: str, event: Event) -> None:
        try:
            self._feed(name, event)
        except Exception:
            self.report.internal_errors += 1
            self._pending.clear()
            self._dispatching = False

    def _feed(self, name: str, event: Event) -> None:
        """The engine's dispatch: one event, then the sync-group orders it caused, in order."""
        self._pending.append((name, event))
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                target, next_event = self._pending.popleft()
                for action in self.instances[target].machine.handle(next_event, self.now):
                    self._count_action(action)
                    group = self._member_of.get(target)
                    if group is not None:
                        orders = self._groups[group].on_action(target, action)
                        self._pending.extend((o.member, o.event) for o in orders)
        finally:
            self._dispatching = False
            self._pending.clear()

    def _count_action(self, action: Action) -> None:
        self.report.actions[type(action).__name__] += 1

    # Packets

    def _packet_for(self, fuzz: FuzzInstance) -> tuple[bytes, IpAddress, IpAddress, int, bool]:
        rng = self.rng
        family = fuzz.own.version
        source: IpAddress
        destination: IpAddress
        if family == 4:
            choices: list[IpAddress] = [*PEERS_V4, fuzz.own, IPv4Address(rng.getrandbits(32))]
            source = rng.choice(choices)
            destination = VRRP_MULTICAST_IPV4 if rng.random() < 0.95 else fuzz.own
        else:
            choices = [*PEERS_V6, fuzz.own, IPv6Address(rng.getrandbits(128))]
            source = rng.choice(choices)
            destination = VRRP_MULTICAST_IPV6 if rng.random() < 0.95 else fuzz.own
        version = fuzz.receiving.version
        if family == 4 and rng.random() < 0.05:
            version = VrrpVersion.V2 if version is VrrpVersion.V3 else VrrpVersion.V3
        v2 = version is VrrpVersion.V2
        vips = list(fuzz.vips) if rng.random() < 0.85 else [*fuzz.vips[:1], source]
        password = rng.choice([fuzz.password, fuzz.password, b"wrong", b""])
        advert = Advert(
            version=version,
            vrid=fuzz.receiving.vrid if rng.random() < 0.9 else rng.randrange(1, 256),
            priority=rng.choice([0, 1, 99, 100, 101, 119, 120, 121, 150, 254, 255]),
            advert_interval=(
                rng.choice([1, 1, 2, rng.randrange(1, 256)])
                if v2
                else rng.choice([fuzz.receiving.advert_interval, 5, 100, rng.randrange(1, 4096)])
            ),
            addresses=tuple(v for v in vips if v.version == family),
            auth_type=AuthType.SIMPLE_PASSWORD if v2 and password else AuthType.NONE,
            auth_data=password if v2 else b"",
        )
        payload = encode_advert(advert, source, destination)
        ttl = 255 if rng.random() < 0.97 else rng.randrange(255)
        roll = rng.random()
        if roll < 0.25:
            mutated = bytearray(payload)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            payload = bytes(mutated)
        elif roll < 0.30:
            payload = payload[: rng.randrange(len(payload))]
        elif roll < 0.32:
            payload = rng.randbytes(rng.randrange(0, 80))
        elif roll < 0.34 and family == 4:
            # A whole IPv4 packet with a damaged header (length, IHL, protocol).
            header = bytearray(
                _IPV4_HEADER.pack(
                    0x45, 0, 20 + len(payload), 0, 0, ttl, IPPROTO_VRRP, 0,
                    source.packed, destination.packed,
                )
            )  # fmt: skip
            header[rng.choice([0, 2, 3, 9])] ^= 1 << rng.randrange(8)
            header[0] = 0x45 if rng.random() < 0.5 else header[0] | 0x40
            return bytes(header) + payload, source, destination, ttl, True
        return payload, source, destination, ttl, False

    def _finish(self) -> FuzzReport:
        report = self.report
        for fuzz in self.instances.values():
            for reason, count in fuzz.socket.drops.snapshot().items():
                if count:
                    report.drops[reason.value] += count
            for ignored, count in fuzz.socket.ignored.items():
                report.drops[f"socket:{ignored.value}"] += count
            report.states[fuzz.name] = fuzz.states
            report.reassertions_suppressed += fuzz.machine.reassertions_suppressed
        report.log_lines = self._handler.lines
        report.tracebacks = self._handler.tracebacks
        return report


def run_fuzz(config_text: str, seed: str, packets: int) -> FuzzReport:
    return asyncio.run(AdvertFuzzer(config_text, seed).run(packets))


def unexplained(report: FuzzReport) -> int:
    """Deliveries neither dropped (counted by reason) nor accepted: must be 0."""
    return report.deliveries - report.dropped - report.accepted
