"""Reading links and addresses from rtnetlink without pyroute2 (issue 11: importing pyroute2
costs the VRRP process 70-125 ms and 11 MiB at every start).

Requests are encoded with struct as pyroute2 0.9.7 encodes the same requests: RTM_GETLINK by
name (acknowledged), and dumps of every link and of every address (pyroute2 too asks for every
address and keeps one interface's). Replies are decoded into the few fields lvsha reads, from
include/uapi/linux/rtnetlink.h, if_link.h and if_addr.h. `RtnlQueries` is the thin socket
around them, used synchronously like `RtnlSocket`: the kernel answers a request, and each part
of a dump, in the context of the call that sends or reads it, so nothing waits on it.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from lvsha.net.nlmsg import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSGHDR,
    RefusedError,
    ReplyFormatError,
    answer,
    attribute,
    attributes,
)
from lvsha.net.rtnl import REPLY_TIMEOUT, route_socket

# include/uapi/linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTNLGRP_LINK = 1
# if_link.h
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
# if_addr.h
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_BROADCAST = 4
IFA_FLAGS = 8

GET_FLAGS = NLM_F_REQUEST | NLM_F_ACK
DUMP_FLAGS = NLM_F_REQUEST | NLM_F_DUMP

_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_U32 = struct.Struct("=I")
_EMPTY_IFINFOMSG = _IFINFOMSG.pack(0, 0, 0, 0, 0)
_EMPTY_IFADDRMSG = _IFADDRMSG.pack(0, 0, 0, 0, 0)
_SEQUENCE_MASK = 0xFFFF_FFFF
RECEIVE_SIZE = 65536
"""Bytes per read: more than the kernel puts in one datagram of a dump (32 KiB at most)."""


# --- requests -----------------------------------------------------------------------------------


def _message(kind: int, flags: int, sequence: int, body: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, sequence, 0) + body


def link_request(name: str, sequence: int) -> bytes:
    """RTM_GETLINK for the link named `name` (IFLA_IFNAME), acknowledged."""
    raw_name = name.encode(errors="surrogateescape") + b"\0"
    return _message(
        RTM_GETLINK, GET_FLAGS, sequence, _EMPTY_IFINFOMSG + attribute(IFLA_IFNAME, raw_name)
    )


def link_dump_request(sequence: int) -> bytes:
    """RTM_GETLINK as a dump of every link."""
    return _message(RTM_GETLINK, DUMP_FLAGS, sequence, _EMPTY_IFINFOMSG)


def address_dump_request(sequence: int) -> bytes:
    """RTM_GETADDR as a dump of every address of every family."""
    return _message(RTM_GETADDR, DUMP_FLAGS, sequence, _EMPTY_IFADDRMSG)


# --- replies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """What an RTM_NEWLINK / RTM_DELLINK says about one link."""

    family: int
    """AF_UNSPEC for the link itself; AF_BRIDGE for what concerns it as a bridge port."""
    index: int
    name: str | None
    flags: int
    """IFF_* bits."""
    operstate: int | None
    """IF_OPER_* (RFC 2863), when the message carries it."""
    mac: str
    """IFLA_ADDRESS as lower-case hex pairs joined by colons; "" when there is none."""


def _string(raw: memoryview) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="surrogateescape")


def _unpacked(
    payload: memoryview, header: struct.Struct, what: str
) -> tuple[tuple[int, ...], dict[int, memoryview]]:
    """The fixed header's fields and the attributes after it."""
    if len(payload) < header.size:
        raise ReplyFormatError(f"{len(payload)}-byte {what} message")
    return header.unpack_from(payload), attributes(payload, header.size)


def decode_link(payload: memoryview) -> Link:
    """One RTM_NEWLINK or RTM_DELLINK (the payload after the nlmsghdr)."""
    (family, _, index, flags, _), found = _unpacked(payload, _IFINFOMSG, "link")
    name = found.get(IFLA_IFNAME)
    operstate = found.get(IFLA_OPERSTATE)
    mac = found.get(IFLA_ADDRESS)
    return Link(
        family=family,
        index=index,
        name=None if name is None else _string(name),
        flags=flags,
        operstate=None if operstate is None or not len(operstate) else operstate[0],
        mac="" if mac is None else ":".join(f"{octet:02x}" for octet in bytes(mac)),
    )


