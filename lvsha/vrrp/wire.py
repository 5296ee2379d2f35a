"""VRRP advertisement codec: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798), IPv4 and IPv6.

The decoder applies every check that needs nothing but the packet (RFC 5798 7.1, RFC 3768 7.1):
TTL/hop limit, version, type, length against the address count, checksum, auth type, interval,
VRID. `check_advert_for_instance` applies the checks that need the receiving instance's
configuration: VRID, version, owner, authentication, address list and the v2 interval.
"""

from __future__ import annotations

import enum
import socket
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from lvsha.net.checksum import internet_checksum

IpAddress: TypeAlias = IPv4Address | IPv6Address

IPPROTO_VRRP = 112
VRRP_TTL = 255
VRRP_MULTICAST_IPV4 = IPv4Address("224.0.0.18")
VRRP_MULTICAST_IPV6 = IPv6Address("ff02::12")
ADVERTISEMENT_TYPE = 1
HEADER_LENGTH = 8
AUTH_DATA_LENGTH = 8
"""VRRPv2 always carries 8 bytes of authentication data after the addresses (RFC 3768 5.3.10)."""
MAX_V3_ADVERT_INTERVAL = 0x0FFF
"""12 bits of centiseconds (RFC 5798 5.2.7)."""

ANCILLARY_BUFFER_SIZE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)
"""recvmsg() ancillary buffer for one IPV6_HOPLIMIT (int) and one IPV6_PKTINFO (in6_pktinfo)."""

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_VRRP_HEADER = struct.Struct("!BBBBBBH")
_V3_HEADER = struct.Struct("!BBBBHH")
_IPV4_PSEUDO_HEADER = struct.Struct("!4s4sBBH")
_IPV6_PSEUDO_HEADER = struct.Struct("!16s16sI3xB")
_IN6_PKTINFO = struct.Struct("=16sI")


class VrrpVersion(enum.IntEnum):
    V2 = 2
    V3 = 3


class AuthType(enum.IntEnum):
    """VRRPv2 authentication types (RFC 2338 5.3.6; RFC 3768 keeps the field for compatibility)."""

    NONE = 0
    SIMPLE_PASSWORD = 1
    IP_AH = 2


class DropReason(enum.Enum):
    """Why a received packet was not handed to the state machine."""

    # IPv4 framing of a raw-socket read
    IPV4_HEADER_INVALID = "ipv4_header_invalid"
    IPV4_LENGTH_MISMATCH = "ipv4_length_mismatch"
    NOT_VRRP_PROTOCOL = "not_vrrp_protocol"
    # the packet alone (decode_advert)
    TTL_NOT_255 = "ttl_not_255"
    TRUNCATED = "truncated"
    UNKNOWN_VERSION = "unknown_version"
    VERSION_2_OVER_IPV6 = "version_2_over_ipv6"
    UNKNOWN_TYPE = "unknown_type"
    ADDRESS_LENGTH_MISMATCH = "address_length_mismatch"
    ADDRESS_COUNT_MISMATCH = "address_count_mismatch"
    BAD_CHECKSUM = "bad_checksum"
    AUTH_AH_UNSUPPORTED = "auth_ah_unsupported"
    UNKNOWN_AUTH_TYPE = "unknown_auth_type"
    ZERO_ADVERT_INTERVAL = "zero_advert_interval"
    INVALID_VRID = "invalid_vrid"
    # the packet against the receiving instance (check_advert_for_instance)
    VRID_MISMATCH = "vrid_mismatch"
    VERSION_MISMATCH = "version_mismatch"
    LOCAL_ADDRESS_OWNER = "local_address_owner"
    AUTH_TYPE_MISMATCH = "auth_type_mismatch"
    AUTH_PASSWORD_MISMATCH = "auth_password_mismatch"
    ADDRESS_LIST_MISMATCH = "address_list_mismatch"
    """Not a drop: the advert is taken, and the difference counted and logged (see
    `address_list_difference`)."""
    ADVERT_INTERVAL_MISMATCH = "advert_interval_mismatch"
    ADDRESS_LIST_REFUSED = "address_list_refused"
    """The address list differs and the instance is strict (global.vrrp.strict) without
    skip_check_adv_addr: dropped, as RFC 3768 7.1 has a v2 router drop it."""
    # the receive path of an instance (lvsha.vrrp.receive)
    OWN_ADVERT = "own_advert"
    FAMILY_MISMATCH = "family_mismatch"
    INSTANCE_NOT_RUNNING = "instance_not_running"
    """The instance is in Initialize: its socket opens before it starts and closes after it
    stops, and what arrives meanwhile is nobody's business (RFC 5798 6.4.1)."""
    # the socket edge itself
    RECEIVE_ERROR = "receive_error"
    """Reading or handling the packet failed (an OS error, or a bug): counted, never raised."""


