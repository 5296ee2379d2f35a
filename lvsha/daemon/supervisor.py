"""The parent process: starts the children, restarts a crashed one, relays signals.

VRRP runs in a child of its own so that it never waits behind anything else (DESIGN.md).
Each child gets one end of a socket pair on which the two exchange typed messages
(lvsha.messages); the parent reports READY to systemd once every child that must be ready
says so.

Nothing a child started may outlive it. Scripts die with the child that started them (their
parent-death signal), and the parent is a child subreaper: a process orphaned below it (a
script's own child, a daemonising script) is re-parented to the parent instead of to PID 1,
and is killed and reaped here. Children stay in the parent's process group, so that killing
the group (a host crash in the drill) ends all of lvsha at once.

A child that keeps failing the same way before it ever becomes ready makes the parent give
up and exit non-zero, so that systemd reports it, instead of looping forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from lvsha.daemon.sdnotify import sd_notify
from lvsha.messages import ChildReady, Message, MessageError, decode, encode

log = logging.getLogger("lvsha.supervisor")

CHANNEL_FD_ENV = "LVSHA_CHANNEL_FD"
PARENT_PID_ENV = "LVSHA_PARENT_PID"

_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class ChildSpec:
    """How to start one child: its argv runs with the channel's fd in $LVSHA_CHANNEL_FD."""

    name: str
    argv: list[str]
    stop_timeout: float = 10.0
    """SIGTERM, then SIGKILL after this many seconds."""
    pass_fds: tuple[int, ...] = ()
    """Descriptors the child inherits besides its channel (the configuration snapshot)."""
    start_after: str | None = None
    """At lvsha's start, spawn this child only once the named one is ready (or has exited, or
    `START_AFTER_LIMIT` passed): the two do not compete for the CPU while they start."""


@dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: bool = False
    up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the child was ready, or exited, for the first time."""
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    failed_starts: int = 0
    """Runs in a row that ended before the child said it was ready."""
    last_failure: str | None = None
    removed: bool = False
    """Stopped for good by `Supervisor.remove` (a reload that no longer needs it)."""


class Supervisor:
    """Keeps the children running until SIGTERM/SIGINT, then stops them in reverse order."""

    RESTART_BACKOFF_FIRST = 1.0
    RESTART_BACKOFF_MAX = 30.0
    STABLE_AFTER = 60.0
    """A child that ran this long restarts without backoff next time."""
    GIVE_UP_AFTER = 5
    START_AFTER_LIMIT = 5.0
    """Seconds a child waits at most for the one it starts after (`ChildSpec.start_after`)."""
    """Failed starts in a row, each ending the same way before ready, after which lvsha stops."""

    def __init__(
        self,
        children: list[ChildSpec],
        *,
        on_message: Callable[[str, Message], None] | None = None,
        on_reload: Callable[[], None] | None = None,
        on_started: Callable[[str], None] | None = None,
        on_exited: Callable[[str], None] | None = None,
        on_restart: Callable[[str, str, int], None] | None = None,
        on_stopping: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._children = [_Child(spec) for spec in children]
        self.on_stopping = on_stopping
        """Awaited once a stop is asked for, before any child is stopped (the BGP routes
        leave while the children still serve)."""
        self.on_message = on_message
        self._on_reload = on_reload
        self.on_started = on_started
        """Called once a child runs and its channel is open: the place for first messages."""
        self.on_exited = on_exited
        """Called when a child has exited, before it is restarted."""
        self.on_restart = on_restart
        """Called with the child's name, how it exited and its restarts so far (this one
        included) when a child that exited is to be restarted."""
        self._stopping = asyncio.Event()
        self._announced_ready = False
        self._exit_code = 0
        self._starting = 0
        """Children being spawned: their pid is not known yet, so no orphan hunt meanwhile."""
        self._hunt_deferred = False
        self._helpers: set[int] = set()
        """Processes the parent runs itself (`run_process`): not orphans."""
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._not_spawned = {c.spec.name for c in self._children}
        """Children given at construction that were not spawned (or failed to be) yet."""
        self._spawned = asyncio.Event()

    def specs(self) -> list[ChildSpec]:
        return [c.spec for c in self._children]

    def restarts(self) -> dict[str, int]:
        """How often each child was restarted."""
        return {c.spec.name: c.restarts for c in self._children}

    async def spawned(self) -> None:
        """Return once every child given at construction has been spawned once (or failed
        to be): the moment for the parent's own slower start-up work."""
        await self._spawned.wait()

    def _tried_spawning(self, child: _Child) -> None:
        self._not_spawned.discard(child.spec.name)
        if not self._not_spawned:
            self._spawned.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if not self._not_spawned:
            self._spawned.set()
        become_subreaper()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        loop.add_signal_handler(signal.SIGCHLD, self._reap_orphans)
        try:
            for child in self._children:
                self._watch(child)
            await self._stopping.wait()
            sd_notify("STOPPING=1")
            if self.on_stopping is not None:
                try:
                    await self.on_stopping()
                except Exception:  # a bug there must not keep the children running
                    log.exception("before stopping the children")
            for child in reversed(self._children):
                await self._stop(child)
            watchers = list(self._watchers.values())
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._last_orphans()
        finally:
            self._spawned.set()  # nothing more will be spawned
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                loop.remove_signal_handler(sig)
        log.info("stopped")
        return self._exit_code

    def _watch(self, child: _Child) -> None:
        self._watchers[child.spec.name] = asyncio.create_task(
            self._keep_running(child), name=f"child {child.spec.name}"
        )

    def running(self) -> list[str]:
        """The children kept running (started or restarting), in start order."""
        return [c.spec.name for c in self._children]

    def alive(self, name: str) -> bool:
        """Whether the named child's process runs now with its channel open (not between a
        crash and its restart)."""
        for child in self._children:
            if child.spec.name == name:
                process = child.process
                return (
                    process is not None and process.returncode is None and child.writer is not None
                )
        return False

    def add(self, spec: ChildSpec) -> None:
        """Start one more child (a reload that needs it) and keep it running like the others.
        Call it while `run` runs."""
        if any(c.spec.name == spec.name for c in self._children):
            raise ValueError(f"a {spec.name} child is already running")
        child = _Child(spec)
        self._children.append(child)
        self._watch(child)

    async def remove(self, name: str) -> None:
        """Stop one child for good (a reload that no longer needs it), as at shutdown."""
        for child in self._children:
            if child.spec.name == name:
                break
        else:
            return
        child.removed = True
        await self._stop(child)
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self._children.remove(child)
        log.info("%s child stopped: the configuration no longer needs it", name)

    def send(self, child_name: str, message: Message) -> bool:
        """Write one message to a running child's channel; False when it is not running."""
        for child in self._children:
            writer = child.writer
            if child.spec.name == child_name and writer is not None and not writer.is_closing():
                writer.write(encode(message))
                return True
        return False

    def stop(self, exit_code: int = 0) -> None:
        """Stop every child and return `exit_code` from `run`."""
        self._exit_code = max(self._exit_code, exit_code)
        self._stopping.set()

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            log.info("%s: stopping", sig.name)
        self._stopping.set()

    def _reload(self) -> None:
        if self._on_reload is not None:
            self._on_reload()

    async def _keep_running(self, child: _Child) -> None:
        backoff = self.RESTART_BACKOFF_FIRST
        restarted_at_once = False
        """Whether the one restart without delay was used since the child last ran stably."""
        await self._after(child)
        while not self._stopping.is_set():
            try:
                await self._start(child)
            except OSError as exc:
                log.error("cannot start the %s child: %s", child.spec.name, exc)
                self.stop(1)
                return
            finally:
                self._tried_spawning(child)
            assert child.process is not None
            code = await child.process.wait()
            child.up.set()
            was_ready = child.ready
            await self._close_channel(child)
            self._reap_orphans()
            if self.on_exited is not None:
                self.on_exited(child.spec.name)
            if self._stopping.is_set() or child.removed:
                return
            ran = time.monotonic() - child.started_at
            if ran >= self.STABLE_AFTER:
                backoff = self.RESTART_BACKOFF_FIRST
                restarted_at_once = False
            how = _describe_exit(code)
            if was_ready:
                child.failed_starts = 0
            else:
                same = child.last_failure == how
                child.failed_starts = child.failed_starts + 1 if same else 1
                child.last_failure = how
            if child.failed_starts >= self.GIVE_UP_AFTER:
                log.critical(
                    "%s child exited with %s before it was ready, %d times in a row: giving "
                    "up and stopping lvsha (its log lines above say why)",
                    child.spec.name,
                    how,
                    child.failed_starts,
                )
                self.stop(1)
                return
            # A child that was up (ready) comes back at once the first time: a crashed VRRP
            # child is a director without VRRP until then. Again within STABLE_AFTER, and for a
            # child that never got ready, the backoff applies (1 s, doubling up to 30 s).
            at_once = was_ready and not restarted_at_once
            delay = 0.0 if at_once else backoff
            log.error(
                "%s child (pid %d) exited with %s after %.1f s; restarting %s",
                child.spec.name,
                child.process.pid,
                how,
                ran,
                "now" if at_once else f"in {delay:.0f} s",
            )
            if self.on_restart is not None:
                self.on_restart(child.spec.name, how, child.restarts + 1)
            if at_once:
                restarted_at_once = True
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                backoff = min(backoff * 2, self.RESTART_BACKOFF_MAX)
            child.restarts += 1

    async def _after(self, child: _Child) -> None:
        """Wait (bounded) for the child this one starts after, if it runs."""
        first = next((c for c in self._children if c.spec.name == child.spec.start_after), None)
        if first is None or first is child:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first.up.wait(), self.START_AFTER_LIMIT)

    async def _start(self, child: _Child) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(
            os.environ,
            **{CHANNEL_FD_ENV: str(child_end.fileno()), PARENT_PID_ENV: str(os.getpid())},
        )
        env.pop("NOTIFY_SOCKET", None)  # only the parent talks to systemd
        child.ready = False
        self._starting += 1
        try:
            child.process = await asyncio.create_subprocess_exec(
                *child.spec.argv,
                pass_fds=(child_end.fileno(), *child.spec.pass_fds),
                env=env,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
            self._starting -= 1
            if self._hunt_deferred and not self._starting:
                self._hunt_deferred = False
                self._reap_orphans()
        child.started_at = time.monotonic()
        reader, writer = await asyncio.open_connection(sock=parent_end)
        child.writer = writer
        child.reader_task = asyncio.create_task(self._read_channel(child, reader, writer))
        log.info("%s child started (pid %d)", child.spec.name, child.process.pid)
        if self.on_started is not None:
            self.on_started(child.spec.name)

    async def _read_channel(
        self, child: _Child, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = decode(line)
                except MessageError as exc:
                    log.error("%s child sent a malformed message: %s", child.spec.name, exc)
                    continue
                self._handle(child, message)
        except (ConnectionError, ValueError) as exc:  # ValueError: a line over the limit
            log.error("%s child's channel failed: %s", child.spec.name, exc)
        finally:
            child.writer = None
            writer.close()

    def _handle(self, child: _Child, message: Message) -> None:
        if isinstance(message, ChildReady):
            child.ready = True
            child.up.set()
            child.failed_starts = 0
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

    async def _last_orphans(self) -> None:
        """On the way out: nothing below us survives; wait (bounded) until all are reaped."""
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.0
        self._reap_orphans()
        while loop.time() < until and any(pid not in self._known_pids() for pid in own_children()):
            await asyncio.sleep(0.02)
            self._reap_orphans()

    def _known_pids(self) -> set[int]:
        return {
            c.process.pid
            for c in self._children
            if c.process is not None and c.process.returncode is None
        } | self._helpers

    async def run_process(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        """Run a program of the parent's own (vtysh) to its end, its exit status and output
        returned: the orphan hunt neither kills nor reaps it. Raises OSError when it cannot
        start, TimeoutError (once it is killed and reaped) when it outlives `timeout`."""
        from lvsha.scripts import output_within  # noqa: PLC0415 - not needed to start children

        self._starting += 1
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self._helpers.add(process.pid)
        finally:
            self._starting -= 1
            if self._hunt_deferred and not self._starting:
                self._hunt_deferred = False
                self._reap_orphans()
        try:
            return await output_within(process, timeout)
        finally:
            self._helpers.discard(process.pid)

    def _reap_orphans(self) -> None:
        """Kill and reap every process re-parented to us that is not a running child."""
        if self._starting:
            self._hunt_deferred = True
            return
        killed = reap_adopted(self._known_pids())
        if killed:
            log.warning(
                "killed %d process(es) left behind by a child: %s",
                len(killed),
                ", ".join(f"{pid} ({name})" for pid, name in killed),
            )

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
        self._reap_orphans()


def become_subreaper() -> None:
    """Orphans below this process come to it, not to PID 1 (prctl PR_SET_CHILD_SUBREAPER)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning(
            "prctl(PR_SET_CHILD_SUBREAPER) failed: %s; a script's orphans may outlive lvsha",
            os.strerror(ctypes.get_errno()),
        )


def own_children() -> dict[int, tuple[str, str]]:
    """This process's children: pid -> (state letter, command name), from /proc."""
    me = str(os.getpid())
    found: dict[int, tuple[str, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        name = text[text.find("(") + 1 : text.rfind(")")]
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) >= 2 and fields[1] == me:
            found[int(entry)] = (fields[0], name)
    return found


def reap_adopted(known: set[int]) -> list[tuple[int, str]]:
    """SIGKILL our children that are not in `known` (orphans re-parented to us) and reap those
    already dead, without waiting; returns those that were killed. Each death raises SIGCHLD,
    which calls this again to reap it. Never waits for a pid in `known` (asyncio's)."""
    killed = []
    for pid, (state, name) in own_children().items():
        if pid in known:
            continue
        if state in "ZX":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        killed.append((pid, name))
    return killed


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def child_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
