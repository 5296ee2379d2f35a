"""A reload on real IPVS touches only what changed (issue 10), through the daemon's own apply
path: the checker's `Checker.apply` on an `ApplyConfig`, with the netlink IPVS port.

- 100 services: a reload that changes weights of, adds and removes real servers across them
  sends netlink operations only for the changed entries. Counted three ways: what reached the
  netlink port, the syncer's `operations` counter, and the table as ipvsadm reads it before
  and after (every entry not changed is read back identical).
- A long-lived TCP connection through the VIP to an unchanged destination (NAT, real server in
  a namespace) carries data before and after a reload that edits, adds and removes around it.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from ipaddress import ip_address
from pathlib import Path

import pytest

from lvsha.config import load_text
from lvsha.daemon.checker_process import Checker
from lvsha.drill.lab import Host, Lab
from lvsha.ipvs.model import AddressKey, DestinationKey, ServiceKey, TransportProtocol
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.plan import (
    AddDestination,
    AddService,
    DeleteDestination,
    DeleteService,
    EditDestination,
    EditService,
    Operation,
)
from lvsha.ipvs.port import IpvsError
from lvsha.ipvs.syncd import MemorySyncDaemons
from lvsha.messages import ApplyConfig
from tests.kernel.ipvsadm import ipvsadm_table
from tests.kernel.nat_lab import build_nat_lab

pytestmark = pytest.mark.kernel

SERVICES = 100
PER_SERVICE = 5
VIP = "192.0.2.100"


class CountingTable(NetlinkIpvsTable):
    """The netlink port, keeping every operation sent to the kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Operation] = []

    async def apply_operations(self, operations: Sequence[Operation]) -> list[IpvsError | None]:
        self.sent.extend(operations)
        return await super().apply_operations(operations)


def message(generation: int, text: str) -> ApplyConfig:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return ApplyConfig.of(generation, digest, load_text(text))


# --- 100 services ---------------------------------------------------------------------------


def bulk_config(*, reloaded: bool = False) -> str:
    """SERVICES services of PER_SERVICE real servers (DR, no checks: in service at once).
    Reloaded: every 5th service has its first real server at weight 3, every 4th loses its
    last real server, every 3rd gains a new one; the order of the services is reversed (no
    index stays the same)."""
    blocks = []
    for service in range(SERVICES):
        servers = []
        for index in range(PER_SERVICE):
            weight = 3 if reloaded and service % 5 == 0 and index == 0 else 1
            if reloaded and service % 4 == 0 and index == PER_SERVICE - 1:
                continue
            servers.append(f"{{address: 10.1.{service}.{index + 1}, weight: {weight}}}")
        if reloaded and service % 3 == 0:
            servers.append(f"{{address: 10.1.{service}.99, weight: 1}}")
        blocks.append(
            f"  - {{address: 192.0.2.{service // 50 + 1}, port: {8000 + service % 50}, "
            f"protocol: TCP, forwarding: DR, real_servers: [{', '.join(servers)}]}}\n"
        )
    if reloaded:
        blocks.reverse()
    return "virtual_servers:\n" + "".join(blocks)


def service_key(service: int) -> AddressKey:
    return AddressKey(
        TransportProtocol.TCP, ip_address(f"192.0.2.{service // 50 + 1}"), 8000 + service % 50
    )


def destination(service: int, host: int) -> DestinationKey:
    return DestinationKey(ip_address(f"10.1.{service}.{host}"), 0)


def expected_changes() -> set[tuple[str, ServiceKey, DestinationKey]]:
    changes: set[tuple[str, ServiceKey, DestinationKey]] = set()
    for service in range(SERVICES):
        key = service_key(service)
        if service % 5 == 0:
            changes.add(("EditDestination", key, destination(service, 1)))
        if service % 4 == 0:
            changes.add(("DeleteDestination", key, destination(service, PER_SERVICE)))
        if service % 3 == 0:
            changes.add(("AddDestination", key, destination(service, 99)))
    return changes