class AdvertDropError(Exception):
    """A received packet fails validation; `reason` is what the drop counter counts."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


DropListener = Callable[[DropReason, IpAddress | None, str], None]
"""Told of every drop: the reason, the sender when known, and what differed."""


class DropCounter:
    """Dropped packets counted by reason, for the drops metric; `listener` (if any) hears
    each drop with its sender and detail, for the log."""

    def __init__(self, listener: DropListener | None = None) -> None:
        self._counts: Counter[DropReason] = Counter()
        self.listener = listener

    def record(self, reason: DropReason, source: IpAddress | None = None, detail: str = "") -> None:
        self._counts[reason] += 1
        if self.listener is not None:
            self.listener(reason, source, detail)

    def __getitem__(self, reason: DropReason) -> int:
        return self._counts[reason]

    @property
    def total(self) -> int:
        return self._counts.total()

    def snapshot(self) -> Mapping[DropReason, int]:
        """Every reason, zeros included, so a metric exports a stable label set."""
        return {reason: self._counts[reason] for reason in DropReason}


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRP advertisement, as sent or as decoded.

    `advert_interval` is the wire value: whole seconds in v2, centiseconds in v3.
    `auth_data` is the v2 simple password without its zero padding; empty for auth type NONE
    and for v3, which has no authentication (RFC 5798 9).
    """

    version: VrrpVersion
    vrid: int
    priority: int
    advert_interval: int
    addresses: tuple[IpAddress, ...]
    auth_type: AuthType = AuthType.NONE
    auth_data: bytes = b""

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid {self.vrid} is outside 1-255")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} is outside 0-255")
        max_interval = 255 if self.version is VrrpVersion.V2 else MAX_V3_ADVERT_INTERVAL
        if not 1 <= self.advert_interval <= max_interval:
            raise ValueError(
                f"advert interval {self.advert_interval} is outside 1-{max_interval} "
                f"for VRRPv{self.version.value}"
            )
        if len(self.addresses) > 255:
            raise ValueError(f"{len(self.addresses)} addresses; at most 255 fit the count field")
        if len({address.version for address in self.addresses}) > 1:
            raise ValueError("addresses mix IPv4 and IPv6")
        if self.version is VrrpVersion.V2:
            if any(address.version == 6 for address in self.addresses):
                raise ValueError("VRRPv2 carries IPv4 addresses only")
            if self.auth_type is AuthType.IP_AH:
                raise ValueError("IP authentication header (auth type 2) is not supported")
            if self.auth_type is AuthType.NONE and self.auth_data:
                raise ValueError("auth type NONE carries no auth data")
        elif self.auth_type is not AuthType.NONE or self.auth_data:
            raise ValueError("VRRPv3 has no authentication")
        if len(self.auth_data) > AUTH_DATA_LENGTH:
            raise ValueError(f"auth data is {len(self.auth_data)} bytes; at most 8 fit")
        if self.auth_data.endswith(b"\0"):
            # Zero padding is the encoder's job; keeping it out makes decoded adverts compare equal.
            raise ValueError("auth data must not end with a zero byte")

    @property
    def advert_interval_seconds(self) -> float:
        if self.version is VrrpVersion.V2:
            return float(self.advert_interval)
        return self.advert_interval / 100


@dataclass(frozen=True, slots=True)
class VrrpDatagram:
    """What the socket edge read: IP source, destination, TTL or hop limit, and VRRP payload."""

    source: IpAddress
    destination: IpAddress
    hop_limit: int
    payload: bytes

    def __post_init__(self) -> None:
        if self.source.version != self.destination.version:
            raise ValueError(f"source {self.source} and destination {self.destination} differ")


@dataclass(frozen=True, slots=True)
class ReceivedAdvert:
    """A decoded advert with the packet facts the state machine and logs need."""

    source: IpAddress
    destination: IpAddress
    advert: Advert
    checksum: int
    received_at: float | None = None
    """When the kernel received it, on the monotonic clock; None when not known."""


@dataclass(frozen=True, slots=True)
class ReceivingInstance:
    """The parts of a VRRP instance's configuration that received adverts are checked against."""

    vrid: int
    version: VrrpVersion
    advert_interval: int
    """Wire units; only v2 adverts must match it (RFC 3768 7.1)."""
    virtual_addresses: frozenset[IpAddress]
    address_owner: bool = False
    auth_type: AuthType = AuthType.NONE
    auth_password: bytes = b""
    """Unpadded, at most 8 bytes, as keepalived's `auth_pass` keeps only its first 8 characters."""
    refuse_address_mismatch: bool = False
    """Drop adverts whose address list differs (strict mode without skip_check_adv_addr);
    otherwise they are taken, and the difference counted and logged."""


