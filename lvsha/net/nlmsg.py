"""Netlink framing shared by lvsha's plain netlink sockets (rtnetlink, IPVS).

Pure: bytes in, bytes out. Layouts follow include/uapi/linux/netlink.h: each message is a
nlmsghdr and a payload padded to 4 bytes; attributes are (length, type) headers and payloads,
padded to 4 bytes; an acknowledgement is an NLMSG_ERROR whose error is 0. A dump answers with
messages flagged NLM_F_MULTI, over as many datagrams as it takes, and ends with NLMSG_DONE.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

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
_S32 = struct.Struct("=i")
ACK_SIZE = _ACK.size
_NLMSGHDR_SIZE = NLMSGHDR.size
# Attribute type bits that are not part of the type (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
_NLA_TYPE_MASK = 0x3FFF


class ReplyFormatError(ValueError):
    """Bytes from the kernel that are not the netlink reply they should be."""


class RefusedError(OSError):
    """The kernel refused a request: an NLMSG_ERROR (or a dump's NLMSG_DONE) with this errno."""


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


Reply = tuple[int, int, int, memoryview]
"""One netlink message: (type, flags, sequence number, payload after the nlmsghdr)."""


def replies(data: bytes) -> Iterator[Reply]:
    """The netlink messages in one datagram from the kernel."""
    view = memoryview(data)
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < _NLMSGHDR_SIZE:
            raise ReplyFormatError(f"{end - offset} stray bytes after the last netlink message")
        length, kind, flags, sequence, _ = NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR_SIZE or offset + length > end:
            raise ReplyFormatError(
                f"netlink message of length {length} at offset {offset} of a {end}-byte datagram"
            )
        yield kind, flags, sequence, view[offset + _NLMSGHDR_SIZE : offset + length]
        offset += (length + 3) & ~3


def error_code(payload: memoryview) -> int:
    """The errno of an NLMSG_ERROR (0: an acknowledgement) or NLMSG_DONE message."""
    if len(payload) < 4:
        if len(payload) == 0:
            return 0  # NLMSG_DONE without a payload, as some kernels sent it
        raise ReplyFormatError(f"{len(payload)}-byte error payload")
    code: int = _S32.unpack_from(payload)[0]
    return -code


def attributes(data: memoryview, offset: int) -> dict[int, memoryview]:
    """The attributes from `offset` to the end of `data`, by type (the last of a repeated one)."""
    found = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = _ATTRIBUTE_HEADER.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            raise ReplyFormatError(f"attribute {kind} of length {length} overruns its message")
        found[kind & _NLA_TYPE_MASK] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def answer(data: bytes, sequence: int) -> tuple[list[tuple[int, memoryview]], bool]:
    """The (type, payload) of the messages in `data` that answer request `sequence`, and whether
    the answer is complete: NLMSG_DONE ends a dump, an acknowledgement a request with
    NLM_F_ACK. Other sequence numbers (notifications, what a failed exchange left behind) are
    skipped. Raises RefusedError with the errno of a refusal (an NLMSG_ERROR, or a dump's
    NLMSG_DONE that carries one)."""
    found: list[tuple[int, memoryview]] = []
    for kind, _, reply_sequence, payload in replies(data):
        if reply_sequence != sequence or kind == NLMSG_NOOP:
            continue
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            code = error_code(payload)
            if code:
                raise RefusedError(code, os.strerror(code))
            return found, True
        if kind == NLMSG_OVERRUN:
            raise ReplyFormatError("the kernel overran the reply (NLMSG_OVERRUN)")
        found.append((kind, payload))
    return found, False
