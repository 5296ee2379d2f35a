"""An IPVS table as plain values: services keyed like the kernel keys them, and their destinations.

Field meanings and ranges follow the kernel's generic netlink interface
(include/uapi/linux/ip_vs.h).
Range checks here are only about representability; the kernel's own rules (lower threshold above
upper, mixed address families without tunnelling, unknown scheduler, ...) are enforced by the
ports, so that a plan which the kernel would reject fails in tests too.
"""

from __future__ import annotations

import enum
import itertools
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_S32_MAX = 0x7FFF_FFFF


class Family(enum.IntEnum):
    INET = socket.AF_INET
    INET6 = socket.AF_INET6

    @classmethod
    def of(cls, address: IPAddress) -> Family:
        return cls.INET if address.version == 4 else cls.INET6


class TransportProtocol(enum.IntEnum):
    TCP = socket.IPPROTO_TCP
    UDP = socket.IPPROTO_UDP
    SCTP = socket.IPPROTO_SCTP


class ServiceFlags(enum.IntFlag):
    """Virtual service flags a user sets (IP_VS_SVC_F_*).

    IP_VS_SVC_F_PERSISTENT is not here: it is implied by `ServiceOptions.persistence`.
    IP_VS_SVC_F_HASHED is kernel-internal and never part of a table.
    """

    NONE = 0
    ONE_PACKET = 0x0004
    SCHED1 = 0x0008
    SCHED2 = 0x0010
    SCHED3 = 0x0020
    SH_FALLBACK = SCHED1
    SH_PORT = SCHED2


class Forwarding(enum.IntEnum):
    """A destination's forwarding method (IP_VS_CONN_F_FWD_MASK values)."""

    MASQUERADE = 0
    """NAT."""
    LOCAL_NODE = 1
    """Only so that a table written by another tool can be observed faithfully."""
    TUNNEL = 2
    DIRECT_ROUTE = 3
    BYPASS = 4
    """Only so that a table written by another tool can be observed faithfully."""


class TunnelType(enum.IntEnum):
    IPIP = 0
    GUE = 1
    GRE = 2


class TunnelFlags(enum.IntFlag):
    NONE = 0
    CSUM = 0x1
    REMCSUM = 0x2


@dataclass(frozen=True, slots=True)
class AddressKey:
    """A service reached by protocol, virtual address and port."""

    protocol: TransportProtocol
    address: IPAddress
    port: int

    def __post_init__(self) -> None:
        _check_range("virtual service port", self.port, 0, _U16_MAX)

    @property
    def family(self) -> Family:
        return Family.of(self.address)

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.protocol.name} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FwmarkKey:
    """A service reached by firewall mark; the kernel keys these per address family."""

    fwmark: int
    family: Family

    def __post_init__(self) -> None:
        # fwmark 0 is how the kernel says "not a fwmark service"
        _check_range("firewall mark", self.fwmark, 1, _U32_MAX)

    def __str__(self) -> str:
        return f"FWM {self.fwmark} {self.family.name}"


ServiceKey: TypeAlias = AddressKey | FwmarkKey


def service_sort_key(key: ServiceKey) -> tuple[int, int, int, int, int]:
    """A total order over service keys of both kinds and both families, for stable plans."""
    if isinstance(key, AddressKey):
        return (0, key.family, key.protocol, int(key.address), key.port)
    return (1, key.family, key.fwmark, 0, 0)


@dataclass(frozen=True, slots=True)
class Persistence:
    """Client affinity: `timeout` seconds, clients grouped by source `prefix_length` bits.

    The kernel stores an IPv4 netmask and an IPv6 prefix length in one field; a prefix length
    covers both (only contiguous IPv4 netmasks are representable, which is all ipvsadm and
    keepalived produce).
    """

    timeout: int
    prefix_length: int

    def __post_init__(self) -> None:
        _check_range("persistence timeout", self.timeout, 1, _U32_MAX)
        _check_range("persistence prefix length", self.prefix_length, 0, 128)


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """What can be changed on an existing service (IPVS_CMD_SET_SERVICE) without recreating it."""

    scheduler: str = "wlc"
    flags: ServiceFlags = ServiceFlags.NONE
    persistence: Persistence | None = None
    persistence_engine: str | None = None
    """E.g. "sip"; None for plain source-address persistence or none."""

    def __post_init__(self) -> None:
        if not self.scheduler:
            raise ValueError("scheduler name must not be empty")
        unknown = int(self.flags) & ~_ALL_SERVICE_FLAGS
        if unknown:
            raise ValueError(f"service flags {unknown:#x} are not user-settable")


_ALL_SERVICE_FLAGS = int(
    ServiceFlags.ONE_PACKET | ServiceFlags.SCHED1 | ServiceFlags.SCHED2 | ServiceFlags.SCHED3
)


