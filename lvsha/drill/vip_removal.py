"""A crashed host's addresses vanish with it: remove a killed director's VIP in one syscall.

A daemon killed with SIGKILL leaves its VIP on the interface, where the kernel goes on
answering for it; a real crash takes the address along. The drill emulates that with a netlink
RTM_DELADDR request on a socket opened in the director's namespace before any fault: the kernel
carries out a route request within the sending call, so the VIP is gone when `send` returns,
with no `ip` process to start while the new master is already taking over.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence
from ipaddress import IPv4Interface

from lvsha.drill.lab import Host, LabError

# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
RTM_DELADDR = 21
IFA_ADDRESS = 1
IFA_LOCAL = 2
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_ERROR_CODE = struct.Struct("=i")
ANSWER_TIMEOUT = 2.0
"""Seconds to wait for the kernel's acknowledgement, which it sends within the request."""


class VipRemovalError(LabError):
    """The kernel refused to remove the address for a reason other than its absence."""


def delete_address_request(interface_index: int, address: IPv4Interface, sequence: int) -> bytes:
    """An RTM_DELADDR request for `address` on the interface, asking for an acknowledgement."""
    packed = address.ip.packed
    # Both attributes, as `ip addr del` sends them: the local address and the prefix it is on.
    attributes = b"".join(
        _RTATTR.pack(_RTATTR.size + len(packed), kind) + packed for kind in (IFA_LOCAL, IFA_ADDRESS)
    )
    body = (
        _IFADDRMSG.pack(socket.AF_INET, address.network.prefixlen, 0, 0, interface_index)
        + attributes
    )
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, sequence, 0
    )
    return header + body


def acknowledgement(data: bytes, sequence: int) -> int | None:
    """The error code (0 for success, else a positive errno) the kernel answered request
    `sequence` with in this netlink datagram; None when the datagram does not answer it."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, answered, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return None
        if kind == NLMSG_ERROR and answered == sequence and length >= _NLMSGHDR.size + 4:
            code: int = _ERROR_CODE.unpack_from(data, offset + _NLMSGHDR.size)[0]
            return -code
        offset += (length + 3) & ~3
    return None


def _open_route_socket(interface: str) -> tuple[socket.socket, int]:
    route = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        route.bind((0, 0))
        route.settimeout(ANSWER_TIMEOUT)
        index = socket.if_nametoindex(interface)
    except BaseException:
        route.close()
        raise
    return route, index


class VipRemover:
    """Removes `address` (then the addresses in `also`) from `interface` in `host`'s namespace,
    on a socket opened there now.

    The socket keeps the namespace alive: close the remover before the lab goes.
    """

    def __init__(
        self,
        host: Host,
        interface: str,
        address: IPv4Interface,
        also: Sequence[IPv4Interface] = (),
    ) -> None:
        self.host = host
        self.interface = interface
        self.address = address
        self.also = tuple(also)
        self._route, self._index = host.call(lambda: _open_route_socket(interface))
        self._sequence = 0

    def remove(self) -> bool:
        """True when `address` was removed, False when it was not there; then the others go.

        An address is gone as soon as its request is sent; the acknowledgement is read after.
        """
        removed = self._remove(self.address)
        for other in self.also:
            self._remove(other)
        return removed

    def _remove(self, address: IPv4Interface) -> bool:
        self._sequence += 1
        self._route.send(delete_address_request(self._index, address, self._sequence))
        while True:
            try:
                data = self._route.recv(65535)
            except TimeoutError:
                raise VipRemovalError(
                    f"{self.host.name}: no answer to removing {address} from "
                    f"{self.interface} within {ANSWER_TIMEOUT} s"
                ) from None
            code = acknowledgement(data, self._sequence)
            if code is None:
                continue
            if code == 0:
                return True
            if code == errno.EADDRNOTAVAIL:
                return False
            raise VipRemovalError(
                f"{self.host.name}: removing {address} from {self.interface}: "
                f"{errno.errorcode.get(code, code)} ({code})"
            )

    def close(self) -> None:
        self._route.close()
