"""The socket's reader callback never lets an exception out into the event loop: whatever a
packet causes is counted as a drop and logged (one traceback for a bug, then counts)."""

from __future__ import annotations

import logging
import socket
from ipaddress import IPv4Address
from typing import cast

import pytest

from lvsha.vrrp.socket import VrrpSocket, VrrpSocketSettings
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    Advert,
    DropReason,
    IpAddress,
    ReceivedAdvert,
    VrrpVersion,
    encode_advert,
)
from tests.unit.vrrp.advert_fuzz import StandInRawSocket

OWN = IPv4Address("192.0.2.2")
PEER = IPv4Address("192.0.2.1")
VIP = IPv4Address("192.0.2.100")


def payload() -> bytes:
    return encode_advert(Advert(VrrpVersion.V3, 7, 100, 100, (VIP,)), PEER, VRRP_MULTICAST_IPV4)


class FailingRawSocket(StandInRawSocket):
    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def recvmsg(
        self, size: int, ancillary_size: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[str, int, int, int]]:
        raise self.error


async def test_an_exception_in_the_advert_handler_is_counted_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = StandInRawSocket()
    sock = VrrpSocket(cast(socket.socket, raw), VrrpSocketSettings("eth0", OWN), ifindex=2)
    heard: list[tuple[object, IpAddress | None, str]] = []

    def on_advert(received: ReceivedAdvert) -> None:
        raise RuntimeError(f"the machine cannot take an advert from {received.source}")

    sock.start(on_advert, on_drop=lambda *drop: heard.append(drop))
    caplog.set_level(logging.ERROR, "lvsha.vrrp")
    try:
        for _ in range(3):
            raw.queue(payload(), PEER, VRRP_MULTICAST_IPV4, 255)
        sock._read_pending()  # the reader callback, as the event loop calls it
    finally:
        sock.close()
        raw.close()
    assert sock.drops[DropReason.RECEIVE_ERROR] == 3
    assert sock.receive_errors == 3
    assert [(reason, source) for reason, source, _ in heard] == [
        (DropReason.RECEIVE_ERROR, PEER)
    ] * 3
    assert "handling failed: RuntimeError" in heard[0][2]
    # One traceback to find the bug by, not one per packet.
    assert sum(1 for r in caplog.records if r.exc_info) == 1


async def test_a_receive_error_is_counted_and_the_reader_waits_for_the_next_wakeup() -> None:
    raw = FailingRawSocket(ConnectionRefusedError(111, "Connection refused"))
    sock = VrrpSocket(cast(socket.socket, raw), VrrpSocketSettings("eth0", OWN), ifindex=2)
    sock.start(lambda received: None)
    try:
        sock._read_pending()
    finally:
        sock.close()
        raw.close()
    # One error, not MAX_READS_PER_WAKEUP of them: a socket error is reported once.
    assert sock.drops[DropReason.RECEIVE_ERROR] == 1
