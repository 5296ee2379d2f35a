"""The IPVS sync daemon: which daemon each VRRP role runs, the in-memory port, the follower,
and the generic netlink messages (checked against the kernel in tests/kernel/test_syncd.py)."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsha.config.model import LvsSyncDaemon
from lvsha.ipvs.syncd import (
    DEFAULT_GROUP,
    WANTED_DAEMON,
    MemorySyncDaemons,
    NoSuchInterfaceError,
    NoSuchSyncDaemonError,
    StartSyncDaemon,
    StopSyncDaemon,
    SyncDaemon,
    SyncDaemonFollower,
    SyncDaemonRunningError,
    SyncSettings,
    SyncState,
    apply_sync_operation,
    daemon_request,
    decode_daemon,
    plan_sync_daemons,
    runs_with,
    sync_settings,
)
from lvsha.vrrp.events import VrrpState

MASTER, BACKUP = SyncState.MASTER, SyncState.BACKUP
SETTINGS = SyncSettings("eth0", 51)
INTERFACES = {"eth0": 1500, "eth1": 9000, "lo": 65536}


def running(state: SyncState, settings: SyncSettings = SETTINGS, mtu: int = 1500) -> SyncDaemon:
    """A daemon as the kernel reports it after starting it with `settings`."""
    port = MemorySyncDaemons({settings.interface: mtu})
    asyncio.run(port.start_daemon(state, settings))
    [daemon] = asyncio.run(port.list_daemons())
    return daemon


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interface": ""}, "interface name '' must be 1 to 15 bytes"),
        ({"interface": "a" * 16}, "must be 1 to 15 bytes"),
        ({"sync_id": 256}, "sync id 256 is not in 0..255"),
        ({"sync_id": -1}, "sync id -1"),
        ({"max_length": 0}, "max length 0 is not in 1..65507"),
        ({"max_length": 65508}, "max length 65508"),
        ({"port": 0}, "port 0 is not in 1..65535"),
        ({"ttl": 256}, "ttl 256 is not in 1..255"),
        ({"group": IPv4Address("192.0.2.1")}, "sync group 192.0.2.1 is not a multicast address"),
        ({"group": IPv6Address("2001:db8::1")}, "not a multicast address"),
    ],
)
def test_settings_refuse_what_the_kernel_or_the_wire_cannot_carry(
    fields: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"interface": "eth0", "sync_id": 1, **fields}
    with pytest.raises(ValueError, match=message):
        SyncSettings(**arguments)  # type: ignore[arg-type]


def test_settings_from_a_normalised_config() -> None:
    config = LvsSyncDaemon(interface="eth1", vrrp_instance="VI_1", sync_id=7)
    assert sync_settings(config) == SyncSettings("eth1", 7)
    with pytest.raises(ValueError, match="normalise"):
        sync_settings(LvsSyncDaemon(interface="eth1", vrrp_instance="VI_1"))


# --- the decision -----------------------------------------------------------------------


def test_every_vrrp_state_has_a_wanted_daemon() -> None:
    assert set(WANTED_DAEMON) == {None, *VrrpState}


@pytest.mark.parametrize(
    ("role", "operations"),
    [
        (None, [StartSyncDaemon(BACKUP, SETTINGS)]),
        (VrrpState.BACKUP, [StartSyncDaemon(BACKUP, SETTINGS)]),
        (VrrpState.FAULT, [StartSyncDaemon(BACKUP, SETTINGS)]),
        (VrrpState.MASTER, [StartSyncDaemon(MASTER, SETTINGS)]),
        (VrrpState.RELEASING, [StartSyncDaemon(MASTER, SETTINGS)]),
        (VrrpState.INITIALIZE, []),
    ],
)
def test_with_nothing_running_each_role_starts_its_daemon(
    role: VrrpState | None, operations: list[object]
) -> None:
    assert plan_sync_daemons(role, SETTINGS, []) == operations


def test_becoming_master_stops_the_backup_daemon_before_starting_the_master() -> None:
    assert plan_sync_daemons(VrrpState.MASTER, SETTINGS, [running(BACKUP)]) == [
        StopSyncDaemon(BACKUP),
        StartSyncDaemon(MASTER, SETTINGS),
    ]


@pytest.mark.parametrize("role", [VrrpState.BACKUP, VrrpState.FAULT])
def test_leaving_master_stops_the_master_daemon_before_starting_the_backup(
    role: VrrpState,
) -> None:
    assert plan_sync_daemons(role, SETTINGS, [running(MASTER)]) == [
        StopSyncDaemon(MASTER),
        StartSyncDaemon(BACKUP, SETTINGS),
    ]


def test_the_right_daemon_running_needs_nothing() -> None:
    assert plan_sync_daemons(VrrpState.MASTER, SETTINGS, [running(MASTER)]) == []
    assert plan_sync_daemons(VrrpState.FAULT, SETTINGS, [running(BACKUP)]) == []
    assert plan_sync_daemons(None, SETTINGS, [running(BACKUP)]) == []


def test_only_one_daemon_runs_even_when_both_were_left_running() -> None:
    both = [running(BACKUP), running(MASTER)]
    assert plan_sync_daemons(VrrpState.MASTER, SETTINGS, both) == [StopSyncDaemon(BACKUP)]
    assert plan_sync_daemons(VrrpState.BACKUP, SETTINGS, both) == [StopSyncDaemon(MASTER)]


def test_stopping_the_instance_stops_every_daemon_master_first() -> None:
    both = [running(BACKUP), running(MASTER)]
    assert plan_sync_daemons(VrrpState.INITIALIZE, SETTINGS, both) == [
        StopSyncDaemon(MASTER),
        StopSyncDaemon(BACKUP),
    ]


@pytest.mark.parametrize(
    "left_running",
    [
        SyncSettings("eth1", 51),
        SyncSettings("eth0", 52),
        SyncSettings("eth0", 51, port=9000),
        SyncSettings("eth0", 51, ttl=2),
        SyncSettings("eth0", 51, group=IPv4Address("239.0.0.1")),
    ],
)
def test_a_daemon_left_with_other_settings_is_restarted(left_running: SyncSettings) -> None:
    daemon = running(MASTER, left_running)
    assert plan_sync_daemons(VrrpState.MASTER, SETTINGS, [daemon]) == [
        StopSyncDaemon(MASTER),
        StartSyncDaemon(MASTER, SETTINGS),
    ]


def test_the_kernels_defaults_and_clamping_count_as_the_settings_asked_for() -> None:
    explicit_defaults = SyncSettings("eth0", 51, group=DEFAULT_GROUP, port=8848, ttl=1)
    assert runs_with(running(MASTER), explicit_defaults)
    assert runs_with(running(MASTER, explicit_defaults), SETTINGS)
    # A backup's length is raised to 1024 at least; the master's default is 1500 - 28.
    short = SyncSettings("eth0", 51, max_length=10)
    assert running(BACKUP, short).max_length == 1024
    assert runs_with(running(BACKUP, short), short)
    assert runs_with(running(MASTER), SyncSettings("eth0", 51, max_length=1472))
    assert not runs_with(running(MASTER), SyncSettings("eth0", 51, max_length=1400))
    # A backup's default length follows the MTU, so it matches a setting of None only.
    assert runs_with(running(BACKUP, mtu=9000), SETTINGS)


def test_a_daemon_reported_by_an_old_kernel_matches_on_what_it_reports() -> None:
    old = SyncDaemon(MASTER, "eth0", 51)
    assert runs_with(old, SyncSettings("eth0", 51, port=9000, max_length=2000))
    assert not runs_with(old, SyncSettings("eth0", 50))


SETTINGS_POOL = [
    SETTINGS,
    SyncSettings("eth1", 51),
    SyncSettings("eth0", 9, max_length=1200, group=IPv6Address("ff02::81"), port=9000, ttl=2),
]


@given(
    role=st.sampled_from([None, *VrrpState]),
    settings=st.sampled_from(SETTINGS_POOL),
    left_running=st.dictionaries(st.sampled_from(SyncState), st.sampled_from(SETTINGS_POOL)),
)
def test_applying_the_plan_leaves_exactly_the_wanted_daemon(
    role: VrrpState | None,
    settings: SyncSettings,
    left_running: dict[SyncState, SyncSettings],
) -> None:
    async def scenario() -> list[SyncDaemon]:
        port = MemorySyncDaemons(INTERFACES)
        for state, earlier in left_running.items():
            await port.start_daemon(state, earlier)
        for operation in plan_sync_daemons(role, settings, await port.list_daemons()):
            await apply_sync_operation(port, operation)
        after = await port.list_daemons()
        assert plan_sync_daemons(role, settings, after) == []
        return after

    after = asyncio.run(scenario())
    wanted = WANTED_DAEMON[role]
    assert [d.state for d in after] == ([] if wanted is None else [wanted])
    assert all((d.interface, d.sync_id) == (settings.interface, settings.sync_id) for d in after)


# --- the in-memory port -----------------------------------------------------------------


async def test_memory_port_fills_in_the_kernels_defaults() -> None:
    port = MemorySyncDaemons(INTERFACES)
    await port.start_daemon(BACKUP, SyncSettings("eth1", 3))
    await port.start_daemon(MASTER, SyncSettings("eth0", 3, group=IPv6Address("ff02::1:81")))
    assert await port.list_daemons() == [
        SyncDaemon(MASTER, "eth0", 3, 1500 - 48, IPv6Address("ff02::1:81"), 8848, 1),
        SyncDaemon(BACKUP, "eth1", 3, 9000 - 28, DEFAULT_GROUP, 8848, 1),
    ]


async def test_memory_port_refuses_as_the_kernel_does() -> None:
    port = MemorySyncDaemons(INTERFACES)
    with pytest.raises(NoSuchInterfaceError, match="no interface 'eth9'") as missing:
        await port.start_daemon(MASTER, SyncSettings("eth9", 1))
    assert missing.value.errno == errno.ENODEV
    await port.start_daemon(MASTER, SETTINGS)
    with pytest.raises(SyncDaemonRunningError) as running_already:
        await port.start_daemon(MASTER, SyncSettings("eth1", 2))
    assert running_already.value.errno == errno.EEXIST
    with pytest.raises(NoSuchSyncDaemonError) as absent:
        await port.stop_daemon(BACKUP)
    assert absent.value.errno == errno.ESRCH
    await port.stop_daemon(MASTER)
    assert await port.list_daemons() == []


# --- the follower -----------------------------------------------------------------------


async def states(port: MemorySyncDaemons) -> list[SyncState]:
    return [daemon.state for daemon in await port.list_daemons()]


async def test_follower_runs_the_backup_daemon_then_follows_the_role() -> None:
    port = MemorySyncDaemons(INTERFACES)
    follower = SyncDaemonFollower(port, "VI_1", SETTINGS)
    assert await follower.start() == [StartSyncDaemon(BACKUP, SETTINGS)]
    assert await states(port) == [BACKUP]
    assert await follower.follow(VrrpState.MASTER) == [
        StopSyncDaemon(BACKUP),
        StartSyncDaemon(MASTER, SETTINGS),
    ]
    assert await states(port) == [MASTER]
    assert await follower.follow(VrrpState.RELEASING) == []
    assert await follower.follow(VrrpState.FAULT) == [
        StopSyncDaemon(MASTER),
        StartSyncDaemon(BACKUP, SETTINGS),
    ]
    assert await follower.follow(VrrpState.BACKUP) == []
    assert await states(port) == [BACKUP]
    assert await follower.follow(VrrpState.INITIALIZE) == [StopSyncDaemon(BACKUP)]
    assert await states(port) == []


async def test_follower_starts_in_the_role_the_parent_reported() -> None:
    # A restarted checker on the master: the master daemon at once, never the backup one.
    port = MemorySyncDaemons(INTERFACES)
    follower = SyncDaemonFollower(port, "VI_1", SETTINGS)
    assert await follower.start(VrrpState.MASTER) == [StartSyncDaemon(MASTER, SETTINGS)]
    assert follower.role is VrrpState.MASTER
    assert await states(port) == [MASTER]


async def test_follower_without_a_reported_role_runs_the_backup_daemon() -> None:
    port = MemorySyncDaemons(INTERFACES)
    follower = SyncDaemonFollower(port, "VI_1", SETTINGS)
    assert await follower.start(None) == [StartSyncDaemon(BACKUP, SETTINGS)]
    assert follower.role is None


async def test_follower_logs_each_change(caplog: pytest.LogCaptureFixture) -> None:
    follower = SyncDaemonFollower(MemorySyncDaemons(INTERFACES), "VI_1", SETTINGS)
    await follower.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lvsha.ipvs.syncd"):
        await follower.follow(VrrpState.MASTER)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "VI_1 MASTER: stop the backup sync daemon"),
        (
            logging.INFO,
            "VI_1 MASTER: start the master sync daemon (interface eth0, sync id 51)",
        ),
    ]


async def test_follower_logs_a_refusal_naming_the_interface_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = MemorySyncDaemons(INTERFACES)
    await port.start_daemon(BACKUP, SyncSettings("eth1", 51))
    follower = SyncDaemonFollower(port, "VI_1", SyncSettings("eth9", 51))
    with caplog.at_level(logging.INFO, logger="lvsha.ipvs.syncd"):
        done = await follower.follow(VrrpState.MASTER)
    assert done == [StopSyncDaemon(BACKUP)]
    assert await port.list_daemons() == []
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "cannot start the master sync daemon (interface eth9, sync id 51)" in error.getMessage()
    assert "no interface 'eth9'" in error.getMessage()


async def test_follower_puts_right_a_daemon_stopped_behind_its_back() -> None:
    port = MemorySyncDaemons(INTERFACES)
    follower = SyncDaemonFollower(port, "VI_1", SETTINGS)
    await follower.follow(VrrpState.MASTER)
    await port.stop_daemon(MASTER)
    await port.start_daemon(BACKUP, SETTINGS)
    assert await follower.follow(VrrpState.MASTER) == [
        StopSyncDaemon(BACKUP),
        StartSyncDaemon(MASTER, SETTINGS),
    ]


async def test_follower_stop_stops_everything() -> None:
    port = MemorySyncDaemons(INTERFACES)
    await port.start_daemon(BACKUP, SETTINGS)
    await port.start_daemon(MASTER, SETTINGS)
    follower = SyncDaemonFollower(port, "VI_1", SETTINGS)
    assert await follower.stop() == [StopSyncDaemon(MASTER), StopSyncDaemon(BACKUP)]
    assert await port.list_daemons() == []


async def test_role_changes_arriving_together_end_in_the_last_role() -> None:
    port = MemorySyncDaemons(INTERFACES)
    follower = SyncDaemonFollower(port, "VI_1", SETTINGS)
    await asyncio.gather(
        follower.follow(VrrpState.MASTER),
        follower.follow(VrrpState.BACKUP),
        follower.follow(VrrpState.MASTER),
    )
    assert await states(port) == [MASTER]


# --- the generic netlink messages ---------------------------------------------------------

# nlmsghdr (length, type 0 until the socket sets the family id, flags, seq, pid), genlmsghdr
# (cmd, version 1, reserved), then netlink attributes: u16 length, u16 type, value, padding.
NEW_DAEMON_MINIMAL = (
    "34000000" "0000" "0000" "00000000" "00000000"  # nlmsghdr, 52 bytes
    "09" "01" "0000"  # IPVS_CMD_NEW_DAEMON, version 1
    "2000" "0300"  # IPVS_CMD_ATTR_DAEMON, 32 bytes
    "0800" "0100" "01000000"  # IPVS_DAEMON_ATTR_STATE = IP_VS_STATE_MASTER
    "0900" "0200" "65746830" "00" "000000"  # IPVS_DAEMON_ATTR_MCAST_IFN = "eth0\0"
    "0800" "0300" "33000000"  # IPVS_DAEMON_ATTR_SYNC_ID = 51
)  # fmt: skip
NEW_DAEMON_ALL_OPTIONS_V4 = (
    "54000000" "0000" "0000" "00000000" "00000000"  # 84 bytes
    "09" "01" "0000"
    "4000" "0300"  # 64 bytes
    "0800" "0100" "02000000"  # STATE = IP_VS_STATE_BACKUP
    "0900" "0200" "65746831" "00" "000000"  # MCAST_IFN = "eth1"
    "0800" "0300" "07000000"  # SYNC_ID = 7
    "0600" "0400" "d007" "0000"  # SYNC_MAXLEN = 2000, host byte order
    "0800" "0500" "ef010203"  # MCAST_GROUP = 239.1.2.3, network byte order
    "0600" "0700" "2823" "0000"  # MCAST_PORT = 9000, host byte order
    "0500" "0800" "03" "000000"  # MCAST_TTL = 3
)  # fmt: skip
DEL_DAEMON_BACKUP = (
    "20000000" "0000" "0000" "00000000" "00000000"
    "0a" "01" "0000"  # IPVS_CMD_DEL_DAEMON
    "0c00" "0300" "0800" "0100" "02000000"
)  # fmt: skip
GET_DAEMON = "14000000" "0000" "0000" "00000000" "00000000" "0b" "01" "0000"  # fmt: skip


@pytest.mark.parametrize(
    ("message", "golden"),
    [
        (lambda: daemon_request(9, MASTER, SyncSettings("eth0", 51)), NEW_DAEMON_MINIMAL),
        (
            lambda: daemon_request(
                9,
                BACKUP,
                SyncSettings(
                    "eth1", 7, max_length=2000, group=ip_address("239.1.2.3"), port=9000, ttl=3
                ),
            ),
            NEW_DAEMON_ALL_OPTIONS_V4,
        ),
        (lambda: daemon_request(10, BACKUP), DEL_DAEMON_BACKUP),
        (lambda: daemon_request(11), GET_DAEMON),
    ],
    ids=["new-minimal", "new-all-options", "del", "get"],
)
def test_requests_encode_as_the_uapi_header_lays_them_out(
    message: Callable[[], Any], golden: str
) -> None:
    request = message()
    request.encode()
    assert request.data.hex() == golden


def test_an_ipv6_group_goes_in_its_own_attribute() -> None:
    request = daemon_request(9, MASTER, SyncSettings("eth0", 1, group=IPv6Address("ff02::1:81")))
    request.encode()
    assert request.data.hex().endswith("14000600ff020000000000000000000000010081")


@pytest.mark.parametrize(
    "daemon",
    [
        SyncDaemon(MASTER, "eth0", 51, 1472, DEFAULT_GROUP, 8848, 1),
        SyncDaemon(BACKUP, "bond0.12", 255, 1024, IPv6Address("ff02::1:81"), 9000, 3),
        SyncDaemon(BACKUP, "eth0", 4),  # a kernel before 4.3 reports no more
    ],
)
def test_a_get_daemon_reply_decodes_to_the_daemon(daemon: SyncDaemon) -> None:
    # Replies have the kernel's layout, the same attributes as a NEW_DAEMON request.
    settings = SyncSettings(
        daemon.interface, daemon.sync_id, daemon.max_length, daemon.group, daemon.port, daemon.ttl
    )
    reply = daemon_request(9, daemon.state, settings)
    reply.encode()
    decoded = type(reply)(reply.data)
    decoded.decode()
    assert decode_daemon(decoded) == daemon
