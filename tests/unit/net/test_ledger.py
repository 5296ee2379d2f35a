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
    path.mkdir()
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


def test_changes_are_appended_and_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    ledger = AddressLedger(path)
    ledger.record([("eth0", VIP), ("eth0", OTHER)])
    ledger.forget([("eth0", VIP)])
    ledger.record([("eth1", VIP)])
    lines = path.read_text().splitlines()
    assert lines[0] == '{"format": 2, "addresses": []}'
    assert lines[1:] == [
        '["+", "eth0", "192.0.2.100/24"]',
        '["+", "eth0", "192.0.2.101/24"]',
        '["-", "eth0", "192.0.2.100/24"]',
        '["+", "eth1", "192.0.2.100/24"]',
    ]
    assert AddressLedger(path).entries() == {("eth0", OTHER), ("eth1", VIP)}
    ledger.close()


def test_a_line_cut_short_by_a_crash_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The process died inside the append: that address was never added.
    path = tmp_path / "addresses.json"
    path.write_text(
        '{"format": 2, "addresses": [["eth0", "192.0.2.100/24"]]}\n["+", "eth0", "192.0'
    )
    assert AddressLedger(path).entries() == {("eth0", VIP)}
    assert "damaged" not in caplog.text


def test_a_format_1_file_is_read(tmp_path: Path) -> None:
    # What lvsha wrote before the ledger was appended to: one JSON object, no newline.
    path = tmp_path / "addresses.json"
    path.write_text('{"format": 1, "addresses": [["eth0", "192.0.2.100/24"]]}')
    ledger = AddressLedger(path)
    assert ledger.entries() == {("eth0", VIP)}
    ledger.record([("eth0", OTHER)])
    assert AddressLedger(path).entries() == {("eth0", VIP), ("eth0", OTHER)}
    ledger.close()


def test_the_file_is_rewritten_once_changes_pile_up(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    ledger = AddressLedger(path)
    for _ in range(600):
        ledger.record([("eth0", VIP)])
        ledger.forget([("eth0", VIP)])
    ledger.record([("eth0", OTHER)])
    assert len(path.read_text().splitlines()) < 200
    assert AddressLedger(path).entries() == {("eth0", OTHER)}
    ledger.close()
