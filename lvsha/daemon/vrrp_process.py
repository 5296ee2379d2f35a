"""The VRRP child process: its own event loop, nothing else running on it.

Started by the parent (`lvsha run`) as `python -m lvsha.daemon.vrrp_process --config-fd N
--config-name FILE`, reading the configuration snapshot the parent validated; reports
`ChildReady` and every state change to the parent on the channel in $LVSHA_CHANNEL_FD. It serves
no client: the parent does that. Every VIP it adds is first written to the address ledger in the
run directory, and at start it takes off what an earlier VRRP process left there.

A reload reaches it as `ApplyConfig` on the channel: a finished model, applied live, one at a
time, in the order sent, and answered with `ConfigApplied`. Nothing is parsed or validated here.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # OpenSSL stays out of this process (about 7 MiB of resident memory): it speaks no TLS,
    # and asyncio imports ssl only to offer it, doing without when the import fails; and
    # pydantic imports secrets, hence hmac and hashlib, whose OpenSSL part (_hashlib, with
    # libcrypto) is optional: Python's built-in hash functions serve instead.
    for _unused in ("ssl", "_hashlib"):
        sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
from collections.abc import Mapping, Sequence
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
from lvsha.messages import ApplyConfig, ChildReady, ConfigApplied, MessageError
from lvsha.net.addresses import NetlinkAddresses
from lvsha.net.announce import PacketAnnouncer
from lvsha.net.ledger import LEDGER_FILE, AddressLedger
from lvsha.net.links import LinkChanged, LinkMonitor
from lvsha.vrrp.engine import StartupError, VrrpEngine
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.notify import Notifier
from lvsha.vrrp.wire import DropReason

log = logging.getLogger("lvsha.vrrp")


def _watched_interfaces(config: LvshaConfig) -> set[str]:
    found = set()
    for inst in config.vrrp_instances.values():
        found.add(inst.interface)
        found.update(t.interface for t in inst.track_interfaces)
    return found


DIGEST_SHOWN = 12
"""Hex digits of a configuration's SHA-256 in the log, as the parent shows them."""


def _stop_limit(config: LvshaConfig) -> float:
    """Seconds a stop may take before the process ends itself: the parent allows a leaving
    master a Master_Down_Interval and more (run.py); past that, and a little, the process
    ends even with no parent left to kill it."""
    intervals = [i.advert_interval for i in config.vrrp_instances.values()]
    return max([10.0, *(4 * i + 2 for i in intervals)]) + 5.0


class LinkWatch:
    """The link monitor feeding the engine; a reload that watches new interfaces replaces it
    with one watching them too (a monitor's set of interfaces is fixed)."""

    def __init__(self, engine: VrrpEngine, interfaces: set[str]) -> None:
        self._engine = engine
        self.interfaces = set(interfaces)
        self._monitor = LinkMonitor(self.interfaces)
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> Mapping[str, bool]:
        return await self._monitor.start()

    def follow(self) -> None:
        self._follower = asyncio.create_task(self._follow(self._monitor), name="link-monitor")

    async def _follow(self, monitor: LinkMonitor) -> None:
        async for change in monitor:
            self._engine.link_changed(change)

    async def watch(self, interfaces: set[str]) -> Mapping[str, bool]:
        """Watch `interfaces` too; the state of every watched link."""
        if interfaces <= self.interfaces:
            return self._monitor.states
        monitor = LinkMonitor(self.interfaces | interfaces)
        states = await monitor.start()
        known = self._engine.link_states
        for interface, up in states.items():
            # A change the old monitor has not delivered yet: the new one's dump has it.
            if interface in known and known[interface] != up:
                self._engine.link_changed(LinkChanged(interface, up))
        self.close()
        self._monitor, self.interfaces = monitor, self.interfaces | interfaces
        self.follow()
        return states

    def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        self._monitor.close()


async def apply_config(engine: VrrpEngine, message: ApplyConfig, links: LinkWatch) -> ConfigApplied:
    """Apply one configuration the parent sent; the answer for it. Never raises."""
    generation = message.generation
    named = f"configuration generation {generation} (sha256 {message.digest[:DIGEST_SHOWN]})"
    try:
        config = message.config()
    except MessageError as exc:
        log.error("%s refused: %s", named, exc)
        return ConfigApplied(generation, False, (str(exc),))
    try:
        states = await links.watch(_watched_interfaces(config))
        outcome = await engine.apply(config, states)
    except Exception as exc:  # a bug: say so, and keep the VRRP loop serving
        log.exception("%s: applying failed", named)
        return ConfigApplied(
            generation,
            False,
            (f"internal error applying it: {exc!r}",),
            "unknown: the VRRP process failed halfway; restart lvsha to be sure",
        )
    if outcome.ok:
        log.info("%s applied: %s", named, outcome.summary)
    else:
        log.error(
            "%s not applied: %s (changes: %s)%s",
            named,
            "; ".join(outcome.errors),
            outcome.summary,
            f"; left: {outcome.left}" if outcome.left else "; the running one is unchanged",
        )
    return ConfigApplied(generation, outcome.ok, outcome.errors, outcome.left)


async def follow_parent(engine: VrrpEngine, channel: ParentChannel, links: LinkWatch) -> None:
    """Apply each configuration the parent sends, in order, one at a time."""
    async for message in channel.messages():
        if not isinstance(message, ApplyConfig):
            log.warning("ignoring a %s message from the parent", message.kind)
            continue
        # Shielded: a stop waits for an apply in progress (VrrpEngine.stop) rather than
        # cutting it in half.
        channel.send(await asyncio.shield(apply_config(engine, message, links)))


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
            if reason is DropReason.ADDRESS_LIST_MISMATCH:
                # Taken all the same (lvsha.vrrp.wire.address_list_difference).
                samples.append(("lvsha_vrrp_address_list_mismatch_total", labels, count))
                continue
            samples.append(
                ("lvsha_vrrp_adverts_dropped_total", {**labels, "reason": reason.value}, count)
            )
        suppressed = float(machine.reassertions_suppressed)
        samples.append(("lvsha_vrrp_reassertions_suppressed_total", labels, suppressed))
    return samples


async def serve(config: LvshaConfig, run_dir: Path, channel: ParentChannel) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    engines: list[VrrpEngine] = []

    def on_stop() -> None:
        # The configuration running now: a reload may have changed the intervals.
        stop_within(_stop_limit(engines[0].config if engines else config))
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
    async with NetlinkAddresses(AddressLedger(run_dir / LEDGER_FILE)) as addresses:
        engine = VrrpEngine(
            config,
            addresses=addresses,
            announcer=announcer,
            notifier=notifier,
            report=channel.send,
        )
        engines.append(engine)
        links = LinkWatch(engine, _watched_interfaces(config))
        try:
            states = await links.start()
            await engine.start(dict(states))
        except StartupError as exc:
            log.error("%s", exc)
            await engine.stop()
            return 1

        links.follow()
        reader = asyncio.create_task(follow_parent(engine, channel, links), name="parent-channel")
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
        reader.cancel()
        await engine.stop()
        for task in (reader, exporter):
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
