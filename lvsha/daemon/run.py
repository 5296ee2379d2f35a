"""`lvsha run`: validate, then supervise the VRRP and checker children until told to stop.

The parent owns the last good configuration: it validates the file at start (and again, off
the supervising loop, on SIGHUP), keeps the text it validated in a sealed memory file, and
starts or restarts children from that snapshot. It also owns everything that faces a client:
the event stream is served here, never in the VRRP process, so no client can take a
descriptor or a moment from VRRP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from lvsha.config import DEFAULT_MAX_SIZE, ConfigError, LvshaConfig, load_text, read_config_text
from lvsha.daemon.child import log_problems, snapshot_fd
from lvsha.daemon.events import EventStream, EventStreamError
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.metrics import LoopLag, Sample, export_periodically
from lvsha.daemon.supervisor import ChildSpec, Supervisor, child_argv
from lvsha.messages import Message, VrrpRoles, VrrpStateChanged

log = logging.getLogger("lvsha")


def validate(path: str, max_size: int) -> tuple[str, LvshaConfig]:
    """The file's text and its validated configuration; raises ConfigError."""
    text = read_config_text(path, max_size)
    return text, load_text(text, path, max_size)


class _Parent:
    """The parent's state: the snapshot its children run, their last VRRP states, the stream."""

    def __init__(self, config_path: str, run_dir: Path, max_size: int) -> None:
        self.config_path = config_path
        self.run_dir = run_dir
        self.max_size = max_size
        self.events = EventStream(str(run_dir / "events.sock"))
        self.roles: dict[str, str] = {}
        """Each VRRP instance's last reported state, for a checker that (re)starts."""
        self.supervisor: Supervisor | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False

    def children(self, config: LvshaConfig, snapshot: int, dry_run: bool) -> list[ChildSpec]:
        source = ("--config-fd", str(snapshot), "--config-name", self.config_path)
        run_dir = ("--run-dir", str(self.run_dir))
        specs = []
        if config.vrrp_instances:
            intervals = [i.advert_interval for i in config.vrrp_instances.values()]
            specs.append(
                ChildSpec(
                    "vrrp",
                    child_argv("lvsha.daemon.vrrp_process", *source, *run_dir),
                    # A leaving master may hold its VIPs for a Master_Down_Interval.
                    stop_timeout=max([10.0, *(4 * i + 2 for i in intervals)]),
                    pass_fds=(snapshot,),
                )
            )
        if config.virtual_servers:
            argv = child_argv("lvsha.daemon.checker_process", *source, *run_dir)
            specs.append(
                ChildSpec(
                    "checker", [*argv, "--dry-run"] if dry_run else argv, pass_fds=(snapshot,)
                )
            )
        return specs

    def samples(self, lag: LoopLag) -> list[Sample]:
        events = self.events
        samples = lag.samples("main")
        samples += [
            ("lvsha_event_stream_clients", {}, float(events.clients)),
            ("lvsha_event_stream_connections_total", {}, float(events.connections_total)),
            ("lvsha_event_stream_refused_total", {}, float(events.refused_total)),
            ("lvsha_event_stream_evicted_total", {}, float(events.evicted_total)),
            ("lvsha_event_stream_dropped_slow_total", {}, float(events.dropped_slow_total)),
            ("lvsha_event_stream_accept_errors_total", {}, float(events.accept_errors_total)),
        ]
        if self.supervisor is not None:
            for child, count in self.supervisor.restarts().items():
                samples.append(("lvsha_child_restarts_total", {"child": child}, float(count)))
        return samples

    def on_message(self, child: str, message: Message) -> None:
        if child == "vrrp" and isinstance(message, VrrpStateChanged):
            self._vrrp_state(message)

    def _vrrp_state(self, change: VrrpStateChanged) -> None:
        self.roles[change.instance] = change.new
        self.events.publish(
            "vrrp_state",
            instance=change.instance,
            old=change.old,
            new=change.new,
            reason=change.reason,
            priority=change.priority,
        )
        # The checker follows the VRRP role (the kernel's connection sync daemon).
        if self.supervisor is not None:
            self.supervisor.send("checker", change)

    def on_started(self, child: str) -> None:
        if child == "checker" and self.supervisor is not None:
            # Before anything else: a restarted checker must not guess the role.
            self.supervisor.send("checker", VrrpRoles(tuple(sorted(self.roles.items()))))

    def on_exited(self, child: str) -> None:
        if child != "vrrp":
            return
        # Whatever the dead process held, it no longer runs VRRP; its successor reconciles
        # the addresses and reports its own states.
        for instance, state in sorted(self.roles.items()):
            if state != "INITIALIZE":
                self._vrrp_state(
                    VrrpStateChanged(instance, state, "INITIALIZE", "VRRP process exited", 0)
                )

    def on_reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            try:
                # In a thread: the supervising loop keeps restarting children meanwhile.
                await asyncio.to_thread(validate, self.config_path, self.max_size)
            except ConfigError as exc:
                log_problems(exc, log, "SIGHUP: keeping the running configuration")
            else:
                log.warning(
                    "SIGHUP: %s is valid, but this version applies a changed configuration "
                    "only on restart; nothing was changed, and restarted children keep "
                    "running the configuration lvsha started with",
                    self.config_path,
                )
            if not self._reload_again:
                return


def run(
    config_path: str,
    run_dir: str,
    dry_run: bool = False,
    max_config_size: int = DEFAULT_MAX_SIZE,
) -> int:
    setup_logging("main")
    try:
        text, config = validate(config_path, max_config_size)
    except ConfigError as exc:
        log_problems(exc, log, "not starting")
        return 1
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_fd(text, config_path)
    parent = _Parent(config_path, Path(run_dir), max_config_size)
    try:
        return asyncio.run(_supervise(parent, parent.children(config, snapshot, dry_run)))
    finally:
        os.close(snapshot)


async def _supervise(parent: _Parent, children: list[ChildSpec]) -> int:
    try:
        await parent.events.start()
    except (EventStreamError, OSError) as exc:
        log.error("not starting: event stream: %s", exc)
        return 1
    supervisor = Supervisor(
        children,
        on_message=parent.on_message,
        on_reload=parent.on_reload,
        on_started=parent.on_started,
        on_exited=parent.on_exited,
    )
    parent.supervisor = supervisor
    lag = LoopLag()
    lag.start()
    exporter = asyncio.create_task(
        export_periodically(parent.run_dir / "metrics-main.prom", lambda: parent.samples(lag))
    )
    try:
        return await supervisor.run()
    finally:
        exporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exporter
        lag.stop()
        await parent.events.close()
