"""LinkMonitor against real link changes in a namespace."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.net.links import LinkChanged, LinkMonitor

pytestmark = pytest.mark.netns
T = TypeVar("T")


def run_in(host: Host, scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()

    return host.call(lambda: asyncio.run(main()))


async def next_change(monitor: LinkMonitor) -> LinkChanged:
    return await asyncio.wait_for(anext(monitor), timeout=5)


def test_initial_state_then_cable_cut_and_restored(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")

    async def scenario() -> None:
        async with LinkMonitor(["eth0", "lo", "eth9"]) as monitor:
            assert monitor.states == {"eth0": True, "lo": True, "eth9": False}
            a.link_up(False)
            assert await next_change(monitor) == LinkChanged("eth0", False)
            assert monitor.states["eth0"] is False
            a.link_up(True)
            assert await next_change(monitor) == LinkChanged("eth0", True)

    run_in(a, scenario)


def test_cable_already_cut_at_start(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    a.link_up(False)

    async def scenario() -> None:
        async with LinkMonitor(["eth0"]) as monitor:
            assert monitor.states == {"eth0": False}
            a.link_up(True)
            assert await next_change(monitor) == LinkChanged("eth0", True)

    run_in(a, scenario)


def test_interface_set_down_and_up(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")

    async def scenario() -> None:
        async with LinkMonitor(["eth0"]) as monitor:
            # Link messages that change nothing we watch are not reported.
            a.ip("link", "set", "eth0", "mtu", "1400")
            a.ip("link", "set", "eth0", "down")
            assert await next_change(monitor) == LinkChanged("eth0", False)
            a.ip("link", "set", "eth0", "up")
            assert await next_change(monitor) == LinkChanged("eth0", True)

    run_in(a, scenario)


def test_interface_created_and_deleted(lab: Lab) -> None:
    a = lab.add_host("a")

    async def scenario() -> None:
        async with LinkMonitor(["vip0"]) as monitor:
            assert monitor.states == {"vip0": False}
            a.ip("link", "add", "vip0", "type", "veth", "peer", "name", "vip0p")
            a.ip("link", "set", "vip0p", "up")
            a.ip("link", "set", "vip0", "up")
            assert await next_change(monitor) == LinkChanged("vip0", True)
            a.ip("link", "del", "vip0")
            assert await next_change(monitor) == LinkChanged("vip0", False)

    run_in(a, scenario)


def test_a_bridge_port_leaving_its_bridge_is_not_a_deleted_link(lab: Lab) -> None:
    a = lab.add_host("a")
    a.ip("link", "add", "br9", "type", "bridge")
    a.ip("link", "add", "port9", "type", "veth", "peer", "name", "peer9")
    a.ip("link", "set", "peer9", "up")
    a.ip("link", "set", "port9", "master", "br9", "up")

    async def scenario() -> None:
        async with LinkMonitor(["port9", "mark0"]) as monitor:
            assert monitor.states == {"port9": True, "mark0": False}
            a.ip("link", "set", "port9", "nomaster")  # RTM_DELLINK, family AF_BRIDGE
            a.ip("link", "add", "mark0", "type", "veth", "peer", "name", "mark0p")
            a.ip("link", "set", "mark0p", "up")
            a.ip("link", "set", "mark0", "up")
            # Had the bridge message counted as a deletion, port9 going down came first.
            assert await next_change(monitor) == LinkChanged("mark0", True)
            assert monitor.states == {"port9": True, "mark0": True}

    run_in(a, scenario)


def test_lost_notifications_are_recovered_from_a_fresh_dump(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")

    async def scenario() -> None:
        async with LinkMonitor(["eth0"]) as monitor:
            # The smallest receive buffer the kernel allows holds only a few link messages.
            netlink = monitor._socket
            assert netlink is not None
            netlink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            # The event loop is blocked while these run, so nothing drains the socket.
            for mtu in range(1300, 1340):
                a.ip("link", "set", "eth0", "mtu", str(mtu))
            a.link_up(False)
            wait_until(lambda: "NO-CARRIER" in a.ip("link", "show", "eth0"), 5, what="carrier")
            assert await next_change(monitor) == LinkChanged("eth0", False)
            a.link_up(True)
            assert await next_change(monitor) == LinkChanged("eth0", True)

    run_in(a, scenario)