def _pseudo_header(source: IpAddress, destination: IpAddress, length: int) -> bytes:
    # RFC 5798 5.2.8: v3 checksums cover the IPv4 or IPv6 pseudo-header as well.
    if isinstance(source, IPv4Address):
        return _IPV4_PSEUDO_HEADER.pack(source.packed, destination.packed, 0, IPPROTO_VRRP, length)
    return _IPV6_PSEUDO_HEADER.pack(source.packed, destination.packed, length, IPPROTO_VRRP)


def encode_advert(advert: Advert, source: IpAddress, destination: IpAddress) -> bytes:
    """The VRRP payload for `advert` sent from `source` to `destination`, checksum included."""
    if source.version != destination.version:
        raise ValueError(f"source {source} and destination {destination} differ in family")
    if any(address.version != source.version for address in advert.addresses):
        raise ValueError(f"advert addresses are not IPv{source.version} like {source}")
    if advert.version is VrrpVersion.V2 and source.version == 6:
        raise ValueError("VRRPv2 runs over IPv4 only (RFC 3768)")
    first_byte = (advert.version << 4) | ADVERTISEMENT_TYPE
    address_bytes = b"".join(address.packed for address in advert.addresses)
    if advert.version is VrrpVersion.V2:
        header = _VRRP_HEADER.pack(
            first_byte,
            advert.vrid,
            advert.priority,
            len(advert.addresses),
            advert.auth_type,
            advert.advert_interval,
            0,
        )
        message = header + address_bytes + advert.auth_data.ljust(AUTH_DATA_LENGTH, b"\0")
        checksum = internet_checksum(message)
    else:
        header = _V3_HEADER.pack(
            first_byte,
            advert.vrid,
            advert.priority,
            len(advert.addresses),
            advert.advert_interval,
            0,
        )
        message = header + address_bytes
        checksum = internet_checksum(_pseudo_header(source, destination, len(message)) + message)
    return message[:6] + checksum.to_bytes(2, "big") + message[8:]


def decode_advert(datagram: VrrpDatagram) -> ReceivedAdvert:
    """Validate and decode one received VRRP payload; raises `AdvertDropError` on any failure."""
    payload = datagram.payload
    if datagram.hop_limit != VRRP_TTL:
        raise AdvertDropError(
            DropReason.TTL_NOT_255,
            f"TTL/hop limit {datagram.hop_limit}, must be 255: it crossed a router (RFC 5798 7.1)",
        )
    if len(payload) < HEADER_LENGTH:
        raise AdvertDropError(DropReason.TRUNCATED, f"{len(payload)} bytes, header needs 8")
    first_byte, vrid, priority, count, auth_byte, interval_byte, checksum = (
        _VRRP_HEADER.unpack_from(payload)
    )
    version_number, packet_type = first_byte >> 4, first_byte & 0x0F
    if version_number not in (VrrpVersion.V2, VrrpVersion.V3):
        raise AdvertDropError(DropReason.UNKNOWN_VERSION, f"version {version_number}")
    version = VrrpVersion(version_number)
    if version is VrrpVersion.V2 and datagram.source.version == 6:
        raise AdvertDropError(DropReason.VERSION_2_OVER_IPV6, f"VRRPv2 from {datagram.source}")
    if packet_type != ADVERTISEMENT_TYPE:
        raise AdvertDropError(DropReason.UNKNOWN_TYPE, f"type {packet_type}")

    address_length = 4 if datagram.source.version == 4 else 16
    trailer_length = AUTH_DATA_LENGTH if version is VrrpVersion.V2 else 0
    address_area = len(payload) - HEADER_LENGTH - trailer_length
    if address_area < count * address_length:
        raise AdvertDropError(
            DropReason.TRUNCATED, f"{len(payload)} bytes, too short for {count} addresses"
        )
    if address_area % address_length:
        raise AdvertDropError(
            DropReason.ADDRESS_LENGTH_MISMATCH,
            f"{address_area} address bytes is no whole number of IPv{datagram.source.version}"
            " addresses",
        )
    if address_area != count * address_length:
        raise AdvertDropError(
            DropReason.ADDRESS_COUNT_MISMATCH,
            f"count {count} but room for {address_area // address_length} addresses",
        )

    if version is VrrpVersion.V2:
        # RFC 3768 5.3.8: the v2 checksum covers the VRRP message only.
        checked = payload
    else:
        checked = _pseudo_header(datagram.source, datagram.destination, len(payload)) + payload
    if internet_checksum(checked):
        raise AdvertDropError(DropReason.BAD_CHECKSUM, f"checksum {checksum:#06x} does not verify")

    if version is VrrpVersion.V2:
        interval = interval_byte
        if auth_byte == AuthType.IP_AH:
            raise AdvertDropError(DropReason.AUTH_AH_UNSUPPORTED, "auth type 2 (IP AH)")
        if auth_byte not in (AuthType.NONE, AuthType.SIMPLE_PASSWORD):
            raise AdvertDropError(DropReason.UNKNOWN_AUTH_TYPE, f"auth type {auth_byte}")
        auth_type = AuthType(auth_byte)
        # RFC 3768 5.3.10: auth data is ignored on reception when no authentication is used.
        auth_data = payload[-AUTH_DATA_LENGTH:].rstrip(b"\0") if auth_type else b""
    else:
        # RFC 5798 5.2.6: the 4 reserved bits are ignored on reception.
        interval = ((auth_byte << 8) | interval_byte) & MAX_V3_ADVERT_INTERVAL
        auth_type, auth_data = AuthType.NONE, b""
    if interval == 0:
        raise AdvertDropError(DropReason.ZERO_ADVERT_INTERVAL, "advert interval 0")
    if vrid == 0:
        raise AdvertDropError(DropReason.INVALID_VRID, "VRID 0")

    address_type = IPv4Address if address_length == 4 else IPv6Address
    addresses = tuple(
        address_type(payload[offset : offset + address_length])
        for offset in range(HEADER_LENGTH, HEADER_LENGTH + address_area, address_length)
    )
    advert = Advert(version, vrid, priority, interval, addresses, auth_type, auth_data)
    return ReceivedAdvert(datagram.source, datagram.destination, advert, checksum)