@dataclass(frozen=True, slots=True)
class DestinationKey:
    """How the kernel finds a destination within its service."""

    address: IPAddress
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Destination:
    """A real server entry in a service. Everything except address and port is editable."""

    address: IPAddress
    port: int
    weight: int = 1
    forwarding: Forwarding = Forwarding.MASQUERADE
    upper_threshold: int = 0
    """Stop scheduling new connections above this many; 0 means no limit."""
    lower_threshold: int = 0
    """Resume below this many; 0 lets the kernel use 3/4 of the upper threshold."""
    tunnel_type: TunnelType = TunnelType.IPIP
    tunnel_port: int = 0
    """Destination UDP port of GUE encapsulation."""
    tunnel_flags: TunnelFlags = TunnelFlags.NONE

    def __post_init__(self) -> None:
        _check_range("destination port", self.port, 0, _U16_MAX)
        _check_range("destination weight", self.weight, 0, _S32_MAX)
        _check_range("upper connection threshold", self.upper_threshold, 0, _U32_MAX)
        _check_range("lower connection threshold", self.lower_threshold, 0, _U32_MAX)
        _check_range("tunnel port", self.tunnel_port, 0, _U16_MAX)

    @property
    def key(self) -> DestinationKey:
        return DestinationKey(self.address, self.port)

    @property
    def family(self) -> Family:
        return Family.of(self.address)


@dataclass(frozen=True, slots=True)
class Connections:
    """A destination's connection counters as the kernel reports them (IPVS_DEST_ATTR_
    ACTIVE_CONNS, IPVS_DEST_ATTR_INACT_CONNS). Not part of `Destination`: they change with
    traffic, and a table must compare equal whatever its traffic."""

    active: int = 0
    inactive: int = 0


ConnectionTable: TypeAlias = Mapping[ServiceKey, Mapping[DestinationKey, Connections]]
"""Every destination's counters, by service."""


def destination_sort_key(key: DestinationKey) -> tuple[int, int, int]:
    return (key.address.version, int(key.address), key.port)


ORDERED_SCHEDULERS = frozenset({"mh", "sh", "dh"})
"""Schedulers that map a flow to a destination by the position of the destinations in the
kernel's list (ip_vs_mh_populate, ip_vs_sh_reassign, ip_vs_dh_reassign walk
svc->destinations in order): two directors with the same destinations in another order send
the same flow to different real servers."""


LAST_WEIGHT_SCHEDULERS = frozenset({"mh"})
"""Schedulers whose table gives a destination a share by its last non-zero weight
(dest->last_weight), which an edit to weight 0 keeps but an add at weight 0 sets to 0: a
destination set to 0 keeps its slots (flows hashed to them are dropped, or rehashed with
mh-fallback), one added at 0 has none. Same weights, different tables."""


def order_matters(options: ServiceOptions) -> bool:
    """Whether a service's scheduler depends on the order of its destinations."""
    return options.scheduler in ORDERED_SCHEDULERS


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service and its destinations.

    Destinations are kept sorted by key, so two services with the same destinations compare
    equal whatever order they were listed in. Their order in the kernel is `order`, apart.
    """

    key: ServiceKey
    options: ServiceOptions = ServiceOptions()
    destinations: tuple[Destination, ...] = ()
    order: tuple[DestinationKey, ...] | None = field(default=None, compare=False)
    """The kernel's list order, head first: the destination added last comes first (the
    kernel adds with list_add_rcu, at the head; /proc/net/ip_vs and ``ipvsadm -Ln --nosort``
    list it so; plain ``ipvsadm -Ln`` sorts). A table read from a port lists every
    destination; a desired table lists those whose relative order counts (the configured
    real servers, last configured first), others may be anywhere. None: unknown. Not part of
    equality: a table is the same table in any order, and only `lvsha.ipvs.plan` asks."""

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.destinations, key=lambda d: destination_sort_key(d.key)))
        for before, after in itertools.pairwise(ordered):
            if before.key == after.key:
                raise ValueError(f"service {self.key}: destination {after.key} listed twice")
        object.__setattr__(self, "destinations", ordered)
        if self.order is not None:
            listed = set(self.order)
            if len(listed) != len(self.order):
                raise ValueError(f"service {self.key}: a destination is twice in its order")
            unknown = listed - {d.key for d in ordered}
            if unknown:
                raise ValueError(
                    f"service {self.key}: order names {', '.join(map(str, unknown))}, "
                    "not among its destinations"
                )
        persistence = self.options.persistence
        if persistence is not None:
            longest = 32 if self.key.family is Family.INET else 128
            if persistence.prefix_length > longest:
                raise ValueError(
                    f"service {self.key}: persistence prefix length "
                    f"{persistence.prefix_length} is longer than {longest}"
                )

    @property
    def destinations_by_key(self) -> dict[DestinationKey, Destination]:
        return {destination.key: destination for destination in self.destinations}


IpvsTable: TypeAlias = Mapping[ServiceKey, Service]


def table_of(services: Iterable[Service]) -> dict[ServiceKey, Service]:
    """An `IpvsTable` from services, refusing two services with one key."""
    table: dict[ServiceKey, Service] = {}
    for service in services:
        if service.key in table:
            raise ValueError(f"service {service.key} listed twice")
        table[service.key] = service
    return table


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}..{high}")


def add_order(service: Service) -> list[Destination]:
    """`service`'s destinations in the order to add them so the kernel, which puts each new
    one at the head of its list, lists them in `service.order`: those `order` does not name
    first (in key order), then its last first."""
    if service.order is None:
        return list(service.destinations)
    by_key = service.destinations_by_key
    named = set(service.order)
    return [d for d in service.destinations if d.key not in named] + [
        by_key[key] for key in reversed(service.order)
    ]
