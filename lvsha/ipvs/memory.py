"""An IPVS table held in memory, refusing what the kernel refuses, for tests and --dry-run.

Destinations are listed in the kernel's order: ip_vs_ctl.c adds a destination at the head of
its service's list (list_add_rcu), an edit leaves it in place, a delete unlinks it.

The checks follow net/netfilter/ipvs/ip_vs_ctl.c (ip_vs_genl_set_cmd, ip_vs_add_dest,
ip_vs_edit_dest, ip_vs_new_dest, ip_vs_add_service, ip_vs_edit_service), in the kernel's order,
so the first error reported is the one the kernel would report.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from lvsha.ipvs.model import (
    Connections,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    Service,
    ServiceKey,
    ServiceOptions,
    TunnelType,
    add_order,
)
from lvsha.ipvs.plan import Operation
from lvsha.ipvs.port import (
    DestinationExistsError,
    InvalidRequestError,
    IpvsError,
    NoSuchDestinationError,
    NoSuchServiceError,
    ServiceExistsError,
    UnknownModuleError,
    apply_operation,
)

KERNEL_SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
)
"""The schedulers mainline Linux ships as ip_vs_<name> modules."""
KERNEL_PERSISTENCE_ENGINES = frozenset({"sip"})

_NO_SCHEDULER = "none"
_NAME_MAX = 15  # IP_VS_SCHEDNAME_MAXLEN and IP_VS_PENAME_MAXLEN, less the NUL
_S32_MAX = 0x7FFF_FFFF
_IPV4_ZERONET = IPv4Network("0.0.0.0/8")
_IPV4_LIMITED_BROADCAST = IPv4Address("255.255.255.255")


class MemoryIpvsTable:
    """Implements `IpvsTablePort` on a dictionary."""

    def __init__(
        self,
        services: Iterable[Service] = (),
        *,
        schedulers: frozenset[str] = KERNEL_SCHEDULERS,
        persistence_engines: frozenset[str] = KERNEL_PERSISTENCE_ENGINES,
    ) -> None:
        self._schedulers = schedulers
        self._persistence_engines = persistence_engines
        self._options: dict[ServiceKey, ServiceOptions] = {}
        self._destinations: dict[ServiceKey, dict[DestinationKey, Destination]] = {}
        self._connections: dict[tuple[ServiceKey, DestinationKey], Connections] = {}
        self._last_weights: dict[tuple[ServiceKey, DestinationKey], int] = {}
        for service in services:
            self._add_service(service.key, service.options)
            for destination in add_order(service):
                self._add_destination(service.key, destination)

    def snapshot(self) -> dict[ServiceKey, Service]:
        """The table as it is now; later changes do not show through.

        Each service's `order` is the kernel's: the destination added last first (a dict keeps
        insertion order, an edit keeps its place, a delete and add moves it to the head)."""
        return {
            key: Service(
                key,
                options,
                tuple(self._destinations[key].values()),
                tuple(reversed(self._destinations[key])),
            )
            for key, options in self._options.items()
        }

    async def list_services(self) -> dict[ServiceKey, Service]:
        return self.snapshot()

    def set_connections(
        self, service: ServiceKey, destination: DestinationKey, active: int, inactive: int
    ) -> None:
        """A test hook: the counters `destination_counters` reports for a destination (0 until
        set; a destination deleted and added again starts at 0)."""
        if destination not in self._require_service(service):
            raise NoSuchDestinationError(f"service {service} has no destination {destination}")
        if active < 0 or inactive < 0:
            raise ValueError(f"connection counts must be >= 0, got {active}, {inactive}")
        self._connections[service, destination] = Connections(active, inactive)

    def last_weight(self, service: ServiceKey, destination: DestinationKey) -> int:
        """A test hook: the kernel's dest->last_weight, which mh builds its table from and no
        interface shows: set by an add, and by an edit to a weight other than 0."""
        if destination not in self._require_service(service):
            raise NoSuchDestinationError(f"service {service} has no destination {destination}")
        return self._last_weights[service, destination]

    async def destination_counters(self) -> dict[ServiceKey, dict[DestinationKey, Connections]]:
        return self._counters()

    async def list_services_counted(
        self,
    ) -> tuple[dict[ServiceKey, Service], dict[ServiceKey, dict[DestinationKey, Connections]]]:
        # Through list_services, so a test port that watches reads sees this one too.
        return await self.list_services(), self._counters()

    def _counters(self) -> dict[ServiceKey, dict[DestinationKey, Connections]]:
        zero = Connections()
        return {
            service: {key: self._connections.get((service, key), zero) for key in destinations}
            for service, destinations in self._destinations.items()
        }

    async def add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        self._add_service(key, options)

    async def edit_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        self._require_service(key)
        self._check_options(key, options)
        self._options[key] = options

    async def delete_service(self, key: ServiceKey) -> None:
        for destination in self._require_service(key):
            self._connections.pop((key, destination), None)
            self._last_weights.pop((key, destination), None)
        del self._options[key]
        del self._destinations[key]

    async def add_destination(self, service: ServiceKey, destination: Destination) -> None:
        self._add_destination(service, destination)

    async def edit_destination(self, service: ServiceKey, destination: Destination) -> None:
        destinations = self._require_service(service)
        self._check_destination(service, destination)
        if destination.key not in destinations:
            raise NoSuchDestinationError(f"service {service} has no destination {destination.key}")
        destinations[destination.key] = destination
        if destination.weight != 0:
            self._last_weights[service, destination.key] = destination.weight

    async def delete_destination(self, service: ServiceKey, destination: DestinationKey) -> None:
        destinations = self._require_service(service)
        if destination not in destinations:
            raise NoSuchDestinationError(f"service {service} has no destination {destination}")
        del destinations[destination]
        self._connections.pop((service, destination), None)
        self._last_weights.pop((service, destination), None)

    async def apply_operations(self, operations: Sequence[Operation]) -> list[IpvsError | None]:
        results: list[IpvsError | None] = []
        for operation in operations:
            try:
                # Through the single-operation methods, so that a subclass sees each one.
                await apply_operation(self, operation)
            except IpvsError as error:
                results.append(error)
            else:
                results.append(None)
        return results

    def _add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        if key in self._options:
            raise ServiceExistsError(f"service {key} already exists")
        self._check_options(key, options)
        self._options[key] = options
        self._destinations[key] = {}

    def _add_destination(self, service: ServiceKey, destination: Destination) -> None:
        destinations = self._require_service(service)
        self._check_destination(service, destination)
        if destination.key in destinations:
            raise DestinationExistsError(f"service {service} already has {destination.key}")
        self._check_unicast(destination)
        destinations[destination.key] = destination
        self._last_weights[service, destination.key] = destination.weight

    def _require_service(self, key: ServiceKey) -> dict[DestinationKey, Destination]:
        destinations = self._destinations.get(key)
        if destinations is None:
            raise NoSuchServiceError(f"no service {key}")
        return destinations

    def _check_options(self, key: ServiceKey, options: ServiceOptions) -> None:
        for kind, name, known in (
            ("scheduler", options.scheduler, self._schedulers),
            ("persistence engine", options.persistence_engine, self._persistence_engines),
        ):
            if name is None or (kind == "scheduler" and name == _NO_SCHEDULER):
                continue
            if len(name) > _NAME_MAX:
                raise InvalidRequestError(f"{kind} name {name!r} is longer than {_NAME_MAX}")
            if name not in known:
                raise UnknownModuleError(f"{kind} module ip_vs_{name} not found")
        persistence = options.persistence
        if key.family is Family.INET6 and persistence is not None and persistence.prefix_length < 1:
            raise InvalidRequestError(f"service {key}: IPv6 persistence prefix must be 1..128")

    def _check_destination(self, service: ServiceKey, destination: Destination) -> None:
        if destination.family is not service.family and (
            destination.forwarding is not Forwarding.TUNNEL
        ):
            raise InvalidRequestError(
                f"service {service}: destination {destination.key} of another address family "
                "needs tunnel forwarding"
            )
        if destination.lower_threshold > destination.upper_threshold:
            raise InvalidRequestError(
                f"destination {destination.key}: lower threshold {destination.lower_threshold} "
                f"is above upper threshold {destination.upper_threshold}",
                code=errno.ERANGE,
            )
        if destination.upper_threshold > _S32_MAX:
            raise InvalidRequestError(f"destination {destination.key}: upper threshold too large")
        if destination.tunnel_type is TunnelType.GUE and destination.tunnel_port == 0:
            raise InvalidRequestError(f"destination {destination.key}: GUE tunnel needs a port")

    @staticmethod
    def _check_unicast(destination: Destination) -> None:
        address = destination.address
        if isinstance(address, IPv4Address):
            unicast = not (
                address.is_multicast
                or address in _IPV4_ZERONET
                or address == _IPV4_LIMITED_BROADCAST
            )
        else:
            unicast = not (address.is_multicast or address.is_unspecified or address.is_link_local)
        if not unicast:
            raise InvalidRequestError(f"destination {destination.key} is not a unicast address")
