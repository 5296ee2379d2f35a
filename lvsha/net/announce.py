"""Announce VIPs to the segment: gratuitous ARP (IPv4) and unsolicited neighbour advertisements.

Frames are built with struct once per (interface, address) and kept as bytes, so an
announcement costs one send() per address. The tests check them byte for byte against scapy's;
importing scapy itself would cost the VRRP process about 90 ms and 20 MiB. The frames match
keepalived 2.2's: an ARP request with sender and target IP both the VIP, broadcast at the
Ethernet and ARP level; an NA from the VIP to ff02::1 with the override flag and a target
link-layer address option.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol, TypeAlias

from lvsha.net.checksum import internet_checksum

Announced: TypeAlias = IPv4Address | IPv6Address | IPv4Interface | IPv6Interface
"""What can be announced: a VIP with or without its prefix length."""

_ARPHRD_ETHER = 1
_GONE = (errno.ENODEV, errno.ENXIO)

# Frame layouts (if_ether.h, if_arp.h, RFC 8200, RFC 4861 4.4).
_ETHERNET = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_NA = struct.Struct("!BBHI16s")
_PSEUDO = struct.Struct("!I3xB")
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_ARP = 0x0806
_ETHERTYPE_IPV6 = 0x86DD
_ARP_REQUEST = 1
_IPPROTO_ICMPV6 = 58
_ND_NEIGHBOR_ADVERT = 136
_ND_OPT_TARGET_LINKADDR = 2
_NA_ROUTER = 0x8000_0000
_NA_OVERRIDE = 0x2000_0000
_BROADCAST = b"\xff" * 6
_ALL_NODES = IPv6Address("ff02::1")
_ALL_NODES_MAC = bytes.fromhex("333300000001")


class AnnounceError(OSError):
    """Announcing on an interface failed; the message names the interface and addresses."""


class Announcer(Protocol):
    def prepare(self, interface: str, addresses: Iterable[Announced]) -> None:
        """Build the frames ahead of time, so the first announcement is as quick as the rest.
        Raises AnnounceError."""
        ...

    async def announce(self, interface: str, addresses: Iterable[Announced]) -> None:
        """Send one announcement frame per address on `interface`. Raises AnnounceError."""
        ...

    def announce_now(
        self, interface: str, addresses: Iterable[Announced]
    ) -> list[IPv4Address | IPv6Address]:
        """Send what can go out without waiting (the takeover path, inside one callback) and
        return the addresses whose frame went; a full socket buffer stops it there. Raises
        AnnounceError."""
        ...


def _plain(address: Announced) -> IPv4Address | IPv6Address:
    if isinstance(address, IPv4Interface | IPv6Interface):
        return address.ip
    return address


def _format_mac(raw: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in raw)


def _mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not an Ethernet address: {mac!r}")
    return raw


def gratuitous_arp(mac: str, address: IPv4Address) -> bytes:
    """An ARP request for `address` from `address` at `mac`, to everyone (RFC 5227 3)."""
    source = _mac_bytes(mac)
    return _ETHERNET.pack(_BROADCAST, source, _ETHERTYPE_ARP) + _ARP.pack(
        _ARPHRD_ETHER, _ETHERTYPE_IPV4, 6, 4, _ARP_REQUEST, source, address.packed, _BROADCAST,
        address.packed,
    )  # fmt: skip


def unsolicited_na(mac: str, address: IPv6Address, router: bool) -> bytes:
    """A neighbour advertisement of `address` at `mac` to all nodes (RFC 4861 7.2.6)."""
    source = _mac_bytes(mac)
    # S must be clear on a multicast NA, O set to replace cached entries; the target
    # link-layer address option (type 2, 8 bytes) says where the address is now.
    flags = (_NA_ROUTER if router else 0) | _NA_OVERRIDE
    option = bytes((_ND_OPT_TARGET_LINKADDR, 1)) + source
    message = _NA.pack(_ND_NEIGHBOR_ADVERT, 0, 0, flags, address.packed) + option
    pseudo_header = address.packed + _ALL_NODES.packed + _PSEUDO.pack(len(message), _IPPROTO_ICMPV6)
    message = (
        message[:2] + struct.pack("!H", internet_checksum(pseudo_header + message)) + message[4:]
    )
    # 33:33 + the group's low 32 bits (RFC 2464 7); hop limit 255 or receivers drop it
    # (RFC 4861 7.1.2).
    ipv6 = _IPV6.pack(
        6 << 28, len(message), _IPPROTO_ICMPV6, 255, address.packed, _ALL_NODES.packed
    )
    return _ETHERNET.pack(_ALL_NODES_MAC, source, _ETHERTYPE_IPV6) + ipv6 + message


def _ipv6_forwarding(interface: str) -> bool:
    # keepalived sets the NA's router flag from the interface's forwarding setting: a router
    # that announces R=0 would be dropped from hosts' default router lists (RFC 4861 7.2.5).
    try:
        with open(f"/proc/sys/net/ipv6/conf/{interface}/forwarding") as setting:
            return setting.read().strip() == "1"
    except OSError:
        return False


@dataclass
class _Port:
    """One AF_PACKET socket bound to an interface, and the frames built for it."""

    sock: socket.socket
    mac: bytes
    frames: dict[IPv4Address | IPv6Address, bytes] = field(default_factory=dict)


class PacketAnnouncer:
    """Implements `Announcer` on one AF_PACKET socket per interface.

    Sockets are opened on first use, in the network namespace of the calling thread. They use
    protocol 0, so they receive nothing.
    """

    def __init__(self) -> None:
        self._ports: dict[str, _Port] = {}

    def _open(self, interface: str) -> _Port:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            sock.bind((interface, 0))
            _, _, _, hardware_type, mac = sock.getsockname()
        except OSError as exc:
            sock.close()
            if exc.errno in _GONE:
                raise AnnounceError(exc.errno, f"interface {interface!r} does not exist") from None
            raise AnnounceError(exc.errno, f"cannot send on {interface}: {exc}") from None
        if hardware_type != _ARPHRD_ETHER:
            sock.close()
            raise AnnounceError(
                errno.EPROTONOSUPPORT,
                f"{interface} is not Ethernet (hardware type {hardware_type}): "
                "gratuitous ARP and neighbour advertisements need an Ethernet interface",
            )
        sock.setblocking(False)
        return _Port(sock, mac)

    def _port(self, interface: str) -> _Port:
        port = self._ports.get(interface)
        if port is None:
            port = self._ports[interface] = self._open(interface)
            return port
        # The bound socket reports the device's current MAC: rebuild frames if it changed.
        mac = port.sock.getsockname()[4]
        if mac != port.mac:
            port.mac = mac
            port.frames.clear()
        return port

    def _frame(self, interface: str, port: _Port, address: IPv4Address | IPv6Address) -> bytes:
        frame = port.frames.get(address)
        if frame is None:
            mac = _format_mac(port.mac)
            if isinstance(address, IPv4Address):
                frame = gratuitous_arp(mac, address)
            else:
                frame = unsolicited_na(mac, address, _ipv6_forwarding(interface))
            port.frames[address] = frame
        return frame

    def prepare(self, interface: str, addresses: Iterable[Announced]) -> None:
        port = self._port(interface)
        for address in map(_plain, addresses):
            self._frame(interface, port, address)

    async def announce(self, interface: str, addresses: Iterable[Announced]) -> None:
        port = self._port(interface)
        failed: list[str] = []
        code = 0
        for address in map(_plain, addresses):
            frame = self._frame(interface, port, address)
            try:
                try:
                    port.sock.send(frame)
                except BlockingIOError:
                    await asyncio.get_running_loop().sock_sendall(port.sock, frame)
            except OSError as exc:
                failed.append(str(address))
                code = exc.errno or errno.EIO
                if exc.errno in _GONE:
                    # The interface went away; a later call binds to whatever now has the name.
                    self._forget(interface)
                    port = self._port(interface)
        if failed:
            raise AnnounceError(
                code, f"announcing {', '.join(failed)} on {interface}: {os.strerror(code)}"
            )

    def announce_now(
        self, interface: str, addresses: Iterable[Announced]
    ) -> list[IPv4Address | IPv6Address]:
        port = self._port(interface)
        sent: list[IPv4Address | IPv6Address] = []
        for address in map(_plain, addresses):
            try:
                port.sock.send(self._frame(interface, port, address))
            except BlockingIOError:
                break  # the next round sends the rest
            except OSError as exc:
                if exc.errno in _GONE:
                    self._forget(interface)
                code = exc.errno or errno.EIO
                raise AnnounceError(
                    code, f"announcing {address} on {interface}: {os.strerror(code)}"
                ) from None
            sent.append(address)
        return sent

    def _forget(self, interface: str) -> None:
        port = self._ports.pop(interface, None)
        if port is not None:
            port.sock.close()

    def close(self) -> None:
        for interface in list(self._ports):
            self._forget(interface)


@dataclass(frozen=True, slots=True)
class Announcement:
    at: float
    interface: str
    addresses: tuple[IPv4Address | IPv6Address, ...]


class RecordingAnnouncer:
    """Implements `Announcer` by remembering each call, for unit tests and dry runs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.announcements: list[Announcement] = []
        self.prepared: set[tuple[str, IPv4Address | IPv6Address]] = set()
        self._clock = clock

    def prepare(self, interface: str, addresses: Iterable[Announced]) -> None:
        self.prepared.update((interface, address) for address in map(_plain, addresses))

    async def announce(self, interface: str, addresses: Iterable[Announced]) -> None:
        self.announce_now(interface, addresses)

    def announce_now(
        self, interface: str, addresses: Iterable[Announced]
    ) -> list[IPv4Address | IPv6Address]:
        sent = tuple(map(_plain, addresses))
        self.announcements.append(Announcement(self._clock(), interface, sent))
        return list(sent)
