"""The parent process: starts the children, restarts a crashed one, relays signals.

VRRP runs in a child of its own so that it never waits behind anything else (DESIGN.md).
Each child gets one end of a socket pair on which it writes JSON lines to the parent
(`{"type": "ready"}`, role changes); the parent reports READY to systemd once every child
that must be ready says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsha.daemon.sdnotify import sd_notify

log = logging.getLogger("lvsha.supervisor")

CHANNEL_FD_ENV = "LVSHA_CHANNEL_FD"
PARENT_PID_ENV = "LVSHA_PARENT_PID"


@dataclass
class ChildSpec:
    """How to start one child: its argv runs with the channel's fd in $LVSHA_CHANNEL_FD."""

    name: str
    argv: list[str]
    stop_timeout: float = 10.0
    """SIGTERM, then SIGKILL after this many seconds."""


@dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: bool = False
    channel: socket.socket | None = None
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    messages: list[dict[str, object]] = field(default_factory=list)


class Supervisor:
    """Keeps the children running until SIGTERM/SIGINT, then stops them in reverse order."""

    RESTART_BACKOFF_MAX = 30.0
    STABLE_AFTER = 60.0
    """A child that ran this long restarts without backoff next time."""

    def __init__(
        self,
        children: list[ChildSpec],
        on_message: Callable[[str, dict[str, object]], None] | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        self._children = [_Child(spec) for spec in children]
        self.on_message = on_message
        self._on_reload = on_reload
        self._stopping = asyncio.Event()
        self._announced_ready = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            watchers = [asyncio.create_task(self._keep_running(c)) for c in self._children]
            await self._stopping.wait()
            sd_notify("STOPPING=1")
            for child in reversed(self._children):
                await self._stop(child)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped")
        return 0

    def send(self, child_name: str, message: dict[str, object]) -> bool:
        """Write one JSON line to a running child's channel; False when it is not running."""
        for child in self._children:
            writer = child.writer
            if child.spec.name == child_name and writer is not None and not writer.is_closing():
                writer.write(json.dumps(message).encode() + b"\n")
                return True
        return False

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            log.info("%s: stopping", sig.name)
        self._stopping.set()

    def _reload(self) -> None:
        if self._on_reload is not None:
            self._on_reload()

    async def _keep_running(self, child: _Child) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            await self._start(child)
            assert child.process is not None
            code = await child.process.wait()
            await self._close_channel(child)
            if self._stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            if ran >= self.STABLE_AFTER:
                backoff = 1.0
            log.error(
                "%s child (pid %d) exited with %s after %.1f s; restarting in %.0f s",
                child.spec.name,
                child.process.pid,
                _describe_exit(code),
                ran,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self.RESTART_BACKOFF_MAX)
            child.restarts += 1

    async def _start(self, child: _Child) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(
            os.environ,
            **{CHANNEL_FD_ENV: str(child_end.fileno()), PARENT_PID_ENV: str(os.getpid())},
        )
        env.pop("NOTIFY_SOCKET", None)  # only the parent talks to systemd
        child.ready = False
        child.process = await asyncio.create_subprocess_exec(
            *child.spec.argv, pass_fds=(child_end.fileno(),), env=env
        )
        child_end.close()
        child.started_at = time.monotonic()
        child.channel = parent_end
        child.reader_task = asyncio.create_task(self._read_channel(child, parent_end))
        log.info("%s child started (pid %d)", child.spec.name, child.process.pid)

    async def _read_channel(self, child: _Child, channel: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=channel)
        child.writer = writer
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    log.error("%s child sent a malformed message: %r", child.spec.name, line)
                    continue
                if not isinstance(message, dict):
                    log.error("%s child sent a non-object message: %r", child.spec.name, line)
                    continue
                self._handle(child, message)
        finally:
            child.writer = None
            writer.close()

    def _handle(self, child: _Child, message: dict[str, object]) -> None:
        if message.get("type") == "ready":
            child.ready = True
            if not self._announced_ready and all(c.ready for c in self._children):
                self._announced_ready = True
                sd_notify("READY=1")
                log.info("ready")
        if self.on_message is not None:
            self.on_message(child.spec.name, message)

    async def _close_channel(self, child: _Child) -> None:
        if child.reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await asyncio.wait_for(child.reader_task, 1.0)
            child.reader_task = None

    async def _stop(self, child: _Child) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), child.spec.stop_timeout)
        except TimeoutError:
            log.error(
                "%s child (pid %d) did not stop within %.0f s: killing it",
                child.spec.name,
                process.pid,
                child.spec.stop_timeout,
            )
            process.kill()
            await process.wait()
        await self._close_channel(child)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def child_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
