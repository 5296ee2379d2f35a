"""The addresses port: put VIPs on interfaces and take them off, and look interfaces up.

lvsha must never take away an address it did not put there: an operator's address that
happens to equal a VIP stays. So each port records in the address ledger (lvsha.net.ledger)
which (interface, address) pairs lvsha added, before adding them; adding an address that is
already present (with any prefix length) adopts nothing, and removing it later leaves it in
place. The ledger outlives the process: `reconcile` takes off what an earlier process added and
left behind.
"""

from __future__ import annotations

import abc
import enum
import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_interface,
)
from typing import Any, Literal, Protocol, TypeAlias

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lvsha.net.ledger import AddressLedger, LedgerError

log = logging.getLogger(__name__)

VirtualAddress: TypeAlias = IPv4Interface | IPv6Interface
Address: TypeAlias = IPv4Address | IPv6Address
Family: TypeAlias = Literal[4, 6]

# linux/if_addr.h
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40


class InterfaceNotFoundError(LookupError):
    """The named interface does not exist (in this network namespace)."""

    def __init__(self, interface: str) -> None:
        super().__init__(f"interface {interface!r} does not exist")
        self.interface = interface


class AddressError(OSError):
    """The kernel refused to add or remove an address."""


class VipOutcome(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    ALREADY_OURS = "already added by lvsha"
    NOT_OURS = "present but not added by lvsha: left as it is"
    ABSENT = "not present"


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    index: int
    mac: str
    """Lower-case, colon-separated, e.g. 02:00:00:00:00:01."""


@dataclass(frozen=True, slots=True)
class AssignedAddress:
    """An address as the kernel holds it on an interface."""

    address: VirtualAddress
    flags: int = 0
    """IFA_F_* bits: secondary, tentative, dadfailed, ..."""
    label: str | None = None


class AddressPort(Protocol):
    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: str | None = None
    ) -> VipOutcome:
        """Put `vip` on `interface`: ADDED, ALREADY_OURS, or NOT_OURS when someone else's
        address is already there. IPv6 VIPs skip duplicate address detection (IFA_F_NODAD) so
        they are usable at once; `label` applies to IPv4 only (Linux has no IPv6 labels).
        Raises InterfaceNotFoundError, AddressError."""
        ...

    async def remove_vip(self, interface: str, vip: VirtualAddress) -> VipOutcome:
        """Take `vip` off `interface` if this port added it: REMOVED, ABSENT, or NOT_OURS
        (present, not added by us, left in place). Raises InterfaceNotFoundError, AddressError."""
        ...

    async def interface(self, name: str) -> Interface:
        """Index and MAC address. Raises InterfaceNotFoundError."""
        ...

    async def reconcile(self) -> list[tuple[str, VirtualAddress]]:
        """Take off every address the ledger says lvsha added (an earlier process left them:
        nothing is held before an instance leaves INITIALIZE); returns those removed."""
        ...

    async def primary_address(self, interface: str, family: Family) -> Address | None:
        """The source address VRRP uses on `interface`.

        IPv4: the first non-secondary address that this port did not add as a VIP. IPv6: the
        link-local address (RFC 5798 5.1.2.2), once duplicate address detection has passed.
        None when there is none (yet). Raises InterfaceNotFoundError."""
        ...


def pick_primary(
    addresses: Iterable[AssignedAddress], family: Family, ours: Iterable[Address]
) -> Address | None:
    """The rule of `AddressPort.primary_address`, over the interface's addresses in kernel order."""
    excluded = set(ours)
    for assigned in addresses:
        address = assigned.address.ip
        if address.version != family:
            continue
        if family == 4:
            if not assigned.flags & IFA_F_SECONDARY and address not in excluded:
                return address
        elif address.is_link_local and not assigned.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            return address
    return None


