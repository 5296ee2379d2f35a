"""The VRRP child process: its own event loop, nothing else running on it.

Started by the parent (`lvsha run`) as `python -m lvsha.daemon.vrrp_process --config-fd N
--config-name FILE`, reading the configuration snapshot the parent validated; reports
`ChildReady` and every state change to the parent on the channel in $LVSHA_CHANNEL_FD. It serves
no client: the parent does that. Every VIP it adds is first written to the address ledger in the
run directory, and at start it takes off what an earlier VRRP process left there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from lvsha.config import LvshaConfig
from lvsha.daemon import runlock
from lvsha.daemon.channel import ParentChannel
from lvsha.daemon.child import (
    add_config_arguments,
    child_config,
    die_with_parent,
    stop_within,
)
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.metrics import LoopLag, Sample, export_periodically
from lvsha.messages import ChildReady
from lvsha.net.addresses import NetlinkAddresses
from lvsha.net.announce import PacketAnnouncer
from lvsha.net.ledger import LEDGER_FILE, AddressLedger
from lvsha.net.links import LinkMonitor
from lvsha.vrrp.engine import StartupError, VrrpEngine
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.notify import Notifier

log = logging.getLogger("lvsha.vrrp")


def _watched_interfaces(config: LvshaConfig) -> set[str]:
    found = set()
    for inst in config.vrrp_instances.values():
        found.add(inst.interface)
        found.update(t.interface for t in inst.track_interfaces)
    return found


def _set_realtime(priority: int | None) -> None:
    if priority is None:
        return
    try:
        # A real-time loop that never sleeps would starve the host: past 5 s of CPU without
        # blocking the kernel sends SIGXCPU (the supervisor restarts us), at 6 s SIGKILL.
        resource.setrlimit(resource.RLIMIT_RTTIME, (5_000_000, 6_000_000))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        log.warning("cannot use real-time scheduling (SCHED_FIFO %d): %s", priority, exc)
    else:
        log.info("VRRP process runs with real-time priority %d (SCHED_FIFO)", priority)


def reserve_descriptors() -> None:
    """Raise the soft descriptor limit to the hard one: this process serves no client, so
    what it opens is its sockets and its scripts' pipes, and those must never run out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)


def _samples(engine: VrrpEngine, lag: LoopLag) -> list[Sample]:
    samples = lag.samples("vrrp")
    for name, instance in engine.instances.items():
        machine = instance.runner.machine
        labels = {"instance": name}
        samples.append(("lvsha_vrrp_priority", labels, float(machine.priority)))
        for state in VrrpState:
            value = 1.0 if machine.state is state else 0.0
            samples.append(("lvsha_vrrp_state", {**labels, "state": state.name}, value))
        for reason, count in instance.socket.drops.snapshot().items():
            samples.append(
                ("lvsha_vrrp_adverts_dropped_total", {**labels, "reason": reason.value}, count)
            )
        suppressed = float(machine.reassertions_suppressed)
        samples.append(("lvsha_vrrp_reassertions_suppressed_total", labels, suppressed))
    return samples


async def serve(config: LvshaConfig, run_dir: Path, channel: ParentChannel) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # The parent allows a leaving master a Master_Down_Interval and more (run.py); past
    # that, and a little, the process ends itself even with no parent left to kill it.
    intervals = [i.advert_interval for i in config.vrrp_instances.values()]
    stop_limit = max([10.0, *(4 * i + 2 for i in intervals)]) + 5.0

    def on_stop() -> None:
        stop_within(stop_limit)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    await channel.open()
    try:
        # Held until this process exits (never closed): the kernel lets go of it however
        # the process dies.
        await runlock.acquire(run_dir / "vrrp.lock", timeout=30.0)
    except runlock.RunLockError as exc:
        log.error("not starting: %s", exc)
        return 1
    lag = LoopLag()
    lag.start()
    notifier = Notifier()
    announcer = PacketAnnouncer()
    links = LinkMonitor(_watched_interfaces(config))
    async with NetlinkAddresses(AddressLedger(run_dir / LEDGER_FILE)) as addresses:
        engine = VrrpEngine(
            config,
            addresses=addresses,
            announcer=announcer,
            notifier=notifier,
            report=channel.send,
        )
        try:
            states = await links.start()
            await engine.start(dict(states))
        except StartupError as exc:
            log.error("%s", exc)
            await engine.stop()
            return 1

        async def follow_links() -> None:
            async for change in links:
                engine.link_changed(change)

        watcher = asyncio.create_task(follow_links(), name="link-monitor")
        exporter = asyncio.create_task(
            export_periodically(run_dir / "metrics-vrrp.prom", lambda: _samples(engine, lag))
        )
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's way, so a collection never stalls an advert or a GARP.
        gc.collect()
        gc.freeze()
        channel.send(ChildReady())
        log.info("VRRP running: %s", ", ".join(config.vrrp_instances))
        await stop.wait()
        log.info("stopping: releasing mastership")
        await engine.stop()
        for task in (watcher, exporter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lag.stop()
        links.close()
        announcer.close()
    channel.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lvsha-vrrp")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="/run/lvsha")
    args = parser.parse_args(argv)
    setup_logging("vrrp")
    die_with_parent(log)
    config = child_config(parser, args, log)
    if config is None:
        return 1
    reserve_descriptors()
    _set_realtime(config.global_.vrrp.realtime_priority)
    channel = ParentChannel()
    try:
        return asyncio.run(serve(config, Path(args.run_dir), channel))
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
