"""VMAC interfaces (keepalived's use_vmac): a macvlan on an instance's interface whose MAC is
the VRRP virtual MAC, so the master answers for its VIPs with the same MAC on every director
and a failover needs no ARP or neighbour cache update at all (RFC 5798 7.3).

The macvlan runs in private mode, as keepalived's does: a frame carrying the virtual MAC as its
source (the peer master's adverts) then goes to our VMAC alone, never to the base interface, so
adverts are received on the VMAC interface whichever MAC the peer sends them from.

Kernel settings, as keepalived makes them (vrrp_if_config.c):
- VMAC: arp_ignore=1 (answer ARP only for its own addresses, the VIPs, with the virtual MAC),
  accept_local=1 (hear a returning owner), rp_filter=0 (receive though it has no IPv4 address
  of its own); IPv4 instances also disable IPv6 on it, so the backup's VMAC sends no neighbour
  discovery or MLD from the virtual MAC; IPv6 instances get no generated link-local address but
  the base interface's, to send adverts from (RFC 5798 5.1.2.1: a link-local source);
- base interface: arp_ignore=1 and arp_filter=1, so it never answers for a VIP with its own MAC.

pyroute2 is imported only here and only when an instance uses VMAC: the VRRP process of a
configuration without VMAC never loads it (start-up cost, issue 11).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger("lvsha.net")

PROC_SYS_NET = Path("/proc/sys/net")
MACVLAN_MODE_PRIVATE = 1
"""linux/if_link.h: MACVLAN_MODE_PRIVATE."""
IFA_F_NODAD = 0x02
IN6_ADDR_GEN_MODE_NONE = "1"

Family = Literal["ipv4", "ipv6"]


class VmacError(OSError):
    """A VMAC interface cannot be created, adopted or brought up."""


def virtual_mac(vrid: int, family: Family) -> str:
    """The VRRP virtual MAC (RFC 5798 7.3): 00:00:5e:00:01:VRID, IPv6 00:00:5e:00:02:VRID."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"VRID {vrid} is not 1-255")
    return f"00:00:5e:00:{'02' if family == 'ipv6' else '01'}:{vrid:02x}"


@dataclass(frozen=True, slots=True)
class VmacSpec:
    """One VMAC interface as an instance wants it."""

    name: str
    base: str
    vrid: int
    family: Family
    link_local: IPv6Address | None = None
    """IPv6 instances: the base interface's link-local address, put on the VMAC too."""

    @property
    def mac(self) -> str:
        return virtual_mac(self.vrid, self.family)


@dataclass(frozen=True, slots=True)
class FoundLink:
    """What the kernel says about an existing link of the VMAC's name."""

    index: int
    kind: str | None
    base_index: int | None
    mode: int | None
    mac: str


def matches(found: FoundLink, spec: VmacSpec, base_index: int) -> bool:
    """An existing link is the VMAC `spec` wants (adopted after a crash), or not (replaced)."""
    return (
        found.kind == "macvlan"
        and found.base_index == base_index
        and found.mode == MACVLAN_MODE_PRIVATE
        and found.mac.lower() == spec.mac
    )


class VmacPort(Protocol):
    async def ensure(self, spec: VmacSpec) -> str:
        """Create the VMAC (or adopt a right one, or replace a wrong one), set it up and up;
        returns what was done ("created", "adopted", "replaced")."""
        ...

    async def remove(self, name: str) -> bool:
        """Delete the VMAC interface; False when there was none."""
        ...


def _sysctl_write(path: Path, value: str) -> None:
    path.write_text(value + "\n")


@dataclass
class SysctlWriter:
    """Writes the VMAC settings under /proc/sys/net of the caller's namespace."""

    root: Path = PROC_SYS_NET
    write: Callable[[Path, str], None] = _sysctl_write

    def set(self, family: str, interface: str, key: str, value: str) -> None:
        path = self.root / family / "conf" / interface / key
        try:
            if path.read_text().strip() == value:
                return
            self.write(path, value)
        except OSError as exc:
            raise VmacError(
                f"cannot set net.{family}.conf.{interface}.{key}={value}: {exc.strerror or exc}"
            ) from None

    def prepare(self, spec: VmacSpec) -> None:
        """Settings of a VMAC that is still down, and of its base interface."""
        self.set("ipv4", spec.base, "arp_ignore", "1")
        self.set("ipv4", spec.base, "arp_filter", "1")
        self.set("ipv4", spec.name, "arp_ignore", "1")
        self.set("ipv4", spec.name, "accept_local", "1")
        self.set("ipv4", spec.name, "rp_filter", "0")
        if spec.family == "ipv4":
            self.set("ipv6", spec.name, "disable_ipv6", "1")
        else:
            self.set("ipv6", spec.name, "addr_gen_mode", IN6_ADDR_GEN_MODE_NONE)


