"""The kernel's IPVS connection sync daemon: master on the VRRP master, backup elsewhere.

Like keepalived's ``lvs_sync_daemon <interface> <instance>``: the master director's kernel sends
its connection entries by multicast, the backups' kernels receive them, so connections already
established survive a failover. This module has the port (real, over generic netlink, and in
memory), the pure decision of which daemon should run in which VRRP role, and the follower that
applies that decision on each role change the VRRP process reports.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Protocol, TypeAlias, assert_never

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket
from pyroute2.netlink.generic.ipvs import (
    GENL_NAME,
    GENL_VERSION,
    IPVS_CMD_DEL_DAEMON,
    IPVS_CMD_GET_DAEMON,
    IPVS_CMD_NEW_DAEMON,
)

from lvsha.config.model import LvsSyncDaemon
from lvsha.ipvs.netlink import IpvsGenlEndpoint
from lvsha.ipvs.port import IpvsError
from lvsha.roles import VrrpState

log = logging.getLogger(__name__)

GroupAddress: TypeAlias = IPv4Address | IPv6Address

# The kernel's defaults (net/netfilter/ipvs/ip_vs_sync.c, start_sync_thread).
DEFAULT_GROUP = IPv4Address("224.0.0.81")
DEFAULT_PORT = 8848
DEFAULT_TTL = 1
_IFNAME_MAX = 15  # IP_VS_IFNAME_MAXLEN less the NUL
_MAX_LENGTH_LIMIT = 65507  # largest UDP payload over IPv4, keepalived's limit for maxlen
_MASTER_MTU = 1500
_BACKUP_MIN_LENGTH = 1024
_IPV4_UDP_HEADERS = 20 + 8
_IPV6_UDP_HEADERS = 40 + 8


class SyncState(enum.Enum):
    """Which sync daemon: IP_VS_STATE_MASTER sends connections, IP_VS_STATE_BACKUP receives."""

    MASTER = 1
    BACKUP = 2


class SyncDaemonRunningError(IpvsError):
    """IPVS_CMD_NEW_DAEMON while a daemon of that state already runs."""

    default_errno = errno.EEXIST


class NoSuchSyncDaemonError(IpvsError):
    """IPVS_CMD_DEL_DAEMON for a state no daemon runs in."""

    default_errno = errno.ESRCH


class NoSuchInterfaceError(IpvsError):
    """IPVS_CMD_NEW_DAEMON naming an interface the network namespace does not have."""

    default_errno = errno.ENODEV


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """What to start a sync daemon with; None leaves the kernel's default."""

    interface: str
    sync_id: int
    max_length: int | None = None
    """Largest UDP payload of a sync message; the kernel's default follows the MTU."""
    group: GroupAddress | None = None
    port: int | None = None
    ttl: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.interface.encode()) <= _IFNAME_MAX:
            raise ValueError(f"interface name {self.interface!r} must be 1 to 15 bytes long")
        # Sync messages carry the ID in one byte; the kernel would take more and never match.
        _check_range("sync id", self.sync_id, 0, 255)
        _check_range("max length", self.max_length, 1, _MAX_LENGTH_LIMIT)
        _check_range("port", self.port, 1, 65535)
        _check_range("ttl", self.ttl, 1, 255)
        if self.group is not None and not self.group.is_multicast:
            raise ValueError(f"sync group {self.group} is not a multicast address")

    def describe(self) -> str:
        words = [f"interface {self.interface}", f"sync id {self.sync_id}"]
        for name, value in (
            ("max length", self.max_length),
            ("group", self.group),
            ("port", self.port),
            ("ttl", self.ttl),
        ):
            if value is not None:
                words.append(f"{name} {value}")
        return ", ".join(words)


def sync_settings(config: LvsSyncDaemon) -> SyncSettings:
    """The settings of a normalised ``global.lvs_sync_daemon`` (its sync_id filled in)."""
    if config.sync_id is None:
        raise ValueError("lvs_sync_daemon.sync_id is unset: normalise the configuration first")
    return SyncSettings(interface=config.interface, sync_id=config.sync_id)


