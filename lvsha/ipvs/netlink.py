"""The kernel's IPVS table over generic netlink, as an `IpvsTablePort`.

pyroute2's AsyncIPVS binds a socket and resolves the "IPVS" generic netlink family; the table's
requests and replies then go through `genl_codec` on a plain netlink socket, because pyroute2's
per-message encoder and parser cost more than the kernel's work on them. Operations travel in
batches: many requests per sendmsg, each with NLM_F_ACK and its own sequence number.

What a socket allows shapes the rest: it carries one request stream at a time (a second
concurrent dump fails with EBUSY), so requests are serialised on a lock; and acknowledgements
the receive buffer cannot hold are dropped (ENOBUFS), so the number of requests awaiting one is
bounded by the buffer, and a lost acknowledgement is reported as an error, never taken as
success.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, assert_never

from pyroute2 import AsyncIPVS
from pyroute2.netlink.exceptions import NetlinkError

from lvsha.ipvs.genl_codec import (
    IpvsRequests,
    decode_destination,
    decode_destination_counted,
    decode_destination_counters,
    decode_service,
)
from lvsha.ipvs.model import (
    Connections,
    Destination,
    DestinationKey,
    Family,
    Service,
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
from lvsha.ipvs.port import (
    DestinationExistsError,
    InvalidRequestError,
    IpvsError,
    NoSuchDestinationError,
    NoSuchServiceError,
    ServiceExistsError,
    UnknownModuleError,
)
from lvsha.net.nlmsg import (
    NETLINK_CAP_ACK,
    NLMSG_DONE,
    NLMSG_ERROR,
    SO_RCVBUFFORCE,
    SOL_NETLINK,
    acknowledgements,
    error_code,
    replies,
)

_ErrorClasses = Mapping[int, type[IpvsError]]

_ADD_SERVICE_ERRORS: _ErrorClasses = {
    errno.EEXIST: ServiceExistsError,
    errno.ENOENT: UnknownModuleError,
}
_EDIT_SERVICE_ERRORS: _ErrorClasses = {
    errno.ESRCH: NoSuchServiceError,
    errno.ENOENT: UnknownModuleError,
}
_DELETE_SERVICE_ERRORS: _ErrorClasses = {errno.ESRCH: NoSuchServiceError}
_ADD_DESTINATION_ERRORS: _ErrorClasses = {
    errno.ESRCH: NoSuchServiceError,
    errno.EEXIST: DestinationExistsError,
}
_CHANGE_DESTINATION_ERRORS: _ErrorClasses = {
    errno.ESRCH: NoSuchServiceError,
    errno.ENOENT: NoSuchDestinationError,
}
_INVALID = frozenset({errno.EINVAL, errno.ERANGE})

# include/uapi/linux/netlink.h and linux/socket.h; not all are in Python's socket module.
_NETLINK_GENERIC = 16

DEFAULT_RECEIVE_BUFFER = 4 << 20
"""Bytes asked for the socket's receive buffer (the kernel doubles it for bookkeeping)."""
_ACK_BUDGET = 2048
"""Receive buffer bytes one queued acknowledgement may use: its skb, not just its 36 bytes."""
_MAX_WINDOW = 1024
_MAX_SEND = 64 << 10
"""Bytes per sendmsg; the kernel refuses one larger than the send buffer (212992 by default)."""
_ACK_READ = 8192
_DUMP_READ = 64 << 10
_REPLY_TIMEOUT = 30.0
"""Seconds to wait for a reply. The kernel answers a request before sendmsg returns, so waiting
this long means it never will."""
_SEQUENCE_MASK = 0xFFFF_FFFF

T = TypeVar("T")


