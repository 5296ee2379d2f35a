"""A stand-in VRRP director for testing the drill until `lvsha run` exists.

    python tests/netns/standin_director.py CONFIG --run-dir DIR

Run inside a lab host, it does what the drill can see of a director, for the config's one
IPv4 instance: waits as backup for Master_Down_Interval, then becomes master, adds the VIP,
sends a burst of gratuitous ARPs and advertises every interval to 224.0.0.18; steps down to a
higher priority (or, with preempt off, to any master); takes over at once on hearing a
priority-0 advert. On SIGTERM a master sends a priority-0 advert, keeps the VIP until it hears
the new master (or Master_Down_Interval passes), removes it and exits. Logs go to stderr.

It is deliberately small: no FAULT state, no link tracking, one GARP burst, no second one.
The helpers for sending adverts and gratuitous ARPs by hand are used by the drill's tests.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from lvsha.config import load_file
from lvsha.vrrp.wire import (
    IPPROTO_VRRP,
    VRRP_MULTICAST_IPV4,
    VRRP_TTL,
    Advert,
    DropCounter,
    VrrpVersion,
    encode_advert,
    receive_ipv4_packet,
)

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def garp_frame(sender_mac: bytes, address: IPv4Address) -> bytes:
    """An ARP request announcing `address` at `sender_mac`, broadcast (RFC 5227 3)."""
    ethernet = BROADCAST + sender_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sender_mac, address.packed, bytes(6), address.packed
    )
    return ethernet + arp


def open_arp_socket(interface: str) -> tuple[socket.socket, bytes]:
    """An AF_PACKET socket bound to `interface`, and that interface's MAC."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((interface, ETH_P_ARP))
    mac: bytes = sock.getsockname()[4]
    return sock, mac