def _check_range(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise ValueError(f"sync daemon {name} {value} is not in {low}..{high}")


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    """A sync daemon as the kernel reports it, its defaults filled in.

    Kernels before 4.3 report only the state, interface and sync id; the rest is None there.
    """

    state: SyncState
    interface: str
    sync_id: int
    max_length: int | None = None
    group: GroupAddress | None = None
    port: int | None = None
    ttl: int | None = None


class SyncDaemonPort(Protocol):
    """The kernel's two sync daemon slots (one master, one backup per network namespace)."""

    async def start_daemon(self, state: SyncState, settings: SyncSettings) -> None:
        """Raises SyncDaemonRunningError, NoSuchInterfaceError, IpvsError."""
        ...

    async def stop_daemon(self, state: SyncState) -> None:
        """Raises NoSuchSyncDaemonError."""
        ...

    async def list_daemons(self) -> list[SyncDaemon]:
        """The running daemons, master first."""
        ...


# --- the decision -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartSyncDaemon:
    state: SyncState
    settings: SyncSettings


@dataclass(frozen=True, slots=True)
class StopSyncDaemon:
    state: SyncState


SyncOperation: TypeAlias = StartSyncDaemon | StopSyncDaemon

WANTED_DAEMON: dict[VrrpState | None, SyncState | None] = {
    # keepalived starts the backup daemon when the instance starts (vrrp_scheduler.c), before
    # any role is known, and swaps it for the master daemon only while master (vrrp.c).
    None: SyncState.BACKUP,
    VrrpState.BACKUP: SyncState.BACKUP,
    VrrpState.FAULT: SyncState.BACKUP,
    VrrpState.MASTER: SyncState.MASTER,
    # Still holding the VIPs and forwarding until a new master is heard, so keep sending.
    VrrpState.RELEASING: SyncState.MASTER,
    # Our machine re-enters INITIALIZE only when the instance stops; keepalived stops the
    # daemon on shutdown.
    VrrpState.INITIALIZE: None,
}
"""The one daemon to run in each role of the followed instance (None: no role reported yet)."""


def plan_sync_daemons(
    role: VrrpState | None, settings: SyncSettings, running: Iterable[SyncDaemon]
) -> list[SyncOperation]:
    """The operations that leave exactly the daemon `role` wants running, with `settings`.

    Stops come first, as in keepalived (stop backup, then start master): a daemon running
    with other settings has to stop before it can start again.
    """
    wanted = WANTED_DAEMON[role]
    stops: list[SyncOperation] = []
    wanted_runs = False
    for daemon in sorted(running, key=lambda d: d.state.value):
        if daemon.state is wanted and runs_with(daemon, settings):
            wanted_runs = True
        else:
            stops.append(StopSyncDaemon(daemon.state))
    if wanted is None or wanted_runs:
        return stops
    return [*stops, StartSyncDaemon(wanted, settings)]


def runs_with(daemon: SyncDaemon, settings: SyncSettings) -> bool:
    """Whether `daemon` is what starting one in its state with `settings` would give."""
    if (daemon.interface, daemon.sync_id) != (settings.interface, settings.sync_id):
        return False
    expected = kernel_settings(daemon.state, settings, mtu=None)
    return all(
        reported is None or wanted is None or reported == wanted
        for reported, wanted in (
            (daemon.max_length, expected.max_length),
            (daemon.group, expected.group),
            (daemon.port, expected.port),
            (daemon.ttl, expected.ttl),
        )
    )


def kernel_settings(state: SyncState, settings: SyncSettings, mtu: int | None) -> SyncSettings:
    """`settings` as the kernel keeps them: defaults filled in, the length clamped.

    Follows start_sync_thread in net/netfilter/ipvs/ip_vs_sync.c. The default length depends
    on the interface's MTU (a backup's) and stays None when `mtu` is None.
    """
    group = DEFAULT_GROUP if settings.group is None else settings.group
    headers = _IPV4_UDP_HEADERS if isinstance(group, IPv4Address) else _IPV6_UDP_HEADERS
    backup = state is SyncState.BACKUP
    max_length = settings.max_length
    if max_length is not None:
        max_length = min(max(max_length, _BACKUP_MIN_LENGTH if backup else 1), 65535 - headers)
    elif not backup:
        max_length = _MASTER_MTU - headers
    elif mtu is not None:
        max_length = min(max(mtu, _MASTER_MTU), 65535) - headers
    return replace(
        settings,
        max_length=max_length,
        group=group,
        port=DEFAULT_PORT if settings.port is None else settings.port,
        ttl=DEFAULT_TTL if settings.ttl is None else settings.ttl,
    )


async def apply_sync_operation(port: SyncDaemonPort, operation: SyncOperation) -> None:
    match operation:
        case StartSyncDaemon(state, settings):
            await port.start_daemon(state, settings)
        case StopSyncDaemon(state):
            await port.stop_daemon(state)
        case _:
            assert_never(operation)


def describe_operation(operation: SyncOperation) -> str:
    match operation:
        case StartSyncDaemon(state, settings):
            return f"start the {state.name.lower()} sync daemon ({settings.describe()})"
        case StopSyncDaemon(state):
            return f"stop the {state.name.lower()} sync daemon"
        case _:
            assert_never(operation)


# --- the follower -------------------------------------------------------------------------


class SyncDaemonFollower:
    """Keeps the kernel's sync daemon in step with one VRRP instance's role.

    Call `start` once the port is open, with the instance's role if the parent reported one:
    without, it runs the backup daemon, as keepalived does before the instance has a role.
    Then call `follow` with each of the instance's roles (the checker turns the VRRP process's
    messages into typed roles, once, at its edge). Each time the running daemons are read back
    from the kernel, so a daemon someone else stopped or started is put right too. A refusal is
    logged and the remaining operations still run; the next role change tries again.
    `reconfigure` applies a reload: other settings restart the daemon with them, another
    instance (not a renamed one: the caller maps names by identity) brings its role.
    """

    def __init__(self, port: SyncDaemonPort, instance: str, settings: SyncSettings) -> None:
        self.port = port
        self.instance = instance
        self.settings = settings
        self.role: VrrpState | None = None
        self._lock = asyncio.Lock()

    async def start(self, role: VrrpState | None = None) -> list[SyncOperation]:
        """Make the daemons match `role` (None, no role known yet: the backup daemon)."""
        if role is not None:
            self.role = role
        done, _ = await self._follow()
        return done

    async def follow(self, role: VrrpState) -> list[SyncOperation]:
        """The followed instance is now in `role`; returns the operations carried out."""
        self.role = role
        done, _ = await self._follow()
        return done

    async def reconfigure(
        self, instance: str, settings: SyncSettings, role: VrrpState | None
    ) -> list[str]:
        """Follow `instance` (the same one renamed, or another) in `role` (None: not known
        yet) with `settings`; returns what the kernel refused. Nothing changes in the kernel
        unless the settings or the role do."""
        self.instance = instance
        if settings == self.settings and role is self.role:
            return []
        self.settings = settings
        self.role = role
        _, errors = await self._follow()
        return errors

    async def converge(self) -> list[str]:
        """Make the daemons match the role and settings as they are; returns what the kernel
        refused."""
        _, errors = await self._follow()
        return errors

    async def stop(self) -> list[SyncOperation]:
        """Stop the daemons, as when the instance stops."""
        self.role = VrrpState.INITIALIZE
        done, _ = await self._follow()
        return done

    async def _follow(self) -> tuple[list[SyncOperation], list[str]]:
        # One at a time: a role change arriving meanwhile is planned from the kernel's new state.
        async with self._lock:
            role = self.role
            role_name = "no role yet" if role is None else role.name
            try:
                running = await self.port.list_daemons()
            except IpvsError as error:
                message = f"cannot list IPVS sync daemons: {error}"
                log.error("%s %s: %s", self.instance, role_name, message)
                return [], [message]
            done: list[SyncOperation] = []
            errors: list[str] = []
            for operation in plan_sync_daemons(role, self.settings, running):
                what = describe_operation(operation)
                try:
                    await apply_sync_operation(self.port, operation)
                except IpvsError as error:
                    log.error("%s %s: cannot %s: %s", self.instance, role_name, what, error)
                    errors.append(f"cannot {what}: {error}")
                    continue
                log.info("%s %s: %s", self.instance, role_name, what)
                done.append(operation)
            return done, errors


# --- in memory ----------------------------------------------------------------------------


class MemorySyncDaemons:
    """Implements `SyncDaemonPort` in memory, refusing and defaulting as the kernel does.

    `interfaces` maps the namespace's interface names to their MTU.
    """

    def __init__(self, interfaces: Mapping[str, int] | None = None) -> None:
        self.interfaces = dict({"lo": 65536} if interfaces is None else interfaces)
        self._daemons: dict[SyncState, SyncDaemon] = {}

    async def start_daemon(self, state: SyncState, settings: SyncSettings) -> None:
        mtu = self.interfaces.get(settings.interface)
        if mtu is None:
            raise NoSuchInterfaceError(_no_interface(state, settings.interface))
        if state in self._daemons:
            raise SyncDaemonRunningError(f"a {state.name.lower()} sync daemon is already running")
        effective = kernel_settings(state, settings, mtu)
        self._daemons[state] = SyncDaemon(
            state,
            effective.interface,
            effective.sync_id,
            effective.max_length,
            effective.group,
            effective.port,
            effective.ttl,
        )

    async def stop_daemon(self, state: SyncState) -> None:
        if self._daemons.pop(state, None) is None:
            raise NoSuchSyncDaemonError(f"no {state.name.lower()} sync daemon is running")

    async def list_daemons(self) -> list[SyncDaemon]:
        return [self._daemons[s] for s in SyncState if s in self._daemons]


def _no_interface(state: SyncState, interface: str) -> str:
    return (
        f"cannot start the {state.name.lower()} sync daemon: no interface {interface!r} "
        "in this network namespace"
    )


# --- over generic netlink -----------------------------------------------------------------


class _IpvsDaemonMessage(genlmsg):  # type: ignore[misc]
    """IPVS generic netlink messages with the sync daemon attributes spelled out.

    pyroute2's own ipvsmsg leaves IPVS_CMD_ATTR_DAEMON undecoded ("hex"). The attribute
    numbering and types are those of include/uapi/linux/ip_vs.h and the kernel's
    ip_vs_daemon_policy.
    """

    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "hex"),
        ("IPVS_CMD_ATTR_DEST", "hex"),
        ("IPVS_CMD_ATTR_DAEMON", "Daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    class Daemon(nla):  # type: ignore[misc]
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "ip4addr"),  # network byte order
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ip6addr"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),  # host byte order, unlike service ports
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


