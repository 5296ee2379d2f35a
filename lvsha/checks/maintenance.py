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
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lvsha.checks.state import CheckTransitionError
from lvsha.checks.targets import RealServerId

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path("/run/lvsha/maintenance")
DEFAULT_POLL_INTERVAL = 1.0
_REASON_CHARS = 200


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
    servers = list(real_servers)
    drained: dict[RealServerId, str] = {}
    unmatched: list[str] = []
    for name in sorted(names):
        if name.startswith("."):
            continue
        selector = parse_file_name(name)
        matched = [rs for rs in servers if selector is not None and selector.matches(rs)]
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


class MaintenanceWatcher:
    """Applies the maintenance directory to a pool: `poll()` once, or `run()` every interval."""

    def __init__(
        self,
        pool: Drainable,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        interval: float = DEFAULT_POLL_INTERVAL,
    ):
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._pool = pool
        self.directory = Path(directory)
        self.interval = interval
        self._applied: dict[RealServerId, str] = {}
        """Real servers this watcher drained, and the file that did it."""
        self._already_disabled: set[RealServerId] = set()
        """Selected by a file but disabled by someone else first: logged once."""
        self._unmatched: set[str] = set()
        """Present names that select nothing, already logged."""
        self._missing_logged = False

    @property
    def drained(self) -> dict[RealServerId, str]:
        return dict(self._applied)

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)

    def poll(self) -> None:
        names = self._list()
        if names is None:
            return
        wanted, unmatched = drained_by(names, self._pool.real_servers)
        for name in set(unmatched) - self._unmatched:
            log.warning(
                "maintenance file %s selects no real server: name it <address>, "
                "<address>_<port> or <vs name>_<address>[_<port>]",
                self.directory / name,
            )
        self._unmatched = set(unmatched)
        for real_server, name in list(self._applied.items()):
            if real_server not in wanted:
                del self._applied[real_server]
                try:
                    self._pool.enable(
                        real_server, f"maintenance file {self.directory / name} removed"
                    )
                except CheckTransitionError:
                    log.info("%s was enabled by someone else before %s went", real_server, name)
        self._already_disabled &= wanted.keys()
        for real_server, name in wanted.items():
            if real_server in self._applied or real_server in self._already_disabled:
                continue
            reason = self._describe(name)
            try:
                self._pool.disable(real_server, reason)
            except CheckTransitionError:
                log.info("%s is already disabled; %s changes nothing", real_server, reason)
                self._already_disabled.add(real_server)
                continue
            self._applied[real_server] = name

    def _list(self) -> set[str] | None:
        """The file names in the directory; empty if it does not exist, None if unreadable."""
        try:
            names = set(os.listdir(self.directory))
        except FileNotFoundError:
            if not self._missing_logged:
                log.info("maintenance directory %s does not exist: nothing drained", self.directory)
                self._missing_logged = True
            return set()
        except OSError as error:
            # Keep what is applied: an unreadable directory is no reason to undrain anything.
            log.warning("cannot list maintenance directory %s: %s", self.directory, error)
            return None
        self._missing_logged = False
        return names

    def _describe(self, name: str) -> str:
        path = self.directory / name
        try:
            owner = _user_name(path.stat().st_uid)
            with path.open("rb") as file:
                head = file.read(4096).decode("utf-8", errors="replace")
        except OSError as error:
            return f"maintenance file {path} ({error.strerror or error})"
        note = next((line.strip() for line in head.splitlines() if line.strip()), "")
        if len(note) > _REASON_CHARS:
            note = note[:_REASON_CHARS] + "..."
        return f"maintenance file {path} (owner {owner})" + (f": {note}" if note else "")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
