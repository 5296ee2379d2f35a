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
import contextlib
import enum
import errno
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
)
from typing import Literal, Protocol, TypeAlias

from lvsha.net.ledger import AddressLedger, LedgerError
from lvsha.net.nlmsg import RefusedError
from lvsha.net.rtnl import AddressRequest, RtnlSocket, encode
from lvsha.net.rtnl_dump import Link, RtnlQueries

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
    broadcast: Address | None = None
    scope: int = 0


@dataclass(frozen=True, slots=True)
class VipAttributes:
    """What a VIP is added with besides its address: IPv4 only (Linux has no IPv6 labels or
    broadcast, and derives an IPv6 address's scope from the address)."""

    label: str | None = None
    broadcast: IPv4Address | None = None
    scope: int = 0
    """RT_SCOPE_*: 0 global, 200 site, 253 link, 254 host, 255 nowhere."""

    @classmethod
    def of(cls, given: VipAttributes | str | None) -> VipAttributes:
        """From a VipRequest's third part: attributes, a bare label, or nothing."""
        if isinstance(given, VipAttributes):
            return given
        return _PLAIN if given is None else cls(label=given)

    def differ(self, interface: str, assigned: AssignedAddress) -> bool:
        """Whether an IPv4 address the kernel holds on `interface` has other attributes than
        these (the kernel labels an address added without one with the interface's name)."""
        label = None if assigned.label in (None, "", interface) else assigned.label
        return (label, assigned.broadcast, assigned.scope) != (
            self.label,
            self.broadcast,
            self.scope,
        )


_PLAIN = VipAttributes()

VipRequest: TypeAlias = tuple[str, VirtualAddress, VipAttributes | str | None]
"""(interface, VIP, its IPv4 attributes, or only its label, or None)."""
VipResult: TypeAlias = VipOutcome | AddressError | InterfaceNotFoundError
"""What became of one VIP of a batch: its outcome, or why the kernel did not do it."""


class AddressPort(Protocol):
    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: VipAttributes | str | None = None
    ) -> VipOutcome:
        """Put `vip` on `interface`: ADDED, ALREADY_OURS, or NOT_OURS when someone else's
        address is already there. IPv6 VIPs skip duplicate address detection (IFA_F_NODAD) so
        they are usable at once; `label` (a label, or every IPv4 attribute) applies to IPv4
        only. One of ours present with another prefix length, label, broadcast or scope is
        taken off and added again as asked (ADDED). Raises InterfaceNotFoundError,
        AddressError."""
        ...

    def add_vips(self, vips: Sequence[VipRequest]) -> list[VipResult]:
        """`add_vip` for many VIPs in one exchange with the kernel, without looking first: the
        takeover path. An IPv4 address present under another prefix length is only found by
        `disown_duplicates`, once the VIPs are announced."""
        ...

    async def disown_duplicates(
        self, added: Sequence[tuple[str, VirtualAddress]]
    ) -> list[tuple[str, VirtualAddress]]:
        """Take off again the VIPs just added that were there already under another prefix
        length (not ours); returns them."""
        ...

    def prepare(self, vips: Sequence[VipRequest]) -> None:
        """Build ahead what `add_vips` and `remove_vips` of these will send and write."""
        ...

    def remove_vips(self, vips: Sequence[tuple[str, VirtualAddress]]) -> list[VipResult | None]:
        """`remove_vip` in one exchange for the VIPs this port added; None for the others."""
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


