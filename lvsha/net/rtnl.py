"""Adding and removing addresses with rtnetlink, many per exchange, without pyroute2.

The takeover path must put every VIP on in well under a millisecond. pyroute2 costs more than
the kernel's work per request, and asking the kernel whether an address is there (a dump)
before adding it doubles that. Here each request is encoded with struct once, all of one
batch go out in one sendmsg with their own sequence numbers and NLM_F_ACK, and the kernel has
answered them all before sendmsg returns (rtnetlink handles a request in the sender's
context). An add carries NLM_F_EXCL: EEXIST then says the address was there already, which
is what the dump used to find out.

`AddressRequest` and the codec are pure; `RtnlSocket` is the thin socket around them, used
synchronously: a batch blocks for as long as the kernel takes, as keepalived's does.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from lvsha.net.nlmsg import (
    NETLINK_CAP_ACK,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSGHDR,
    SOL_NETLINK,
    ReplyFormatError,
    acknowledgements,
    attribute,
)

# include/uapi/linux/rtnetlink.h and if_addr.h
RTM_NEWADDR = 20
RTM_DELADDR = 21
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_BROADCAST = 4
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
_NETLINK_ROUTE = 0

_IFADDRMSG = struct.Struct("=BBBBI")
_U32 = struct.Struct("=I")
ADD_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
DELETE_FLAGS = NLM_F_REQUEST | NLM_F_ACK
_SEQUENCE_MASK = 0xFFFF_FFFF

BATCH = 64
"""Requests per sendmsg: their acknowledgements must fit the socket's receive buffer."""
REPLY_TIMEOUT = 5.0
"""Seconds to wait for acknowledgements; the kernel sends them before sendmsg returns, so
waiting at all means it never will."""


@dataclass(frozen=True, slots=True)
class AddressRequest:
    """Add (or delete) `address` on the interface with index `index`."""

    add: bool
    index: int
    address: IPv4Interface | IPv6Interface
    label: str | None = None
    """IPv4 only: the address label (`eth0:vip`); Linux has no IPv6 labels."""
    broadcast: IPv4Address | None = None
    """IPv4 only: IFA_BROADCAST."""
    scope: int = 0
    """IPv4 only: the address scope (RT_SCOPE_*; 0 is global); the kernel derives an IPv6
    address's scope from the address."""


def encode(request: AddressRequest, sequence: int) -> bytes:
    """One RTM_NEWADDR / RTM_DELADDR message, as `ip addr add|del` sends it.

    IPv4 carries the address as both IFA_LOCAL and IFA_ADDRESS (no peer); an IPv6 add skips
    duplicate address detection (IFA_F_NODAD) so the VIP is usable at once. All but the
    sequence number is built once per request and kept: a takeover sends what was built when
    the VIP was last added or removed.
    """
    kind, flags, body = _body(request)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, sequence, 0) + body


@functools.lru_cache(maxsize=4096)
def _body(request: AddressRequest) -> tuple[int, int, bytes]:
    address = request.address
    raw = address.ip.packed
    if address.version == 4:
        family = socket.AF_INET
        flags = 0
        body = attribute(IFA_LOCAL, raw) + attribute(IFA_ADDRESS, raw)
        if request.label is not None and request.add:
            body += attribute(IFA_LABEL, request.label.encode() + b"\0")
        if request.broadcast is not None and request.add:
            body += attribute(IFA_BROADCAST, request.broadcast.packed)
    else:
        family = socket.AF_INET6
        flags = IFA_F_NODAD if request.add else 0
        body = attribute(IFA_ADDRESS, raw)
        if request.add:
            body += attribute(IFA_FLAGS, _U32.pack(IFA_F_NODAD))
    scope = request.scope if request.add and address.version == 4 else 0
    header = _IFADDRMSG.pack(family, address.network.prefixlen, flags, scope, request.index)
    kind, message_flags = (RTM_NEWADDR, ADD_FLAGS) if request.add else (RTM_DELADDR, DELETE_FLAGS)
    return kind, message_flags, header + body


def route_socket(timeout: float | None) -> socket.socket:
    """A NETLINK_ROUTE socket bound in the network namespace of the calling thread; blocking
    with `timeout` (None: non-blocking)."""
    netlink = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE
    )
    try:
        netlink.bind((0, 0))
        if timeout is None:
            netlink.setblocking(False)
        else:
            netlink.settimeout(timeout)
        # Refusals then carry the errno without an echo of the request.
        with contextlib.suppress(OSError):
            netlink.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    except BaseException:
        netlink.close()
        raise
    return netlink


class RtnlSocket:
    """A plain NETLINK_ROUTE socket for address requests, opened on first use in the network
    namespace of the calling thread."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._sequence = 0

    def open(self) -> socket.socket:
        if self._socket is None:
            self._socket = route_socket(REPLY_TIMEOUT)
        return self._socket

    def exchange(self, requests: Sequence[AddressRequest]) -> list[int]:
        """Send every request and return each one's errno (0: done), in order.

        Raises OSError when the socket fails; then some requests may have been carried out,
        and the socket is reopened for the next call."""
        results: list[int] = []
        for start in range(0, len(requests), BATCH):
            try:
                results += self._exchange(requests[start : start + BATCH])
            except OSError:
                self.close()
                raise
        return results

    def _exchange(self, requests: Sequence[AddressRequest]) -> list[int]:
        netlink = self.open()
        first = (self._sequence + 1) & _SEQUENCE_MASK
        self._sequence = (self._sequence + len(requests)) & _SEQUENCE_MASK
        waiting = {(first + i) & _SEQUENCE_MASK: i for i in range(len(requests))}
        netlink.send(
            b"".join(
                encode(request, (first + i) & _SEQUENCE_MASK) for i, request in enumerate(requests)
            )
        )
        results = [0] * len(requests)
        while waiting:
            try:
                data = netlink.recv(65536)
            except TimeoutError:
                raise OSError(
                    errno.ETIMEDOUT,
                    f"the kernel did not acknowledge {len(waiting)} address request(s)",
                ) from None
            try:
                acknowledged = acknowledgements(data)
            except ReplyFormatError as exc:
                raise OSError(errno.EPROTO, f"unreadable rtnetlink reply: {exc}") from None
            for sequence, code in acknowledged:
                position = waiting.pop(sequence, None)
                if position is not None:  # anything else is left over from a failed call
                    results[position] = code
        return results

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
