"""The VRRP child process: its own event loop, nothing else running on it.

Started by the parent (`lvsha run`) as `python -m lvsha.daemon.vrrp_process --config-fd N
--config-name FILE`, reading the configuration snapshot the parent validated; reports
`ChildReady` and every state change to the parent on the channel in $LVSHA_CHANNEL_FD. It serves
no client: the parent does that. Every VIP it adds is first written to the address ledger in the
run directory, and at start it takes off what an earlier VRRP process left there.

A reload reaches it as `ApplyConfig` on the channel: a finished model, applied live, one at a
time, in the order sent, and answered with `ConfigApplied`. Nothing is parsed or validated here.

`lvsha status` and `lvsha handover`: from `ChildReady` on it sends a `VrrpStatus` every
`STATUS_INTERVAL` seconds and once more right after anything it shows changes (at most one
extra per loop iteration, after that moment's adverts and VIP changes); `SetHandover` names
every instance handed over, and is answered with a `VrrpStatus` once fed to the instances.
`--handed-over NAME` (repeated) hands instances over from the start, before any can become
master.

The systemd watchdog: each `Ping` is answered with its `Pong` at once, from the channel's
reader on the event loop, from the moment the channel opens until the process ends.

Metrics: `RUN_DIR/metrics-vrrp.prom` is written every second (lvsha.vrrp.metrics; with
global.metrics.keepalived_names, the keepalived exporter's names too). A track script or notify
hook refused (script security...) is told to the parent as a `script_refused` event, once per
refusal episode (lvsha.vrrp.script_events).
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
import json
import logging
import os
import resource
import signal
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

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
from lvsha.daemon.metrics import LoopLag, export_periodically
from lvsha.messages import (
    STATUS_INTERVAL,
    ApplyConfig,
    ChildReady,
    ConfigApplied,
    Message,
    MessageError,
    Ping,
    Pong,
    SetHandover,
    VrrpStatus,
)
from lvsha.net.addresses import NetlinkAddresses
from lvsha.net.announce import PacketAnnouncer
from lvsha.net.ledger import LEDGER_FILE, AddressLedger
from lvsha.net.links import LinkChanged, LinkMonitor
from lvsha.net.nft import NO_ACCEPT_MARKER, NftNoAccept
from lvsha.vrrp.engine import StartupError, VrrpEngine
from lvsha.vrrp.metrics import EXPORT_INTERVAL, FAMILIES, PROCESS, process_samples
from lvsha.vrrp.notify import Notifier
from lvsha.vrrp.script_events import ScriptRefusals

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


class StatusReporter:
    """Sends the engine's status to the parent: every STATUS_INTERVAL seconds, and soon after
    a change (`changed`, the engine's on_status_change): at most once per loop iteration, from
    a call_soon callback, so never ahead of the adverts and VIP changes of that moment."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._engine: VrrpEngine | None = None
        self._pending = False
        self._ticker: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self, engine: VrrpEngine) -> None:
        """Send now and from now on (after ChildReady: nothing is sent before)."""
        self._engine = engine
        self.send_now()
        self._ticker = self._loop.create_task(self._tick(), name="vrrp-status")

    def stop(self) -> None:
        self._engine = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def changed(self) -> None:
        if self._pending or self._engine is None:
            return
        self._pending = True
        self._loop.call_soon(self._send_pending)

    def _send_pending(self) -> None:
        if self._pending:  # not sent meanwhile
            self.send_now()

    def send_now(self) -> None:
        self._pending = False
        if self._engine is None:
            return
        self._send(status_message(self._engine))
        self.sent += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self.send_now()


def status_message(engine: VrrpEngine) -> VrrpStatus:
    return VrrpStatus(json.dumps({"instances": engine.status()}, separators=(",", ":")))


class Channel(Protocol):
    """What the VRRP process needs of its channel to the parent (ParentChannel)."""

    def send(self, message: Message) -> None: ...

    def messages(self) -> AsyncIterator[Message]: ...


