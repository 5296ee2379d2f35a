"""The address port's rules, on the in-memory implementation."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_interface

import pytest

from lvsha.net.addresses import (
    IFA_F_NODAD,
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    AssignedAddress,
    Interface,
    InterfaceNotFoundError,
    MemoryAddresses,
    MemoryInterface,
    VipOutcome,
    pick_primary,
)

MAC = "02:00:00:00:00:01"
VIP4 = ip_interface("192.0.2.10/24")
VIP6 = ip_interface("2001:db8::10/64")


def port() -> MemoryAddresses:
    return MemoryAddresses(
        {
            "eth0": MemoryInterface(
                index=2,
                mac=MAC,
                addresses=[
                    AssignedAddress(ip_interface("192.0.2.1/24")),
                    AssignedAddress(ip_interface("fe80::1/64")),
                ],
            )
        }
    )


def on(addresses: MemoryAddresses, interface: str = "eth0") -> list[str]:
    return [str(a.address) for a in addresses.interfaces[interface].addresses]


async def test_add_and_remove_a_vip() -> None:
    addresses = port()
    assert await addresses.add_vip("eth0", VIP4, label="eth0:vip") == VipOutcome.ADDED
    assert "192.0.2.10/24" in on(addresses)
    assert addresses.added_by_us("eth0") == {VIP4.ip}
    assert await addresses.remove_vip("eth0", VIP4) == VipOutcome.REMOVED
    assert "192.0.2.10/24" not in on(addresses)
    assert addresses.added_by_us("eth0") == set()


async def test_adding_twice_and_removing_twice_succeed() -> None:
    addresses = port()
    assert await addresses.add_vip("eth0", VIP6) == VipOutcome.ADDED
    assert await addresses.add_vip("eth0", VIP6) == VipOutcome.ALREADY_OURS
    assert on(addresses).count("2001:db8::10/64") == 1
    assert await addresses.remove_vip("eth0", VIP6) == VipOutcome.REMOVED
    assert await addresses.remove_vip("eth0", VIP6) == VipOutcome.ABSENT


async def test_an_address_that_was_there_before_is_never_removed() -> None:
    addresses = port()
    addresses.interfaces["eth0"].addresses.append(AssignedAddress(ip_interface("192.0.2.10/32")))
    # Present with another prefix length counts as present: adding would duplicate it.
    assert await addresses.add_vip("eth0", VIP4) == VipOutcome.NOT_OURS
    assert await addresses.remove_vip("eth0", VIP4) == VipOutcome.NOT_OURS
    assert "192.0.2.10/32" in on(addresses)
    assert "192.0.2.10/24" not in on(addresses)


async def test_removing_an_address_someone_else_holds_leaves_it() -> None:
    addresses = port()
    assert await addresses.remove_vip("eth0", ip_interface("192.0.2.1/24")) == VipOutcome.NOT_OURS
    assert "192.0.2.1/24" in on(addresses)


async def test_a_vip_someone_removed_is_absent_and_forgotten() -> None:
    addresses = port()
    await addresses.add_vip("eth0", VIP4)
    addresses.interfaces["eth0"].addresses.pop()
    assert await addresses.remove_vip("eth0", VIP4) == VipOutcome.ABSENT
    assert addresses.added_by_us("eth0") == set()


async def test_ownership_is_per_interface() -> None:
    addresses = port()
    addresses.interfaces["eth1"] = MemoryInterface(3, "02:00:00:00:00:02")
    await addresses.add_vip("eth0", VIP4)
    addresses.interfaces["eth1"].addresses.append(AssignedAddress(VIP4))
    assert await addresses.remove_vip("eth1", VIP4) == VipOutcome.NOT_OURS
    assert on(addresses, "eth1") == ["192.0.2.10/24"]


async def test_ipv6_vips_skip_dad_and_ipv4_vips_in_the_subnet_are_secondary() -> None:
    addresses = port()
    await addresses.add_vip("eth0", VIP4)
    await addresses.add_vip("eth0", VIP6)
    await addresses.add_vip("eth0", ip_interface("198.51.100.7/32"))
    flags = {str(a.address): a.flags for a in addresses.interfaces["eth0"].addresses}
    assert flags["192.0.2.10/24"] & IFA_F_SECONDARY
    assert flags["2001:db8::10/64"] & IFA_F_NODAD
    assert not flags["198.51.100.7/32"] & IFA_F_SECONDARY


async def test_labels_must_name_the_interface() -> None:
    addresses = port()
    with pytest.raises(ValueError, match="eth0:"):
        await addresses.add_vip("eth0", VIP4, label="eth1:vip")
    assert "192.0.2.10/24" not in on(addresses)


async def test_unknown_interfaces_are_named_in_the_error() -> None:
    addresses = port()
    for call in (
        addresses.add_vip("eth9", VIP4),
        addresses.remove_vip("eth9", VIP4),
        addresses.interface("eth9"),
        addresses.primary_address("eth9", 4),
    ):
        with pytest.raises(InterfaceNotFoundError, match="'eth9' does not exist"):
            await call


async def test_interface_lookup() -> None:
    assert await port().interface("eth0") == Interface("eth0", 2, MAC)


async def test_primary_address_skips_our_vips() -> None:
    addresses = MemoryAddresses({"eth0": MemoryInterface(2, MAC)})
    # On an interface without addresses a VIP becomes the primary, but it is not the source.
    await addresses.add_vip("eth0", ip_interface("198.51.100.7/24"))
    assert await addresses.primary_address("eth0", 4) is None
    addresses.interfaces["eth0"].addresses.append(AssignedAddress(ip_interface("192.0.2.1/24")))
    assert await addresses.primary_address("eth0", 4) == IPv4Address("192.0.2.1")


def test_primary_ipv4_is_the_first_non_secondary() -> None:
    assigned = [
        AssignedAddress(ip_interface("192.0.2.5/24"), IFA_F_SECONDARY),
        AssignedAddress(ip_interface("2001:db8::1/64")),
        AssignedAddress(ip_interface("192.0.2.1/24")),
        AssignedAddress(ip_interface("198.51.100.1/24")),
    ]
    assert pick_primary(assigned, 4, ours=()) == IPv4Address("192.0.2.1")
    assert pick_primary(assigned, 4, ours=[IPv4Address("192.0.2.1")]) == IPv4Address("198.51.100.1")


def test_primary_ipv6_is_the_usable_link_local() -> None:
    assigned = [
        AssignedAddress(ip_interface("2001:db8::1/64")),
        AssignedAddress(ip_interface("fe80::2/64"), IFA_F_TENTATIVE),
        AssignedAddress(ip_interface("fe80::3/64")),
    ]
    assert pick_primary(assigned, 6, ours=()) == IPv6Address("fe80::3")
    assert pick_primary(assigned[:2], 6, ours=()) is None
