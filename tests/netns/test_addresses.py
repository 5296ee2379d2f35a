"""NetlinkAddresses on a real interface, checked with `ip addr`."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, TypeVar

import pytest

from lvsha.drill.lab import Host, Lab
from lvsha.net.addresses import (
    InterfaceNotFoundError,
    NetlinkAddresses,
    VipAttributes,
    VipOutcome,
)

pytestmark = pytest.mark.netns
T = TypeVar("T")

VIP4 = IPv4Interface("192.0.2.10/24")
VIP6 = IPv6Interface("2001:db8::10/64")


def run_in(host: Host, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run `scenario` on an event loop in a thread inside `host`'s namespace."""

    async def main() -> T:
        return await scenario()

    return host.call(lambda: asyncio.run(main()))


def addresses_on(host: Host, interface: str = "eth0") -> dict[str, dict[str, Any]]:
    """`ip -j addr show` as {"address/prefix": entry}."""
    (link,) = json.loads(host.ip("-j", "addr", "show", "dev", interface))
    return {f"{a['local']}/{a['prefixlen']}": a for a in link["addr_info"]}


def test_add_and_remove_vips(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            assert await port.add_vip("eth0", VIP4, label="eth0:vip") == VipOutcome.ADDED
            assert await port.add_vip("eth0", VIP6) == VipOutcome.ADDED
            present = addresses_on(a)
            assert present["192.0.2.10/24"]["label"] == "eth0:vip"
            assert present["192.0.2.10/24"].get("secondary") is True
            assert "2001:db8::10/64" in present

            assert await port.add_vip("eth0", VIP4, label="eth0:vip") == VipOutcome.ALREADY_OURS
            assert await port.add_vip("eth0", VIP6) == VipOutcome.ALREADY_OURS

            assert await port.remove_vip("eth0", VIP4) == VipOutcome.REMOVED
            assert await port.remove_vip("eth0", VIP6) == VipOutcome.REMOVED
            present = addresses_on(a)
            assert "192.0.2.10/24" not in present
            assert "2001:db8::10/64" not in present
            assert {"192.0.2.1/24", "2001:db8::1/64"} <= present.keys()

            assert await port.remove_vip("eth0", VIP4) == VipOutcome.ABSENT
            assert await port.remove_vip("eth0", VIP6) == VipOutcome.ABSENT

    run_in(a, scenario)


def test_an_address_added_by_hand_is_never_removed(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    a.ip("addr", "add", "192.0.2.10/24", "dev", "eth0")
    a.ip("-6", "addr", "add", "2001:db8::10/128", "dev", "eth0", "nodad")

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            assert await port.add_vip("eth0", VIP4) == VipOutcome.NOT_OURS
            assert await port.add_vip("eth0", VIP6) == VipOutcome.NOT_OURS
            assert await port.remove_vip("eth0", VIP4) == VipOutcome.NOT_OURS
            assert await port.remove_vip("eth0", VIP6) == VipOutcome.NOT_OURS
            # The operator's own address is not lvsha's either.
            address = IPv4Interface("192.0.2.1/24")
            assert await port.remove_vip("eth0", address) == VipOutcome.NOT_OURS

    run_in(a, scenario)
    assert {"192.0.2.1/24", "192.0.2.10/24", "2001:db8::10/128"} <= addresses_on(a).keys()


def test_ipv6_vip_is_usable_at_once(lab: Lab) -> None:
    a = lab.add_host("a", "2001:db8::1/64")

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            await port.add_vip("eth0", VIP6)
            # A tentative address cannot be bound to: this fails unless DAD was skipped.
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
                sock.bind(("2001:db8::10", 0))

    run_in(a, scenario)
    entry = addresses_on(a)["2001:db8::10/64"]
    assert entry.get("nodad") is True
    assert not entry.get("tentative")


def test_interface_and_primary_addresses(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    (link,) = json.loads(a.ip("-j", "link", "show", "dev", "eth0"))

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            interface = await port.interface("eth0")
            assert (interface.index, interface.mac) == (link["ifindex"], link["address"])

            # A VIP from another subnet becomes a primary address in the kernel's eyes.
            await port.add_vip("eth0", IPv4Interface("198.51.100.7/24"))
            assert await port.primary_address("eth0", 4) == IPv4Address("192.0.2.1")

            # The link-local address counts once duplicate address detection is over.
            link_local = None
            for _ in range(500):
                link_local = await port.primary_address("eth0", 6)
                if link_local is not None:
                    break
                await asyncio.sleep(0.01)
            assert isinstance(link_local, IPv6Address)
            assert link_local.is_link_local
            assert addresses_on(a)[f"{link_local}/64"].get("tentative") is None

            assert await port.primary_address("lo", 6) is None

    run_in(a, scenario)


def test_missing_interface_is_named(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            with pytest.raises(InterfaceNotFoundError, match="'eth7' does not exist"):
                await port.add_vip("eth7", VIP4)
            with pytest.raises(InterfaceNotFoundError, match="'eth7'"):
                await port.interface("eth7")

    run_in(a, scenario)


def test_a_batch_of_vips_goes_on_and_off_in_one_exchange(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    a.ip("addr", "add", "192.0.2.30/24", "dev", "eth0")  # the operator's, same prefix length
    a.ip("addr", "add", "192.0.2.31/32", "dev", "eth0")  # the operator's, another one
    vips = [IPv4Interface(f"192.0.2.{n}/24") for n in range(10, 30)] + [VIP6]
    theirs = [IPv4Interface("192.0.2.30/24"), IPv4Interface("192.0.2.31/24")]

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            results = port.add_vips([("eth0", vip, None) for vip in [*vips, *theirs]])
            assert results == [VipOutcome.ADDED] * 21 + [VipOutcome.NOT_OURS, VipOutcome.ADDED]
            present = addresses_on(a)
            assert {str(vip) for vip in vips} <= present.keys()
            assert present["2001:db8::10/64"].get("nodad") is True
            assert port.add_vips([("eth0", VIP6, None)]) == [VipOutcome.ALREADY_OURS]
            # 192.0.2.31 was there as a /32: the kernel took our /24 too; the check after the
            # announcements gives it back.
            assert await port.disown_duplicates([("eth0", theirs[1])]) == [("eth0", theirs[1])]
            assert "192.0.2.31/24" not in addresses_on(a)
            removed = port.remove_vips([("eth0", vip) for vip in [*vips, *theirs]])
            assert removed == [VipOutcome.REMOVED] * 21 + [None, None]
            assert port.remove_vips([("eth0", VIP6)]) == [None]  # forgotten: not ours any more
            [missing] = port.add_vips([("eth7", VIP6, None)])
            assert isinstance(missing, InterfaceNotFoundError)

    run_in(a, scenario)
    present = addresses_on(a)
    assert not {str(vip) for vip in vips} & present.keys()
    assert {"192.0.2.30/24", "192.0.2.31/32", "192.0.2.1/24"} <= present.keys()


def test_broadcast_scope_and_label_and_an_address_corrected(lab: Lab) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    # In its own subnet: the kernel refuses a secondary address whose scope differs from its
    # primary's (EINVAL), as it would keepalived's.
    vip = IPv4Interface("198.51.100.10/24")
    attributes = VipAttributes("eth0:vip", IPv4Address("198.51.100.255"), 253)

    async def scenario() -> None:
        async with NetlinkAddresses() as port:
            assert await port.add_vip("eth0", vip, attributes) == VipOutcome.ADDED
            shown = addresses_on(a)["198.51.100.10/24"]
            assert (shown["broadcast"], shown["scope"], shown["label"]) == (
                "198.51.100.255",
                "link",
                "eth0:vip",
            )
            assert await port.add_vip("eth0", vip, attributes) == VipOutcome.ALREADY_OURS
            # Ours under other attributes: taken off and added again as asked now.
            plain = VipAttributes(scope=254)
            assert await port.add_vip("eth0", vip, plain) == VipOutcome.ADDED
            shown = addresses_on(a)["198.51.100.10/24"]
            assert (shown.get("broadcast"), shown["scope"], shown["label"]) == (
                None,
                "host",
                "eth0",
            )
            wider = IPv4Interface("198.51.100.10/16")
            assert await port.add_vip("eth0", wider, plain) == VipOutcome.ADDED
            present = addresses_on(a)
            assert "198.51.100.10/16" in present and "198.51.100.10/24" not in present
            assert await port.remove_vip("eth0", wider) == VipOutcome.REMOVED
            assert port.ledger.entries() == frozenset()

    run_in(a, scenario)
