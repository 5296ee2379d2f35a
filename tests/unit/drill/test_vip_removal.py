"""The netlink request that removes a killed director's VIP, and the kernel's answer to it."""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Interface

from lvsha.drill.vip_removal import acknowledgement, delete_address_request

VIP = IPv4Interface("192.0.2.100/24")


def test_the_request_is_an_acknowledged_rtm_deladdr_of_the_address_on_the_interface() -> None:
    expected = bytes.fromhex(
        "28000000" "1500" "0500" "07000000" "00000000"  # nlmsghdr: 40 bytes, RTM_DELADDR,
        # REQUEST|ACK, sequence 7, to the kernel
        "02" "18" "00" "00" "03000000"  # ifaddrmsg: AF_INET, /24, no flags, scope 0, index 3
        "0800" "0200" "c0000264"  # IFA_LOCAL 192.0.2.100
        "0800" "0100" "c0000264"  # IFA_ADDRESS 192.0.2.100
    )  # fmt: skip
    assert delete_address_request(3, VIP, 7) == expected


def answer(sequence: int, code: int) -> bytes:
    """An NLMSG_ERROR message as the kernel sends it: the code, then the request's header."""
    request_header = struct.pack("=IHHII", 40, 21, 5, sequence, 0)
    body = struct.pack("=i", code) + request_header
    return struct.pack("=IHHII", 16 + len(body), 2, 0x100, sequence, 4242) + body


def test_success_and_absence_are_read_from_the_acknowledgement() -> None:
    assert acknowledgement(answer(7, 0), 7) == 0
    assert acknowledgement(answer(7, -errno.EADDRNOTAVAIL), 7) == errno.EADDRNOTAVAIL


def test_an_answer_to_another_request_is_not_this_one() -> None:
    assert acknowledgement(answer(6, 0), 7) is None
    assert acknowledgement(answer(6, 0) + answer(7, -errno.EPERM), 7) == errno.EPERM


def test_a_truncated_datagram_answers_nothing() -> None:
    assert acknowledgement(answer(7, 0)[:20], 7) is None
    assert acknowledgement(b"", 7) is None
