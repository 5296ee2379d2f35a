"""The kernel's IPVS table over generic netlink (pyroute2's AsyncIPVS), as an `IpvsTablePort`.

pyroute2 0.9.7 quirks this module works around (pinned by tests/kernel/test_ipvs_smoke.py):
its "update" command deletes, so edits use "set"; "set" replaces the whole entry, so every
add and edit sends the complete entry; `from_message` loses fields, so replies are read from
their raw attributes; and a socket carries one request at a time (a second concurrent dump
fails with EBUSY), so requests are serialised on a lock.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from ipaddress import IPv4Network, ip_address
from types import TracebackType
from typing import Any, Self

from pyroute2 import AsyncIPVS, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    FwmarkKey,
    Persistence,
    Service,
    ServiceFlags,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
    TunnelFlags,
    TunnelType,
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

# IP_VS_SVC_F_* bits the model does not carry as flags (include/uapi/linux/ip_vs.h)
_PERSISTENT = 0x0001
_HASHED = 0x0002
# The kernel applies new = (old & ~mask) | (flags & mask); a full mask sets every bit we send.
_ALL_BITS = 0xFFFF_FFFF

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


class IpvsGenlEndpoint:
    """One bound generic netlink socket of the "IPVS" family, used one request at a time.

    Open it before use and close it after, best with ``async with``. Subclasses say which
    socket class to bind (`socket_class`) and what they are (`purpose`, for messages).
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
    """

    async def list_services(self) -> dict[ServiceKey, Service]:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal("list IPVS services", {}):
                service_messages = await ipvs.service("dump")
            table: dict[ServiceKey, Service] = {}
            for message in service_messages:
                key, options = _decode_service(_attributes(message, "IPVS_CMD_ATTR_SERVICE"))
                with _kernel_refusal(f"list destinations of service {key}", {}):
                    destination_messages = await ipvs.dest("dump", service=_service_key(key))
                destinations = tuple(
                    _decode_destination(_attributes(m, "IPVS_CMD_ATTR_DEST"))
                    for m in destination_messages
                )
                table[key] = Service(key, options, destinations)
            return table

    async def add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal(f"add service {key} ({_modules(options)})", _ADD_SERVICE_ERRORS):
                await ipvs.service("add", service=_service_entry(key, options))

    async def edit_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal(f"edit service {key} ({_modules(options)})", _EDIT_SERVICE_ERRORS):
                await ipvs.service("set", service=_service_entry(key, options))

    async def delete_service(self, key: ServiceKey) -> None:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal(f"delete service {key}", _DELETE_SERVICE_ERRORS):
                await ipvs.service("del", service=_service_key(key))

    async def add_destination(self, service: ServiceKey, destination: Destination) -> None:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal(
                f"add destination {destination.key} to service {service}", _ADD_DESTINATION_ERRORS
            ):
                await ipvs.dest(
                    "add", service=_service_key(service), dest=_destination_entry(destination)
                )

    async def edit_destination(self, service: ServiceKey, destination: Destination) -> None:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal(
                f"edit destination {destination.key} of service {service}",
                _CHANGE_DESTINATION_ERRORS,
            ):
                await ipvs.dest(
                    "set", service=_service_key(service), dest=_destination_entry(destination)
                )

    async def delete_destination(self, service: ServiceKey, destination: DestinationKey) -> None:
        async with self._lock:
            ipvs = self._open_socket()
            with _kernel_refusal(
                f"delete destination {destination} of service {service}",
                _CHANGE_DESTINATION_ERRORS,
            ):
                await ipvs.dest(
                    "del",
                    service=_service_key(service),
                    dest=IPVSDest(addr=str(destination.address), port=destination.port),
                )

    def _open_socket(self) -> Any:
        if self._socket is None:
            raise RuntimeError("the IPVS netlink socket is not open")
        return self._socket


@contextmanager
def _kernel_refusal(what: str, error_classes: _ErrorClasses) -> Iterator[None]:
    """Turn the kernel's errno into the port's error class for this command."""
    try:
        yield
    except NetlinkError as error:
        code = int(error.code)
        error_class = error_classes.get(code)
        if error_class is None:
            error_class = InvalidRequestError if code in _INVALID else IpvsError
        raise error_class(f"{what}: {os.strerror(code)}", code) from error


def _modules(options: ServiceOptions) -> str:
    engine = options.persistence_engine
    named = f"scheduler {options.scheduler!r}"
    return named if engine is None else f"{named}, persistence engine {engine!r}"


def _service_key_fields(key: ServiceKey) -> dict[str, Any]:
    if isinstance(key, AddressKey):
        return {
            "af": int(key.family),
            "protocol": int(key.protocol),
            "addr": str(key.address),
            "port": key.port,
        }
    return {"af": int(key.family), "fwmark": key.fwmark}


def _service_key(key: ServiceKey) -> Any:
    return IPVSService(**_service_key_fields(key))


def _service_entry(key: ServiceKey, options: ServiceOptions) -> Any:
    persistence = options.persistence
    flags = int(options.flags)
    timeout = 0
    longest = 32 if key.family is Family.INET else 128
    prefix_length = longest
    if persistence is not None:
        flags |= _PERSISTENT
        timeout = persistence.timeout
        prefix_length = persistence.prefix_length
    return IPVSService(
        **_service_key_fields(key),
        sched_name=options.scheduler,
        flags={"flags": flags, "mask": _ALL_BITS},
        timeout=timeout,
        netmask=_encode_netmask(key.family, prefix_length),
        pe_name=options.persistence_engine,  # None leaves it out, which clears it on "set"
    )


def _encode_netmask(family: Family, prefix_length: int) -> str:
    if family is Family.INET:
        return str(IPv4Network((0, prefix_length)).netmask)
    # For IPv6 the kernel reads the 32-bit netmask field as a prefix length in host byte
    # order; pyroute2 only encodes that field as a dotted quad, so spell the integer as one.
    return socket.inet_ntoa(struct.pack("=I", prefix_length))


def _decode_netmask(family: Family, netmask: str) -> int:
    if family is Family.INET:
        return IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    prefix_length: int = struct.unpack("=I", socket.inet_aton(netmask))[0]
    return prefix_length


def _destination_entry(destination: Destination) -> Any:
    return IPVSDest(
        addr=str(destination.address),
        port=destination.port,
        fwd_method=int(destination.forwarding),
        weight=destination.weight,
        u_thresh=destination.upper_threshold,
        l_thresh=destination.lower_threshold,
        tun_type=int(destination.tunnel_type),
        # The kernel reads the tunnel port in network byte order; pyroute2 writes host order.
        tun_port=socket.htons(destination.tunnel_port),
        tun_flags=int(destination.tunnel_flags),
    )


def _attributes(message: Any, nested: str) -> dict[str, Any]:
    return {name: value for name, value in message.get(nested)["attrs"]}


def _decode_service(attributes: Mapping[str, Any]) -> tuple[ServiceKey, ServiceOptions]:
    family = Family(int(attributes["IPVS_SVC_ATTR_AF"]))
    key: ServiceKey
    fwmark = int(attributes.get("IPVS_SVC_ATTR_FWMARK", 0))
    if fwmark:
        key = FwmarkKey(fwmark, family)
    else:
        key = AddressKey(
            TransportProtocol(int(attributes["IPVS_SVC_ATTR_PROTOCOL"])),
            ip_address(attributes["IPVS_SVC_ATTR_ADDR"]),
            int(attributes["IPVS_SVC_ATTR_PORT"]),
        )
    flags = int(attributes["IPVS_SVC_ATTR_FLAGS"]["flags"])
    persistence = None
    if flags & _PERSISTENT:
        persistence = Persistence(
            timeout=int(attributes["IPVS_SVC_ATTR_TIMEOUT"]),
            prefix_length=_decode_netmask(family, attributes["IPVS_SVC_ATTR_NETMASK"]),
        )
    engine = attributes.get("IPVS_SVC_ATTR_PE_NAME")
    options = ServiceOptions(
        scheduler=str(attributes["IPVS_SVC_ATTR_SCHED_NAME"]),
        flags=ServiceFlags(flags & ~(_PERSISTENT | _HASHED)),
        persistence=persistence,
        persistence_engine=None if engine is None else str(engine),
    )
    return key, options


def _decode_destination(attributes: Mapping[str, Any]) -> Destination:
    # Kernels before tunnel types (5.2) send no TUN_* attributes: that is plain IPIP.
    return Destination(
        address=ip_address(attributes["IPVS_DEST_ATTR_ADDR"]),
        port=int(attributes["IPVS_DEST_ATTR_PORT"]),
        weight=int(attributes["IPVS_DEST_ATTR_WEIGHT"]),
        forwarding=Forwarding(int(attributes["IPVS_DEST_ATTR_FWD_METHOD"])),
        upper_threshold=int(attributes["IPVS_DEST_ATTR_U_THRESH"]),
        lower_threshold=int(attributes["IPVS_DEST_ATTR_L_THRESH"]),
        tunnel_type=TunnelType(int(attributes.get("IPVS_DEST_ATTR_TUN_TYPE", 0))),
        tunnel_port=socket.ntohs(int(attributes.get("IPVS_DEST_ATTR_TUN_PORT", 0))),
        tunnel_flags=TunnelFlags(int(attributes.get("IPVS_DEST_ATTR_TUN_FLAGS", 0))),
    )