def open_vrrp_socket(interface: str, address: IPv4Address) -> socket.socket:
    """A raw IP protocol 112 socket that sends adverts from `address` and hears the group."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    group = struct.pack("4s4s", VRRP_MULTICAST_IPV4.packed, address.packed)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, address.packed)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    return sock


def advert_bytes(
    version: VrrpVersion,
    *,
    vrid: int,
    priority: int,
    interval: float,
    vips: tuple[IPv4Address, ...],
    source: IPv4Address,
) -> bytes:
    wire_interval = int(interval) if version is VrrpVersion.V2 else round(interval * 100)
    advert = Advert(version, vrid, priority, wire_interval, vips)
    return encode_advert(advert, source, VRRP_MULTICAST_IPV4)


def send_advert(sock: socket.socket, payload: bytes) -> None:
    sock.sendto(payload, (str(VRRP_MULTICAST_IPV4), 0))


class Role(enum.Enum):
    BACKUP = "BACKUP"
    MASTER = "MASTER"


def log(message: str) -> None:
    print(f"{time.monotonic():.3f} standin: {message}", file=sys.stderr, flush=True)


def primary_address(interface: str, vips: set[IPv4Address]) -> IPv4Address:
    shown = subprocess.run(
        ["ip", "-4", "-j", "addr", "show", "dev", interface],
        capture_output=True,
        text=True,
        check=True,
    )
    for link in json.loads(shown.stdout):
        for info in link.get("addr_info", []):
            address = IPv4Address(info["local"])
            if address not in vips:
                return address
    raise SystemExit(f"{interface} has no IPv4 address of its own")


class StandInDirector:
    def __init__(self, config_path: Path) -> None:
        config = load_file(config_path)
        ((_name, instance),) = config.vrrp_instances.items()
        self.interface = instance.interface
        self.vrid = instance.virtual_router_id
        self.priority = instance.priority
        self.version = VrrpVersion(instance.version)
        self.interval = instance.advert_interval
        self.preempt = instance.preempt
        self.garp_burst = instance.garp.burst
        self.vips = [
            vip.address
            for vip in instance.virtual_ipaddresses
            if isinstance(vip.address, IPv4Interface)
        ]
        vip_addresses = tuple(vip.ip for vip in self.vips)
        self.address = primary_address(self.interface, set(vip_addresses))
        self.vrrp = open_vrrp_socket(self.interface, self.address)
        self.arp, mac = open_arp_socket(self.interface)
        self.garps = [garp_frame(mac, address) for address in vip_addresses]
        self.advert = advert_bytes(
            self.version,
            vrid=self.vrid,
            priority=self.priority,
            interval=self.interval,
            vips=vip_addresses,
            source=self.address,
        )
        self.resignation = advert_bytes(
            self.version,
            vrid=self.vrid,
            priority=0,
            interval=self.interval,
            vips=vip_addresses,
            source=self.address,
        )
        self.drops = DropCounter()
        self.role = Role.BACKUP
        self.stopping = False

    @property
    def skew_time(self) -> float:
        # RFC 5798 6.1 (RFC 3768 6.1 for v2, where the interval is whole seconds anyway).
        return (256 - self.priority) * self.interval / 256

    @property
    def master_down_interval(self) -> float:
        return 3 * self.interval + self.skew_time

    def run(self) -> None:
        wake_reader, wake_writer = socket.socketpair()
        wake_writer.setblocking(False)
        signal.set_wakeup_fd(wake_writer.fileno())
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log(f"{self.address} priority {self.priority} VRRPv{self.version.value} starts as BACKUP")
        deadline = time.monotonic() + self.master_down_interval
        while not self.stopping:
            readable, _, _ = select.select(
                [self.vrrp, wake_reader], [], [], max(0.0, deadline - time.monotonic())
            )
            if wake_reader in readable:
                wake_reader.recv(64)
            if self.vrrp in readable:
                deadline = self._on_packet(self.vrrp.recv(65535), deadline)
            if time.monotonic() >= deadline and not self.stopping:
                deadline = self._on_timer()
        self._shut_down()

    def _stop(self, number: int, frame: object) -> None:
        self.stopping = True

    def _on_packet(self, packet: bytes, deadline: float) -> float:
        received = receive_ipv4_packet(packet, self.drops)
        if received is None or received.advert.vrid != self.vrid:
            return deadline
        if received.source == self.address:
            return deadline
        priority = received.advert.priority
        now = time.monotonic()
        if self.role is Role.BACKUP:
            if priority == 0:
                return now + self.skew_time  # RFC 5798 6.4.2: take over without the full wait
            if not self.preempt or priority >= self.priority:
                return now + self.master_down_interval
            return deadline  # a lower master: preempt it by letting the timer run out
        if priority == 0:
            self._send(self.advert)
            return now + self.interval
        # RFC 5798 6.4.3: equal priorities are decided by the larger primary address.
        higher = priority > self.priority or (
            priority == self.priority and int(received.source) > int(self.address)
        )
        if higher:
            log(f"{received.source} priority {priority} is higher: BACKUP")
            self.role = Role.BACKUP
            self._vips("del")
            return now + self.master_down_interval
        return deadline

    def _on_timer(self) -> float:
        if self.role is Role.BACKUP:
            log("no master heard: MASTER")
            self.role = Role.MASTER
            self._send(self.advert)
            self._vips("add")
            for frame in self.garps * self.garp_burst:
                self.arp.send(frame)
        else:
            self._send(self.advert)
        return time.monotonic() + self.interval

    def _shut_down(self) -> None:
        if self.role is Role.MASTER:
            log("stopping: priority 0 advert, VIP kept until the new master is heard")
            self._send(self.resignation)
            deadline = time.monotonic() + self.master_down_interval
            while time.monotonic() < deadline:
                readable, _, _ = select.select(
                    [self.vrrp], [], [], max(0.0, deadline - time.monotonic())
                )
                if not readable:
                    break
                received = receive_ipv4_packet(self.vrrp.recv(65535), self.drops)
                if (
                    received is not None
                    and received.advert.vrid == self.vrid
                    and received.source != self.address
                    and received.advert.priority > 0
                ):
                    log(f"{received.source} took over")
                    break
            self._vips("del")
        log("stopped")

    def _send(self, payload: bytes) -> None:
        try:
            send_advert(self.vrrp, payload)
        except OSError as exc:
            log(f"advert not sent: {exc}")

    def _vips(self, verb: str) -> None:
        for vip in self.vips:
            subprocess.run(
                ["ip", "addr", verb, str(vip), "dev", self.interface],
                capture_output=True,
                check=False,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("config", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "standin.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")
    StandInDirector(args.config).run()


if __name__ == "__main__":
    main()