class _TrackedAddresses(abc.ABC):
    """The ownership rules shared by every implementation; subclasses do the raw operations."""

    def __init__(self, ledger: AddressLedger | None = None) -> None:
        self.ledger = ledger if ledger is not None else AddressLedger(None)
        self._ours: dict[str, set[Address]] = {}

    def added_by_us(self, interface: str) -> frozenset[Address]:
        return frozenset(self._ours.get(interface, ()))

    async def reconcile(self) -> list[tuple[str, VirtualAddress]]:
        removed = []
        for interface, vip in sorted(self.ledger.entries(), key=str):
            try:
                present = await self._find(interface, vip)
                if present is not None and await self._delete(interface, present):
                    removed.append((interface, vip))
                    log.warning(
                        "removed %s from %s: an earlier lvsha process added it and did not "
                        "take it off",
                        vip,
                        interface,
                    )
            except InterfaceNotFoundError:
                pass  # the interface went, and its addresses with it
            except AddressError as exc:
                # Still ours: kept in the ledger, and the next removal tries again.
                log.error(
                    "cannot take off %s left on %s by an earlier run: %s", vip, interface, exc
                )
                self._ours.setdefault(interface, set()).add(vip.ip)
                continue
            self.ledger.forget([(interface, vip)])
            self._ours.get(interface, set()).discard(vip.ip)
        return removed

    @abc.abstractmethod
    async def _assigned(self, interface: str) -> list[AssignedAddress]:
        """The interface's addresses in kernel order."""

    @abc.abstractmethod
    async def _add(self, interface: str, vip: VirtualAddress, label: str | None) -> bool:
        """Add; False when the kernel says the address exists after all."""

    @abc.abstractmethod
    async def _delete(self, interface: str, assigned: AssignedAddress) -> bool:
        """Delete; False when the kernel says it is already gone."""

    async def _find(self, interface: str, vip: VirtualAddress) -> AssignedAddress | None:
        for assigned in await self._assigned(interface):
            if assigned.address.ip == vip.ip:
                return assigned
        return None

    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: str | None = None
    ) -> VipOutcome:
        if label is not None and vip.version == 4 and not label.startswith(f"{interface}:"):
            raise ValueError(f"label {label!r} must start with the interface name: {interface}:")
        ours = self._ours.setdefault(interface, set())
        present = await self._find(interface, vip)
        if present is not None:
            if vip.ip in ours:
                return VipOutcome.ALREADY_OURS
            log.warning(
                "%s already has %s, not added by lvsha: leaving it alone and never removing it",
                interface,
                present.address,
            )
            return VipOutcome.NOT_OURS
        try:
            # Written down before the kernel has it: a crash from here on leaves an entry
            # that the next process reconciles, never an address nobody knows is ours.
            self.ledger.record([(interface, vip)])
        except LedgerError as exc:
            raise AddressError(exc.errno, f"not adding {vip} to {interface}: {exc}") from None
        try:
            added = await self._add(interface, vip, label if vip.version == 4 else None)
        except BaseException:
            self.ledger.forget([(interface, vip)])
            raise
        if not added:
            self.ledger.forget([(interface, vip)])
            log.warning("%s got %s from someone else just now: not ours", interface, vip)
            return VipOutcome.NOT_OURS
        ours.add(vip.ip)
        # Not logged here: the caller announces the VIP first, then says it was added.
        return VipOutcome.ADDED

    async def remove_vip(self, interface: str, vip: VirtualAddress) -> VipOutcome:
        ours = self._ours.setdefault(interface, set())
        present = await self._find(interface, vip)
        if present is None:
            ours.discard(vip.ip)
            self.ledger.forget([(interface, vip)])
            return VipOutcome.ABSENT
        if vip.ip not in ours:
            log.warning("%s has %s, not added by lvsha: left in place", interface, vip)
            return VipOutcome.NOT_OURS
        ours.discard(vip.ip)
        deleted = await self._delete(interface, present)
        # Forgotten only once the kernel has let go of it (or never had it).
        self.ledger.forget([(interface, vip)])
        if not deleted:
            return VipOutcome.ABSENT
        log.info("removed %s from %s", present.address, interface)
        return VipOutcome.REMOVED

    async def primary_address(self, interface: str, family: Family) -> Address | None:
        return pick_primary(await self._assigned(interface), family, self.added_by_us(interface))


@dataclass
class MemoryInterface:
    index: int
    mac: str
    addresses: list[AssignedAddress] = field(default_factory=list)