class _IpvsDaemonSocket(AsyncGenericNetlinkSocket):  # type: ignore[misc]
    """The "IPVS" generic netlink family, replies decoded with `_IpvsDaemonMessage`."""

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super().setup_endpoint()
        await self.bind(GENL_NAME, _IpvsDaemonMessage)


def daemon_request(
    command: int, state: SyncState | None = None, settings: SyncSettings | None = None
) -> Any:
    """An IPVS_CMD_*_DAEMON message: `state` alone for DEL, with `settings` for NEW."""
    message = _IpvsDaemonMessage()
    message["cmd"] = command
    message["version"] = GENL_VERSION
    if state is None:
        return message
    attributes: list[tuple[str, object]] = [("IPVS_DAEMON_ATTR_STATE", state.value)]
    if settings is not None:
        attributes += [
            ("IPVS_DAEMON_ATTR_MCAST_IFN", settings.interface),
            ("IPVS_DAEMON_ATTR_SYNC_ID", settings.sync_id),
        ]
        if settings.max_length is not None:
            attributes.append(("IPVS_DAEMON_ATTR_SYNC_MAXLEN", settings.max_length))
        if isinstance(settings.group, IPv4Address):
            attributes.append(("IPVS_DAEMON_ATTR_MCAST_GROUP", str(settings.group)))
        elif isinstance(settings.group, IPv6Address):
            attributes.append(("IPVS_DAEMON_ATTR_MCAST_GROUP6", str(settings.group)))
        if settings.port is not None:
            attributes.append(("IPVS_DAEMON_ATTR_MCAST_PORT", settings.port))
        if settings.ttl is not None:
            attributes.append(("IPVS_DAEMON_ATTR_MCAST_TTL", settings.ttl))
    message["attrs"] = [("IPVS_CMD_ATTR_DAEMON", {"attrs": attributes})]
    return message