def receive_advert(datagram: VrrpDatagram, drops: DropCounter) -> ReceivedAdvert | None:
    """Decode `datagram`, counting it in `drops` and returning None when it is dropped."""
    try:
        return decode_advert(datagram)
    except AdvertDropError as dropped:
        drops.record(dropped.reason, datagram.source, dropped.detail)
        return None


def receive_ipv4_packet(packet: bytes, drops: DropCounter) -> ReceivedAdvert | None:
    """Split and decode one AF_INET raw-socket read, counting it in `drops` when dropped."""
    try:
        datagram = split_ipv4_packet(packet)
    except AdvertDropError as dropped:
        drops.record(dropped.reason, None, dropped.detail)
        return None
    return receive_advert(datagram, drops)


def check_advert_for_instance(received: ReceivedAdvert, instance: ReceivingInstance) -> None:
    """Raise `AdvertDropError` unless `instance` may act on `received` (RFC 5798 / RFC 3768 7.1).

    The detail names what differed, ours and theirs, for the operator's log; never a password.
    """
    advert = received.advert
    if advert.vrid != instance.vrid:
        raise AdvertDropError(DropReason.VRID_MISMATCH, f"VRID {advert.vrid}, ours {instance.vrid}")
    if advert.version is not instance.version:
        raise AdvertDropError(
            DropReason.VERSION_MISMATCH,
            f"VRRP version {advert.version.value}, ours {instance.version.value} (RFC 5798 7.1)",
        )
    if instance.address_owner:
        raise AdvertDropError(
            DropReason.LOCAL_ADDRESS_OWNER,
            f"priority {advert.priority} for VRID {instance.vrid}, whose addresses we own "
            "(priority 255, RFC 5798 7.1)",
        )
    if advert.version is VrrpVersion.V2:
        if advert.auth_type is not instance.auth_type:
            raise AdvertDropError(
                DropReason.AUTH_TYPE_MISMATCH,
                f"authentication {_auth_name(advert.auth_type)}, "
                f"ours {_auth_name(instance.auth_type)} (RFC 2338 7.1)",
            )
        if advert.auth_data != instance.auth_password:
            raise AdvertDropError(
                DropReason.AUTH_PASSWORD_MISMATCH,
                "authentication password differs from ours (RFC 2338 7.1)",
            )
    if advert.version is VrrpVersion.V2 and advert.advert_interval != instance.advert_interval:
        raise AdvertDropError(
            DropReason.ADVERT_INTERVAL_MISMATCH,
            f"advert interval {advert.advert_interval} s, ours {instance.advert_interval} s "
            "(RFC 3768 7.1)",
        )
    if instance.refuse_address_mismatch:
        difference = address_list_difference(advert, instance)
        if difference is not None:
            raise AdvertDropError(
                DropReason.ADDRESS_LIST_REFUSED,
                f"{difference} (strict mode: RFC 3768 7.1; skip_check_adv_addr takes them)",
            )


