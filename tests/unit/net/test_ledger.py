"""The address ledger: what lvsha added survives the process that added it (issue 9, finding 1)."""

from __future__ import annotations

from ipaddress import ip_interface
from pathlib import Path

import pytest

from lvsha.net.addresses import (
    AddressError,
    AssignedAddress,
    MemoryAddresses,
    MemoryInterface,
    VipOutcome,
)
from lvsha.net.ledger import AddressLedger

VIP = ip_interface("192.0.2.100/24")
OTHER = ip_interface("192.0.2.101/24")


def interfaces() -> dict[str, MemoryInterface]:
    return {
        "eth0": MemoryInterface(
            2, "02:00:00:00:00:01", [AssignedAddress(ip_interface("192.0.2.1/24"))]
        )
    }


def on(port: MemoryAddresses) -> list[str]:
    return [str(a.address) for a in port.interfaces["eth0"].addresses]


async def test_an_added_vip_is_in_the_file_before_and_gone_after_removal(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    port = MemoryAddresses(interfaces(), AddressLedger(path))
    assert await port.add_vip("eth0", VIP) == VipOutcome.ADDED
    assert ("eth0", VIP) in AddressLedger(path)  # a fresh reader, as the next process
    assert await port.remove_vip("eth0", VIP) == VipOutcome.REMOVED
    assert ("eth0", VIP) not in AddressLedger(path)


async def test_a_new_process_takes_off_what_a_dead_one_left_and_nothing_else(
    tmp_path: Path,
) -> None:
    path = tmp_path / "addresses.json"
    shared = interfaces()  # the kernel's interfaces outlive the processes
    dead = MemoryAddresses(shared, AddressLedger(path))
    assert await dead.add_vip("eth0", VIP) == VipOutcome.ADDED
    # An operator's address that equals another VIP: never lvsha's.
    shared["eth0"].addresses.append(AssignedAddress(OTHER))
    successor = MemoryAddresses(shared, AddressLedger(path))
    assert await successor.reconcile() == [("eth0", VIP)]
    assert on(successor) == ["192.0.2.1/24", "192.0.2.101/24"]
    assert AddressLedger(path).entries() == frozenset()
    # The operator's address stays when the successor, as master then backup, uses it.
    assert await successor.add_vip("eth0", OTHER) == VipOutcome.NOT_OURS
    assert await successor.remove_vip("eth0", OTHER) == VipOutcome.NOT_OURS
    assert "192.0.2.101/24" in on(successor)


async def test_an_entry_whose_address_is_gone_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    AddressLedger(path).record([("eth0", VIP), ("gone0", OTHER)])
    port = MemoryAddresses(interfaces(), AddressLedger(path))
    assert await port.reconcile() == []
    assert AddressLedger(path).entries() == frozenset()


async def test_an_address_someone_else_holds_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    shared = interfaces()
    shared["eth0"].addresses.append(AssignedAddress(VIP))
    port = MemoryAddresses(shared, AddressLedger(path))
    assert await port.add_vip("eth0", VIP) == VipOutcome.NOT_OURS
    assert AddressLedger(path).entries() == frozenset()


async def test_a_vip_that_cannot_be_recorded_is_not_added_even_as_root(tmp_path: Path) -> None:
    # A directory where the file should be: the write fails whoever we are.
    path = tmp_path / "addresses.json"
    (tmp_path / "addresses.json.new").mkdir()
    port = MemoryAddresses(interfaces(), AddressLedger(path))
    with pytest.raises(AddressError, match="cannot write the address ledger"):
        await port.add_vip("eth0", VIP)
    assert on(port) == ["192.0.2.1/24"]


def test_a_damaged_file_is_reported_and_read_as_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "addresses.json"
    path.write_text(
        '{"format": 1, "addresses": [["eth0", "not an address"], ["eth0", "192.0.2.100/24"]]}'
    )
    assert AddressLedger(path).entries() == frozenset({("eth0", VIP)})
    assert "skipping a damaged entry" in caplog.text
    path.write_text("{{{")
    assert AddressLedger(path).entries() == frozenset()
    assert "is damaged" in caplog.text