class MemoryAddresses(_TrackedAddresses):
    """Implements `AddressPort` on dictionaries, for unit tests and dry runs."""

    def __init__(
        self,
        interfaces: dict[str, MemoryInterface] | None = None,
        ledger: AddressLedger | None = None,
    ) -> None:
        super().__init__(ledger)
        self.interfaces: dict[str, MemoryInterface] = dict(interfaces or {})

    def _get(self, name: str) -> MemoryInterface:
        try:
            return self.interfaces[name]
        except KeyError:
            raise InterfaceNotFoundError(name) from None

    async def _assigned(self, interface: str) -> list[AssignedAddress]:
        return list(self._get(interface).addresses)

    async def _add(self, interface: str, vip: VirtualAddress, label: str | None) -> bool:
        entry = self._get(interface)
        # The kernel makes an IPv4 address secondary when the interface already has a primary
        # in the same subnet.
        secondary = vip.version == 4 and any(
            a.address.version == 4
            and not a.flags & IFA_F_SECONDARY
            and a.address.network == vip.network
            for a in entry.addresses
        )
        flags = IFA_F_SECONDARY if secondary else IFA_F_NODAD if vip.version == 6 else 0
        entry.addresses.append(AssignedAddress(vip, flags, label))
        return True

    async def _delete(self, interface: str, assigned: AssignedAddress) -> bool:
        entry = self._get(interface)
        if assigned not in entry.addresses:
            return False
        entry.addresses.remove(assigned)
        return True

    async def interface(self, name: str) -> Interface:
        entry = self._get(name)
        return Interface(name, entry.index, entry.mac)


class NetlinkAddresses(_TrackedAddresses):
    """Implements `AddressPort` with rtnetlink (pyroute2 AsyncIPRoute).

    Opens its netlink socket on first use, in the network namespace of the calling thread.
    """

    def __init__(self, ledger: AddressLedger | None = None) -> None:
        super().__init__(ledger)
        self._ipr: Any = None

    async def _route(self) -> Any:
        if self._ipr is None:
            # groups=0: this socket asks; it must not queue every address and route event.
            self._ipr = AsyncIPRoute(groups=0)
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def __aenter__(self) -> NetlinkAddresses:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _link(self, name: str) -> Any:
        ipr = await self._route()
        try:
            (link,) = await ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise InterfaceNotFoundError(name) from None
            raise
        return link

    async def interface(self, name: str) -> Interface:
        link = await self._link(name)
        return Interface(name, int(link["index"]), str(link.get("address") or "").lower())

    async def _assigned(self, interface: str) -> list[AssignedAddress]:
        index = (await self.interface(interface)).index
        ipr = await self._route()
        found = []
        async for message in await ipr.addr("dump", index=index):
            address = message.get("address")
            local = message.get("local")
            # For IPv4 IFA_LOCAL is the address itself; IFA_ADDRESS the peer on point-to-point.
            text = local if message["family"] == socket.AF_INET and local else address
            if text is None:
                continue
            flags = message.get("IFA_FLAGS")
            found.append(
                AssignedAddress(
                    ip_interface(f"{text}/{message['prefixlen']}"),
                    int(flags if flags is not None else message["flags"]),
                    message.get("label"),
                )
            )
        return found

    async def _add(self, interface: str, vip: VirtualAddress, label: str | None) -> bool:
        index = (await self.interface(interface)).index
        request: dict[str, Any] = {
            "index": index,
            "address": str(vip.ip),
            "prefixlen": vip.network.prefixlen,
        }
        if vip.version == 4:
            request["local"] = str(vip.ip)
            if label is not None:
                request["label"] = label
        else:
            request["flags"] = IFA_F_NODAD
        try:
            await (await self._route()).addr("add", **request)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise AddressError(exc.code, f"adding {vip} to {interface}: {exc}") from None
        return True

    async def _delete(self, interface: str, assigned: AssignedAddress) -> bool:
        index = (await self.interface(interface)).index
        address = assigned.address
        request: dict[str, Any] = {
            "index": index,
            "address": str(address.ip),
            "prefixlen": address.network.prefixlen,
        }
        if address.version == 4:
            request["local"] = str(address.ip)
        try:
            await (await self._route()).addr("del", **request)
        except NetlinkError as exc:
            if exc.code == errno.EADDRNOTAVAIL:
                return False
            raise AddressError(exc.code, f"removing {address} from {interface}: {exc}") from None
        return True
