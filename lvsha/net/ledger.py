"""The address ledger: which addresses lvsha has put on which interfaces, kept on disk.

A VRRP process can die at any moment (SIGKILL, a bug, the OOM killer) with VIPs on its
interfaces. The next process must take those off before it acts as a backup, or two directors
answer for one VIP; and it must never take off an address lvsha did not add. Memory dies with
the process, so each address is written here before it is added to the kernel, and forgotten
only after the kernel has let go of it. The ledger therefore always holds at least what lvsha
holds: an entry whose address is absent is harmless and dropped at the next reconciliation.

The file is JSON Lines, appended to: a snapshot line (`{"format": 2, "addresses": [...]}`,
which is also the whole of a format-1 file) and then one line per change (`["+", "eth0",
"192.0.2.10/24"]`, `["-", ...]`). A takeover costs one append, a few microseconds, where
rewriting and renaming the file cost up to a millisecond on a disk-backed run directory. A
line cut short by a crash is the last one, written before its address was added: ignored.
The file is rewritten as one snapshot (temporary file, rename) when it is first opened and
when changes pile up. It is not fsync'd: it must outlive the process, not the kernel, and the
page cache outlives any process; whatever takes the kernel down takes the addresses with it.
It lives under the run directory, a tmpfs that a reboot clears along with the addresses.
"""

from __future__ import annotations

import contextlib
import errno
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
_FORMAT = 2
_COMPACT_AFTER = 1024
"""Change lines after which the file is rewritten as one snapshot."""


class LedgerError(OSError):
    """The ledger cannot be written: lvsha must not add an address it could not record."""


class AddressLedger:
    """The set of (interface, address) pairs lvsha added; `path` None keeps it in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: set[Entry] = set()
        self._loaded = False
        self._fd: int | None = None
        self._changes = 0
        self._lines: dict[tuple[str, Entry], bytes] = {}
        """Change lines built ahead (`prepare`), so a takeover only writes."""

    def entries(self) -> frozenset[Entry]:
        self._load_once()
        return frozenset(self._entries)

    def __contains__(self, entry: Entry) -> bool:
        self._load_once()
        return entry in self._entries

    def record(self, entries: Iterable[Entry]) -> None:
        """Remember `entries` before they are added; one append for all of them.
        Raises LedgerError when the file cannot be written (nothing is remembered then)."""
        self._load_once()
        new = set(entries) - self._entries
        if new:
            self._append("+", new)
            self._entries |= new

    def forget(self, entries: Iterable[Entry]) -> None:
        """Drop `entries` once the kernel no longer has them. A failed write is logged: an
        entry kept too long only makes the next reconciliation look for an absent address."""
        self._load_once()
        gone = set(entries) & self._entries
        if gone:
            self._entries -= gone
            try:
                self._append("-", gone)
                if self._changes > _COMPACT_AFTER:
                    self._compact()
            except LedgerError as exc:
                log.error("%s", exc.strerror)

    def open(self) -> None:
        """Read the file and start it afresh as one snapshot, ready to append to: done at
        start-up, so that the first takeover only appends. Only the process that owns the
        ledger may call this (a reader that rewrote the file would cut off the writer's
        appends). Raises LedgerError."""
        self._load_once()
        if self.path is not None and self._fd is None:
            self._compact()

    def prepare(self, entries: Iterable[Entry]) -> None:
        """Build the lines that record and forget `entries`, ahead of the takeover."""
        for entry in entries:
            for sign in "+-":
                self._line(sign, entry)

    def _line(self, sign: str, entry: Entry) -> bytes:
        line = self._lines.get((sign, entry))
        if line is None:
            if len(self._lines) > 4096:
                self._lines.clear()
            interface, address = entry
            line = self._lines[sign, entry] = (
                json.dumps([sign, interface, str(address)]) + "\n"
            ).encode()
        return line

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        self._entries = _parse(text, self.path)

    def _append(self, sign: str, entries: set[Entry]) -> None:
        if self.path is None:
            return
        if self._fd is None:
            self._compact()  # a fresh start: one snapshot line, then the changes
        assert self._fd is not None
        data = b"".join(self._line(sign, entry) for entry in sorted(entries, key=str))
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes")
        except OSError as exc:
            # A torn line is skipped when read back; start over from a snapshot next time.
            self.close()
            raise LedgerError(
                exc.errno, f"cannot write the address ledger {self.path}: {exc.strerror or exc}"
            ) from None
        self._changes += len(entries)

    def _compact(self) -> None:
        """Rewrite the file as one snapshot of what is recorded now, and append from there."""
        assert self.path is not None
        body = {
            "format": _FORMAT,
            "addresses": sorted([interface, str(address)] for interface, address in self._entries),
        }
        temporary = self.path.with_name(self.path.name + ".new")
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, (json.dumps(body) + "\n").encode())
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise LedgerError(
                exc.errno, f"cannot write the address ledger {self.path}: {exc.strerror or exc}"
            ) from None
        self._changes = 0


def _parse(text: str, path: Path) -> set[Entry]:
    """The entries a ledger file leaves recorded; damaged lines are logged and skipped."""
    entries: set[Entry] = set()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines and len(lines) > 1:
        lines.pop()  # cut short by a crash: written before its address was added, if ever
    for number, line in enumerate(lines, 1):
        try:
            body = json.loads(line)
        except (ValueError, RecursionError) as exc:
            log.error(
                "address ledger %s is damaged at line %d (%s): skipping it", path, number, exc
            )
            continue
        if isinstance(body, dict):
            rows = body.get("addresses")
            if not isinstance(rows, list):
                log.error(
                    "address ledger %s is damaged at line %d: no list of addresses", path, number
                )
                continue
            entries = set()
            for row in rows:
                entry = _entry(row)
                if entry is None:
                    log.error("address ledger %s: skipping a damaged entry %r", path, row)
                else:
                    entries.add(entry)
        elif isinstance(body, list) and len(body) == 3 and body[0] in ("+", "-"):
            entry = _entry(body[1:])
            if entry is None:
                log.error("address ledger %s: skipping a damaged entry %r", path, body)
            elif body[0] == "+":
                entries.add(entry)
            else:
                entries.discard(entry)
        else:
            log.error("address ledger %s: skipping a damaged entry %r", path, body)
    return entries


def _entry(row: object) -> Entry | None:
    if not isinstance(row, list) or len(row) != 2:
        return None
    interface, address = row
    if not isinstance(interface, str) or not isinstance(address, str):
        return None
    try:
        return interface, ip_interface(address)
    except ValueError:
        return None