def _attr(message: Any, name: str) -> Any:
    return message.get_attr(name) if hasattr(message, "get_attr") else message.get(name)


async def _collect(reply: Any) -> list[Any]:
    """pyroute2 answers with a list or an async generator, depending on the request."""
    if hasattr(reply, "__aiter__"):
        return [item async for item in reply]
    return list(reply)


def _found(message: Any) -> FoundLink:
    info = _attr(message, "IFLA_LINKINFO")
    kind = mode = None
    if info is not None:
        kind = _attr(info, "IFLA_INFO_KIND")
        data = _attr(info, "IFLA_INFO_DATA")
        if data is not None:
            raw_mode = _attr(data, "IFLA_MACVLAN_MODE")
            mode = {"private": MACVLAN_MODE_PRIVATE}.get(raw_mode, raw_mode)
    return FoundLink(
        index=int(message["index"]),
        kind=kind,
        base_index=_attr(message, "IFLA_LINK"),
        mode=mode if isinstance(mode, int) else None,
        mac=str(_attr(message, "IFLA_ADDRESS") or ""),
    )


class NetlinkVmacs:
    """The real VMAC interfaces, through pyroute2 (rtnetlink), in the caller's namespace."""

    def __init__(self, sysctl: SysctlWriter | None = None) -> None:
        self._sysctl = sysctl or SysctlWriter()

    async def ensure(self, spec: VmacSpec) -> str:
        from pyroute2 import AsyncIPRoute  # noqa: PLC0415 - only with VMAC: see the module doc
        from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

        try:
            async with AsyncIPRoute() as ipr:
                base = await ipr.link_lookup(ifname=spec.base)
                if not base:
                    raise VmacError(f"{spec.name}: its interface {spec.base} does not exist")
                base_index = int(base[0])
                done = "created"
                existing = await ipr.link_lookup(ifname=spec.name)
                if existing:
                    (message,) = await _collect(await ipr.link("get", index=existing[0]))
                    found = _found(message)
                    if matches(found, spec, base_index):
                        done = "adopted"
                    else:
                        log.warning(
                            "%s exists but is not the VMAC wanted (%s on %s, mode private, "
                            "MAC %s): replacing it",
                            spec.name,
                            found.kind or "not a macvlan",
                            found.base_index,
                            found.mac,
                        )
                        await ipr.link("del", index=found.index)
                        done = "replaced"
                if done != "adopted":
                    await ipr.link(
                        "add",
                        ifname=spec.name,
                        kind="macvlan",
                        link=base_index,
                        macvlan_mode="private",
                        address=spec.mac,
                    )
                (index,) = await ipr.link_lookup(ifname=spec.name)
                self._sysctl.prepare(spec)
                if spec.link_local is not None:
                    dump = await _collect(await ipr.addr("dump", index=index, family=10))
                    have = [_attr(a, "IFA_ADDRESS") for a in dump]
                    if str(spec.link_local) not in have:
                        await ipr.addr(
                            "add",
                            index=index,
                            address=str(spec.link_local),
                            prefixlen=64,
                            flags=IFA_F_NODAD,
                        )
                await ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise VmacError(f"{spec.name} on {spec.base}: {exc}") from None
        log.info("VMAC %s on %s (%s): %s", spec.name, spec.base, spec.mac, done)
        return done

    async def remove(self, name: str) -> bool:
        from pyroute2 import AsyncIPRoute  # noqa: PLC0415
        from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

        try:
            async with AsyncIPRoute() as ipr:
                found = await ipr.link_lookup(ifname=name)
                if not found:
                    return False
                await ipr.link("del", index=found[0])
        except NetlinkError as exc:
            raise VmacError(f"cannot remove {name}: {exc}") from None
        log.info("VMAC %s removed", name)
        return True


class MemoryVmacs:
    """VMAC interfaces in memory, for unit tests and dry runs."""

    def __init__(self) -> None:
        self.links: dict[str, VmacSpec] = {}
        self.calls: list[tuple[str, str]] = []

    async def ensure(self, spec: VmacSpec) -> str:
        before = self.links.get(spec.name)
        self.links[spec.name] = spec
        done = "created" if before is None else "adopted" if before == spec else "replaced"
        self.calls.append((done, spec.name))
        return done

    async def remove(self, name: str) -> bool:
        self.calls.append(("removed", name))
        return self.links.pop(name, None) is not None