def described(operation: Operation) -> tuple[str, ServiceKey, DestinationKey | None]:
    match operation:
        case AddDestination(key, dest) | EditDestination(key, dest):
            return type(operation).__name__, key, DestinationKey(dest.address, 0)
        case DeleteDestination(key, dest_key):
            return type(operation).__name__, key, DestinationKey(dest_key.address, 0)
        case AddService(key) | EditService(key) | DeleteService(key):
            return type(operation).__name__, key, None
    raise AssertionError(operation)


def by_entry() -> dict[tuple[ServiceKey, DestinationKey | None], object]:
    """The table as ipvsadm reads it: every service's options and every destination, keyed by
    service and destination."""
    entries: dict[tuple[ServiceKey, DestinationKey | None], object] = {}
    for key, service in ipvsadm_table().items():
        entries[key, None] = service.options
        for dest in service.destinations:
            entries[key, DestinationKey(dest.address, 0)] = dest
    return entries


async def test_a_reload_across_100_services_sends_operations_only_for_changed_entries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = CountingTable()
    await table.open()
    with tempfile.TemporaryDirectory() as maintenance:
        checker = Checker(load_text(bulk_config()), table, MemorySyncDaemons(), Path(maintenance))
        try:
            await checker.start()
            assert len(ipvsadm_table()) == SERVICES
            before = by_entry()
            counted = Counter(checker.syncer.operations)
            table.sent.clear()

            answer = await checker.apply(message(2, bulk_config(reloaded=True)))
            assert answer.ok, answer

            after = by_entry()
            expected = expected_changes()
            # 1. What reached the netlink port: exactly the changed entries, once each.
            sent = [described(operation) for operation in table.sent]
            assert len(sent) == len(set(sent)) and set(sent) == expected
            # 2. The syncer's own counter agrees.
            counted_now = Counter(checker.syncer.operations)
            counted_now.subtract(counted)
            assert +counted_now == Counter(kind for kind, _, _ in expected)
            # 3. ipvsadm: what changed is what was sent; every other entry reads the same.
            differing = {
                entry
                for entry in before.keys() | after.keys()
                if before.get(entry) != after.get(entry)
            }
            assert differing == {(key, dest) for _, key, dest in expected}
            edited = [(k, d) for kind, k, d in expected if kind == "EditDestination"]
            assert all(getattr(after[entry], "weight", None) == 3 for entry in edited)
        finally:
            await checker.stop()
            await table.close()
    with capsys.disabled():
        kinds = Counter(kind for kind, _, _ in expected)
        print(
            f"\nreload across {SERVICES} services ({SERVICES * PER_SERVICE} real servers): "
            f"{len(sent)} netlink operations ({dict(kinds)}), "
            f"{len(before) - len(differing & before.keys())} of {len(before)} entries untouched"
        )


# --- a long-lived connection ----------------------------------------------------------------

REAL_SERVERS = {"rs1": "10.0.0.21", "rs2": "10.0.0.22"}
ABSENT = "10.0.0.23"
"""A real server the reload adds: nothing answers there, and no connection goes to it."""
SERVER_PORT = 8080

