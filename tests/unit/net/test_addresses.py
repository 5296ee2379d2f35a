"""The address port's rules, on the in-memory implementation."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_interface
from pathlib import Path
from typing import Any

import pytest

from lvsha.net.addresses import (
    IFA_F_NODAD,
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    AddressError,
    AssignedAddress,
    Interface,
    InterfaceNotFoundError,
    MemoryAddresses,
    MemoryInterface,
    VipOutcome,
    pick_primary,
)
from lvsha.net.ledger import AddressLedger
from lvsha.net.rtnl import AddressRequest

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


# The takeover path: many VIPs in one exchange with the kernel, without looking first.


class CountingAddresses(MemoryAddresses):
    """Counts exchanges with the "kernel" and ledger writes; can fail an exchange."""

    def __init__(self, ledger: AddressLedger, fail: OSError | None = None) -> None:
        super().__init__(port().interfaces, ledger)
        self.exchanges = 0
        self.fail = fail

    def _exchange(self, requests: Sequence[AddressRequest]) -> list[int]:
        self.exchanges += 1
        if self.fail is not None:
            raise self.fail
        return super()._exchange(requests)


class CountingLedger(AddressLedger):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes = 0

    def _append(self, sign: str, entries: set[tuple[str, Any]]) -> None:
        self.writes += 1
        super()._append(sign, entries)


VIPS = [ip_interface(f"192.0.2.{n}/24") for n in range(100, 120)]


def test_twenty_vips_go_on_in_one_exchange_and_one_ledger_write(tmp_path: Path) -> None:
    ledger = CountingLedger(tmp_path / "addresses.json")
    addresses = CountingAddresses(ledger)
    results = addresses.add_vips([("eth0", vip, None) for vip in VIPS])
    assert results == [VipOutcome.ADDED] * 20
    assert (addresses.exchanges, ledger.writes) == (1, 1)
    assert set(AddressLedger(ledger.path).entries()) == {("eth0", vip) for vip in VIPS}
    assert (
        addresses.add_vips([("eth0", vip, None) for vip in VIPS]) == [VipOutcome.ALREADY_OURS] * 20
    )
    assert ledger.writes == 1  # nothing new to write down
    removed = addresses.remove_vips([("eth0", vip) for vip in VIPS])
    assert removed == [VipOutcome.REMOVED] * 20
    assert (addresses.exchanges, ledger.writes) == (3, 2)
    assert AddressLedger(ledger.path).entries() == frozenset()


def test_a_batch_says_what_became_of_each_vip(tmp_path: Path) -> None:
    addresses = CountingAddresses(AddressLedger(tmp_path / "addresses.json"))
    addresses.interfaces["eth0"].addresses.append(AssignedAddress(ip_interface("192.0.2.101/24")))
    results = addresses.add_vips(
        [("eth0", VIPS[0], None), ("eth0", VIPS[1], None), ("eth9", VIPS[2], None)]
    )
    assert results[0] is VipOutcome.ADDED
    assert results[1] is VipOutcome.NOT_OURS  # the operator's: the kernel said EEXIST
    assert isinstance(results[2], InterfaceNotFoundError)
    assert addresses.ledger.entries() == {("eth0", VIPS[0])}
    removed = addresses.remove_vips([("eth0", VIPS[0]), ("eth0", VIPS[1])])
    assert removed == [VipOutcome.REMOVED, None]  # not ours: remove_vip looks, then leaves it
    assert "192.0.2.101/24" in on(addresses)


def test_a_failed_exchange_fails_every_vip_and_forgets_them(tmp_path: Path) -> None:
    addresses = CountingAddresses(
        AddressLedger(tmp_path / "addresses.json"), OSError(errno.ENOBUFS, "No buffer space")
    )
    results = addresses.add_vips([("eth0", vip, None) for vip in VIPS[:2]])
    assert all(isinstance(r, AddressError) and "No buffer space" in str(r) for r in results)
    assert addresses.ledger.entries() == frozenset()
    assert addresses.added_by_us("eth0") == frozenset()


def test_a_vip_that_vanished_behind_our_back_is_added_again(tmp_path: Path) -> None:
    addresses = CountingAddresses(AddressLedger(tmp_path / "addresses.json"))
    addresses.add_vips([("eth0", VIP4, None)])
    addresses.interfaces["eth0"].addresses.pop()  # `ip addr del` by hand
    assert addresses.add_vips([("eth0", VIP4, None)]) == [VipOutcome.ADDED]
    assert addresses.remove_vips([("eth0", VIP4)]) == [VipOutcome.REMOVED]
    addresses.add_vips([("eth0", VIP4, None)])
    addresses.interfaces["eth0"].addresses.pop()
    assert addresses.remove_vips([("eth0", VIP4)]) == [VipOutcome.ABSENT]
    assert addresses.ledger.entries() == frozenset()


async def test_an_ipv4_address_there_under_another_prefix_length_is_given_back(
    tmp_path: Path,
) -> None:
    # An exclusive add only sees the same address with the same prefix length; the check
    # after the frames are out finds the operator's /32 and takes our /24 off again.
    addresses = CountingAddresses(AddressLedger(tmp_path / "addresses.json"))
    addresses.interfaces["eth0"].addresses.append(AssignedAddress(ip_interface("192.0.2.10/32")))
    assert addresses.add_vips([("eth0", VIP4, None), ("eth0", VIPS[0], None)]) == [
        VipOutcome.ADDED,
        VipOutcome.ADDED,
    ]
    disowned = await addresses.disown_duplicates([("eth0", VIP4), ("eth0", VIPS[0])])
    assert disowned == [("eth0", VIP4)]
    assert "192.0.2.10/32" in on(addresses) and "192.0.2.10/24" not in on(addresses)
    assert addresses.added_by_us("eth0") == {VIPS[0].ip}
    assert addresses.ledger.entries() == {("eth0", VIPS[0])}
