"""IPVS generic netlink messages as bytes: requests encoded from the model, replies decoded into it.

Pure: no sockets. Layouts follow include/uapi/linux/netlink.h, genetlink.h and ip_vs.h: a
nlmsghdr, a genlmsghdr, then attributes (nested for the service and the destination), each
padded to 4 bytes. Integers are in host byte order except the ports (network order), the IPv4
netmask (network order) and the IPv6 "netmask", which the kernel reads as a prefix length in
host order.

Requests carry what the kernel needs and nothing it would misread: "set" replaces a whole entry
(ip_vs_edit_service / ip_vs_edit_dest), so adds and edits send the complete entry, flags with a
full mask, and no persistence engine name when there is none (its absence clears it).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from lvsha.ipvs.model import (
    AddressKey,
    Connections,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    FwmarkKey,
    IPAddress,
    Persistence,
    ServiceFlags,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
    TunnelFlags,
    TunnelType,
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
from lvsha.net.nlmsg import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    ReplyFormatError,
)
from lvsha.net.nlmsg import attribute as _attribute
from lvsha.net.nlmsg import attributes as _attributes

# The flags pyroute2 0.9.7 sends for each kind of request; the kernel's IPVS family ignores
# all but REQUEST, ACK and DUMP, and these keep our requests identical to its.
CREATE_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
CHANGE_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE
REQUEST_FLAGS = NLM_F_REQUEST | NLM_F_ACK
DUMP_FLAGS = NLM_F_REQUEST | NLM_F_DUMP

GENL_VERSION = 1

# include/uapi/linux/ip_vs.h: commands
IPVS_CMD_NEW_SERVICE = 1
IPVS_CMD_SET_SERVICE = 2
IPVS_CMD_DEL_SERVICE = 3
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_NEW_DEST = 5
IPVS_CMD_SET_DEST = 6
IPVS_CMD_DEL_DEST = 7
IPVS_CMD_GET_DEST = 8

# ... command attributes
IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2

# ... service attributes
IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4
IPVS_SVC_ATTR_FWMARK = 5
IPVS_SVC_ATTR_SCHED_NAME = 6
IPVS_SVC_ATTR_FLAGS = 7
IPVS_SVC_ATTR_TIMEOUT = 8
IPVS_SVC_ATTR_NETMASK = 9
IPVS_SVC_ATTR_PE_NAME = 11

# ... destination attributes
IPVS_DEST_ATTR_ADDR = 1
IPVS_DEST_ATTR_PORT = 2
IPVS_DEST_ATTR_FWD_METHOD = 3
IPVS_DEST_ATTR_WEIGHT = 4
IPVS_DEST_ATTR_U_THRESH = 5
IPVS_DEST_ATTR_L_THRESH = 6
IPVS_DEST_ATTR_ACTIVE_CONNS = 7
IPVS_DEST_ATTR_INACT_CONNS = 8
IPVS_DEST_ATTR_ADDR_FAMILY = 11
IPVS_DEST_ATTR_TUN_TYPE = 13
IPVS_DEST_ATTR_TUN_PORT = 14
IPVS_DEST_ATTR_TUN_FLAGS = 15

# IP_VS_SVC_F_* bits the model does not carry as flags
IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_HASHED = 0x0002
# The kernel applies new = (old & ~mask) | (flags & mask); a full mask sets every bit we send.
_FULL_MASK = 0xFFFF_FFFF

_HEADER = struct.Struct("=IHHIIBBH")  # nlmsghdr + genlmsghdr
_ATTRIBUTE_HEADER = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_FLAGS = struct.Struct("=II")
_HEADER_SIZE = _HEADER.size
_GENLMSGHDR_SIZE = 4


# --- attributes -------------------------------------------------------------------------------


def _u16_attribute(kind: int, value: int) -> bytes:
    return _attribute(kind, _U16.pack(value))


def _u32_attribute(kind: int, value: int) -> bytes:
    return _attribute(kind, _U32.pack(value))


def _string_attribute(kind: int, value: str) -> bytes:
    return _attribute(kind, value.encode("ascii") + b"\0")


def service_key_attributes(key: ServiceKey) -> bytes:
    """The attributes that find a service: family and protocol/address/port, or fwmark."""
    if isinstance(key, AddressKey):
        return b"".join(
            (
                _u16_attribute(IPVS_SVC_ATTR_AF, key.family),
                _u16_attribute(IPVS_SVC_ATTR_PROTOCOL, key.protocol),
                _attribute(IPVS_SVC_ATTR_ADDR, key.address.packed),
                _attribute(IPVS_SVC_ATTR_PORT, _BE16.pack(key.port)),
            )
        )
    return _u16_attribute(IPVS_SVC_ATTR_AF, key.family) + _u32_attribute(
        IPVS_SVC_ATTR_FWMARK, key.fwmark
    )


def service_attributes(key: ServiceKey, options: ServiceOptions) -> bytes:
    """The complete service entry, as IPVS_CMD_NEW_SERVICE and IPVS_CMD_SET_SERVICE need it."""
    persistence = options.persistence
    flags = int(options.flags)
    timeout = 0
    # The kernel insists on a netmask (IPv6: a prefix length of 1..128) even without persistence.
    prefix_length = 32 if key.family is Family.INET else 128
    if persistence is not None:
        flags |= IP_VS_SVC_F_PERSISTENT
        timeout = persistence.timeout
        prefix_length = persistence.prefix_length
    parts = [
        service_key_attributes(key),
        _string_attribute(IPVS_SVC_ATTR_SCHED_NAME, options.scheduler),
        _attribute(IPVS_SVC_ATTR_FLAGS, _FLAGS.pack(flags, _FULL_MASK)),
        _u32_attribute(IPVS_SVC_ATTR_TIMEOUT, timeout),
        _attribute(IPVS_SVC_ATTR_NETMASK, encode_netmask(key.family, prefix_length)),
    ]
    if options.persistence_engine is not None:
        parts.append(_string_attribute(IPVS_SVC_ATTR_PE_NAME, options.persistence_engine))
    return b"".join(parts)


def encode_netmask(family: Family, prefix_length: int) -> bytes:
    if family is Family.INET:
        return _BE32.pack((_FULL_MASK << (32 - prefix_length)) & _FULL_MASK)
    # The kernel reads an IPv6 service's 32-bit netmask field as a prefix length, host order.
    return _U32.pack(prefix_length)


def decode_netmask(family: Family, netmask: bytes | memoryview) -> int:
    if family is Family.INET:
        mask: int = _BE32.unpack_from(netmask)[0]
        prefix_length = 32 - (~mask & _FULL_MASK).bit_length()
        if encode_netmask(family, prefix_length) != bytes(netmask[:4]):
            raise ReplyFormatError(f"netmask {bytes(netmask[:4]).hex()} is not contiguous")
        return prefix_length
    length: int = _U32.unpack_from(netmask)[0]
    return length


def _header_word(length: int, kind: int) -> int:
    """An attribute header (u16 length, u16 type) as the one u32 with the same bytes."""
    word: int = _U32.unpack(_ATTRIBUTE_HEADER.pack(length, kind))[0]
    return word


# The destination attributes in one pack per address family: address, family, port, forwarding,
# weight, upper and lower threshold, tunnel type, tunnel port, tunnel flags, each after its
# constant header word. A u8 or u16 value is padded to 4 bytes; the port values are passed
# through htons so that a host-order "H" writes them in network order.
_DESTINATION_FIELDS = "IH2x IH2x II II II II IB3x IH2x IH2x"
_DESTINATION4 = struct.Struct("=I I4s " + _DESTINATION_FIELDS)
_DESTINATION6 = struct.Struct("=I I16s " + _DESTINATION_FIELDS)
_DESTINATION_HEADERS = (
    _header_word(6, IPVS_DEST_ATTR_ADDR_FAMILY),
    _header_word(6, IPVS_DEST_ATTR_PORT),
    _header_word(8, IPVS_DEST_ATTR_FWD_METHOD),
    _header_word(8, IPVS_DEST_ATTR_WEIGHT),
    _header_word(8, IPVS_DEST_ATTR_U_THRESH),
    _header_word(8, IPVS_DEST_ATTR_L_THRESH),
    _header_word(5, IPVS_DEST_ATTR_TUN_TYPE),
    _header_word(6, IPVS_DEST_ATTR_TUN_PORT),
    _header_word(6, IPVS_DEST_ATTR_TUN_FLAGS),
)
# Per IP version: the struct, its nest and address header words, the address family.
_DESTINATION_LAYOUTS = {
    4: (
        _DESTINATION4,
        _header_word(_DESTINATION4.size, IPVS_CMD_ATTR_DEST),
        _header_word(8, IPVS_DEST_ATTR_ADDR),
        int(Family.INET),
    ),
    6: (
        _DESTINATION6,
        _header_word(_DESTINATION6.size, IPVS_CMD_ATTR_DEST),
        _header_word(20, IPVS_DEST_ATTR_ADDR),
        int(Family.INET6),
    ),
}


def destination_attribute(destination: Destination) -> bytes:
    """The complete destination as the nested IPVS_CMD_ATTR_DEST, for NEW_DEST and SET_DEST."""
    address = destination.address
    layout, nest, address_header, family = _DESTINATION_LAYOUTS[address.version]
    (
        family_header,
        port_header,
        forwarding_header,
        weight_header,
        upper_header,
        lower_header,
        tunnel_type_header,
        tunnel_port_header,
        tunnel_flags_header,
    ) = _DESTINATION_HEADERS
    return layout.pack(
        nest,
        address_header,
        address.packed,
        family_header,
        family,
        port_header,
        _htons(destination.port),
        forwarding_header,
        destination.forwarding,
        weight_header,
        destination.weight,
        upper_header,
        destination.upper_threshold,
        lower_header,
        destination.lower_threshold,
        tunnel_type_header,
        destination.tunnel_type,
        tunnel_port_header,
        _htons(destination.tunnel_port),
        tunnel_flags_header,
        destination.tunnel_flags,
    )


_htons = socket.htons


def destination_key_attribute(key: DestinationKey) -> bytes:
    """The nested IPVS_CMD_ATTR_DEST naming a destination, as IPVS_CMD_DEL_DEST needs it."""
    body = b"".join(
        (
            _attribute(IPVS_DEST_ATTR_ADDR, key.address.packed),
            _u16_attribute(
                IPVS_DEST_ATTR_ADDR_FAMILY, _DESTINATION_LAYOUTS[key.address.version][3]
            ),
            _attribute(IPVS_DEST_ATTR_PORT, _BE16.pack(key.port)),
        )
    )
    return _attribute(IPVS_CMD_ATTR_DEST, body)


# --- requests ---------------------------------------------------------------------------------


class IpvsRequests:
    """Encodes IPVS requests for the family id the kernel gave "IPVS" in this namespace.

    Every method returns one complete netlink message. The nested service key of each service is
    encoded once and reused, since a plan names the same few services thousands of times.
    """

    cache_limit = 65536
    """Service keys remembered; past this many the cache starts again (a table has far fewer)."""

    def __init__(self, family_id: int) -> None:
        self.family_id = family_id
        self._service_keys: dict[ServiceKey, bytes] = {}
        # A table lookup, not a match statement: this is per operation.
        self._bodies: dict[type, Callable[[Any], tuple[int, int, bytes]]] = {
            AddDestination: self._add_destination,
            EditDestination: self._edit_destination,
            DeleteDestination: self._delete_destination,
            AddService: self._add_service,
            EditService: self._edit_service,
            DeleteService: self._delete_service,
        }

    def operation(self, operation: Operation, sequence: int, flags: int | None = None) -> bytes:
        """The request carrying out `operation`; `flags` default to pyroute2's for the command
        (always with NLM_F_REQUEST and NLM_F_ACK)."""
        command, default_flags, body = self._bodies[type(operation)](operation)
        return (
            _HEADER.pack(
                _HEADER_SIZE + len(body),
                self.family_id,
                default_flags if flags is None else flags,
                sequence,
                0,
                command,
                GENL_VERSION,
                0,
            )
            + body
        )

    def _add_destination(self, operation: AddDestination) -> tuple[int, int, bytes]:
        body = self.service_key(operation.service) + destination_attribute(operation.destination)
        return IPVS_CMD_NEW_DEST, CREATE_FLAGS, body

    def _edit_destination(self, operation: EditDestination) -> tuple[int, int, bytes]:
        body = self.service_key(operation.service) + destination_attribute(operation.destination)
        return IPVS_CMD_SET_DEST, CHANGE_FLAGS, body

    def _delete_destination(self, operation: DeleteDestination) -> tuple[int, int, bytes]:
        body = self.service_key(operation.service) + destination_key_attribute(
            operation.destination
        )
        return IPVS_CMD_DEL_DEST, REQUEST_FLAGS, body

    def _add_service(self, operation: AddService) -> tuple[int, int, bytes]:
        body = _attribute(
            IPVS_CMD_ATTR_SERVICE, service_attributes(operation.key, operation.options)
        )
        return IPVS_CMD_NEW_SERVICE, CREATE_FLAGS, body

    def _edit_service(self, operation: EditService) -> tuple[int, int, bytes]:
        body = _attribute(
            IPVS_CMD_ATTR_SERVICE, service_attributes(operation.key, operation.options)
        )
        return IPVS_CMD_SET_SERVICE, CHANGE_FLAGS, body

    def _delete_service(self, operation: DeleteService) -> tuple[int, int, bytes]:
        return IPVS_CMD_DEL_SERVICE, REQUEST_FLAGS, self.service_key(operation.key)

    def service_dump(self, sequence: int) -> bytes:
        """IPVS_CMD_GET_SERVICE as a dump of every service."""
        return self._message(IPVS_CMD_GET_SERVICE, DUMP_FLAGS, sequence, b"")

    def destination_dump(self, service: ServiceKey, sequence: int) -> bytes:
        """IPVS_CMD_GET_DEST as a dump of one service's destinations."""
        return self._message(IPVS_CMD_GET_DEST, DUMP_FLAGS, sequence, self.service_key(service))

    def service_key(self, key: ServiceKey) -> bytes:
        """The nested IPVS_CMD_ATTR_SERVICE holding only `key`."""
        encoded = self._service_keys.get(key)
        if encoded is None:
            if len(self._service_keys) >= self.cache_limit:
                self._service_keys.clear()
            encoded = _attribute(IPVS_CMD_ATTR_SERVICE, service_key_attributes(key))
            self._service_keys[key] = encoded
        return encoded

    def _message(self, command: int, flags: int, sequence: int, body: bytes) -> bytes:
        return (
            _HEADER.pack(
                _HEADER_SIZE + len(body),
                self.family_id,
                flags,
                sequence,
                0,
                command,
                GENL_VERSION,
                0,
            )
            + body
        )


