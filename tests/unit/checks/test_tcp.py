from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lvsha.checks.tcp import connect_error_reason, probe_tcp

LOOPBACKS = [
    pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", id="ipv6"),
]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def listener(
    sockets: list[socket.socket], family: int, host: str, backlog: int = 16
) -> tuple[socket.socket, int]:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(sock)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock, sock.getsockname()[1]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("family", "host"), LOOPBACKS)
async def test_listening_port_is_healthy(
    sockets: list[socket.socket], family: int, host: str
) -> None:
    server, port = listener(sockets, family, host)
    result = await probe_tcp(host, port, timeout=2.0)
    assert result.ok, result.reason
    assert result.reason == "tcp connect ok"
    assert 0.0 <= result.latency < 2.0
    server.settimeout(2.0)
    accepted, _ = server.accept()
    sockets.append(accepted)


@pytest.mark.parametrize(("family", "host"), LOOPBACKS)
async def test_closed_port_is_refused(sockets: list[socket.socket], family: int, host: str) -> None:
    # Bound but not listening: the port is ours, so nothing else can be listening on it.
    reserved = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(reserved)
    reserved.bind((host, 0))
    result = await probe_tcp(host, reserved.getsockname()[1], timeout=2.0)
    assert not result.ok
    assert result.reason == "tcp connect refused"


@pytest.mark.parametrize(("family", "host"), LOOPBACKS)
async def test_full_accept_queue_times_out(
    sockets: list[socket.socket], family: int, host: str
) -> None:
    # Linux drops a SYN while the listener's accept queue is full, so the handshake never ends.
    _server, port = listener(sockets, family, host, backlog=0)
    for _ in range(3):
        filler = socket.socket(family, socket.SOCK_STREAM)
        sockets.append(filler)
        filler.setblocking(False)
        filler.connect_ex((host, port))
    result = await probe_tcp(host, port, timeout=0.2)
    assert not result.ok
    assert result.reason == "tcp connect timeout after 0.2 s"
    assert 0.2 <= result.latency < 1.5


async def test_source_address_is_used(sockets: list[socket.socket]) -> None:
    server, port = listener(sockets, socket.AF_INET, "127.0.0.1")
    result = await probe_tcp("127.0.0.1", port, timeout=2.0, source="127.0.0.2")
    assert result.ok, result.reason
    server.settimeout(2.0)
    accepted, peer = server.accept()
    sockets.append(accepted)
    assert peer[0] == "127.0.0.2"


async def test_source_address_that_is_not_local_fails_with_bind_reason() -> None:
    result = await probe_tcp("127.0.0.1", 9, timeout=1.0, source="192.0.2.77")
    assert not result.ok
    assert result.reason == "tcp bind to 192.0.2.77 failed: Cannot assign requested address"


async def test_not_an_ip_address() -> None:
    result = await probe_tcp("real-server.example", 80, timeout=1.0)
    assert not result.ok
    assert result.reason == "tcp address is not an IP address: 'real-server.example'"


async def test_socket_is_closed_whatever_the_outcome(sockets: list[socket.socket]) -> None:
    _, open_port = listener(sockets, socket.AF_INET, "127.0.0.1", backlog=128)
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sockets.append(reserved)
    reserved.bind(("127.0.0.1", 0))
    _, full_port = listener(sockets, socket.AF_INET, "127.0.0.1", backlog=0)
    for _ in range(3):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sockets.append(filler)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", full_port))
    await probe_tcp("127.0.0.1", open_port, timeout=1.0)
    before = open_fds()
    for _ in range(20):
        assert (await probe_tcp("127.0.0.1", open_port, timeout=1.0)).ok
        assert not (await probe_tcp("127.0.0.1", reserved.getsockname()[1], timeout=1.0)).ok
        assert not (await probe_tcp("127.0.0.1", open_port, 1.0, source="192.0.2.77")).ok
    for _ in range(3):
        assert not (await probe_tcp("127.0.0.1", full_port, timeout=0.02)).ok
    assert open_fds() == before


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ECONNREFUSED, "tcp connect refused"),
        (errno.EHOSTUNREACH, "tcp no route to host"),
        (errno.ENETUNREACH, "tcp network unreachable"),
        (errno.EACCES, "tcp connect failed: Permission denied"),
    ],
)
def test_connect_error_reasons(code: int, reason: str) -> None:
    assert connect_error_reason(OSError(code, os.strerror(code))) == reason


UNREACHABLE_PROBES = """
import asyncio
from lvsha.checks.tcp import probe_tcp
print(asyncio.run(probe_tcp("192.0.2.1", 80, 1.0)).reason)
print(asyncio.run(probe_tcp("198.51.100.1", 80, 1.0)).reason)
"""


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_unreachable_routes_in_a_private_namespace() -> None:
    # A fresh anonymous namespace has no routes; it vanishes with the process, nothing leaves it.
    completed = subprocess.run(
        [
            "unshare",
            "--net",
            "sh",
            "-c",
            'ip route add unreachable 192.0.2.0/24 && exec "$0" -c "$1"',
            sys.executable,
            UNREACHABLE_PROBES,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert completed.stdout.splitlines() == ["tcp no route to host", "tcp network unreachable"]
