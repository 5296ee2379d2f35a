"""Traffic probes of the VIP from the client: ICMP echo every few ms, and what they measure.

Echo requests leave through a raw ICMP socket opened in the client's namespace, so the client's
own kernel resolves the VIP's MAC and follows gratuitous ARPs as any client would. Replies are
read from an AF_PACKET socket instead, because their Ethernet source says which director holds
the VIP. Every time is the drill process's monotonic clock.
"""

from __future__ import annotations

import secrets
import select
import socket
import struct
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from lvsha.drill.lab import Host
from lvsha.drill.reader import ReaderThread
from lvsha.net.checksum import internet_checksum

ETH_P_IP = 0x0800
_ETHERNET = struct.Struct("!6s6sH")
_ECHO = struct.Struct("!BBHHH")
_ICMP_ECHO_REPLY = 0
_ICMP_ECHO_REQUEST = 8
_SOL_RAW = 255
_ICMP_FILTER = 1  # linux/icmp.h: a set bit drops that ICMP type on this raw socket
_PACKET_OUTGOING = 4
_COOKIE_BYTES = 8


@dataclass(frozen=True, slots=True)
class Probe:
    """One echo request: when it left, and when and from which MAC its reply came back."""

    sequence: int
    sent_at: float
    answered_at: float | None = None
    answered_by: str | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """What the probes saw of one fault.

    `outage` is the longest gap, in seconds, between two answered probes' send times with lost
    probes between them; 0.0 when none was lost. `lost` counts every probe sent in the window
    that had no reply within the reply timeout. `recovered` is False when the window ended
    with probes still going unanswered; the outage then runs to the window's end.
    """

    outage: float
    lost: int
    recovered: bool


def answered_in_time(probe: Probe, reply_timeout: float) -> bool:
    return probe.answered_at is not None and probe.answered_at - probe.sent_at <= reply_timeout


def measure_outage(
    probes: Sequence[Probe], fault_at: float, window_end: float, reply_timeout: float
) -> Outage:
    """Outage and lost probes for probes sent in [fault_at, window_end].

    `probes` is in send order and may start before the fault: the answered probe just before
    the first loss can predate it. Without any answered probe before a loss, the gap starts at
    `fault_at`.
    """
    longest = 0.0
    lost = 0
    last_answered: float | None = None
    run_start: float | None = None  # send time of the last answered probe before a loss run
    for probe in probes:
        if probe.sent_at > window_end:
            break
        if answered_in_time(probe, reply_timeout):
            if run_start is not None:
                longest = max(longest, probe.sent_at - run_start)
                run_start = None
            last_answered = probe.sent_at
        elif probe.sent_at >= fault_at:
            lost += 1
            if run_start is None:
                run_start = fault_at if last_answered is None else last_answered
    if run_start is not None:
        return Outage(max(longest, window_end - run_start), lost, recovered=False)
    return Outage(longest, lost, recovered=True)


def echo_request(identifier: int, sequence: int, cookie: bytes) -> bytes:
    header = _ECHO.pack(_ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    checksum = internet_checksum(header + cookie)
    return header[:2] + checksum.to_bytes(2, "big") + header[4:] + cookie


@dataclass(frozen=True, slots=True)
class EchoReply:
    sequence: int
    source_mac: str


def format_mac(raw: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in raw)


def parse_echo_reply(
    frame: bytes, target: IPv4Address, identifier: int, cookie: bytes
) -> EchoReply | None:
    """The reply in an Ethernet frame, if it answers one of our echo requests to `target`."""
    if len(frame) < _ETHERNET.size + 20:
        return None
    _destination, source_mac, ethertype = _ETHERNET.unpack_from(frame)
    if ethertype != ETH_P_IP:
        return None
    ip_start = _ETHERNET.size
    version_ihl, protocol = frame[ip_start], frame[ip_start + 9]
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or protocol != socket.IPPROTO_ICMP:
        return None
    if frame[ip_start + 12 : ip_start + 16] != target.packed:
        return None
    icmp = frame[ip_start + header_length :]
    if len(icmp) < _ECHO.size + len(cookie):
        return None
    icmp_type, code, _checksum, reply_identifier, sequence = _ECHO.unpack_from(icmp)
    if (icmp_type, code, reply_identifier) != (_ICMP_ECHO_REPLY, 0, identifier):
        return None
    if icmp[_ECHO.size : _ECHO.size + len(cookie)] != cookie:
        return None
    return EchoReply(sequence, format_mac(source_mac))


def _open_sockets(interface: str) -> tuple[socket.socket, socket.socket]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        # Replies are read on the packet socket; this one should queue nothing.
        sender.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", 0xFFFFFFFF))
        receiver = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    except BaseException:
        sender.close()
        raise
    try:
        receiver.bind((interface, ETH_P_IP))
    except BaseException:
        sender.close()
        receiver.close()
        raise
    return sender, receiver


class VipProber(ReaderThread):
    """Echo requests to the VIP from `host` every `interval` s, in a thread, until stopped."""

    what = "VIP prober"

    def __init__(
        self, host: Host, target: IPv4Address, interval: float = 0.01, interface: str = "eth0"
    ) -> None:
        self.target = target
        self.interval = interval
        self._identifier = secrets.randbits(16)
        self._cookie = secrets.token_bytes(_COOKIE_BYTES)
        self._probes: list[Probe] = []
        self._index_by_sequence: dict[int, int] = {}
        self._sender, self._receiver = host.call(lambda: _open_sockets(interface))
        super().__init__("vip-prober", self._sender, self._receiver)
        self.send_errors: Counter[str] = Counter()
        """Probes the kernel refused to send, by error: counted as lost all the same."""

    def probes_since(self, since: float) -> list[Probe]:
        """Probes sent at or after `since`, in send order, as they stand now."""
        self._raise_if_failed()
        with self._lock:
            start = bisect_left(self._probes, since, key=lambda probe: probe.sent_at)
            return self._probes[start:]

    def _run(self) -> None:
        sequence = secrets.randbits(16)
        next_send = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_send:
                self._send(sequence, now)
                sequence = (sequence + 1) & 0xFFFF
                # Keep the cadence; after a stall, resume from now rather than send a burst.
                next_send = max(next_send + self.interval, now)
            readable, _, _ = select.select([self._receiver], [], [], max(0.0, next_send - now))
            if readable:
                self._receive()

    def _send(self, sequence: int, now: float) -> None:
        packet = echo_request(self._identifier, sequence, self._cookie)
        with self._lock:
            self._index_by_sequence[sequence] = len(self._probes)
            self._probes.append(Probe(sequence, now))
        try:
            self._sender.sendto(packet, (str(self.target), 0))
        except OSError as exc:
            # E.g. EHOSTUNREACH once ARP for the VIP failed: a lost probe, which it measures.
            self.send_errors[exc.strerror or str(exc)] += 1

    def _receive(self) -> None:
        frame, address = self._receiver.recvfrom(65535)
        received_at = time.monotonic()
        if address[2] == _PACKET_OUTGOING:
            return
        reply = parse_echo_reply(frame, self.target, self._identifier, self._cookie)
        if reply is None:
            return
        with self._lock:
            index = self._index_by_sequence.get(reply.sequence)
            if index is None or self._probes[index].answered_at is not None:
                return
            self._probes[index] = replace(
                self._probes[index], answered_at=received_at, answered_by=reply.source_mac
            )