# --- replies ----------------------------------------------------------------------------------


def _nested(payload: memoryview, outer: int) -> dict[int, memoryview]:
    """The attributes inside the top-level attribute `outer` of a generic netlink payload."""
    inner = _attributes(payload, _GENLMSGHDR_SIZE).get(outer)
    if inner is None:
        raise ReplyFormatError(f"reply without attribute {outer}")
    return _attributes(inner, 0)


def _address(family: int, raw: memoryview) -> IPAddress:
    # The kernel sends a union nf_inet_addr (16 bytes) whatever the family.
    if family == Family.INET:
        return IPv4Address(bytes(raw[:4]))
    return IPv6Address(bytes(raw[:16]))


def _required(attributes: dict[int, memoryview], kind: int, what: str) -> memoryview:
    value = attributes.get(kind)
    if value is None:
        raise ReplyFormatError(f"{what} without attribute {kind}")
    return value


def decode_service(payload: memoryview) -> tuple[ServiceKey, ServiceOptions]:
    """One message of an IPVS_CMD_GET_SERVICE dump (payload after the nlmsghdr)."""
    attributes = _nested(payload, IPVS_CMD_ATTR_SERVICE)
    family = Family(_U16.unpack_from(_required(attributes, IPVS_SVC_ATTR_AF, "service"))[0])
    raw_fwmark = attributes.get(IPVS_SVC_ATTR_FWMARK)
    fwmark = 0 if raw_fwmark is None else _U32.unpack_from(raw_fwmark)[0]
    key: ServiceKey
    if fwmark:
        key = FwmarkKey(fwmark, family)
    else:
        key = AddressKey(
            TransportProtocol(
                _U16.unpack_from(_required(attributes, IPVS_SVC_ATTR_PROTOCOL, "service"))[0]
            ),
            _address(family, _required(attributes, IPVS_SVC_ATTR_ADDR, "service")),
            _BE16.unpack_from(_required(attributes, IPVS_SVC_ATTR_PORT, "service"))[0],
        )
    flags = _FLAGS.unpack_from(_required(attributes, IPVS_SVC_ATTR_FLAGS, "service"))[0]
    persistence = None
    if flags & IP_VS_SVC_F_PERSISTENT:
        persistence = Persistence(
            timeout=_U32.unpack_from(_required(attributes, IPVS_SVC_ATTR_TIMEOUT, "service"))[0],
            prefix_length=decode_netmask(
                family, _required(attributes, IPVS_SVC_ATTR_NETMASK, "service")
            ),
        )
    engine = attributes.get(IPVS_SVC_ATTR_PE_NAME)
    options = ServiceOptions(
        scheduler=_string(_required(attributes, IPVS_SVC_ATTR_SCHED_NAME, "service")),
        flags=ServiceFlags(flags & ~(IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_HASHED)),
        persistence=persistence,
        persistence_engine=None if engine is None else _string(engine),
    )
    return key, options


