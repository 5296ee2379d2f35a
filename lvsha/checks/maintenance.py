"""Drain real servers without a reload: one file per drained server in a maintenance directory.

The directory (default /run/lvsha/maintenance) is listed every second. A file whose name selects
real servers keeps them Disabled (drained: weight 0, established connections finish) for as long
as it exists; removing it puts them back under their checks. File names:

    <address>                  every real server at this address, in every virtual server
    <address>_<port>           the real server address:port, in every virtual server
    <vs name>_<address>        ... only in the virtual server with this `name`
    <vs name>_<address>_<port>

The address is written as in the configuration, IPv6 without brackets (2001:db8::21_443);
any spelling of the same address matches. A virtual server name may itself contain "_": the name
is read from the right, as the address never contains "_". Names starting with "." (editor and
temporary files) are ignored; a name that selects nothing is logged once.

The first non-empty line of the file, if any, is logged as the reason, with the file's owner:
    echo "disk replacement, ticket 4711" > /run/lvsha/maintenance/192.0.2.21_80

Only regular files count. Anything else (a FIFO, a directory, a socket, a device, a symbolic
link, even to a regular file) is ignored and logged once: opening a FIFO waits for a writer,
and a link could make lvsha log the first line of any file. The listing, the matching and the
reading run in a worker thread, never in the event loop, and a directory of more than
`MAX_ENTRIES` entries is not read at all (what is drained stays drained).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import pwd
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lvsha.checks.state import CheckTransitionError
from lvsha.checks.verdict import RealServerId

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path("/run/lvsha/maintenance")
DEFAULT_POLL_INTERVAL = 1.0
MAX_ENTRIES = 10_000
"""A maintenance directory with more entries is not read (listing and matching cost)."""
_REASON_CHARS = 200
_REASON_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Selector:
    """The real servers one maintenance file name stands for."""

    address: str
    port: int | None = None
    virtual_server_name: str | None = None

    def matches(self, real_server: RealServerId) -> bool:
        return (
            real_server.address == self.address
            and (self.port is None or real_server.port == self.port)
            and (
                self.virtual_server_name is None
                or real_server.virtual_server_name == self.virtual_server_name
            )
        )


def parse_file_name(name: str) -> Selector | None:
    """The selector a file name spells, or None if it spells none."""
    parts = name.split("_")
    port: int | None = None
    if len(parts) > 1 and parts[-1].isascii() and parts[-1].isdigit():
        port = int(parts.pop())
        if not 0 <= port <= 65535:
            return None
    try:
        address = str(ipaddress.ip_address(parts.pop()))
    except ValueError:
        return None
    vs_name = "_".join(parts) or None
    return Selector(address, port, vs_name)


def drained_by(
    names: Iterable[str], real_servers: Iterable[RealServerId]
) -> tuple[dict[RealServerId, str], list[str]]:
    """(each real server a file drains -> the first such file name, names that select nothing)."""
    # By address: thousands of names against thousands of servers stay linear.
    by_address: dict[str, list[RealServerId]] = {}
    for real_server in real_servers:
        by_address.setdefault(real_server.address, []).append(real_server)
    drained: dict[RealServerId, str] = {}
    unmatched: list[str] = []
    for name in sorted(names):
        if name.startswith("."):
            continue
        selector = parse_file_name(name)
        candidates = [] if selector is None else by_address.get(selector.address, [])
        matched = [rs for rs in candidates if selector is not None and selector.matches(rs)]
        if not matched:
            unmatched.append(name)
        for real_server in matched:
            drained.setdefault(real_server, name)
    return drained, unmatched


class Drainable(Protocol):
    """What the watcher needs of the check pool."""

    @property
    def real_servers(self) -> tuple[RealServerId, ...]: ...

    def disable(self, real_server: RealServerId, reason: str) -> None: ...

    def enable(self, real_server: RealServerId, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Listing:
    """What one look at the maintenance directory found (see `scan_directory`)."""

    files: frozenset[str] = frozenset()
    """Names of the regular files, "." names included."""
    ignored: Mapping[str, str] = field(default_factory=dict)
    """Names of entries that are not regular files -> what they are ("a FIFO", ...)."""
    missing: bool = False
    error: str | None = None
    """Why the directory could not be read; then nothing else is known."""


def scan_directory(directory: Path, max_entries: int = MAX_ENTRIES) -> Listing:
    """List `directory`'s regular files; blocking file system work, for a worker thread.

    Entries are told apart by `lstat` only (scandir's d_type, or a stat that never follows a
    link): nothing is opened.
    """
    files: set[str] = set()
    ignored: dict[str, str] = {}
    try:
        with os.scandir(directory) as entries:
            for count, entry in enumerate(entries, 1):
                if count > max_entries:
                    return Listing(
                        error=f"more than {max_entries} entries: not read until there are fewer"
                    )
                if entry.is_file(follow_symlinks=False):
                    files.add(entry.name)
                elif not entry.name.startswith("."):
                    ignored[entry.name] = _kind(entry)
    except FileNotFoundError:
        return Listing(missing=True)
    except OSError as error:
        return Listing(error=error.strerror or str(error))
    return Listing(frozenset(files), ignored)


def _kind(entry: os.DirEntry[str]) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "gone or unreadable"
    for test, kind in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def describe_file(path: Path) -> str:
    """The drain reason a maintenance file gives: its owner and first non-empty line.

    Blocking, for a worker thread. Opened without following links and without waiting (a FIFO
    put in place of the file since it was listed opens at once), checked to be a regular file
    before anything is read, and read up to `_REASON_BYTES`.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as error:
        return f"maintenance file {path} ({error.strerror or error})"
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return f"maintenance file {path} (not a regular file: not read)"
        head = os.read(fd, _REASON_BYTES).decode("utf-8", errors="replace")
    except OSError as error:
        return f"maintenance file {path} ({error.strerror or error})"
    finally:
        os.close(fd)
    owner = _user_name(status.st_uid)
    note = next((line.strip() for line in head.splitlines() if line.strip()), "")
    if len(note) > _REASON_CHARS:
        note = note[:_REASON_CHARS] + "..."
    return f"maintenance file {path} (owner {owner})" + (f": {note}" if note else "")


