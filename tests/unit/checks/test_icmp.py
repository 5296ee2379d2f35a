"""ICMP echo probe: loopback replies, and silence or errors inside a private network namespace.

Needs root for raw sockets and namespaces. Probes that must get no reply run on sockets opened
inside a namespace made for the test, so no packet leaves this machine.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from lvsha.checks.icmp import IcmpParams, IcmpPinger, IcmpPingers, open_icmp_socket, probe_icmp

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")

LATE_MARGIN = 0.05
_CLONE_NEWNET = 0x40000000

SILENT_V4, SILENT_V6 = "10.250.1.2", "fd00:250:1::2"  # frames to them go nowhere
UNRESOLVED_V4, UNRESOLVED_V6 = "10.250.2.2", "fd00:250:2::2"  # neighbour discovery fails fast
NO_ROUTE_V4 = "10.250.3.2"


@pytest.fixture
async def pingers() -> AsyncIterator[IcmpPingers]:
    shared = IcmpPingers()
    yield shared
    shared.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_loopback_replies(pingers: IcmpPingers, address: str) -> None:
    result = await probe_icmp(IcmpParams(address, 1.0), pingers)

    assert result.ok, result.reason
    assert result.reason == "icmp echo reply"
    assert 0 < result.latency < 1.0


async def test_concurrent_probes_share_one_socket_per_family(pingers: IcmpPingers) -> None:
    addresses = ["127.0.0.1", "127.0.0.2", "::1"] * 20

    results = await asyncio.gather(
        *(probe_icmp(IcmpParams(address, 1.0), pingers) for address in addresses)
    )

    assert all(result.ok for result in results), [r.reason for r in results if not r.ok]
    assert set(pingers.by_family) == {socket.AF_INET, socket.AF_INET6}


async def test_two_pingers_take_only_their_own_replies() -> None:
    first, second = IcmpPingers(), IcmpPingers()
    try:
        results = await asyncio.gather(
            *(probe_icmp(IcmpParams("127.0.0.1", 1.0), pingers)
              for pingers in (first, second) for _ in range(10))
        )  # fmt: skip
    finally:
        first.close()
        second.close()

    assert all(result.ok for result in results)


# Inside a network namespace


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"lvsha-icmp-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        # Frames to the silent addresses go to a fixed MAC that the peer drops as not its own.
        _ip("-n", name, "link", "add", "silent0", "type", "veth", "peer", "name", "silent1")
        _ip("-n", name, "addr", "add", "10.250.1.1/24", "dev", "silent0")
        _ip("-n", name, "addr", "add", "fd00:250:1::1/64", "dev", "silent0", "nodad")
        _ip("-n", name, "link", "set", "silent1", "up")
        _ip("-n", name, "link", "set", "silent0", "up")
        for address in (SILENT_V4, SILENT_V6):
            _ip("-n", name, "neigh", "add", address, "lladdr", "02:00:5e:10:00:02",
                "dev", "silent0", "nud", "permanent")  # fmt: skip
        # The peer is up but owns no address, so ARP and neighbour solicitations go unanswered.
        _ip("-n", name, "link", "add", "lonely0", "type", "veth", "peer", "name", "lonely1")
        _ip("-n", name, "addr", "add", "10.250.2.1/24", "dev", "lonely0")
        _ip("-n", name, "addr", "add", "fd00:250:2::1/64", "dev", "lonely0", "nodad")
        for family in ("ipv4", "ipv6"):
            for key, value in (("mcast_solicit", "1"), ("retrans_time_ms", "100")):
                _ip("netns", "exec", name, "sysctl", "-qw",
                    f"net.{family}.neigh.lonely0.{key}={value}")  # fmt: skip
        _ip("-n", name, "link", "set", "lonely1", "up")
        _ip("-n", name, "link", "set", "lonely0", "up")
        _ip("-n", name, "route", "add", "unreachable", "10.250.3.0/24")
        yield name
    finally:
        _ip("netns", "del", name)


def _sockets_inside(namespace: str) -> dict[socket.AddressFamily, socket.socket]:
    """Raw sockets created by a thread that entered `namespace`, so they live there."""
    opened: dict[socket.AddressFamily, socket.socket] = {}
    failures: list[BaseException] = []

    def enter_and_open() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{namespace}", "rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error))
            for family in (socket.AF_INET, socket.AF_INET6):
                opened[family] = open_icmp_socket(family)
        except BaseException as failure:
            failures.append(failure)

    # A thread of its own: it stays in the namespace, so it must not be a pooled one.
    thread = threading.Thread(target=enter_and_open)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
    return opened


@pytest.fixture
async def pingers_inside(namespace: str) -> AsyncIterator[IcmpPingers]:
    sockets = _sockets_inside(namespace)
    shared = IcmpPingers({family: IcmpPinger(sock) for family, sock in sockets.items()})
    yield shared
    shared.close()


@pytest.mark.parametrize("address", [SILENT_V4, SILENT_V6])
async def test_no_reply_fails_at_the_timeout(pingers_inside: IcmpPingers, address: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await probe_icmp(IcmpParams(address, 0.3), pingers_inside)

    elapsed = loop.time() - started
    assert result.reason == "icmp no reply after 0.3 s"
    assert 0.3 <= elapsed < 0.3 + LATE_MARGIN


async def test_the_namespace_itself_replies(pingers_inside: IcmpPingers) -> None:
    result = await probe_icmp(IcmpParams("10.250.1.1", 1.0), pingers_inside)

    assert result.ok, result.reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (UNRESOLVED_V4, "icmp destination unreachable (host)"),
        (UNRESOLVED_V6, "icmp destination unreachable (address)"),
    ],
)
async def test_destination_unreachable_ends_the_probe_early(
    pingers_inside: IcmpPingers, address: str, reason: str
) -> None:
    result = await probe_icmp(IcmpParams(address, 3.0), pingers_inside)

    assert result.reason == reason
    assert result.latency < 2.0


async def test_no_route_fails_at_send(pingers_inside: IcmpPingers) -> None:
    result = await probe_icmp(IcmpParams(NO_ROUTE_V4, 1.0), pingers_inside)

    assert result.reason == "icmp send failed: No route to host"