def _add_request(index: int, vip: VirtualAddress, attributes: VipAttributes) -> AddressRequest:
    if vip.version != 4:
        return AddressRequest(True, index, vip)
    return AddressRequest(
        True, index, vip, attributes.label, attributes.broadcast, attributes.scope
    )


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
    """The ownership rules shared by every implementation; subclasses do the raw operations:
    find an interface's index, carry out a batch of address requests (`_exchange`), list an
    interface's addresses."""

    def __init__(self, ledger: AddressLedger | None = None) -> None:
        self.ledger = ledger if ledger is not None else AddressLedger(None)
        self._ours: dict[str, set[Address]] = {}

    def added_by_us(self, interface: str) -> frozenset[Address]:
        return frozenset(self._ours.get(interface, ()))

    async def reconcile(self) -> list[tuple[str, VirtualAddress]]:
        self._warm()
        try:
            self.ledger.open()
        except LedgerError as exc:
            log.error("%s", exc.strerror)  # each add tries again, and is refused while this lasts
        removed = []
        for interface, vip in sorted(self.ledger.entries(), key=str):
            try:
                present = await self._find(interface, vip)
                if present is not None and self._delete(interface, present.address):
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

    def _warm(self) -> None:  # noqa: B027 - nothing to open in memory
        """Get ready for the first takeover (open sockets) at start-up."""

    def prepare(self, vips: Sequence[VipRequest]) -> None:
        """Build ahead what adding and removing these VIPs will send and write, and run the
        exchange once with a request the kernel refuses, so a takeover runs warm code."""
        try:
            indexes = self._indexes(interface for interface, _, _ in vips)
        except OSError:
            return
        for interface, vip, given in vips:
            index = indexes[interface]
            if not isinstance(index, int):
                continue
            encode(_add_request(index, vip, VipAttributes.of(given)), 0)
            encode(AddressRequest(False, index, vip), 0)
        self.ledger.prepare((interface, vip) for interface, vip, _ in vips)
        with contextlib.suppress(OSError):
            # Interface index 0 exists nowhere: refused with EADDRNOTAVAIL, nothing changes.
            self._exchange([AddressRequest(False, 0, IPv4Interface("192.0.2.0/32"))])

    @abc.abstractmethod
    async def _assigned(self, interface: str) -> list[AssignedAddress]:
        """The interface's addresses in kernel order."""

    @abc.abstractmethod
    def _index(self, interface: str) -> int:
        """The interface's index. Raises InterfaceNotFoundError."""

    @abc.abstractmethod
    def _exchange(self, requests: Sequence[AddressRequest]) -> list[int]:
        """Carry out the requests in order, as rtnetlink does: each one's errno (0: done); an
        add is exclusive (EEXIST when the kernel has the address already). Raises OSError when
        the exchange itself fails."""

    def _delete(self, interface: str, address: VirtualAddress) -> bool:
        """Delete; False when the kernel says it is already gone."""
        [code] = self._exchange([AddressRequest(False, self._index(interface), address)])
        if code == errno.EADDRNOTAVAIL:
            return False
        if code:
            raise AddressError(code, f"removing {address} from {interface}: {os.strerror(code)}")
        return True

    async def _find(self, interface: str, vip: VirtualAddress) -> AssignedAddress | None:
        for assigned in await self._assigned(interface):
            if assigned.address.ip == vip.ip:
                return assigned
        return None

    def _indexes(self, interfaces: Iterable[str]) -> dict[str, int | InterfaceNotFoundError]:
        found: dict[str, int | InterfaceNotFoundError] = {}
        for interface in interfaces:
            if interface not in found:
                try:
                    found[interface] = self._index(interface)
                except InterfaceNotFoundError as missing:
                    found[interface] = missing
        return found

    def _pending(
        self, vips: Iterable[tuple[int, str, VirtualAddress]], results: list[VipResult | None]
    ) -> list[tuple[int, str, VirtualAddress, int]]:
        """Of (position, interface, VIP), those whose interface exists, with its index; the
        others' results become InterfaceNotFoundError."""
        listed = list(vips)
        indexes = self._indexes(interface for _, interface, _ in listed)
        pending = []
        for position, interface, vip in listed:
            index = indexes[interface]
            if isinstance(index, InterfaceNotFoundError):
                results[position] = index
            else:
                pending.append((position, interface, vip, index))
        return pending

    def _carry_out(
        self, requests: Sequence[AddressRequest], what: str, entries: Sequence[str]
    ) -> list[int | AddressError]:
        """Each request's errno (0: done), or for each the AddressError of a failed exchange."""
        try:
            return list(self._exchange(requests))
        except OSError as exc:
            code = exc.errno or errno.EIO
            failure = AddressError(code, f"{what} {', '.join(entries)}: {exc.strerror or exc}")
            return [failure] * len(requests)

    def add_vips(self, vips: Sequence[VipRequest]) -> list[VipResult]:
        """Put every VIP on its interface in one exchange with the kernel (the takeover path):
        ADDED, ALREADY_OURS, or NOT_OURS when someone else's address is there with the same
        prefix length (IPv4) or at all (IPv6); `disown_duplicates` finds an IPv4 address
        present under another prefix length afterwards. The ledger is written once, before."""
        results: list[VipResult | None] = [None] * len(vips)
        pending = self._pending(((p, i, vip) for p, (i, vip, _) in enumerate(vips)), results)
        for position, interface, vip, _ in pending:
            label = VipAttributes.of(vips[position][2]).label
            if label is not None and vip.version == 4 and not label.startswith(f"{interface}:"):
                raise ValueError(
                    f"label {label!r} must start with the interface name: {interface}:"
                )
        fresh = [
            (interface, vip)
            for _, interface, vip, _ in pending
            if vip.ip not in self._ours.get(interface, ())
        ]
        try:
            # Written down before the kernel has them: a crash from here on leaves entries
            # that the next process reconciles, never an address nobody knows is ours.
            self.ledger.record(fresh)
        except LedgerError as exc:
            refusal = AddressError(exc.errno, f"not adding VIPs: {exc.strerror}")
            return [refusal if r is None else r for r in results]
        requests = [
            _add_request(index, vip, VipAttributes.of(vips[position][2]))
            for position, _, vip, index in pending
        ]
        codes = self._carry_out(
            requests, "adding", [f"{vip} to {interface}" for _, interface, vip, _ in pending]
        )
        not_added: list[tuple[str, VirtualAddress]] = []
        for (position, interface, vip, _), code in zip(pending, codes, strict=True):
            ours = self._ours.setdefault(interface, set())
            if code == 0:
                ours.add(vip.ip)
                results[position] = VipOutcome.ADDED
            elif code == errno.EEXIST and vip.ip in ours:
                results[position] = VipOutcome.ALREADY_OURS
            elif code == errno.EEXIST:
                not_added.append((interface, vip))
                log.warning(
                    "%s already has %s, not added by lvsha: leaving it alone and never removing it",
                    interface,
                    vip.ip,
                )
                results[position] = VipOutcome.NOT_OURS
            else:
                if vip.ip not in ours:
                    not_added.append((interface, vip))
                results[position] = (
                    code
                    if isinstance(code, AddressError)
                    else InterfaceNotFoundError(interface)
                    if code == errno.ENODEV
                    else AddressError(code, f"adding {vip} to {interface}: {os.strerror(code)}")
                )
        self.ledger.forget(not_added)
        # Not logged here: the caller announces the VIPs first, then says they were added.
        return [r for r in results if r is not None]

    async def disown_duplicates(
        self, added: Sequence[tuple[str, VirtualAddress]]
    ) -> list[tuple[str, VirtualAddress]]:
        """Of IPv4 VIPs `add_vips` just added, take off again those the interface also has under
        another prefix length (someone else's address, which an exclusive add does not see):
        they are not ours. Returns them."""
        disowned = []
        by_interface: dict[str, list[VirtualAddress]] = {}
        for interface, vip in added:
            if vip.version == 4 and vip.ip in self._ours.get(interface, ()):
                by_interface.setdefault(interface, []).append(vip)
        for interface, vips in by_interface.items():
            try:
                assigned = await self._assigned(interface)
            except InterfaceNotFoundError:
                continue
            for vip in vips:
                if not any(a.address.ip == vip.ip and a.address != vip for a in assigned):
                    continue
                log.warning(
                    "%s also has %s under another prefix length, not added by lvsha: "
                    "taking %s off again and leaving that one alone",
                    interface,
                    vip.ip,
                    vip,
                )
                try:
                    self._delete(interface, vip)
                except AddressError as exc:
                    log.error("%s", exc)
                    continue  # still ours: the next removal takes it off
                self._ours[interface].discard(vip.ip)
                self.ledger.forget([(interface, vip)])
                disowned.append((interface, vip))
        return disowned

    def remove_vips(self, vips: Sequence[tuple[str, VirtualAddress]]) -> list[VipResult | None]:
        """Take off, in one exchange, each VIP this port added: REMOVED, or ABSENT when the
        kernel no longer had it. None for a VIP this port did not add (`remove_vip` tells
        whether it is there). The ledger forgets them once the kernel has let go."""
        results: list[VipResult | None] = [None] * len(vips)
        pending = self._pending(
            ((p, i, vip) for p, (i, vip) in enumerate(vips) if vip.ip in self._ours.get(i, ())),
            results,
        )
        requests = [AddressRequest(False, index, vip) for _, _, vip, index in pending]
        codes = self._carry_out(
            requests, "removing", [f"{vip} from {interface}" for _, interface, vip, _ in pending]
        )
        gone: list[tuple[str, VirtualAddress]] = []
        for (position, interface, vip, _), code in zip(pending, codes, strict=True):
            if code in (0, errno.EADDRNOTAVAIL):
                self._ours[interface].discard(vip.ip)
                gone.append((interface, vip))
                if code == 0:
                    log.info("removed %s from %s", vip, interface)
                results[position] = VipOutcome.REMOVED if code == 0 else VipOutcome.ABSENT
            else:
                # Still ours, and still in the ledger: the next removal tries again.
                results[position] = (
                    code
                    if isinstance(code, AddressError)
                    else AddressError(code, f"removing {vip} from {interface}: {os.strerror(code)}")
                )
        # Forgotten only once the kernel has let go of them (or never had them).
        self.ledger.forget(gone)
        return results

    async def add_vip(
        self, interface: str, vip: VirtualAddress, label: VipAttributes | str | None = None
    ) -> VipOutcome:
        present = await self._find(interface, vip)
        if present is not None and vip.ip not in self._ours.get(interface, ()):
            log.warning(
                "%s already has %s, not added by lvsha: leaving it alone and never removing it",
                interface,
                present.address,
            )
            return VipOutcome.NOT_OURS
        if present is not None:
            wanted = VipAttributes.of(label)
            if present.address == vip and (
                vip.version == 6 or not wanted.differ(interface, present)
            ):
                return VipOutcome.ALREADY_OURS
            # Ours, but not as asked now; the kernel edits none of these in place: again.
            log.info("%s: adding %s again, as configured now", interface, vip)
            self._delete(interface, present.address)
            self._ours[interface].discard(vip.ip)
            self.ledger.forget([(interface, present.address)])
        [result] = self.add_vips([(interface, vip, label)])
        if isinstance(result, Exception):
            raise result
        return result

    async def remove_vip(self, interface: str, vip: VirtualAddress) -> VipOutcome:
        [result] = self.remove_vips([(interface, vip)])
        if isinstance(result, Exception):
            raise result
        if result is not None:
            return result
        present = await self._find(interface, vip)
        if present is None:
            self.ledger.forget([(interface, vip)])
            return VipOutcome.ABSENT
        log.warning("%s has %s, not added by lvsha: left in place", interface, vip)
        return VipOutcome.NOT_OURS

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

    def _index(self, interface: str) -> int:
        return self._get(interface).index

    def _exchange(self, requests: Sequence[AddressRequest]) -> list[int]:
        by_index = {entry.index: entry for entry in self.interfaces.values()}
        return [self._apply(by_index.get(request.index), request) for request in requests]

    @staticmethod
    def _apply(entry: MemoryInterface | None, request: AddressRequest) -> int:
        """What the kernel does with one request."""
        if entry is None:
            return errno.ENODEV
        vip = request.address
        # IPv4 tells addresses apart by address and prefix length, IPv6 by address alone
        # (deletes name the prefix length in both).
        same = [
            a
            for a in entry.addresses
            if a.address.ip == vip.ip
            and (
                a.address.network.prefixlen == vip.network.prefixlen
                or (request.add and vip.version == 6)
            )
        ]
        if not request.add:
            if not same:
                return errno.EADDRNOTAVAIL
            entry.addresses.remove(same[0])
            return 0
        if same:
            return errno.EEXIST
        # The kernel makes an IPv4 address secondary when the interface already has a primary
        # in the same subnet.
        secondary = vip.version == 4 and any(
            a.address.version == 4
            and not a.flags & IFA_F_SECONDARY
            and a.address.network == vip.network
            for a in entry.addresses
        )
        flags = IFA_F_SECONDARY if secondary else IFA_F_NODAD if vip.version == 6 else 0
        entry.addresses.append(
            AssignedAddress(vip, flags, request.label, request.broadcast, request.scope)
        )
        return 0

    async def interface(self, name: str) -> Interface:
        entry = self._get(name)
        return Interface(name, entry.index, entry.mac)


