"""ICMP echo probe over one shared raw socket per address family.

Every ICMP check of the process sends through the same `IcmpPinger`, which owns the raw socket
and matches replies to waiting probes by (target address, sequence) under its own identifier.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
from dataclasses import dataclass, field

from lvsha.checks.result import ProbeResult
from lvsha.net.checksum import internet_checksum

_ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_DESTINATION_UNREACHABLE = {socket.AF_INET: 3, socket.AF_INET6: 1}
_TIME_EXCEEDED = {socket.AF_INET: 11, socket.AF_INET6: 3}

_SOL_RAW = 255
_ICMP_FILTER = 1  # linux/icmp.h; a set bit drops that type
_ICMP6_FILTER = 1  # linux/icmpv6.h; a set bit drops that type
_IPV6_HEADER_BYTES = 40
_NEXT_HEADER_ICMPV6 = 58
_ECHO = struct.Struct("!BBHHH")
_COOKIE_BYTES = 8

_UNREACHABLE_V4 = {
    0: "network",
    1: "host",
    2: "protocol",
    3: "port",
    9: "network prohibited",
    10: "host prohibited",
    13: "prohibited",
}  # RFC 792, RFC 1812 5.2.7.1
_UNREACHABLE_V6 = {0: "no route", 1: "prohibited", 3: "address", 4: "port"}  # RFC 4443 3.1


@dataclass(frozen=True, slots=True)
class IcmpParams:
    address: str
    timeout: float


def open_icmp_socket(family: socket.AddressFamily) -> socket.socket:
    """A non-blocking raw socket that the kernel hands only echo replies and errors."""
    protocol = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    sock = socket.socket(family, socket.SOCK_RAW, protocol)
    try:
        sock.setblocking(False)
        passed = (_ECHO_REPLY[family], _DESTINATION_UNREACHABLE[family], _TIME_EXCEEDED[family])
        if family == socket.AF_INET:
            blocked = 0xFFFFFFFF & ~sum(1 << icmp_type for icmp_type in passed)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked))
        else:
            words = [0xFFFFFFFF] * 8
            for icmp_type in passed:
                words[icmp_type >> 5] &= ~(1 << (icmp_type & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
    except BaseException:
        sock.close()
        raise
    return sock


class IcmpPinger:
    """Echo requests and their replies on one raw socket; construct inside the running loop."""

    def __init__(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._family = sock.family
        # Raw sockets see every process's ICMP: our identifier and cookie pick out our replies.
        self._identifier = secrets.randbits(16)
        self._cookie = secrets.token_bytes(_COOKIE_BYTES)
        self._next_sequence = secrets.randbits(16)
        self._pending: dict[tuple[bytes, int], asyncio.Future[str | None]] = {}
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def open(cls, family: socket.AddressFamily) -> IcmpPinger:
        return cls(open_icmp_socket(family))

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    async def echo(self, address: str) -> str | None:
        """Wait for the echo reply from `address`: None, or why none will come.

        Waits until answered; the caller bounds the wait.
        """
        target = socket.inet_pton(self._family, address.partition("%")[0])
        sequence = self._free_sequence(target)
        answered: asyncio.Future[str | None] = self._loop.create_future()
        self._pending[(target, sequence)] = answered
        try:
            await self._loop.sock_sendto(self._sock, self._echo_request(sequence), (address, 0))
            return await answered
        finally:
            del self._pending[(target, sequence)]

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for answered in self._pending.values():
            answered.cancel()

    def _free_sequence(self, target: bytes) -> int:
        while True:
            sequence = self._next_sequence
            self._next_sequence = (sequence + 1) & 0xFFFF
            if (target, sequence) not in self._pending:
                return sequence

    def _echo_request(self, sequence: int) -> bytes:
        request_type = _ECHO_REQUEST[self._family]
        header = _ECHO.pack(request_type, 0, 0, self._identifier, sequence)
        if self._family == socket.AF_INET6:
            return header + self._cookie  # the kernel fills in the ICMPv6 checksum (RFC 3542 3.1)
        checksum = internet_checksum(header + self._cookie)
        return _ECHO.pack(request_type, 0, checksum, self._identifier, sequence) + self._cookie

    def _on_readable(self) -> None:
        while True:
            try:
                packet, sender = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a pending socket error (e.g. ENOBUFS) carries nothing to match
            if self._family == socket.AF_INET:
                self._on_icmp(packet[(packet[0] & 0x0F) * 4 :], source=packet[12:16])
            else:
                source = socket.inet_pton(socket.AF_INET6, sender[0].partition("%")[0])
                self._on_icmp(packet, source)

    def _on_icmp(self, message: bytes, source: bytes) -> None:
        if len(message) < _ECHO.size:
            return
        icmp_type, code, _, identifier, sequence = _ECHO.unpack_from(message)
        if icmp_type == _ECHO_REPLY[self._family]:
            if identifier == self._identifier and message[_ECHO.size :].startswith(self._cookie):
                self._settle((source, sequence), None)
        elif icmp_type == _DESTINATION_UNREACHABLE[self._family]:
            names = _UNREACHABLE_V4 if self._family == socket.AF_INET else _UNREACHABLE_V6
            self._on_error(message, f"icmp destination unreachable ({names.get(code, code)})")
        elif icmp_type == _TIME_EXCEEDED[self._family]:
            self._on_error(message, "icmp time exceeded")

    def _on_error(self, message: bytes, reason: str) -> None:
        # An ICMP error quotes the start of the datagram that caused it (RFC 792, RFC 4443 2.4).
        quoted = message[_ECHO.size :]
        if self._family == socket.AF_INET:
            if len(quoted) < 20:
                return
            header_bytes = (quoted[0] & 0x0F) * 4
            destination = quoted[16:20]
        else:
            if len(quoted) < _IPV6_HEADER_BYTES or quoted[6] != _NEXT_HEADER_ICMPV6:
                return
            header_bytes = _IPV6_HEADER_BYTES
            destination = quoted[24:40]
        echo = quoted[header_bytes : header_bytes + _ECHO.size]
        if len(echo) < _ECHO.size:
            return
        icmp_type, _, _, identifier, sequence = _ECHO.unpack(echo)
        if icmp_type == _ECHO_REQUEST[self._family] and identifier == self._identifier:
            self._settle((destination, sequence), reason)

    def _settle(self, key: tuple[bytes, int], outcome: str | None) -> None:
        answered = self._pending.get(key)
        if answered is not None and not answered.done():
            answered.set_result(outcome)


@dataclass
class IcmpPingers:
    """The process's pingers, one per address family, each opened on first use."""

    by_family: dict[socket.AddressFamily, IcmpPinger] = field(default_factory=dict)

    def for_address(self, address: str) -> IcmpPinger:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        pinger = self.by_family.get(family)
        if pinger is None:
            pinger = self.by_family[family] = IcmpPinger.open(family)
        return pinger

    def close(self) -> None:
        for pinger in self.by_family.values():
            pinger.close()
        self.by_family.clear()


async def probe_icmp(params: IcmpParams, pingers: IcmpPingers) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = loop.time()

    def verdict(ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(ok=ok, reason=reason, latency=loop.time() - started)

    try:
        pinger = pingers.for_address(params.address)
    except OSError as error:
        return verdict(False, f"icmp socket failed: {error.strerror or error}")
    try:
        async with asyncio.timeout(params.timeout):
            problem = await pinger.echo(params.address)
    except TimeoutError:
        return verdict(False, f"icmp no reply after {float(params.timeout)} s")
    except OSError as error:
        return verdict(False, f"icmp send failed: {error.strerror or error}")
    if problem is not None:
        return verdict(False, problem)
    return verdict(True, "icmp echo reply")
