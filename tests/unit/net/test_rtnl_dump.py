"""rtnetlink link and address queries without pyroute2: requests byte-for-byte as pyroute2's
AsyncIPRoute sends them, replies encoded by pyroute2 decoded, dumps over several datagrams,
refusals, and the query socket's handling of a broken exchange."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Awaitable, Callable
from ipaddress import ip_interface
from typing import Any

import pytest
from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR, nlmsgerr
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from lvsha.net import rtnl_dump
from lvsha.net.addresses import AssignedAddress, InterfaceNotFoundError, NetlinkAddresses
from lvsha.net.nlmsg import NLM_F_MULTI, NLMSG_OVERRUN, RefusedError, ReplyFormatError, answer
from lvsha.net.rtnl_dump import (
    RTM_DELADDR,
    RTM_NEWADDR,
    RTM_NEWLINK,
    AddressEntry,
    Link,
    RtnlQueries,
    address_dump_request,
    decode_address,
    decode_link,
    link_dump_request,
    link_request,
)

IFF_UP_RUNNING = 0x1 | 0x40 | 0x10000


def normalised(message: bytes) -> bytes:
    """`message` with the sequence number and port id zeroed."""
    return message[:8] + bytes(8) + message[16:]


class _CapturedError(Exception):
    pass


async def pyroute2_sends(
    monkeypatch: pytest.MonkeyPatch, call: Callable[[Any], Awaitable[Any]]
) -> bytes:
    """The request AsyncIPRoute encodes for `call(ipr)`, caught before it is sent."""
    sent: list[bytes] = []

    async def capture(request: Any) -> None:
        await request.prepare()
        sent.append(bytes(request.msg.data))
        raise _CapturedError

    monkeypatch.setattr(NetlinkRequest, "send", capture)
    ipr = AsyncIPRoute(groups=0)
    try:
        result = await call(ipr)
        async for _ in result:
            pass
    except _CapturedError:
        pass
    finally:
        ipr.close()
    [request] = sent
    return request


@pytest.mark.parametrize("name", ["eth0", "lo", "vlan.100", "a-fifteen-chars"])
async def test_a_link_request_by_name_is_pyroute2s(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    expected = await pyroute2_sends(monkeypatch, lambda ipr: ipr.link("get", ifname=name))
    assert normalised(link_request(name, 77)) == normalised(expected)


async def test_the_dump_requests_are_pyroute2s(monkeypatch: pytest.MonkeyPatch) -> None:
    links = await pyroute2_sends(monkeypatch, lambda ipr: ipr.link("dump"))
    assert normalised(link_dump_request(3)) == normalised(links)
    # pyroute2 asks for every address even for one interface's, and keeps that one's.
    addresses = await pyroute2_sends(monkeypatch, lambda ipr: ipr.addr("dump", index=3))
    assert normalised(address_dump_request(3)) == normalised(addresses)


# --- replies encoded by pyroute2 ----------------------------------------------------------------


def link_message(
    index: int,
    name: str | None,
    flags: int = IFF_UP_RUNNING,
    *,
    kind: int = RTM_NEWLINK,
    sequence: int = 0,
    multi: bool = False,
    family: int = socket.AF_UNSPEC,
    attrs: list[tuple[str, Any]] | None = None,
) -> bytes:
    message = ifinfmsg()
    message["family"] = family
    message["index"] = index
    message["flags"] = flags
    message["ifi_type"] = 1  # ARPHRD_ETHER
    message["attrs"] = ([("IFLA_IFNAME", name)] if name is not None else []) + (attrs or [])
    message["header"]["type"] = kind
    message["header"]["flags"] = NLM_F_MULTI if multi else 0
    message["header"]["sequence_number"] = sequence
    message.encode()
    return bytes(message.data)


def address_message(
    family: int,
    prefixlen: int,
    index: int,
    attrs: list[tuple[str, Any]],
    *,
    flags: int = 0,
    kind: int = RTM_NEWADDR,
    sequence: int = 0,
    multi: bool = True,
) -> bytes:
    message = ifaddrmsg()
    message["family"] = family
    message["prefixlen"] = prefixlen
    message["flags"] = flags
    message["scope"] = 0
    message["index"] = index
    message["attrs"] = attrs
    message["header"]["type"] = kind
    message["header"]["flags"] = NLM_F_MULTI if multi else 0
    message["header"]["sequence_number"] = sequence
    message.encode()
    return bytes(message.data)


def end_message(kind: int, sequence: int, code: int = 0) -> bytes:
    """NLMSG_DONE or NLMSG_ERROR (an acknowledgement when `code` is 0), encoded by pyroute2."""
    message = nlmsgerr()
    message["header"]["type"] = kind
    message["header"]["flags"] = NLM_F_MULTI if kind == NLMSG_DONE else 0
    message["header"]["sequence_number"] = sequence
    message["error"] = -code
    message.encode()
    return bytes(message.data)


def payload(message: bytes) -> memoryview:
    [(_, found)], _ = answer(message, struct.unpack_from("=I", message, 8)[0])
    return found


def test_a_link_message_gives_index_name_flags_operstate_and_mac() -> None:
    message = link_message(
        4,
        "eth0",
        attrs=[("IFLA_ADDRESS", "02:00:00:AA:bb:01"), ("IFLA_OPERSTATE", "UP"), ("IFLA_MTU", 9000)],
    )
    assert decode_link(payload(message)) == Link(
        socket.AF_UNSPEC, 4, "eth0", IFF_UP_RUNNING, 6, "02:00:00:aa:bb:01"
    )


def test_a_link_without_address_or_operstate_and_a_bridge_port_message() -> None:
    assert decode_link(payload(link_message(9, "tun0", 0x1))) == Link(0, 9, "tun0", 0x1, None, "")
    bridge = link_message(5, "port9", kind=17, family=socket.AF_BRIDGE)
    assert decode_link(payload(bridge)).family == socket.AF_BRIDGE


def test_an_ipv4_address_is_ifa_local_with_its_label_and_the_peer_is_kept_apart() -> None:
    message = address_message(
        socket.AF_INET,
        24,
        7,
        [
            ("IFA_ADDRESS", "192.0.2.1"),
            ("IFA_LOCAL", "192.0.2.10"),
            ("IFA_LABEL", "eth0:vip"),
            ("IFA_FLAGS", 0x80),
        ],
        flags=0x80,
    )
    entry = decode_address(payload(message))
    assert entry == AddressEntry(
        socket.AF_INET,
        24,
        0x80,
        0,
        7,
        ip_interface("192.0.2.10").ip,
        ip_interface("192.0.2.1").ip,
        "eth0:vip",
    )
    assert entry.interface_address == ip_interface("192.0.2.10/24")


def test_ifa_flags_carries_the_bits_the_header_has_no_room_for() -> None:
    # IFA_F_NOPREFIXROUTE (0x200) | IFA_F_NODAD: the header's u8 holds only NODAD.
    message = address_message(
        socket.AF_INET6,
        64,
        3,
        [("IFA_ADDRESS", "2001:db8::10"), ("IFA_FLAGS", 0x202)],
        flags=0x02,
    )
    entry = decode_address(payload(message))
    assert (entry.flags, entry.local, entry.label) == (0x202, None, None)
    assert entry.interface_address == ip_interface("2001:db8::10/64")
    without = address_message(socket.AF_INET6, 64, 3, [("IFA_ADDRESS", "fe80::1")], flags=0x40)
    assert decode_address(payload(without)).flags == 0x40


def test_an_address_of_another_family_has_no_interface_address() -> None:
    message = address_message(socket.AF_INET, 32, 1, [])
    assert decode_address(payload(message)).interface_address is None


@pytest.mark.parametrize(
    "message",
    [link_message(1, "lo")[:24], address_message(socket.AF_INET, 8, 1, [])[:20]],
    ids=["short ifinfomsg", "short ifaddrmsg"],
)
def test_short_messages_are_refused(message: bytes) -> None:
    decode = decode_link if len(message) == 24 else decode_address
    body = memoryview(message)[16:]
    with pytest.raises(ReplyFormatError):
        decode(body)


# --- dumps over several datagrams ---------------------------------------------------------------


def test_a_dump_is_complete_at_nlmsg_done_and_skips_other_sequences() -> None:
    first = link_message(1, "lo", sequence=5, multi=True) + link_message(
        2, "eth0", sequence=5, multi=True
    )
    notification = link_message(2, "eth0", 0x1, sequence=0)
    last = link_message(3, "eth1", sequence=5, multi=True) + end_message(NLMSG_DONE, 5)
    part, complete = answer(first + notification, 5)
    assert [decode_link(found).name for _, found in part] == ["lo", "eth0"]
    assert not complete
    part, complete = answer(last + link_message(4, "stale", sequence=4, multi=True), 5)
    assert [decode_link(found).name for _, found in part] == ["eth1"]
    assert complete


def test_a_get_is_complete_at_its_acknowledgement() -> None:
    part, complete = answer(link_message(4, "eth0", sequence=8) + end_message(NLMSG_ERROR, 8), 8)
    assert complete and [kind for kind, _ in part] == [RTM_NEWLINK]


@pytest.mark.parametrize("kind", [NLMSG_ERROR, NLMSG_DONE])
def test_refusals_raise_with_their_errno(kind: int) -> None:
    with pytest.raises(RefusedError) as refused:
        answer(end_message(kind, 2, errno.ENODEV), 2)
    assert refused.value.errno == errno.ENODEV


def test_an_overrun_is_not_a_reply() -> None:
    overrun = struct.pack("=IHHII", 16, NLMSG_OVERRUN, 0, 6, 0)
    with pytest.raises(ReplyFormatError):
        answer(overrun, 6)


# --- the query socket, on a stand-in for the kernel ---------------------------------------------


class FakeKernel:
    """Answers each request with prepared datagrams, the sequence number filled in."""

    def __init__(self, *answers: list[Callable[[int], bytes]] | BaseException) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []
        self.pending: list[bytes] = []
        self.closed = False
        self.opened = 0

    def open(self, timeout: float | None) -> FakeKernel:
        self.opened += 1
        self.closed = False
        return self

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        sequence = struct.unpack_from("=I", data, 8)[0]
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            self.failure: BaseException | None = answer
        else:
            self.failure = None
            self.pending = [datagram(sequence) for datagram in answer]
        return len(data)

    def recvmsg(self, size: int) -> tuple[bytes, list[Any], int, Any]:
        if self.failure is not None:
            raise self.failure
        data = self.pending.pop(0)
        return data[:size], [], socket.MSG_TRUNC if len(data) > size else 0, None

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeKernel]:
    def make(*answers: list[Callable[[int], bytes]] | BaseException) -> FakeKernel:
        fake = FakeKernel(*answers)
        monkeypatch.setattr(rtnl_dump, "route_socket", fake.open)
        return fake

    return make


def test_an_address_dump_over_several_datagrams(kernel: Callable[..., FakeKernel]) -> None:
    fake = kernel(
        [
            lambda s: (
                address_message(socket.AF_INET, 8, 1, [("IFA_LOCAL", "127.0.0.1")], sequence=s)
                + address_message(
                    socket.AF_INET6, 128, 1, [("IFA_ADDRESS", "::1")], flags=0x80, sequence=s
                )
            ),
            lambda s: (
                address_message(socket.AF_INET, 24, 2, [("IFA_LOCAL", "192.0.2.1")], sequence=s)
                + end_message(NLMSG_DONE, s)
            ),
        ]
    )
    queries = RtnlQueries()
    found = [entry.interface_address for entry in queries.addresses()]
    assert found == [
        ip_interface("127.0.0.1/8"),
        ip_interface("::1/128"),
        ip_interface("192.0.2.1/24"),
    ]
    assert normalised(fake.sent[0]) == normalised(address_dump_request(0))


def test_a_refusal_keeps_the_socket_and_a_broken_exchange_closes_it(
    kernel: Callable[..., FakeKernel],
) -> None:
    fake = kernel(
        [lambda s: end_message(NLMSG_ERROR, s, errno.ENODEV)],
        TimeoutError(),
        [lambda s: link_message(4, "eth0", sequence=s) + end_message(NLMSG_ERROR, s)],
        [lambda s: b"\0" * 70000],
    )
    queries = RtnlQueries()
    with pytest.raises(RefusedError) as refused:
        queries.link("nope0")
    assert refused.value.errno == errno.ENODEV and not fake.closed
    with pytest.raises(OSError) as timed_out:
        queries.links()
    assert timed_out.value.errno == errno.ETIMEDOUT and fake.closed
    assert queries.link("eth0").index == 4
    assert fake.opened == 2
    with pytest.raises(OSError) as truncated:
        queries.links()
    assert truncated.value.errno == errno.EPROTO and fake.closed


async def test_netlink_addresses_on_the_query_socket(kernel: Callable[..., FakeKernel]) -> None:
    lo = socket.if_nametoindex("lo")
    kernel(
        [lambda s: end_message(NLMSG_ERROR, s, errno.ENODEV)],
        [
            lambda s: (
                link_message(lo, "lo", sequence=s, attrs=[("IFLA_ADDRESS", "00:00:00:00:00:00")])
                + end_message(NLMSG_ERROR, s)
            )
        ],
        [
            lambda s: (
                address_message(socket.AF_INET, 8, lo, [("IFA_LOCAL", "127.0.0.1")], sequence=s)
                + address_message(
                    socket.AF_INET,
                    24,
                    lo + 1,
                    [("IFA_LOCAL", "192.0.2.1"), ("IFA_LABEL", "x")],
                    sequence=s,
                )
                + address_message(
                    socket.AF_INET,
                    8,
                    lo,
                    [("IFA_LOCAL", "127.0.0.2"), ("IFA_LABEL", "lo:vip")],
                    flags=0x01,
                    sequence=s,
                )
                + end_message(NLMSG_DONE, s)
            )
        ],
    )
    async with NetlinkAddresses() as addresses:
        with pytest.raises(InterfaceNotFoundError, match="'gone0'"):
            await addresses.interface("gone0")
        found = await addresses.interface("lo")
        assert (found.name, found.index, found.mac) == ("lo", lo, "00:00:00:00:00:00")
        assert await addresses._assigned("lo") == [
            AssignedAddress(ip_interface("127.0.0.1/8"), 0, None),
            AssignedAddress(ip_interface("127.0.0.2/8"), 0x01, "lo:vip"),
        ]


def test_deleted_addresses_are_decoded_too() -> None:
    message = address_message(
        socket.AF_INET, 24, 2, [("IFA_LOCAL", "192.0.2.1")], kind=RTM_DELADDR, multi=False
    )
    assert decode_address(payload(message)).interface_address == ip_interface("192.0.2.1/24")
