"""VMAC interfaces (keepalived's use_vmac): a macvlan on an instance's interface whose MAC is
the VRRP virtual MAC, so the master answers for its VIPs with the same MAC on every director
and a failover needs no ARP or neighbour cache update at all (RFC 5798 7.3).

The macvlan runs in private mode, as keepalived's does: a frame carrying the virtual MAC as its
source (the peer master's adverts) then goes to our VMAC alone, never to the base interface, so
adverts are received on the VMAC interface whichever MAC the peer sends them from.

Kernel settings, as keepalived makes them (vrrp_if_config.c):
- VMAC: arp_ignore=1 (answer ARP only for its own addresses, the VIPs, with the virtual MAC),
  accept_local=1 (hear a returning owner), rp_filter=0 (receive though it has no IPv4 address
  of its own); no generated IPv6 link-local address (addr_gen_mode none), so a backup's VMAC
  sends no duplicate address detection from the virtual MAC; IPv6 instances put the base
  interface's link-local address on it, to send adverts from (RFC 5798 5.1.2.1);
- nothing may leave a backup's VMAC, or switches learn the virtual MAC at the backup's port
  and send the master's traffic there (with vmac_xmit_base, until the next failover): IPv6 is
  off on the VMAC unless IPv6 VIPs go on it, and IGMP reports for 224.0.0.0/24 are off in the
  namespace (igmp_link_local_mcast_reports=0, as keepalived's disable_local_igmp). An IPv6
  instance's VMAC still sends MLD reports (for ff02::12 and its addresses' solicited-node
  groups) when it joins them: without vmac_xmit_base the master's next advert corrects the
  switches; keepalived drops them with firewall rules, which lvsha does not write;
- base interface: arp_ignore=1 and arp_filter=1, so it never answers for a VIP with its own MAC;
  and arp_announce=2 (lvsha's addition), so its own ARP requests (for a reply from the VIP that
  leaves through it) never name the VIP as their sender, which would teach the neighbours the
  base's MAC for the VIP. They are given back when the base's last VMAC is removed.

Links are created with lvsha's own rtnetlink codec, as addresses are (no pyroute2 in the VRRP
process: issue 11).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import Literal, Protocol

from lvsha.net.nlmsg import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSGHDR,
    RefusedError,
    attribute,
    attributes,
)
from lvsha.net.rtnl import AddressRequest, RtnlSocket
from lvsha.net.rtnl_dump import (
    IFLA_ADDRESS,
    IFLA_IFNAME,
    RTM_DELLINK,
    RTM_NEWLINK,
    RtnlQueries,
    decode_link,
    link_request,
)

log = logging.getLogger("lvsha.net")

PROC_SYS_NET = Path("/proc/sys/net")
MACVLAN_MODE_PRIVATE = 1
"""linux/if_link.h: MACVLAN_MODE_PRIVATE."""
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
    ipv6: bool = False
    """IPv6 runs on the VMAC: an IPv6 instance, or IPv6 VIPs (excluded ones) held on it."""

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


IGMP_LINK_LOCAL_REPORTS = "ipv4/igmp_link_local_mcast_reports"
"""Under /proc/sys/net: 0 stops IGMP reports for 224.0.0.0/24 (RFC 4541: switches flood
those groups to every port anyway), so a backup's VMAC joining 224.0.0.18 sends no report
from the virtual MAC (keepalived's disable_local_igmp)."""
_BASE_SETTINGS = (("arp_ignore", "1"), ("arp_filter", "1"), ("arp_announce", "2"))
"""The base interface's settings (see the module's notes), given back when its last VMAC goes."""


@dataclass
class SysctlWriter:
    """Writes the VMAC settings under /proc/sys/net of the caller's namespace, and gives the
    base interface its own settings back once no VMAC of this process sits on it (as keepalived
    does at exit; after a crash the next process finds them changed and keeps them)."""

    root: Path = PROC_SYS_NET
    write: Callable[[Path, str], None] = _sysctl_write
    _before: dict[str, dict[str, str]] = field(default_factory=dict)
    """Base interface -> its settings as they were before this process changed them."""
    _users: dict[str, set[str]] = field(default_factory=dict)
    """Base interface -> the VMACs on it."""
    _global_before: dict[str, str] = field(default_factory=dict)
    """Namespace-wide settings as they were before this process changed them."""

    def set(self, family: str, interface: str, key: str, value: str) -> str | None:
        """Set the value; returns the one it replaced, or None when it was already so."""
        path = self.root / family / "conf" / interface / key
        try:
            before = path.read_text().strip()
            if before == value:
                return None
            self.write(path, value)
        except OSError as exc:
            raise VmacError(
                f"cannot set net.{family}.conf.{interface}.{key}={value}: {exc.strerror or exc}"
            ) from None
        return before

    def prepare(self, spec: VmacSpec) -> None:
        """Settings of a VMAC that is still down, and of its base interface."""
        for key, value in _BASE_SETTINGS:
            before = self.set("ipv4", spec.base, key, value)
            if before is not None:
                self._before.setdefault(spec.base, {}).setdefault(key, before)
        self._users.setdefault(spec.base, set()).add(spec.name)
        self.set("ipv4", spec.name, "arp_ignore", "1")
        self.set("ipv4", spec.name, "accept_local", "1")
        self.set("ipv4", spec.name, "rp_filter", "0")
        # The new master's gratuitous ARP reaches our VMAC alone (private mode, its own MAC):
        # a leaving master still holding the VIP would answer it from the virtual MAC and
        # draw the switches back to itself.
        self.set("ipv4", spec.name, "drop_gratuitous_arp", "1")
        self.set("ipv6", spec.name, "addr_gen_mode", IN6_ADDR_GEN_MODE_NONE)
        if not (spec.ipv6 or spec.family == "ipv6"):
            self.set("ipv6", spec.name, "disable_ipv6", "1")
        before = self._set_global(IGMP_LINK_LOCAL_REPORTS, "0")
        if before is not None:
            self._global_before.setdefault(IGMP_LINK_LOCAL_REPORTS, before)

    def _set_global(self, key: str, value: str) -> str | None:
        path = self.root / key
        try:
            before = path.read_text().strip()
            if before == value:
                return None
            self.write(path, value)
        except OSError as exc:
            setting = "net." + key.replace("/", ".")
            raise VmacError(f"cannot set {setting}={value}: {exc.strerror or exc}") from None
        return before

    def release(self, name: str) -> None:
        """The VMAC `name` is gone: its base gets its settings back if it was the last one.
        Never raises (a warning names what could not be restored)."""
        for base, users in list(self._users.items()):
            users.discard(name)
            if users:
                continue
            del self._users[base]
            for key, value in self._before.pop(base, {}).items():
                try:
                    self.set("ipv4", base, key, value)
                except VmacError as exc:
                    log.warning("%s", exc)
        if self._users:
            return
        for key, value in self._global_before.items():
            try:
                self._set_global(key, value)
            except VmacError as exc:
                log.warning("%s", exc)
        self._global_before.clear()


# include/uapi/linux/if_link.h, rtnetlink.h, if.h
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_MACVLAN_MODE = 1
IFF_UP = 0x1
NLA_F_NESTED = 0x8000
_LINK_FLAGS = NLM_F_REQUEST | NLM_F_ACK
_CREATE_FLAGS = _LINK_FLAGS | NLM_F_CREATE | NLM_F_EXCL
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_U32 = struct.Struct("=I")


def _message(kind: int, flags: int, sequence: int, body: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, sequence, 0) + body


def create_request(spec: VmacSpec, base_index: int, sequence: int) -> bytes:
    """RTM_NEWLINK creating the VMAC, down: a private macvlan on `base_index` with the virtual
    MAC (as `ip link add NAME link BASE address MAC type macvlan mode private`)."""
    data = attribute(IFLA_MACVLAN_MODE, _U32.pack(MACVLAN_MODE_PRIVATE))
    info = attribute(IFLA_INFO_KIND, b"macvlan") + attribute(IFLA_INFO_DATA | NLA_F_NESTED, data)
    body = (
        _IFINFOMSG.pack(0, 0, 0, 0, 0)
        + attribute(IFLA_IFNAME, spec.name.encode() + b"\0")
        + attribute(IFLA_LINK, _U32.pack(base_index))
        + attribute(IFLA_ADDRESS, bytes.fromhex(spec.mac.replace(":", "")))
        + attribute(IFLA_LINKINFO | NLA_F_NESTED, info)
    )
    return _message(RTM_NEWLINK, _CREATE_FLAGS, sequence, body)


def up_request(index: int, sequence: int) -> bytes:
    """RTM_NEWLINK setting IFF_UP on the link `index`."""
    return _message(
        RTM_NEWLINK, _LINK_FLAGS, sequence, _IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP)
    )