@dataclass(frozen=True, slots=True)
class _Look:
    """A listing matched against the pool's real servers."""

    listing: Listing
    wanted: dict[RealServerId, str]
    unmatched: list[str]


def _look(directory: Path, real_servers: tuple[RealServerId, ...], max_entries: int) -> _Look:
    # Matching runs with the listing in the thread: thousands of names are milliseconds of CPU.
    listing = scan_directory(directory, max_entries)
    wanted, unmatched = drained_by(listing.files, real_servers)
    return _Look(listing, wanted, unmatched)


def _describe_all(directory: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: describe_file(directory / name) for name in names}


class MaintenanceWatcher:
    """Applies the maintenance directory to a pool: `run()` every interval from the event loop
    (the file system work in a thread), or `poll()` once, synchronously, outside any loop.

    A reload changes the pool's real servers: it does so inside `paused()`, and refreshes
    before the new real servers reach IPVS, so one a file selects enters drained. A drained
    real server the reload removed is undrained (its file no longer selects a configured
    server); if it comes back, the refresh drains it again.
    """

    def __init__(
        self,
        pool: Drainable,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        interval: float = DEFAULT_POLL_INTERVAL,
        max_entries: int = MAX_ENTRIES,
    ):
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._pool = pool
        self.directory = Path(directory)
        self.interval = interval
        self.max_entries = max_entries
        self._applied: dict[RealServerId, str] = {}
        """Real servers this watcher drained, and the file that did it."""
        self._already_disabled: set[RealServerId] = set()
        """Selected by a file but disabled by someone else first: logged once."""
        self._unmatched: set[str] = set()
        """Present names that select nothing, already logged."""
        self._ignored: set[str] = set()
        """Present entries that are not regular files, already logged."""
        self._missing_logged = False
        self._error_logged: str | None = None
        self._lock = asyncio.Lock()
        """One poll at a time; a reload holds it while it changes the pool's real servers."""

    @property
    def drained(self) -> dict[RealServerId, str]:
        return dict(self._applied)

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """One poll, the listing and the reading of new files in a worker thread."""
        async with self._lock:
            await self._refresh()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """No poll runs inside (one in progress ends first): change the pool's real servers
        here, then await the refresh this yields, before they reach IPVS."""
        async with self._lock:
            yield self._refresh

    async def _refresh(self) -> None:
        while True:
            real_servers = self._pool.real_servers
            look = await asyncio.to_thread(_look, self.directory, real_servers, self.max_entries)
            now = self._pool.real_servers
            if now is real_servers or now == real_servers:
                break  # else a reload changed them meanwhile: look again
        new = self._take(look)
        if new is None:
            return
        reasons = await asyncio.to_thread(_describe_all, self.directory, new.values())
        self._drain(new, reasons)

    def poll(self) -> None:
        """One poll, blocking: for tools and tests, never from inside an event loop."""
        new = self._take(_look(self.directory, self._pool.real_servers, self.max_entries))
        if new is not None:
            self._drain(new, _describe_all(self.directory, new.values()))

    def _take(self, look: _Look) -> dict[RealServerId, str] | None:
        """Log what the look found, undrain what no file wants any more; returns the real
        servers to drain and their files (None if the directory could not be read)."""
        listing = look.listing
        if listing.error is not None:
            # Keep what is applied: an unreadable directory is no reason to undrain anything.
            if listing.error != self._error_logged:
                log.warning(
                    "cannot read maintenance directory %s: %s", self.directory, listing.error
                )
                self._error_logged = listing.error
            return None
        self._error_logged = None
        if listing.missing:
            if not self._missing_logged:
                log.info("maintenance directory %s does not exist: nothing drained", self.directory)
                self._missing_logged = True
        else:
            self._missing_logged = False
        for name in sorted(listing.ignored.keys() - self._ignored):
            log.warning(
                "maintenance entry %s is %s, not a regular file: ignored",
                self.directory / name,
                listing.ignored[name],
            )
        self._ignored = set(listing.ignored)
        wanted = look.wanted
        for name in set(look.unmatched) - self._unmatched:
            log.warning(
                "maintenance file %s selects no real server: name it <address>, "
                "<address>_<port> or <vs name>_<address>[_<port>]",
                self.directory / name,
            )
        self._unmatched = set(look.unmatched)
        configured = set(self._pool.real_servers)
        for real_server, name in list(self._applied.items()):
            if real_server not in wanted:
                del self._applied[real_server]
                why = "removed" if real_server in configured else "left by a reload"
                try:
                    self._pool.enable(
                        real_server, f"maintenance file {self.directory / name} {why}"
                    )
                except (CheckTransitionError, KeyError):
                    log.info("%s was enabled by someone else before %s went", real_server, name)
        self._already_disabled &= wanted.keys()
        return {
            real_server: name
            for real_server, name in wanted.items()
            if real_server not in self._applied and real_server not in self._already_disabled
        }

    def _drain(self, new: dict[RealServerId, str], reasons: Mapping[str, str]) -> None:
        for real_server, name in new.items():
            if real_server in self._applied:
                continue
            reason = reasons[name]
            try:
                self._pool.disable(real_server, reason)
            except KeyError:
                continue  # a reload removed it since the listing
            except CheckTransitionError:
                log.info("%s is already disabled; %s changes nothing", real_server, reason)
                self._already_disabled.add(real_server)
                continue
            self._applied[real_server] = name


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