class NetlinkAddresses(_TrackedAddresses):
    """Implements `AddressPort` with rtnetlink, on plain netlink sockets (lvsha.net.rtnl for
    requests, lvsha.net.rtnl_dump for queries).

    Opens its netlink sockets on first use, in the network namespace of the calling thread.
    """

    def __init__(self, ledger: AddressLedger | None = None) -> None:
        super().__init__(ledger)
        self._queries = RtnlQueries()
        self._rtnl = RtnlSocket()

    def _route(self) -> RtnlQueries:
        # Joins no multicast group: this socket asks; it must not queue every address event.
        return self._queries

    def close(self) -> None:
        self._rtnl.close()
        self._queries.close()
        self.ledger.close()

    async def __aenter__(self) -> NetlinkAddresses:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _index(self, interface: str) -> int:
        try:
            return socket.if_nametoindex(interface)
        except OSError:
            raise InterfaceNotFoundError(interface) from None

    def _exchange(self, requests: Sequence[AddressRequest]) -> list[int]:
        return self._rtnl.exchange(requests)

    def _warm(self) -> None:
        try:
            self._rtnl.open()
        except OSError as exc:
            log.warning("cannot open a netlink socket yet: %s", exc)  # the first add tries

    def _link(self, name: str) -> Link:
        try:
            return self._route().link(name)
        except RefusedError as exc:
            if exc.errno == errno.ENODEV:
                raise InterfaceNotFoundError(name) from None
            raise

    async def interface(self, name: str) -> Interface:
        link = self._link(name)
        return Interface(name, link.index, link.mac)

    async def _assigned(self, interface: str) -> list[AssignedAddress]:
        index = self._index(interface)
        found = []
        for entry in self._route().addresses():
            address = entry.interface_address
            if entry.index != index or address is None:
                continue
            found.append(
                AssignedAddress(address, entry.flags, entry.label, entry.broadcast, entry.scope)
            )
        return found
