"""The address ledger: which addresses lvsha has put on which interfaces, kept on disk.

A VRRP process can die at any moment (SIGKILL, a bug, the OOM killer) with VIPs on its
interfaces. The next process must take those off before it acts as a backup, or two directors
answer for one VIP; and it must never take off an address lvsha did not add. Memory dies with
the process, so each address is written here before it is added to the kernel,
and forgotten only after the kernel has let go of it. The ledger therefore always holds at
least what lvsha holds: an entry whose address is absent is harmless and dropped at the next
reconciliation.

The file is JSON, replaced atomically (write, rename), and lives under the run directory, which
is a tmpfs that a reboot clears along with the addresses. It is not fsync'd: it must outlive
the process, not the kernel, and the page cache outlives any process; whatever takes the
kernel down takes the addresses with it. (An fsync cost about 0.4 ms on a disk-backed
directory: most of the takeover budget.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from pathlib import Path
from typing import TypeAlias

log = logging.getLogger(__name__)

VirtualAddress: TypeAlias = IPv4Interface | IPv6Interface
Entry: TypeAlias = tuple[str, VirtualAddress]
"""(interface, address with prefix length)."""

LEDGER_FILE = "addresses.json"
_FORMAT = 1


class LedgerError(OSError):
    """The ledger cannot be written: lvsha must not add an address it could not record."""


class AddressLedger:
    """The set of (interface, address) pairs lvsha added; `path` None keeps it in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: set[Entry] = set()
        self._loaded = False

    def entries(self) -> frozenset[Entry]:
        self._load_once()
        return frozenset(self._entries)

    def __contains__(self, entry: Entry) -> bool:
        self._load_once()
        return entry in self._entries

    def record(self, entries: Iterable[Entry]) -> None:
        """Remember `entries` before they are added; one write for all of them.
        Raises LedgerError when the file cannot be written (nothing is remembered then)."""
        self._load_once()
        new = set(entries) - self._entries
        if new:
            self._write(self._entries | new)
            self._entries |= new

    def forget(self, entries: Iterable[Entry]) -> None:
        """Drop `entries` once the kernel no longer has them. A failed write is logged: an
        entry kept too long only makes the next reconciliation look for an absent address."""
        self._load_once()
        gone = set(entries) & self._entries
        if gone:
            self._entries -= gone
            try:
                self._write(self._entries)
            except LedgerError as exc:
                log.error("%s", exc)

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            log.error(
                "cannot read the address ledger %s: %s; starting an empty one", self.path, exc
            )
            return
        self._entries = set(_parse(text, self.path))

    def _write(self, entries: set[Entry]) -> None:
        if self.path is None:
            return
        body = {
            "format": _FORMAT,
            "addresses": sorted([interface, str(address)] for interface, address in entries),
        }
        temporary = self.path.with_name(self.path.name + ".new")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps(body).encode())
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise LedgerError(
                exc.errno, f"cannot write the address ledger {self.path}: {exc.strerror or exc}"
            ) from None


def _parse(text: str, path: Path) -> list[Entry]:
    """The entries of a ledger file; a damaged file or entry is logged and skipped."""
    try:
        body = json.loads(text)
        rows = body["addresses"] if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise ValueError("no list of addresses")
    except (ValueError, KeyError, RecursionError) as exc:
        log.error("address ledger %s is damaged (%s): ignoring it", path, exc)
        return []
    found: list[Entry] = []
    for row in rows:
        try:
            interface, address = row
            if not isinstance(interface, str) or not isinstance(address, str):
                raise ValueError(row)
            found.append((interface, ip_interface(address)))
        except (TypeError, ValueError):
            log.error("address ledger %s: skipping a damaged entry %r", path, row)
    return found
