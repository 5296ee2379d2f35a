"""The checker child: health checks, the IPVS syncer and the connection sync daemon.

Started by the parent (`lvsha run`) as `python -m lvsha.daemon.checker_process CONFIG`. It
never shares a loop with VRRP; it learns the VRRP role from the parent, which relays the VRRP
child's state messages, so the kernel's sync daemon can follow it. The parent's first message
(`VrrpRoles`) says the roles it last heard: a checker restarted on the master starts the
master sync daemon, not the backup one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from lvsha.checks.maintenance import MaintenanceWatcher
from lvsha.checks.pool import CheckPool, raise_file_limit
from lvsha.checks.targets import check_plan
from lvsha.checks.verdict import Health
from lvsha.config import LvshaConfig
from lvsha.daemon.channel import ParentChannel
from lvsha.daemon.child import (
    add_config_arguments,
    child_config,
    die_with_parent,
    stop_within,
)
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.metrics import LoopLag, Sample, export_periodically
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.port import IpvsError, IpvsTablePort
from lvsha.ipvs.specs import configured_services
from lvsha.ipvs.syncd import (
    MemorySyncDaemons,
    NetlinkSyncDaemons,
    SyncDaemonFollower,
    SyncDaemonPort,
    sync_settings,
)
from lvsha.ipvs.syncer import IpvsSyncer, OnStop, presumptions
from lvsha.messages import ChildReady, Message, VrrpRoles, VrrpStateChanged

log = logging.getLogger("lvsha.checker")

STOP_LIMIT = 15.0
"""Seconds a stopping checker has before it ends itself."""

ROLES_WAIT = 2.0
"""Seconds from start-up to wait for the parent's `VrrpRoles` before the sync daemon starts
(as a backup) without them."""


async def read_parent(channel: ParentChannel, inbox: asyncio.Queue[Message | None]) -> None:
    """Queue what the parent sends from start-up on, so nothing is lost before the follower
    exists; None marks the end (no parent, or it closed the channel)."""
    try:
        async for message in channel.messages():
            inbox.put_nowait(message)
    finally:
        inbox.put_nowait(None)


async def first_message(
    inbox: asyncio.Queue[Message | None], deadline: float
) -> tuple[Message | None, bool]:
    """The parent's first message, or None if the channel ended or `deadline` (loop time)
    passed first; and whether the channel is still open."""
    try:
        async with asyncio.timeout_at(deadline):
            message = await inbox.get()
    except TimeoutError:
        return None, True
    return message, message is not None


def _samples(pool: CheckPool, syncer: IpvsSyncer, lag: LoopLag) -> Iterable[Sample]:
    yield from lag.samples("checker")
    for q in (0.5, 0.99):
        label = {"quantile": str(q)}
        yield ("lvsha_check_lateness_seconds", label, pool.lateness.quantile(q))
        yield ("lvsha_ipvs_detection_to_kernel_seconds", label, syncer.latency.quantile(q))
    yield ("lvsha_checks_distinct", {}, float(pool.distinct_checks))
    yield ("lvsha_checks_in_flight", {}, float(pool.in_flight))
    healthy = sum(1 for v in pool.verdicts().values() if v.health is Health.HEALTHY)
    yield ("lvsha_real_servers", {"health": "healthy"}, float(healthy))
    yield ("lvsha_real_servers", {}, float(len(pool.real_servers)))
    for operation, count in syncer.operations.items():
        yield ("lvsha_ipvs_operations_total", {"operation": operation}, float(count))
    yield ("lvsha_ipvs_errors_total", {}, float(syncer.errors))
    yield ("lvsha_ipvs_drift_total", {}, float(syncer.drift))


async def serve(config: LvshaConfig, run_dir: Path, channel: ParentChannel, dry_run: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop() -> None:
        # The parent kills a checker after 10 s (ChildSpec.stop_timeout); with no parent
        # left, the checker must end itself.
        stop_within(STOP_LIMIT)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    await channel.open()
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()
    reader = asyncio.create_task(read_parent(channel, inbox), name="parent-reader")
    roles_deadline = loop.time() + ROLES_WAIT
    lag = LoopLag()
    lag.start()
    table: IpvsTablePort
    daemons: SyncDaemonPort
    if dry_run:
        table, daemons = MemoryIpvsTable(), MemorySyncDaemons(_interface_mtus())
        log.info("dry run: the IPVS table and sync daemon are kept in memory only")
    else:
        netlink_table, netlink_daemons = NetlinkIpvsTable(), NetlinkSyncDaemons()
        try:
            await netlink_table.open()
            await netlink_daemons.open()
        except IpvsError as exc:
            log.error("cannot reach the kernel's IPVS: %s (is the ip_vs module loadable?)", exc)
            return 1
        table, daemons = netlink_table, netlink_daemons
    glob = config.global_
    plan = check_plan(config)
    # One descriptor per probe in flight: as many as the hard limit allows (see CheckPool).
    raise_file_limit()
    pool = CheckPool(plan)
    syncer = IpvsSyncer(
        table,
        configured_services(config),
        resync_interval=glob.ipvs.resync_interval,
        on_stop=OnStop.REMOVE if glob.ipvs.on_stop == "remove" else OnStop.KEEP,
    )
    try:
        observed = await syncer.read_table()
    except IpvsError as exc:
        log.error("cannot read the IPVS table: %s", exc)
        return 1
    # A restart starts each real server as the table a previous checker left shows it.
    presumed = presumptions(syncer.services, observed)
    if presumed:
        log.info(
            "%d real servers start as the IPVS table shows them until their checks have "
            "spoken: %d in service, %d out",
            len(presumed),
            sum(p.up for p in presumed.values()),
            sum(not p.up for p in presumed.values()),
        )
    # Subscribe before starting, or verdicts published in between would be lost.
    pool.subscribe(syncer.on_verdict)
    pool.start(presumed)
    watcher = MaintenanceWatcher(pool, run_dir / "maintenance")
    # Before the first plan, so a drained real server stays drained across a restart.
    await watcher.refresh()
    try:
        await syncer.start(pool.verdicts().values(), observed)
    except IpvsError as exc:
        log.error("cannot read or apply the IPVS table: %s", exc)
        await pool.close()
        return 1
    follower: SyncDaemonFollower | None = None
    if glob.lvs_sync_daemon is not None:
        follower = SyncDaemonFollower(
            daemons, glob.lvs_sync_daemon.vrrp_instance, sync_settings(glob.lvs_sync_daemon)
        )
        first, open_ = await first_message(inbox, roles_deadline)
        if first is None and open_:
            log.warning(
                "no VRRP roles from the parent within %g s: starting the sync daemon as backup",
                ROLES_WAIT,
            )
        await follower.start(first if isinstance(first, VrrpRoles) else None)
        if first is not None and not isinstance(first, VrrpRoles):
            await follow(follower, first)
    # Everything built so far (the plan, thousands of checks and their states) lives as long as
    # the process: keep it out of the cyclic collector, whose full passes over it would
    # otherwise stall the loop for 100 ms and more at 10,000 checks.
    gc.collect()
    gc.freeze()

    async def follow_parent() -> None:
        while (message := await inbox.get()) is not None:
            if follower is not None:
                await follow(follower, message)

    tasks = [
        asyncio.create_task(follow_parent(), name="parent-messages"),
        asyncio.create_task(watcher.run(), name="maintenance"),
        asyncio.create_task(
            export_periodically(
                run_dir / "metrics-checker.prom", lambda: _samples(pool, syncer, lag)
            )
        ),
    ]
    channel.send(ChildReady())
    log.info(
        "checker running: %d checks (%d distinct) on %d real servers",
        len(plan.targets),
        pool.distinct_checks,
        len(pool.real_servers),
    )
    await stop.wait()
    reader.cancel()
    for task in tasks:
        task.cancel()
    for task in [reader, *tasks]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await syncer.stop()
    await pool.close()
    if follower is not None:
        await follower.stop()
    lag.stop()
    if isinstance(table, NetlinkIpvsTable):
        await table.close()
    if isinstance(daemons, NetlinkSyncDaemons):
        await daemons.close()
    channel.close()
    return 0


def _interface_mtus() -> dict[str, int]:
    """This network namespace's interfaces and their MTUs, so a dry run's sync daemon refuses
    and defaults as the kernel would."""
    mtus: dict[str, int] = {}
    for _, name in socket.if_nameindex():
        try:
            mtus[name] = int(Path(f"/sys/class/net/{name}/mtu").read_text())
        except (OSError, ValueError):
            mtus[name] = 1500
    return mtus


async def follow(follower: SyncDaemonFollower, message: Message) -> None:
    match message:
        case VrrpStateChanged():
            await follower.on_vrrp_state(message)
        case VrrpRoles():
            await follower.on_vrrp_roles(message)
        case _:
            log.debug("ignoring %s from the parent", type(message).__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvsha-checker")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="/run/lvsha")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    setup_logging("checker")
    die_with_parent(log)
    config = child_config(parser, args, log)
    if config is None:
        return 1
    channel = ParentChannel()
    try:
        return asyncio.run(serve(config, Path(args.run_dir), channel, args.dry_run))
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