def delete_request(index: int, sequence: int) -> bytes:
    return _message(RTM_DELLINK, _LINK_FLAGS, sequence, _IFINFOMSG.pack(0, 0, index, 0, 0))


def decode_found(payload: memoryview) -> FoundLink:
    """What matters of an existing link for adopting it (an RTM_NEWLINK payload)."""
    link = decode_link(payload)
    found = attributes(payload, _IFINFOMSG.size)
    kind = mode = base = None
    if IFLA_LINK in found and len(found[IFLA_LINK]) >= 4:
        base = _U32.unpack_from(found[IFLA_LINK])[0]
    if IFLA_LINKINFO in found:
        info = attributes(found[IFLA_LINKINFO], 0)
        if IFLA_INFO_KIND in info:
            kind = bytes(info[IFLA_INFO_KIND]).split(b"\0", 1)[0].decode(errors="replace")
        if IFLA_INFO_DATA in info:
            data = attributes(info[IFLA_INFO_DATA], 0)
            if IFLA_MACVLAN_MODE in data and len(data[IFLA_MACVLAN_MODE]) >= 4:
                mode = _U32.unpack_from(data[IFLA_MACVLAN_MODE])[0]
    return FoundLink(link.index, kind, base, mode, link.mac)


class NetlinkVmacs:
    """The real VMAC interfaces, through lvsha's own rtnetlink codec (no pyroute2: the VRRP
    process does not load it), in the caller's namespace. Each call is a few requests the
    kernel answers at once; they run in a thread so the event loop never waits on them."""

    def __init__(self, sysctl: SysctlWriter | None = None) -> None:
        self._sysctl = sysctl or SysctlWriter()

    async def ensure(self, spec: VmacSpec) -> str:
        return await asyncio.to_thread(self._ensure, spec)

    async def remove(self, name: str) -> bool:
        return await asyncio.to_thread(self._remove, name)

    @staticmethod
    def _find(queries: RtnlQueries, name: str) -> FoundLink | None:
        try:
            answer = queries.ask(lambda sequence: link_request(name, sequence))
        except RefusedError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        links = [decode_found(payload) for kind, payload in answer if kind == RTM_NEWLINK]
        return links[0] if links else None

    def _ensure(self, spec: VmacSpec) -> str:
        queries = RtnlQueries()
        try:
            base = self._find(queries, spec.base)
            if base is None:
                raise VmacError(f"{spec.name}: its interface {spec.base} does not exist")
            done = "created"
            found = self._find(queries, spec.name)
            if found is not None and matches(found, spec, base.index):
                done = "adopted"
            elif found is not None:
                log.warning(
                    "%s exists but is not the VMAC wanted (%s on link %s, mode %s, MAC %s): "
                    "replacing it",
                    spec.name,
                    found.kind or "not a macvlan",
                    found.base_index,
                    found.mode,
                    found.mac,
                )
                index = found.index
                queries.ask(lambda sequence: delete_request(index, sequence))
                done = "replaced"
            if done != "adopted":
                queries.ask(lambda sequence: create_request(spec, base.index, sequence))
                found = self._find(queries, spec.name)
                if found is None:
                    raise VmacError(f"{spec.name} was created but is gone")
            assert found is not None
            self._sysctl.prepare(spec)
            if spec.link_local is not None:
                self._add_link_local(found.index, spec.link_local)
            index = found.index
            queries.ask(lambda sequence: up_request(index, sequence))
        except VmacError:
            raise
        except OSError as exc:
            raise VmacError(f"{spec.name} on {spec.base}: {exc.strerror or exc}") from None
        finally:
            queries.close()
        log.info("VMAC %s on %s (%s): %s", spec.name, spec.base, spec.mac, done)
        return done

    @staticmethod
    def _add_link_local(index: int, address: IPv6Address) -> None:
        request = AddressRequest(True, index, IPv6Interface(f"{address}/64"))
        rtnl = RtnlSocket()
        try:
            (code,) = rtnl.exchange([request])
        finally:
            rtnl.close()
        if code not in (0, errno.EEXIST):
            raise OSError(code, f"cannot add {address} to the VMAC: {os.strerror(code)}")

    def _remove(self, name: str) -> bool:
        queries = RtnlQueries()
        try:
            found = self._find(queries, name)
            if found is None:
                return False
            queries.ask(lambda sequence: delete_request(found.index, sequence))
        except OSError as exc:
            raise VmacError(f"cannot remove {name}: {exc.strerror or exc}") from None
        finally:
            queries.close()
            self._sysctl.release(name)
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
