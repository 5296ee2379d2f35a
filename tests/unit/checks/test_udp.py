"""UDP probe against a real echo server and a closed port on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import pytest

from lvsha.checks.udp import ReplyMatch, UdpParams, probe_udp

LATE_MARGIN = 0.05


@dataclass
class EchoServer(asyncio.DatagramProtocol):
    """Echoes every datagram, upper-cased when `shout`, or stays silent when `mute`."""

    shout: bool = False
    mute: bool = False
    received: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        if not self.mute and self.transport is not None:
            self.transport.sendto(data.upper() if self.shout else data, addr)


@dataclass
class Served:
    address: str
    port: int
    echo: EchoServer


async def _serve(address: str) -> tuple[asyncio.DatagramTransport, Served]:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(EchoServer, local_addr=(address, 0))
    return transport, Served(address, transport.get_extra_info("sockname")[1], echo)


@pytest.fixture(params=["127.0.0.1", "::1"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    transport, served = await _serve(request.param)
    yield served
    transport.close()


def _closed_udp_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_exact_reply_matches(server: Served) -> None:
    params = UdpParams(server.address, server.port, 1.0, b"ping", ReplyMatch(exact=b"ping"))

    result = await probe_udp(params)

    assert result.ok, result.reason
    assert result.reason == "udp reply matched"
    assert server.echo.received == [b"ping"]


async def test_a_different_reply_mismatches(server: Served) -> None:
    server.echo.shout = True
    params = UdpParams(server.address, server.port, 1.0, b"ping", ReplyMatch(exact=b"ping"))

    result = await probe_udp(params)

    assert result.reason == "udp reply mismatch"


async def test_regex_reply(server: Served) -> None:
    params = UdpParams(server.address, server.port, 1.0, b"status ok", ReplyMatch(regex=r"\bok$"))
    assert (await probe_udp(params)).ok

    server.echo.shout = True
    result = await probe_udp(params)

    assert result.reason == "udp reply regex not matched"


async def test_a_silent_server_gives_no_reply_at_the_timeout(server: Served) -> None:
    server.echo.mute = True
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await probe_udp(
        UdpParams(server.address, server.port, 0.2, b"ping", ReplyMatch(exact=b"ping"))
    )

    assert result.reason == "udp no reply after 0.2 s"
    assert 0.2 <= loop.time() - started < 0.2 + LATE_MARGIN


async def test_without_a_wanted_reply_silence_is_healthy(server: Served) -> None:
    server.echo.mute = True

    result = await probe_udp(UdpParams(server.address, server.port, 0.2, b"ping"))

    assert result.ok, result.reason
    assert result.reason == "udp no port unreachable"
    assert server.echo.received == [b"ping"]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("reply", [None, ReplyMatch(exact=b"ping")])
async def test_a_closed_port_is_unreachable_before_the_timeout(
    address: str, reply: ReplyMatch | None
) -> None:
    params = UdpParams(address, _closed_udp_port(address), 2.0, b"ping", reply)

    result = await probe_udp(params)

    assert result.reason == "udp port unreachable"
    assert result.latency < 0.5, "the refusal ends the probe, not the timeout"
