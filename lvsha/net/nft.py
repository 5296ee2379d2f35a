"""Accept mode off (`accept: false`, keepalived's no_accept): packets to the VIPs are dropped.

RFC 5798 6.1 (Accept_Mode) and RFC 3768 6.4.3: a master that does not own the VIPs (priority
below 255) must not accept packets addressed to them unless accept mode is on. lvsha does it
with nftables, in a table of its own (`inet lvsha_vrrp`) that nothing else writes: one input
chain that drops every packet whose destination is such a VIP, VRRP itself and IPv6 neighbour
discovery (which a held IPv6 VIP needs to be reachable at all) aside.

The rules hold every no-accept VIP from start-up on, held or not: a VIP that is not on this
host receives nothing anyway, and so a takeover adds no firewall work. Each change is one
`nft -f -` transaction that replaces the whole table (so a table a crashed run left behind is
cleared at start); the table is removed at stop. A marker file in the run directory records
that the table may exist, so a director without accept: false never runs nft.

Like keepalived's no_accept, the drop runs before IPVS (input hook, priority -1): a VIP
configured with accept: false cannot front a virtual service on this director.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Protocol, TypeAlias

Address: TypeAlias = IPv4Address | IPv6Address

TABLE = "lvsha_vrrp"
FAMILY = "inet"
CHAIN_PRIORITY = -1
"""Before the filter tables at 0 (and IPVS at LOCAL_IN), as keepalived's table."""
NFT_TIMEOUT = 10.0
"""Seconds one `nft -f -` may take; a ruleset of a few hundred addresses takes milliseconds."""
IPPROTO_VRRP = 112
NO_ACCEPT_MARKER = "nft-lvsha_vrrp"
"""The run directory's record that lvsha's table may exist (see `NftNoAccept`)."""


class FirewallError(RuntimeError):
    """nft is missing or refused a ruleset; the message says which and what it printed."""


def ruleset(addresses: Iterable[Address]) -> str:
    """The `nft -f` script that replaces lvsha's table with one dropping packets to
    `addresses` (in one transaction: the table never stands half-written)."""
    v4 = sorted({a for a in addresses if isinstance(a, IPv4Address)})
    v6 = sorted({a for a in addresses if isinstance(a, IPv6Address)})

    def elements(found: list[IPv4Address] | list[IPv6Address]) -> str:
        return f" elements = {{ {', '.join(map(str, found))} }};" if found else ""

    return (
        f"{removal()}"
        f"table {FAMILY} {TABLE} {{\n"
        f"  set no_accept4 {{ type ipv4_addr;{elements(v4)} }}\n"
        f"  set no_accept6 {{ type ipv6_addr;{elements(v6)} }}\n"
        "  chain input {\n"
        f"    type filter hook input priority {CHAIN_PRIORITY}; policy accept;\n"
        f"    meta l4proto {IPPROTO_VRRP} accept\n"
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
        "    ip daddr @no_accept4 drop\n"
        "    ip6 daddr @no_accept6 drop\n"
        "  }\n"
        "}\n"
    )


def removal() -> str:
    """The `nft -f` script that removes lvsha's table, whether it exists or not (declaring
    an existing table changes nothing; nft 1.0.6 has no `destroy`)."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


async def run_nft(nft: str, script: str) -> None:
    """Run `nft -f -` with `script` on stdin; FirewallError with what nft said if it fails."""
    try:
        process = await asyncio.create_subprocess_exec(
            nft,
            "-f",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise FirewallError(f"cannot run {nft}: {exc}") from None
    try:
        _, stderr = await asyncio.wait_for(process.communicate(script.encode()), NFT_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise FirewallError(f"{nft} -f - took more than {NFT_TIMEOUT:g} s") from None
    if process.returncode != 0:
        said = stderr.decode(errors="replace").strip() or f"exit status {process.returncode}"
        raise FirewallError(f"nft refused the rules of table {FAMILY} {TABLE}: {said}")


class NoAcceptFilter(Protocol):
    """The port: which VIPs packets may not be addressed to (nft, or a record in tests)."""

    async def set_addresses(self, addresses: frozenset[Address]) -> None:
        """Drop packets to exactly these addresses from now on (FirewallError if it cannot)."""
        ...

    async def remove(self) -> None:
        """Drop nothing any more, and leave no trace (the stop)."""
        ...


MISSING_NFT = (
    "accept: false needs nftables, and nft is not installed: install it (apt install "
    "nftables) or set accept: true"
)


class NftNoAccept:
    """The real filter: lvsha's own nftables table, written with `nft -f -`."""

    def __init__(self, nft: str | None = None, marker: Path | None = None) -> None:
        """`marker`: a file that exists while a table of ours may (lvsha remembers what it
        owns across process deaths): without it, a director that never used accept: false
        runs no nft at all; with it absent, nothing of ours needs clearing."""
        self._nft = nft if nft is not None else shutil.which("nft")
        self._marker = marker
        self.addresses: frozenset[Address] = frozenset()

    @property
    def available(self) -> bool:
        return self._nft is not None

    def _table_may_exist(self) -> bool:
        return self._marker is None or self.addresses != frozenset() or self._marker.exists()

    async def set_addresses(self, addresses: frozenset[Address]) -> None:
        if self._nft is None:
            if addresses:
                raise FirewallError(MISSING_NFT)
            return  # no nft: nothing to drop, and no table of ours can exist
        if not addresses:
            await self.remove()
            return
        if self._marker is not None:
            # Before the table: a crash after it leaves the record for the next start.
            self._marker.touch()
        await run_nft(self._nft, ruleset(addresses))
        self.addresses = addresses

    async def remove(self) -> None:
        if self._nft is not None and self._table_may_exist():
            await run_nft(self._nft, removal())
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
        self.addresses = frozenset()


class MemoryNoAccept:
    """A record of what the filter was told, for tests and dry runs."""

    def __init__(self) -> None:
        self.addresses: frozenset[Address] = frozenset()
        self.history: list[frozenset[Address] | None] = []
        """Each call: the addresses set, or None for a removal."""
        self.fail_with: FirewallError | None = None

    async def set_addresses(self, addresses: frozenset[Address]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.addresses = addresses
        self.history.append(addresses)

    async def remove(self) -> None:
        self.addresses = frozenset()
        self.history.append(None)