def decode_daemon(message: Any) -> SyncDaemon:
    """One reply of an IPVS_CMD_GET_DAEMON dump."""
    attributes: dict[str, Any] = dict(message.get("IPVS_CMD_ATTR_DAEMON")["attrs"])
    group = attributes.get("IPVS_DAEMON_ATTR_MCAST_GROUP")
    if group is None:
        group = attributes.get("IPVS_DAEMON_ATTR_MCAST_GROUP6")
    return SyncDaemon(
        state=SyncState(int(attributes["IPVS_DAEMON_ATTR_STATE"])),
        interface=str(attributes["IPVS_DAEMON_ATTR_MCAST_IFN"]),
        sync_id=int(attributes["IPVS_DAEMON_ATTR_SYNC_ID"]),
        max_length=_optional_int(attributes.get("IPVS_DAEMON_ATTR_SYNC_MAXLEN")),
        group=None if group is None else ip_address(group),
        port=_optional_int(attributes.get("IPVS_DAEMON_ATTR_MCAST_PORT")),
        ttl=_optional_int(attributes.get("IPVS_DAEMON_ATTR_MCAST_TTL")),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class NetlinkSyncDaemons(IpvsGenlEndpoint):
    """Implements `SyncDaemonPort` on one generic netlink socket, in the caller's namespace.

    Open it before use and close it after, best with ``async with NetlinkSyncDaemons() as d``.
    """

    purpose = "the kernel's IPVS sync daemons"

    def _new_socket(self) -> Any:
        return _IpvsDaemonSocket()

    async def start_daemon(self, state: SyncState, settings: SyncSettings) -> None:
        what = f"start the {state.name.lower()} sync daemon ({settings.describe()})"
        with _kernel_refusal(what, _no_interface(state, settings.interface)):
            await self._request(daemon_request(IPVS_CMD_NEW_DAEMON, state, settings))

    async def stop_daemon(self, state: SyncState) -> None:
        with _kernel_refusal(f"stop the {state.name.lower()} sync daemon"):
            await self._request(daemon_request(IPVS_CMD_DEL_DAEMON, state))

    async def list_daemons(self) -> list[SyncDaemon]:
        with _kernel_refusal("list the sync daemons"):
            replies = await self._request(
                daemon_request(IPVS_CMD_GET_DAEMON), NLM_F_REQUEST | NLM_F_DUMP
            )
        return sorted(map(decode_daemon, replies), key=lambda d: d.state.value)

    async def _request(self, message: Any, flags: int = NLM_F_REQUEST | NLM_F_ACK) -> list[Any]:
        # The kernel serves one request at a time per socket (EBUSY otherwise).
        async with self._lock:
            if self._socket is None:
                raise RuntimeError("the IPVS sync daemon socket is not open")
            socket = self._socket
            replies = await socket.nlm_request(message, msg_type=socket.prid, msg_flags=flags)
            return [reply async for reply in replies]


_ERRORS: dict[int, type[IpvsError]] = {
    errno.EEXIST: SyncDaemonRunningError,
    errno.ESRCH: NoSuchSyncDaemonError,
    errno.ENODEV: NoSuchInterfaceError,
}


@contextmanager
def _kernel_refusal(what: str, no_interface: str | None = None) -> Iterator[None]:
    try:
        yield
    except NetlinkError as error:
        code = int(error.code)
        if code == errno.ENODEV and no_interface is not None:
            raise NoSuchInterfaceError(no_interface, code) from error
        error_class = _ERRORS.get(code, IpvsError)
        raise error_class(f"{what}: {os.strerror(code)}", code) from error
