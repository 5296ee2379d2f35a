"""The IPVS table port: what lvsha needs from the kernel's IPVS table, and the errors it raises.

The methods mirror the kernel's generic netlink commands one to one (IPVS_CMD_GET_SERVICE/
GET_DEST dumps, NEW/SET/DEL_SERVICE, NEW/SET/DEL_DEST) so that an implementation adds no logic
of its own, and they fail as the kernel fails, with the kernel's errno on the exception.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import ClassVar, Protocol, assert_never

from lvsha.ipvs.model import (
    ConnectionTable,
    Destination,
    DestinationKey,
    IpvsTable,
    ServiceKey,
    ServiceOptions,
)
from lvsha.ipvs.plan import (
    AddDestination,
    AddService,
    DeleteDestination,
    DeleteService,
    EditDestination,
    EditService,
    Operation,
)


class IpvsError(Exception):
    """The kernel refused an IPVS command."""

    default_errno: ClassVar[int] = errno.EINVAL

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = self.default_errno if code is None else code


class ServiceExistsError(IpvsError):
    """IPVS_CMD_NEW_SERVICE for a key already in the table."""

    default_errno = errno.EEXIST


class NoSuchServiceError(IpvsError):
    """Any command but IPVS_CMD_NEW_SERVICE naming a service not in the table."""

    default_errno = errno.ESRCH


class DestinationExistsError(IpvsError):
    """IPVS_CMD_NEW_DEST for an address and port the service already has."""

    default_errno = errno.EEXIST


class NoSuchDestinationError(IpvsError):
    """IPVS_CMD_SET_DEST or IPVS_CMD_DEL_DEST for an address and port the service lacks."""

    default_errno = errno.ENOENT


class UnknownModuleError(IpvsError):
    """The scheduler or persistence engine named has no kernel module (ip_vs_<name>)."""

    default_errno = errno.ENOENT


class InvalidRequestError(IpvsError):
    """Values the kernel rejects: EINVAL, or ERANGE for weights and thresholds."""

    default_errno = errno.EINVAL


class IpvsTablePort(Protocol):
    """The kernel's IPVS table, or a stand-in for it.

    Implementations report services exactly as the kernel holds them, translated to the model:
    the kernel-internal IP_VS_SVC_F_HASHED flag is dropped, IP_VS_SVC_F_PERSISTENT with its
    timeout and netmask becomes `ServiceOptions.persistence` (None when the flag is clear), and
    when adding or editing a service without persistence the full-length netmask is sent (the
    kernel insists on an IPv6 prefix length of 1..128 even then).
    """

    async def list_services(self) -> IpvsTable:
        """Every service in the table, each with all its destinations."""
        ...

    async def destination_counters(self) -> ConnectionTable:
        """Every destination's connection counters, by service (the same dumps as
        `list_services`, read for their counters only): for `lvsha status`."""
        ...

    async def list_services_counted(self) -> tuple[IpvsTable, ConnectionTable]:
        """`list_services` and `destination_counters` from one set of dumps: the syncer's
        periodic re-read, whose counters the metrics export without a dump of their own."""
        ...

    async def add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        """Create a service without destinations. Raises ServiceExistsError, UnknownModuleError."""
        ...

    async def edit_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        """Replace a service's options in place. Raises NoSuchServiceError, UnknownModuleError."""
        ...

    async def delete_service(self, key: ServiceKey) -> None:
        """Remove a service and, with it, its destinations. Raises NoSuchServiceError."""
        ...

    async def add_destination(self, service: ServiceKey, destination: Destination) -> None:
        """Raises NoSuchServiceError, DestinationExistsError, InvalidRequestError."""
        ...

    async def edit_destination(self, service: ServiceKey, destination: Destination) -> None:
        """Replace everything but the address and port. Raises NoSuchServiceError,
        NoSuchDestinationError, InvalidRequestError."""
        ...

    async def delete_destination(self, service: ServiceKey, destination: DestinationKey) -> None:
        """Raises NoSuchServiceError, NoSuchDestinationError."""
        ...

    async def apply_operations(self, operations: Sequence[Operation]) -> list[IpvsError | None]:
        """Carry out `operations` in order, as one batch: one result per operation, None where
        it was done, else the error its single-operation method would have raised.

        A refusal does not stop the batch: every operation is attempted, as the kernel does
        with a batch of requests.
        """
        ...


async def apply_operation(port: IpvsTablePort, operation: Operation) -> None:
    """Carry out one planned operation on a port."""
    match operation:
        case AddService(key, options):
            await port.add_service(key, options)
        case EditService(key, options):
            await port.edit_service(key, options)
        case DeleteService(key):
            await port.delete_service(key)
        case AddDestination(service, destination):
            await port.add_destination(service, destination)
        case EditDestination(service, destination):
            await port.edit_destination(service, destination)
        case DeleteDestination(service, destination_key):
            await port.delete_destination(service, destination_key)
        case _:
            assert_never(operation)