def _auth_name(auth_type: AuthType) -> str:
    return "none" if auth_type is AuthType.NONE else "simple password"


_FEW = 4
"""Addresses named in a drop's detail; an advert may list 255, a log line should not."""


def _few(addresses: frozenset[IpAddress]) -> str:
    if not addresses:
        return "none"
    ordered = sorted(addresses, key=int)
    shown = ", ".join(map(str, ordered[:_FEW]))
    more = len(ordered) - _FEW
    return f"{shown} and {more} more" if more > 0 else shown


def split_ipv4_packet(packet: bytes) -> VrrpDatagram:
    """Split what an AF_INET raw socket read (IPv4 header and payload) into a `VrrpDatagram`.

    The protocol must be 112, so it is checked here rather than carried along.
    """
    if len(packet) < _IPV4_HEADER.size:
        raise AdvertDropError(
            DropReason.IPV4_HEADER_INVALID, f"{len(packet)} bytes, no IPv4 header"
        )
    (version_ihl, _tos, total_length, _ident, _fragment, ttl, protocol, _checksum, source, dest) = (
        _IPV4_HEADER.unpack_from(packet)
    )
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_length < _IPV4_HEADER.size or header_length > len(packet):
        raise AdvertDropError(
            DropReason.IPV4_HEADER_INVALID,
            f"version/IHL byte {version_ihl:#04x} with {len(packet)} bytes read",
        )
    # Linux delivers the header as received, total length in network order, packet reassembled.
    if total_length != len(packet):
        raise AdvertDropError(
            DropReason.IPV4_LENGTH_MISMATCH,
            f"total length {total_length}, {len(packet)} bytes read",
        )
    if protocol != IPPROTO_VRRP:
        raise AdvertDropError(DropReason.NOT_VRRP_PROTOCOL, f"IP protocol {protocol}")
    return VrrpDatagram(IPv4Address(source), IPv4Address(dest), ttl, packet[header_length:])


def ipv6_datagram(
    payload: bytes, source: IPv6Address, ancillary: Iterable[tuple[int, int, bytes]]
) -> VrrpDatagram:
    """Build a `VrrpDatagram` from an AF_INET6 raw socket's recvmsg() result.

    The kernel strips the IPv6 header, so the socket must have IPV6_RECVHOPLIMIT (for the
    7.1 hop limit check) and IPV6_RECVPKTINFO (the destination, which the v3 checksum covers)
    enabled; a missing item is a bug in the socket setup and raises ValueError.
    """
    hop_limit: int | None = None
    destination: IPv6Address | None = None
    for level, kind, data in ancillary:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(data) >= 4:
            hop_limit = int.from_bytes(data[:4], sys.byteorder)
        elif kind == socket.IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            destination = IPv6Address(_IN6_PKTINFO.unpack_from(data)[0])
    if hop_limit is None:
        raise ValueError("no IPV6_HOPLIMIT in ancillary data; enable IPV6_RECVHOPLIMIT")
    if destination is None:
        raise ValueError("no IPV6_PKTINFO in ancillary data; enable IPV6_RECVPKTINFO")
    # The checksum needs the bare address; a scope id ("%veth0") is not part of it.
    return VrrpDatagram(IPv6Address(source.packed), destination, hop_limit, payload)


def address_list_difference(advert: Advert, instance: ReceivingInstance) -> str | None:
    """What differs between the advert's addresses and ours, or None when nothing does.

    RFC 3768 and RFC 5798 (7.1) make this check a MAY and its failure a logged
    misconfiguration. lvsha logs and counts it but takes the advert (as keepalived 2.3.3 and
    later do): the two directors of a pair are reloaded one after the other, and a VIP added
    to one of them must not make the other take over meanwhile. In strict mode, without
    skip_check_adv_addr, it is dropped instead (`ReceivingInstance.refuse_address_mismatch`;
    RFC 3768 7.1 has a v2 router drop it, and keepalived up to 2.3.2 drops it). An address
    owner's list is never compared.
    """
    theirs = frozenset(advert.addresses)
    if advert.priority == 255 or theirs == instance.virtual_addresses:
        return None
    return (
        f"virtual addresses differ: only theirs {_few(theirs - instance.virtual_addresses)}, "
        f"only ours {_few(instance.virtual_addresses - theirs)}"
    )
