"""The netlink sync daemon port and the follower against the real kernel, read back with
``ipvsadm -L --daemon``; and two directors in namespaces, where a connection scheduled on the
master shows up in the backup's connection table.

The in-memory port is held to the kernel's results, since unit tests rely on it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import secrets
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.ipvs.syncd import (
    DEFAULT_GROUP,
    MemorySyncDaemons,
    NetlinkSyncDaemons,
    NoSuchInterfaceError,
    NoSuchSyncDaemonError,
    SyncDaemon,
    SyncDaemonFollower,
    SyncDaemonPort,
    SyncDaemonRunningError,
    SyncSettings,
    SyncState,
)
from lvsha.vrrp.events import VrrpState
from tests.kernel.ipvsadm import ipvsadm

pytestmark = pytest.mark.kernel

MASTER, BACKUP = SyncState.MASTER, SyncState.BACKUP
_DAEMON_LINE = re.compile(
    r"(?P<state>master|backup) sync daemon \(mcast=(?P<interface>[^,]+), syncid=(?P<sync_id>\d+)"
    r"(?:, maxlen=(?P<max_length>\d+), group=(?P<group>[^,]+), port=(?P<port>\d+), "
    r"ttl=(?P<ttl>\d+))?\)"
)


def ipvsadm_daemons(host: Host | None = None) -> list[SyncDaemon]:
    """The sync daemons as ``ipvsadm -L --daemon`` shows them, in the VM or in `host`."""
    arguments = ("-L", "--daemon")
    output = ipvsadm(*arguments) if host is None else host.run("ipvsadm", *arguments).stdout
    daemons = []
    for line in output.splitlines():
        found = _DAEMON_LINE.fullmatch(line.strip())
        assert found is not None, f"unexpected ipvsadm --daemon line {line!r}"
        fields = found.groupdict()
        daemons.append(
            SyncDaemon(
                SyncState[fields["state"].upper()],
                fields["interface"],
                int(fields["sync_id"]),
                None if fields["max_length"] is None else int(fields["max_length"]),
                None if fields["group"] is None else ip_address(fields["group"]),
                None if fields["port"] is None else int(fields["port"]),
                None if fields["ttl"] is None else int(fields["ttl"]),
            )
        )
    return sorted(daemons, key=lambda d: d.state.value)


def _stop_every_daemon() -> None:
    for state in ("master", "backup"):
        subprocess.run(
            ["ipvsadm", "--stop-daemon", state], check=False, capture_output=True, timeout=30
        )


@pytest.fixture(autouse=True)
def _no_sync_daemons() -> Iterator[None]:
    _stop_every_daemon()
    yield
    _stop_every_daemon()


@pytest.fixture
def interface() -> Iterator[str]:
    """A dummy interface (MTU 1500) in the VM, removed afterwards."""
    name = f"sd{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "dummy"], check=True, timeout=30)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, timeout=30)


@pytest.fixture
async def daemons() -> AsyncIterator[NetlinkSyncDaemons]:
    async with NetlinkSyncDaemons() as port:
        yield port


def memory_twin(interface: str) -> MemorySyncDaemons:
    return MemorySyncDaemons({interface: 1500, "lo": 65536})


async def test_a_master_daemon_starts_with_the_kernels_defaults(
    daemons: NetlinkSyncDaemons, interface: str
) -> None:
    await daemons.start_daemon(MASTER, SyncSettings(interface, 51))
    expected = [SyncDaemon(MASTER, interface, 51, 1500 - 28, DEFAULT_GROUP, 8848, 1)]
    assert ipvsadm_daemons() == expected
    assert await daemons.list_daemons() == expected


@pytest.mark.parametrize(
    "group", [IPv4Address("239.1.2.3"), IPv6Address("ff02::1:81")], ids=["ipv4", "ipv6"]
)
async def test_a_backup_daemon_takes_every_option(
    daemons: NetlinkSyncDaemons, interface: str, group: IPv4Address | IPv6Address
) -> None:
    settings = SyncSettings(interface, 7, max_length=2000, group=group, port=9000, ttl=3)
    await daemons.start_daemon(BACKUP, settings)
    expected = [SyncDaemon(BACKUP, interface, 7, 2000, group, 9000, 3)]
    assert ipvsadm_daemons() == expected
    assert await daemons.list_daemons() == expected


@pytest.mark.parametrize(
    "starts",
    [
        [(MASTER, "dummy", SyncSettings("x", 1)), (BACKUP, "dummy", SyncSettings("x", 2))],
        [(BACKUP, "dummy", SyncSettings("x", 3, max_length=10))],  # raised to 1024
        [(BACKUP, "lo", SyncSettings("x", 4))],  # default length from lo's MTU 65536
        [(BACKUP, "lo", SyncSettings("x", 4, group=IPv6Address("ff02::81")))],
        [(MASTER, "dummy", SyncSettings("x", 5, max_length=65507, group=IPv6Address("ff02::81")))],
        [(MASTER, "lo", SyncSettings("x", 6, max_length=1, port=1, ttl=255))],
    ],
    ids=["both", "short-backup", "lo-backup", "lo-backup-v6", "long-master-v6", "tiny-master"],
)
async def test_the_memory_port_reports_what_the_kernel_reports(
    daemons: NetlinkSyncDaemons,
    interface: str,
    starts: list[tuple[SyncState, str, SyncSettings]],
) -> None:
    twin = memory_twin(interface)
    for state, link, settings in starts:
        named = replace(settings, interface=interface if link == "dummy" else link)
        await daemons.start_daemon(state, named)
        await twin.start_daemon(state, named)
    kernel = await daemons.list_daemons()
    assert kernel == ipvsadm_daemons()
    assert await twin.list_daemons() == kernel


async def test_stop_removes_the_daemon_and_a_second_stop_finds_none(
    daemons: NetlinkSyncDaemons, interface: str
) -> None:
    await daemons.start_daemon(MASTER, SyncSettings(interface, 1))
    await daemons.start_daemon(BACKUP, SyncSettings(interface, 1))
    await daemons.stop_daemon(MASTER)
    assert [d.state for d in ipvsadm_daemons()] == [BACKUP]
    await daemons.stop_daemon(BACKUP)
    assert ipvsadm_daemons() == []
    for port in (daemons, memory_twin(interface)):
        with pytest.raises(NoSuchSyncDaemonError) as absent:
            await port.stop_daemon(BACKUP)
        assert absent.value.errno == errno.ESRCH


async def test_a_second_daemon_of_the_same_state_is_refused(
    daemons: NetlinkSyncDaemons, interface: str
) -> None:
    twin = memory_twin(interface)
    for port in (daemons, twin):
        await port.start_daemon(MASTER, SyncSettings(interface, 1))
        with pytest.raises(SyncDaemonRunningError) as running:
            await port.start_daemon(MASTER, SyncSettings("lo", 2))
        assert running.value.errno == errno.EEXIST
    assert [(d.interface, d.sync_id) for d in ipvsadm_daemons()] == [(interface, 1)]


async def test_a_missing_interface_is_refused_by_name(daemons: NetlinkSyncDaemons) -> None:
    missing = f"sd{secrets.token_hex(3)}"
    for port in (daemons, MemorySyncDaemons({})):
        with pytest.raises(NoSuchInterfaceError) as refused:
            await port.start_daemon(BACKUP, SyncSettings(missing, 1))
        assert refused.value.errno == errno.ENODEV
        assert f"no interface {missing!r}" in str(refused.value)
    assert ipvsadm_daemons() == []


async def test_the_follower_swaps_daemons_as_the_role_changes(
    daemons: NetlinkSyncDaemons, interface: str
) -> None:
    settings = SyncSettings(interface, 51)
    follower = SyncDaemonFollower(daemons, "VI_1", settings)

    def shown() -> list[tuple[SyncState, str, int]]:
        return [(d.state, d.interface, d.sync_id) for d in ipvsadm_daemons()]

    await follower.start()
    assert shown() == [(BACKUP, interface, 51)]
    for role, state in [
        (VrrpState.MASTER, MASTER),
        (VrrpState.BACKUP, BACKUP),
        (VrrpState.MASTER, MASTER),
        (VrrpState.RELEASING, MASTER),
        (VrrpState.FAULT, BACKUP),
    ]:
        await follower.follow(role)
        assert shown() == [(state, interface, 51)], role
    await follower.follow(VrrpState.INITIALIZE)
    assert shown() == []


async def test_the_follower_restarts_a_daemon_left_with_other_settings(
    daemons: NetlinkSyncDaemons, interface: str
) -> None:
    await daemons.start_daemon(BACKUP, SyncSettings("lo", 9, port=9000))
    follower = SyncDaemonFollower(daemons, "VI_1", SyncSettings(interface, 51))
    await follower.start()
    assert ipvsadm_daemons() == [SyncDaemon(BACKUP, interface, 51, 1472, DEFAULT_GROUP, 8848, 1)]


async def test_the_follower_logs_a_missing_interface_by_name(
    daemons: NetlinkSyncDaemons, caplog: pytest.LogCaptureFixture
) -> None:
    follower = SyncDaemonFollower(daemons, "VI_1", SyncSettings("nosuch0", 51))
    with caplog.at_level(logging.ERROR, logger="lvsha.ipvs.syncd"):
        assert await follower.follow(VrrpState.MASTER) == []
    [record] = caplog.records
    assert "VI_1 MASTER: cannot start the master sync daemon" in record.getMessage()
    assert "no interface 'nosuch0'" in record.getMessage()
    assert ipvsadm_daemons() == []


# --- two directors ------------------------------------------------------------------------

VIP = "192.0.2.100"
REAL_SERVER = "192.0.2.20"
SERVICE_PORT = 5353


def _run_in(host: Host, role: SyncState, settings: SyncSettings) -> list[SyncDaemon]:
    async def start() -> list[SyncDaemon]:
        port: SyncDaemonPort
        async with NetlinkSyncDaemons() as port:
            await port.start_daemon(role, settings)
            return await port.list_daemons()

    # The netlink socket is opened in a thread inside the host's namespace.
    return host.call(lambda: asyncio.run(start()))


def test_a_connection_on_the_master_reaches_the_backups_table(lab: Lab) -> None:
    master = lab.add_host("m", "192.0.2.1/24")
    backup = lab.add_host("b", "192.0.2.2/24")
    client = lab.add_host("c", "192.0.2.10/24")
    master.ip("addr", "add", f"{VIP}/32", "dev", "eth0")
    for director in (master, backup):
        director.run("ipvsadm", "-A", "-u", f"{VIP}:{SERVICE_PORT}", "-s", "rr")
        director.run(
            "ipvsadm", "-a", "-u", f"{VIP}:{SERVICE_PORT}", "-r", f"{REAL_SERVER}:{SERVICE_PORT}",
            "-m",
        )  # fmt: skip
    settings = SyncSettings("eth0", 42)
    assert [d.state for d in _run_in(master, MASTER, settings)] == [MASTER]
    assert [d.state for d in _run_in(backup, BACKUP, settings)] == [BACKUP]
    assert [d.state for d in ipvsadm_daemons(master)] == [MASTER]
    assert [d.state for d in ipvsadm_daemons(backup)] == [BACKUP]

    # One socket, so every datagram belongs to the same IPVS connection entry; it was opened
    # in the client's namespace and stays there.
    udp = client.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with udp:
        udp.bind(("192.0.2.10", 0))
        client_port = udp.getsockname()[1]
        entry = re.compile(
            rf"UDP\s+\S+\s+UDP\s+192\.0\.2\.10:{client_port}\s+{re.escape(VIP)}:{SERVICE_PORT}\s+"
            rf"{re.escape(REAL_SERVER)}:{SERVICE_PORT}"
        )

        def synced() -> bool:
            # The master syncs a UDP entry once it has seen a few packets (sync_threshold).
            udp.sendto(b"query", (VIP, SERVICE_PORT))
            return entry.search(connections(backup)) is not None

        try:
            wait_until(synced, timeout=30, interval=0.2, what="the entry in the backup's table")
        except TimeoutError as error:
            raise AssertionError(
                f"{error}\nmaster:\n{connections(master)}\nbackup:\n{connections(backup)}"
            ) from None
    assert entry.search(connections(master)) is not None


def connections(host: Host) -> str:
    return host.run("ipvsadm", "-L", "-n", "-c").stdout