class ParentReader:
    """Reads the parent's messages from the moment the channel opens, until it closes.

    A `Ping` is answered with its `Pong` at once, from this reader on the event loop: the
    parent feeds systemd's watchdog only while these answers come, so a wedged loop stops
    them, and nothing else (a reload in progress, a start-up still opening sockets) holds them
    up. `ApplyConfig` and `SetHandover` wait in order for `follow`, which takes them one at a
    time once the engine runs."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._ordered: asyncio.Queue[ApplyConfig | SetHandover | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.pongs = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read(), name="parent-channel")

    async def _read(self) -> None:
        try:
            async for message in self._channel.messages():
                if isinstance(message, Ping):
                    self._channel.send(Pong(message.serial))
                    self.pongs += 1
                elif isinstance(message, ApplyConfig | SetHandover):
                    self._ordered.put_nowait(message)
                else:
                    log.warning("ignoring a %s message from the parent", message.kind)
        except (ConnectionError, ValueError) as exc:  # ValueError: a line over the limit
            log.error("the channel to the parent failed: %s", exc)
        finally:
            self._ordered.put_nowait(None)

    async def follow(
        self, engine: VrrpEngine, links: LinkWatch, status: StatusReporter | None = None
    ) -> None:
        """Apply each configuration the parent sends, in order, one at a time; take each
        handover set and answer it with the status (through `status` when given). Returns
        when the channel ends."""
        while (message := await self._ordered.get()) is not None:
            if isinstance(message, SetHandover):
                engine.set_handover(message.instances)
                if status is not None:
                    status.send_now()
                else:
                    self._channel.send(status_message(engine))
                continue
            # Shielded: a stop waits for an apply in progress (VrrpEngine.stop) rather than
            # cutting it in half.
            self._channel.send(await asyncio.shield(apply_config(engine, message, links)))

    async def close(self) -> None:
        """Stop reading (no more answers)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def follow_parent(
    engine: VrrpEngine,
    channel: Channel,
    links: LinkWatch,
    status: StatusReporter | None = None,
) -> None:
    """Read the parent's messages until the channel ends: answer each Ping at once, and
    apply the configurations and handover sets in order (see `ParentReader`)."""
    reader = ParentReader(channel)
    reader.start()
    try:
        await reader.follow(engine, links, status)
    finally:
        await reader.close()


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


async def serve(
    config: LvshaConfig,
    run_dir: Path,
    channel: ParentChannel,
    handed_over: Collection[str] = (),
) -> int:
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
    # Pings are answered from now on, while starting (waiting for the run lock, say) and
    # while stopping too; configurations wait for the engine.
    parent = ParentReader(channel)
    parent.start()
    try:
        return await _run(
            config,
            run_dir,
            channel,
            parent=parent,
            stop=stop,
            engines=engines,
            handed_over=handed_over,
        )
    finally:
        await parent.close()
        channel.close()


async def _run(
    config: LvshaConfig,
    run_dir: Path,
    channel: ParentChannel,
    *,
    parent: ParentReader,
    stop: asyncio.Event,
    engines: list[VrrpEngine],
    handed_over: Collection[str],
) -> int:
    try:
        # Held until this process exits (never closed): the kernel lets go of it however
        # the process dies.
        await runlock.acquire(run_dir / "vrrp.lock", timeout=30.0)
    except runlock.RunLockError as exc:
        log.error("not starting: %s", exc)
        return 1
    lag = LoopLag()
    lag.start()
    refusals = ScriptRefusals(channel.send)
    notifier = Notifier(on_run=refusals.notify_hook)
    announcer = PacketAnnouncer()
    status = StatusReporter(channel.send)
    async with NetlinkAddresses(AddressLedger(run_dir / LEDGER_FILE)) as addresses:
        engine = VrrpEngine(
            config,
            addresses=addresses,
            announcer=announcer,
            notifier=notifier,
            report=channel.send,
            handed_over=handed_over,
            on_status_change=status.changed,
            script_refusals=refusals,
            no_accept=NftNoAccept(marker=run_dir / NO_ACCEPT_MARKER),
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
        following = asyncio.create_task(
            parent.follow(engine, links, status), name="parent-messages"
        )
        exporter = asyncio.create_task(
            export_periodically(
                run_dir / f"metrics-{PROCESS}.prom",
                # keepalived_up says 0 in the last write, once stopping.
                lambda: process_samples(engine, lag, running=not stop.is_set()),
                FAMILIES,
                EXPORT_INTERVAL,
            ),
            name="metrics",
        )
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's way, so a collection never stalls an advert or a GARP.
        gc.collect()
        gc.freeze()
        channel.send(ChildReady())
        status.start(engine)
        log.info("VRRP running: %s", ", ".join(config.vrrp_instances))
        if engine.handed_over:
            log.info("handed over from the start: %s", ", ".join(sorted(engine.handed_over)))
        await stop.wait()
        log.info("stopping: releasing mastership")
        # No configuration is taken from here; one being applied finishes first (engine.stop
        # waits for it).
        following.cancel()
        await engine.stop()
        for task in (following, exporter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        status.stop()
        lag.stop()
        links.close()
        announcer.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvsha-vrrp")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="/run/lvsha")
    parser.add_argument(
        "--handed-over",
        action="append",
        default=[],
        metavar="NAME",
        help="an instance handed over to the peer (lvsha handover) from the start; repeated",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
        return asyncio.run(serve(config, Path(args.run_dir), channel, args.handed_over))
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
