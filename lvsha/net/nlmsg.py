"""Netlink framing shared by lvsha's plain netlink sockets (rtnetlink addresses, IPVS).

Pure: bytes in, bytes out. Layouts follow include/uapi/linux/netlink.h: each message is a
nlmsghdr and a payload padded to 4 bytes; attributes are (length, type) headers and payloads,
padded to 4 bytes; an acknowledgement is an NLMSG_ERROR whose error is 0.
"""

from __future__ import annotations

import struct

NLM_F_REQUEST = 0x001
NLM_F_MULTI = 0x002
NLM_F_ACK = 0x004
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

# linux/socket.h and netlink.h: not all are in Python's socket module.
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33

NLMSGHDR = struct.Struct("=IHHII")
_ACK = struct.Struct("=IHHIIi")  # nlmsghdr, then struct nlmsgerr's error
_ATTRIBUTE_HEADER = struct.Struct("=HH")
ACK_SIZE = _ACK.size


class ReplyFormatError(ValueError):
    """Bytes from the kernel that are not the netlink reply they should be."""


def attribute(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return _ATTRIBUTE_HEADER.pack(length, kind) + payload + b"\0" * (-length % 4)


def acknowledgements(data: bytes) -> list[tuple[int, int]]:
    """(sequence number, errno) of each NLMSG_ERROR in `data`; errno 0 acknowledges."""
    found = []
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < ACK_SIZE:
            raise ReplyFormatError(f"{end - offset} bytes where an ack was expected")
        length, kind, _, sequence, _, code = _ACK.unpack_from(data, offset)
        if kind != NLMSG_ERROR:
            raise ReplyFormatError(f"netlink message of type {kind} where an ack was expected")
        if length < ACK_SIZE or offset + length > end:
            raise ReplyFormatError(f"ack of length {length} in a {end}-byte datagram")
        found.append((sequence, -code))
        offset += (length + 3) & ~3
    return found
