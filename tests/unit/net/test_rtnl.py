"""The rtnetlink address requests, read back with pyroute2's parser as an independent check."""

from __future__ import annotations

import errno
import socket
from ipaddress import IPv4Address, ip_interface
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from lvsha.net.nlmsg import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from lvsha.net.rtnl import (
    IFA_F_NODAD,
    RTM_DELADDR,
    RTM_NEWADDR,
    AddressRequest,
    RtnlSocket,
    encode,
)


def parsed(data: bytes) -> Any:
    message = ifaddrmsg(data)
    message.decode()
    return message


def test_an_ipv4_add_is_what_ip_addr_add_sends() -> None:
    request = AddressRequest(True, 7, ip_interface("192.0.2.10/24"), "eth0:vip")
    message = parsed(encode(request, 42))
    assert message["header"]["type"] == RTM_NEWADDR
    assert message["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    assert message["header"]["sequence_number"] == 42
    assert message["header"]["length"] == len(encode(request, 42))
    assert (message["family"], message["prefixlen"], message["index"]) == (socket.AF_INET, 24, 7)
    assert message.get_attr("IFA_LOCAL") == "192.0.2.10"
    assert message.get_attr("IFA_ADDRESS") == "192.0.2.10"
    assert message.get_attr("IFA_LABEL") == "eth0:vip"


def test_an_ipv6_add_skips_duplicate_address_detection() -> None:
    message = parsed(encode(AddressRequest(True, 3, ip_interface("2001:db8::10/64")), 1))
    assert (message["family"], message["prefixlen"], message["index"]) == (socket.AF_INET6, 64, 3)
    assert message.get_attr("IFA_ADDRESS") == "2001:db8::10"
    assert message["flags"] == IFA_F_NODAD
    assert message.get_attr("IFA_FLAGS") == IFA_F_NODAD
    assert message.get_attr("IFA_LOCAL") is None


def test_a_delete_names_address_and_prefix_length_only() -> None:
    message = parsed(encode(AddressRequest(False, 7, ip_interface("192.0.2.10/24"), "x"), 9))
    assert message["header"]["type"] == RTM_DELADDR
    assert message["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK
    assert message["prefixlen"] == 24
    assert message.get_attr("IFA_LOCAL") == "192.0.2.10"
    assert message.get_attr("IFA_LABEL") is None
    deleted6 = parsed(encode(AddressRequest(False, 3, ip_interface("2001:db8::10/64")), 1))
    assert deleted6["flags"] == 0 and deleted6.get_attr("IFA_FLAGS") is None


def test_sequence_numbers_differ_and_the_rest_is_reused() -> None:
    request = AddressRequest(True, 7, ip_interface("192.0.2.10/24"))
    first, second = encode(request, 1), encode(request, 2)
    assert first[16:] == second[16:] and first[8:12] != second[8:12]


class FakeNetlink:
    """Answers each request with the errno the test chose for its address."""

    def __init__(self, answers: dict[str, int], lose: int = 0) -> None:
        self.answers = answers
        self.lose = lose
        self.replies: list[bytes] = []
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        offset = 0
        while offset < len(data):
            message = parsed(data[offset:])
            length = message["header"]["length"]
            code = self.answers.get(message.get_attr("IFA_ADDRESS"), 0)
            sequence = message["header"]["sequence_number"]
            ack = (36).to_bytes(4, "little") + (2).to_bytes(2, "little") + bytes(2)
            ack += (
                sequence.to_bytes(4, "little")
                + bytes(4)
                + (-code).to_bytes(4, "little", signed=True)
            )
            ack += data[offset : offset + 16]
            self.replies.append(ack)
            offset += (length + 3) & ~3
        del self.replies[len(self.replies) - self.lose :]
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.replies:
            raise TimeoutError
        return self.replies.pop(0)

    def close(self) -> None:
        pass


def fake_socket(netlink: FakeNetlink) -> RtnlSocket:
    rtnl = RtnlSocket()
    rtnl._socket = netlink  # type: ignore[assignment]
    return rtnl


def test_each_request_gets_its_own_answer_in_order() -> None:
    netlink = FakeNetlink({"192.0.2.11": errno.EEXIST})
    requests = [AddressRequest(True, 2, ip_interface(f"192.0.2.{n}/24")) for n in (10, 11, 12)]
    assert fake_socket(netlink).exchange(requests) == [0, errno.EEXIST, 0]
    assert len(netlink.sent) == 1  # one sendmsg for the batch


def test_a_large_batch_goes_in_chunks_the_receive_buffer_can_hold() -> None:
    netlink = FakeNetlink({})
    requests = [
        AddressRequest(True, 2, ip_interface(f"10.0.{n // 250}.{n % 250}/16")) for n in range(150)
    ]
    assert fake_socket(netlink).exchange(requests) == [0] * 150
    assert len(netlink.sent) == 3


def test_a_missing_acknowledgement_is_an_error_not_a_success() -> None:
    netlink = FakeNetlink({}, lose=1)
    rtnl = fake_socket(netlink)
    with pytest.raises(OSError, match="did not acknowledge 1 address request"):
        rtnl.exchange([AddressRequest(True, 2, ip_interface("192.0.2.10/24"))])
    assert rtnl._socket is None  # a fresh socket next time: no stray answer is misread


def pyroute2_encoded(request: AddressRequest, sequence: int) -> bytes:
    message = ifaddrmsg()
    address = request.address
    message["family"] = socket.AF_INET if address.version == 4 else socket.AF_INET6
    message["prefixlen"] = address.network.prefixlen
    message["index"] = request.index
    message["scope"] = request.scope if request.add and address.version == 4 else 0
    attrs: list[tuple[str, object]] = []
    if address.version == 4:
        message["flags"] = 0
        attrs = [("IFA_LOCAL", str(address.ip)), ("IFA_ADDRESS", str(address.ip))]
        if request.label is not None and request.add:
            attrs.append(("IFA_LABEL", request.label))
        if request.broadcast is not None and request.add:
            attrs.append(("IFA_BROADCAST", str(request.broadcast)))
    else:
        message["flags"] = IFA_F_NODAD if request.add else 0
        attrs = [("IFA_ADDRESS", str(address.ip))]
        if request.add:
            attrs.append(("IFA_FLAGS", IFA_F_NODAD))
    message["attrs"] = attrs
    message["header"]["type"] = RTM_NEWADDR if request.add else RTM_DELADDR
    message["header"]["flags"] = (
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        if request.add
        else NLM_F_REQUEST | NLM_F_ACK
    )
    message["header"]["sequence_number"] = sequence
    message.encode()
    return bytes(message.data)


def test_requests_are_byte_for_byte_what_pyroute2_encodes() -> None:
    for add in (True, False):
        for address, label in (
            ("192.0.2.10/24", "eth0:vip"),
            ("192.0.2.10/32", None),
            ("2001:db8::10/64", None),
            ("2001:db8::10/128", None),
        ):
            request = AddressRequest(add, 7, ip_interface(address), label)
            assert encode(request, 42) == pyroute2_encoded(request, 42), (add, address)
        # keepalived's brd and scope on a VIP
        request = AddressRequest(
            add, 7, ip_interface("192.0.2.10/24"), "eth0:vip", IPv4Address("192.0.2.255"), 253
        )
        assert encode(request, 42) == pyroute2_encoded(request, 42), add


def test_broadcast_and_scope_go_with_an_ipv4_add_only() -> None:
    vip = ip_interface("192.0.2.10/24")
    message = parsed(encode(AddressRequest(True, 7, vip, None, IPv4Address("192.0.2.255"), 254), 1))
    assert message.get_attr("IFA_BROADCAST") == "192.0.2.255"
    assert message["scope"] == 254
    deleted = parsed(
        encode(AddressRequest(False, 7, vip, None, IPv4Address("192.0.2.255"), 254), 1)
    )
    assert deleted.get_attr("IFA_BROADCAST") is None and deleted["scope"] == 0