class IpvsGenlEndpoint:
    """One bound generic netlink socket of the "IPVS" family, used one request at a time.

    Open it before use and close it after, best with ``async with``. Subclasses say which
    socket to bind (`_new_socket`) and what they are (`purpose`, for messages).
    """

    purpose = "the kernel's IPVS table"

    def __init__(self) -> None:
        self._socket: Any = None
        # The kernel serves one request at a time per socket (EBUSY otherwise).
        self._lock = asyncio.Lock()

    def _new_socket(self) -> Any:
        return AsyncIPVS()

    async def open(self) -> None:
        """Bind the socket and resolve the "IPVS" generic netlink family.

        Binding loads ip_vs on a kernel that has it as a module; without it this raises
        IpvsError with ENOENT.
        """
        if self._socket is not None:
            raise RuntimeError(f"the netlink socket for {self.purpose} is already open")
        endpoint = self._new_socket()
        try:
            # pyroute2's own "async with" does not bind; requests before this would fail.
            await endpoint.setup_endpoint()
        except NetlinkError as error:
            endpoint.close()
            raise IpvsError(
                f"cannot open {self.purpose}: {os.strerror(error.code)} "
                "(is the ip_vs module available?)",
                error.code,
            ) from error
        except BaseException:
            endpoint.close()
            raise
        self._socket = endpoint

    async def close(self) -> None:
        """Close the socket once any request in flight has finished."""
        async with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class NetlinkIpvsTable(IpvsGenlEndpoint):
    """Implements `IpvsTablePort` on one generic netlink socket.

    Open it before use and close it after, best with ``async with NetlinkIpvsTable() as table``.
    `receive_buffer` is the size asked for the socket's receive buffer; `window`, if given,
    overrides the number of requests sent before their acknowledgements are read, which is
    otherwise what that buffer can hold.
    """

    def __init__(
        self, *, receive_buffer: int = DEFAULT_RECEIVE_BUFFER, window: int | None = None
    ) -> None:
        super().__init__()
        self._receive_buffer = receive_buffer
        self._window_override = window
        self._window = 1
        self._netlink: socket.socket | None = None
        self._requests: IpvsRequests | None = None
        self._sequence = 0

    async def open(self) -> None:
        """Resolve the "IPVS" family through pyroute2, then bind the socket requests use."""
        if self._netlink is not None:
            raise RuntimeError(f"the netlink socket for {self.purpose} is already open")
        await super().open()
        try:
            self._requests = IpvsRequests(int(self._socket.prid))
            self._netlink = self._bind()
        finally:
            # Only the family id was needed from it.
            await super().close()

    async def close(self) -> None:
        async with self._lock:
            if self._netlink is not None:
                self._netlink.close()
                self._netlink = None
        await super().close()

    async def list_services(self) -> dict[ServiceKey, Service]:
        dumped = await self._dump_table(decode_destination)
        # The dump walks each service's list from its head: its order is the kernel's.
        return {
            key: Service(key, options, tuple(destinations), tuple(d.key for d in destinations))
            for key, (options, destinations) in dumped.items()
        }

    async def destination_counters(self) -> dict[ServiceKey, dict[DestinationKey, Connections]]:
        dumped = await self._dump_table(decode_destination_counters)
        return {key: dict(destinations) for key, (_, destinations) in dumped.items()}

    async def list_services_counted(
        self,
    ) -> tuple[dict[ServiceKey, Service], dict[ServiceKey, dict[DestinationKey, Connections]]]:
        dumped = await self._dump_table(decode_destination_counted)
        services: dict[ServiceKey, Service] = {}
        counters: dict[ServiceKey, dict[DestinationKey, Connections]] = {}
        for key, (options, counted) in dumped.items():
            destinations = tuple(d for d, _ in counted)
            services[key] = Service(key, options, destinations, tuple(d.key for d in destinations))
            counters[key] = {destination.key: connections for destination, connections in counted}
        return services, counters

    async def _dump_table(
        self, decode: Callable[[memoryview, Family], T]
    ) -> dict[ServiceKey, tuple[ServiceOptions, list[T]]]:
        """Every service, and its destinations as `decode` reads them."""
        async with self._lock, self._stream() as (netlink, requests):
            sequence = self._next_sequences(1)
            services = [
                decode_service(payload)
                for payload in await self._dump(
                    netlink, requests.service_dump(sequence), sequence, "list IPVS services"
                )
            ]
            table: dict[ServiceKey, tuple[ServiceOptions, list[T]]] = {}
            for key, options in services:
                sequence = self._next_sequences(1)
                payloads = await self._dump(
                    netlink,
                    requests.destination_dump(key, sequence),
                    sequence,
                    f"list destinations of service {key}",
                )
                family = key.family
                table[key] = (options, [decode(payload, family) for payload in payloads])
            return table

    async def apply_operations(self, operations: Sequence[Operation]) -> list[IpvsError | None]:
        """Send every operation, in order, and return what the kernel said to each.

        The kernel carries on after a refused request, so every operation is attempted.
        """
        results: list[IpvsError | None] = [None] * len(operations)
        async with self._lock, self._stream() as (netlink, requests):
            start = 0
            while start < len(operations):
                start = await self._apply_window(netlink, requests, operations, start, results)
                # Let the rest of the process run between windows of a long batch.
                await asyncio.sleep(0)
        return results

    async def add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        await self._apply_one(AddService(key, options))

    async def edit_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        await self._apply_one(EditService(key, options))

    async def delete_service(self, key: ServiceKey) -> None:
        await self._apply_one(DeleteService(key))

    async def add_destination(self, service: ServiceKey, destination: Destination) -> None:
        await self._apply_one(AddDestination(service, destination))

    async def edit_destination(self, service: ServiceKey, destination: Destination) -> None:
        await self._apply_one(EditDestination(service, destination))

    async def delete_destination(self, service: ServiceKey, destination: DestinationKey) -> None:
        await self._apply_one(DeleteDestination(service, destination))

    async def _apply_one(self, operation: Operation) -> None:
        [refusal] = await self.apply_operations([operation])
        if refusal is not None:
            raise refusal

    # --- the socket ---------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        netlink = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_GENERIC
        )
        try:
            netlink.setblocking(False)
            netlink.bind((0, 0))
            try:
                netlink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._receive_buffer)
            except PermissionError:
                netlink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer)
            # Refusals then carry the errno without an echo of the request (before Linux 4.3
            # the option is unknown: larger refusals, same meaning).
            with contextlib.suppress(OSError):
                netlink.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            room = netlink.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except BaseException:
            netlink.close()
            raise
        self._window = self._window_override or max(1, min(_MAX_WINDOW, room // _ACK_BUDGET))
        return netlink

    def _stream(self) -> _Stream:
        if self._netlink is None or self._requests is None:
            raise RuntimeError("the IPVS netlink socket is not open")
        return _Stream(self, self._netlink, self._requests)

    def _rebind(self) -> None:
        """A fresh socket after a stream was cut short, so that no reply or dump left over on
        the old one is read as the answer to a later request."""
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
            self._netlink = self._bind()

    def _next_sequences(self, count: int) -> int:
        first = (self._sequence + 1) & _SEQUENCE_MASK
        self._sequence = (self._sequence + count) & _SEQUENCE_MASK
        return first

    # --- batches ------------------------------------------------------------------------------

    async def _apply_window(
        self,
        netlink: socket.socket,
        requests: IpvsRequests,
        operations: Sequence[Operation],
        start: int,
        results: list[IpvsError | None],
    ) -> int:
        """Send the operations from `start` that fit one window, read their acknowledgements,
        and return where the next window starts."""
        end = min(len(operations), start + self._window)
        first = self._next_sequences(end - start)
        encode = requests.operation
        messages: list[bytes] = []
        size = 0
        for index in range(start, end):
            message = encode(operations[index], (first + index - start) & _SEQUENCE_MASK)
            if messages and size + len(message) > _MAX_SEND:
                end = index
                break
            messages.append(message)
            size += len(message)
        count = end - start
        try:
            netlink.send(b"".join(messages))
        except OSError as error:
            code = error.errno or errno.EIO
            for index in range(start, end):
                what = _described(operations[index])[0]
                results[index] = _error(f"{what}: not sent", code, {})
            return end

        answered = bytearray(count)
        outstanding = count
        overrun = False
        deadline = asyncio.get_running_loop().time() + _REPLY_TIMEOUT
        while outstanding:
            try:
                try:
                    data = netlink.recv(_ACK_READ)
                except BlockingIOError:
                    if overrun:
                        break  # all the kernel queued has been read; the rest was dropped
                    data = await _receive_by(netlink, _ACK_READ, deadline)
            except TimeoutError:
                break
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                overrun = True
                continue
            for sequence, code in acknowledgements(data):
                offset = (sequence - first) & _SEQUENCE_MASK
                if offset >= count or answered[offset]:
                    continue
                answered[offset] = 1
                outstanding -= 1
                if code:
                    results[start + offset] = _refusal(operations[start + offset], code)
        if outstanding:
            code = errno.ENOBUFS if overrun else errno.ETIMEDOUT
            reason = (
                "its acknowledgement was dropped (receive buffer overrun)"
                if overrun
                else "no acknowledgement from the kernel"
            )
            for offset in range(count):
                if not answered[offset]:
                    what = _described(operations[start + offset])[0]
                    results[start + offset] = IpvsError(
                        f"{what}: {reason}; it may or may not have been applied", code
                    )
        return end

    # --- dumps --------------------------------------------------------------------------------

    async def _dump(
        self, netlink: socket.socket, request: bytes, sequence: int, what: str
    ) -> list[memoryview]:
        """The payloads of one dump's replies."""
        try:
            netlink.send(request)
        except OSError as error:
            raise _error(what, error.errno or errno.EIO, {}) from error
        payloads: list[memoryview] = []
        deadline = asyncio.get_running_loop().time() + _REPLY_TIMEOUT
        while True:
            try:
                try:
                    data = netlink.recv(_DUMP_READ)
                except BlockingIOError:
                    data = await _receive_by(netlink, _DUMP_READ, deadline)
            except TimeoutError:
                raise IpvsError(f"{what}: no reply from the kernel", errno.ETIMEDOUT) from None
            except OSError as error:
                raise _error(what, error.errno or errno.EIO, {}) from error
            for kind, _, reply_sequence, payload in replies(data):
                if reply_sequence != sequence:
                    continue
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    code = error_code(payload)
                    if code:
                        raise _error(what, code, {})
                    return payloads
                if kind >= 0x10:  # NLMSG_MIN_TYPE: the family's own messages
                    payloads.append(payload)


class _Stream:
    """Holds the table's socket for one request stream; replaces it if the stream breaks off
    (a cancellation or an error midway leaves replies, or a dump, pending on it)."""

    def __init__(
        self, table: NetlinkIpvsTable, netlink: socket.socket, requests: IpvsRequests
    ) -> None:
        self._table = table
        self._netlink = netlink
        self._requests = requests

    async def __aenter__(self) -> tuple[socket.socket, IpvsRequests]:
        return self._netlink, self._requests

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._table._rebind()


async def _receive_by(netlink: socket.socket, size: int, deadline: float) -> bytes:
    async with asyncio.timeout_at(deadline):
        return await asyncio.get_running_loop().sock_recv(netlink, size)


def _refusal(operation: Operation, code: int) -> IpvsError:
    what, error_classes = _described(operation)
    return _error(what, code, error_classes)


def _error(what: str, code: int, error_classes: _ErrorClasses) -> IpvsError:
    """The port's error class for this command and errno."""
    error_class = error_classes.get(code)
    if error_class is None:
        error_class = InvalidRequestError if code in _INVALID else IpvsError
    return error_class(f"{what}: {os.strerror(code)}", code)


def _described(operation: Operation) -> tuple[str, _ErrorClasses]:
    """How error messages name the operation, and its errno-to-error-class table."""
    match operation:
        case AddService(key, options):
            return f"add service {key} ({_modules(options)})", _ADD_SERVICE_ERRORS
        case EditService(key, options):
            return f"edit service {key} ({_modules(options)})", _EDIT_SERVICE_ERRORS
        case DeleteService(key):
            return f"delete service {key}", _DELETE_SERVICE_ERRORS
        case AddDestination(service, destination):
            return (
                f"add destination {destination.key} to service {service}",
                _ADD_DESTINATION_ERRORS,
            )
        case EditDestination(service, destination):
            return (
                f"edit destination {destination.key} of service {service}",
                _CHANGE_DESTINATION_ERRORS,
            )
        case DeleteDestination(service, destination_key):
            return (
                f"delete destination {destination_key} of service {service}",
                _CHANGE_DESTINATION_ERRORS,
            )
        case _:
            assert_never(operation)


def _modules(options: ServiceOptions) -> str:
    engine = options.persistence_engine
    named = f"scheduler {options.scheduler!r}"
    return named if engine is None else f"{named}, persistence engine {engine!r}"