ECHO_SERVER = """
import socket, sys, threading
name = sys.argv[1]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[2])))
server.listen(16)
print("listening", flush=True)

def serve(connection):
    with connection, connection.makefile("rwb", buffering=0) as stream:
        for line in stream:
            stream.write(name.encode() + b" " + line)

while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


def nat_config(weights: dict[str, int], *, extra: Sequence[str] = (), second: bool = False) -> str:
    servers = [
        f"{{address: {REAL_SERVERS[name]}, port: {SERVER_PORT}, weight: {weight}}}"
        for name, weight in weights.items()
    ]
    servers.extend(extra)
    text = (
        "virtual_servers:\n"
        f"  - {{name: web, address: {VIP}, port: 80, protocol: TCP, scheduler: rr, "
        f"forwarding: NAT, real_servers: [{', '.join(servers)}]}}\n"
    )
    if second:
        text += (
            f"  - {{name: alt, address: {VIP}, port: 81, protocol: TCP, forwarding: NAT, "
            f"real_servers: [{{address: {REAL_SERVERS['rs1']}, port: {SERVER_PORT}}}]}}\n"
        )
    return text


@pytest.fixture
def nat_lab(lab: Lab) -> Iterator[Lab]:
    yield build_nat_lab(lab, REAL_SERVERS, f"{VIP}/24")


def start_echo(host: Host) -> None:
    process = host.popen(
        sys.executable, "-c", ECHO_SERVER, host.name, str(SERVER_PORT),
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline() == b"listening\n"


def exchange(connection: socket.socket, text: str) -> str:
    connection.sendall(text.encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {reply!r}")
        reply += chunk
    return reply.decode().strip()


def connections(director: Host) -> list[str]:
    """The director's IPVS connection entries to a real server's port, as ipvsadm -Lnc shows."""
    lines = director.run("ipvsadm", "-Lnc").stdout.splitlines()
    return [line for line in lines if f":{SERVER_PORT}" in line and "ESTABLISHED" in line]


def test_a_long_lived_connection_through_an_unchanged_destination_survives_a_reload(
    nat_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = nat_lab.hosts
    for name in REAL_SERVERS:
        start_echo(hosts[name])
    client, director = hosts["client"], hosts["dir"]

    def connect() -> socket.socket:
        connection = socket.create_connection((VIP, 80), timeout=10)
        connection.settimeout(10)
        return connection

    async def scenario() -> tuple[str, str, list[str], list[Operation]]:
        table = CountingTable()
        await table.open()
        with tempfile.TemporaryDirectory() as maintenance:
            first = load_text(nat_config({"rs1": 1, "rs2": 1}))
            checker = Checker(first, table, MemorySyncDaemons(), Path(maintenance))
            try:
                await checker.start()
                connection = await asyncio.to_thread(client.call, connect)
                with connection:
                    answer = await asyncio.to_thread(exchange, connection, "before")
                    kept, _, echoed = answer.partition(" ")
                    assert echoed == "before"
                    other = next(name for name in REAL_SERVERS if name != kept)
                    entries = await asyncio.to_thread(connections, director)
                    assert len(entries) == 1, entries
                    # Around the connection's destination: the other's weight changes, a real
                    # server is added, another service appears.
                    table.sent.clear()
                    reloaded = nat_config(
                        {kept: 1, other: 4},
                        extra=[f"{{address: {ABSENT}, port: {SERVER_PORT}}}"],
                        second=True,
                    )
                    applied = await checker.apply(message(2, reloaded))
                    assert applied.ok, applied
                    after = await asyncio.to_thread(exchange, connection, "after")
                    still = await asyncio.to_thread(connections, director)
                    # And back: the other's weight, the added server and service go again.
                    back = await checker.apply(message(3, nat_config({"rs1": 1, "rs2": 1})))
                    assert back.ok, back
                    again = await asyncio.to_thread(exchange, connection, "after the second")
                    assert again == f"{kept} after the second"
                return kept, after, still, table.sent
            finally:
                await checker.stop()
                await table.close()

    kept, after, still, sent = director.call(lambda: asyncio.run(scenario()))
    assert after == f"{kept} after"
    assert len(still) == 1, still  # the kernel's connection entry went on
    web = AddressKey(TransportProtocol.TCP, ip_address(VIP), 80)
    kept_key = DestinationKey(ip_address(REAL_SERVERS[kept]), SERVER_PORT)
    on_kept = [op for op in sent if described_nat(op) == (web, kept_key)]
    assert on_kept == [], f"the connection's destination got operations: {on_kept}"
    # Reload, then back: an edit each way, the added server and service in and out again.
    kinds = Counter(type(op).__name__ for op in sent)
    assert kinds == Counter(
        EditDestination=2, AddDestination=2, DeleteDestination=2, AddService=1, DeleteService=1
    ), sent
    with capsys.disabled():
        print(
            f"\nlong-lived connection to {kept} through {VIP}:80 answered before, between and "
            f"after two reloads ({dict(kinds)} sent, none on its destination; its IPVS "
            "connection entry kept)"
        )


def described_nat(operation: Operation) -> tuple[ServiceKey, DestinationKey | None]:
    match operation:
        case AddDestination(key, dest) | EditDestination(key, dest):
            return key, dest.key
        case DeleteDestination(key, dest_key):
            return key, dest_key
        case AddService(key) | EditService(key) | DeleteService(key):
            return key, None
    raise AssertionError(operation)