@dataclass(frozen=True, slots=True)
class AddressEntry:
    """What an RTM_NEWADDR / RTM_DELADDR says about one address."""

    family: int
    prefixlen: int
    flags: int
    """IFA_FLAGS when present (it holds the bits past the header's 8), else the header's."""
    scope: int
    index: int
    local: IPv4Address | IPv6Address | None
    """IFA_LOCAL: the address itself (IPv4)."""
    address: IPv4Address | IPv6Address | None
    """IFA_ADDRESS: the peer on a point-to-point IPv4 link, else the address itself."""
    label: str | None
    broadcast: IPv4Address | IPv6Address | None = None
    """IFA_BROADCAST (IPv4)."""

    @property
    def interface_address(self) -> IPv4Interface | IPv6Interface | None:
        """The address with its prefix length, as `ip addr` shows it; None for a message of
        another family or without an address."""
        own = self.local if self.family == socket.AF_INET and self.local else self.address
        if own is None:
            return None
        if own.version == 4:
            return IPv4Interface((own, self.prefixlen))
        return IPv6Interface((own, self.prefixlen))


def _ip(family: int, raw: memoryview | None) -> IPv4Address | IPv6Address | None:
    if raw is None:
        return None
    if family == socket.AF_INET and len(raw) == 4:
        return IPv4Address(bytes(raw))
    if family == socket.AF_INET6 and len(raw) == 16:
        return IPv6Address(bytes(raw))
    return None


def decode_address(payload: memoryview) -> AddressEntry:
    """One RTM_NEWADDR or RTM_DELADDR (the payload after the nlmsghdr)."""
    (family, prefixlen, flags, scope, index), found = _unpacked(payload, _IFADDRMSG, "address")
    extended = found.get(IFA_FLAGS)
    label = found.get(IFA_LABEL)
    return AddressEntry(
        family=family,
        prefixlen=prefixlen,
        flags=flags if extended is None or len(extended) < 4 else _U32.unpack_from(extended)[0],
        scope=scope,
        index=index,
        local=_ip(family, found.get(IFA_LOCAL)),
        address=_ip(family, found.get(IFA_ADDRESS)),
        label=None if label is None else _string(label),
        broadcast=_ip(family, found.get(IFA_BROADCAST)),
    )


# --- the socket ---------------------------------------------------------------------------------


class RtnlQueries:
    """A plain NETLINK_ROUTE socket for link and address queries, opened on first use in the
    network namespace of the calling thread.

    Its own socket, apart from `RtnlSocket`'s: a query that fails midway leaves nothing for the
    address requests to misread. The kernel's refusals raise `RefusedError` (an OSError with
    its errno); any other failure raises OSError and closes the socket, which the next call
    opens again.
    """

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._sequence = 0

    def link(self, name: str) -> Link:
        """The link named `name`; RefusedError with ENODEV when there is none."""
        found = [
            decode_link(payload)
            for kind, payload in self._ask(lambda sequence: link_request(name, sequence))
            if kind == RTM_NEWLINK
        ]
        if not found:
            raise OSError(errno.EPROTO, f"RTM_GETLINK {name!r} acknowledged without the link")
        return found[0]

    def links(self) -> list[Link]:
        """Every link (in the kernel's order), bridge-port messages included."""
        return [
            decode_link(payload)
            for kind, payload in self._ask(link_dump_request)
            if kind == RTM_NEWLINK
        ]

    def addresses(self) -> list[AddressEntry]:
        """Every address of every interface and family, in the kernel's order."""
        return [
            decode_address(payload)
            for kind, payload in self._ask(address_dump_request)
            if kind == RTM_NEWADDR
        ]

    def ask(self, request: Callable[[int], bytes]) -> list[tuple[int, memoryview]]:
        """Send the request `request(sequence)` builds; the (type, payload) of its answer,
        once complete (an acknowledgement or the end of a dump)."""
        return self._ask(request)

    def _ask(self, request: Callable[[int], bytes]) -> list[tuple[int, memoryview]]:
        netlink = self._socket
        if netlink is None:
            netlink = self._socket = route_socket(REPLY_TIMEOUT)
        self._sequence = sequence = (self._sequence + 1) & _SEQUENCE_MASK
        found: list[tuple[int, memoryview]] = []
        try:
            netlink.send(request(sequence))
            while True:
                data, _, flags, _ = netlink.recvmsg(RECEIVE_SIZE)
                if flags & socket.MSG_TRUNC:
                    raise ReplyFormatError(f"a reply longer than {RECEIVE_SIZE} bytes")
                part, complete = answer(data, sequence)
                found += part
                if complete:
                    return found
        except RefusedError:
            raise  # the kernel has answered in full: the socket is clean
        except TimeoutError:
            self.close()
            raise OSError(errno.ETIMEDOUT, "the kernel did not answer an rtnetlink query") from None
        except ReplyFormatError as exc:
            self.close()
            raise OSError(errno.EPROTO, f"unreadable rtnetlink reply: {exc}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