def _string(raw: memoryview) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("ascii")


def decode_destination_counters(
    payload: memoryview, service_family: Family
) -> tuple[DestinationKey, Connections]:
    """The key and connection counters of one message of an IPVS_CMD_GET_DEST dump."""
    attributes = _nested(payload, IPVS_CMD_ATTR_DEST)
    raw_family = attributes.get(IPVS_DEST_ATTR_ADDR_FAMILY)
    family = service_family if raw_family is None else _U16.unpack_from(raw_family)[0]
    key = DestinationKey(
        _address(family, _required(attributes, IPVS_DEST_ATTR_ADDR, "destination")),
        _BE16.unpack_from(_required(attributes, IPVS_DEST_ATTR_PORT, "destination"))[0],
    )
    active = _required(attributes, IPVS_DEST_ATTR_ACTIVE_CONNS, "destination")
    inactive = _required(attributes, IPVS_DEST_ATTR_INACT_CONNS, "destination")
    return key, Connections(_U32.unpack_from(active)[0], _U32.unpack_from(inactive)[0])


def decode_destination(payload: memoryview, service_family: Family) -> Destination:
    """One message of an IPVS_CMD_GET_DEST dump (payload after the nlmsghdr)."""
    return _destination(_nested(payload, IPVS_CMD_ATTR_DEST), service_family)


def decode_destination_counted(
    payload: memoryview, service_family: Family
) -> tuple[Destination, Connections]:
    """`decode_destination` and the counters of `decode_destination_counters`, from one
    parse of the message's attributes."""
    attributes = _nested(payload, IPVS_CMD_ATTR_DEST)
    active = _required(attributes, IPVS_DEST_ATTR_ACTIVE_CONNS, "destination")
    inactive = _required(attributes, IPVS_DEST_ATTR_INACT_CONNS, "destination")
    return _destination(attributes, service_family), Connections(
        _U32.unpack_from(active)[0], _U32.unpack_from(inactive)[0]
    )


def _destination(attributes: dict[int, memoryview], service_family: Family) -> Destination:
    get = attributes.get
    raw_family = get(IPVS_DEST_ATTR_ADDR_FAMILY)
    # Kernels before 4.x send no address family: the destination is of the service's.
    family = service_family if raw_family is None else _U16.unpack_from(raw_family)[0]
    # Kernels before tunnel types (5.2) send no TUN_* attributes: that is plain IPIP.
    tunnel_type = get(IPVS_DEST_ATTR_TUN_TYPE)
    tunnel_port = get(IPVS_DEST_ATTR_TUN_PORT)
    tunnel_flags = get(IPVS_DEST_ATTR_TUN_FLAGS)
    return Destination(
        address=_address(family, _required(attributes, IPVS_DEST_ATTR_ADDR, "destination")),
        port=_BE16.unpack_from(_required(attributes, IPVS_DEST_ATTR_PORT, "destination"))[0],
        weight=_U32.unpack_from(_required(attributes, IPVS_DEST_ATTR_WEIGHT, "destination"))[0],
        forwarding=Forwarding(
            _U32.unpack_from(_required(attributes, IPVS_DEST_ATTR_FWD_METHOD, "destination"))[0]
        ),
        upper_threshold=_U32.unpack_from(
            _required(attributes, IPVS_DEST_ATTR_U_THRESH, "destination")
        )[0],
        lower_threshold=_U32.unpack_from(
            _required(attributes, IPVS_DEST_ATTR_L_THRESH, "destination")
        )[0],
        tunnel_type=TunnelType.IPIP if tunnel_type is None else TunnelType(tunnel_type[0]),
        tunnel_port=0 if tunnel_port is None else _BE16.unpack_from(tunnel_port)[0],
        tunnel_flags=(
            TunnelFlags.NONE
            if tunnel_flags is None
            else TunnelFlags(_U16.unpack_from(tunnel_flags)[0])
        ),
    )
