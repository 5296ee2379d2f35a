"""Notify hooks: operators' scripts run on VRRP state changes, one at a time, in order.

Arguments are keepalived's (vrrp_notify.c in 2.2): the state's own hook (notify_master, _backup,
_fault, _stop) runs with its configured argv only; the "any" hook (keepalived's plain `notify`)
runs after it with four more arguments: INSTANCE|GROUP, the name, MASTER|BACKUP|FAULT|STOP and
the priority, which is the effective priority for an instance and always 0 for a sync group.

Unlike keepalived, which starts hooks without waiting for each other, hooks run strictly one after
another in the order the transitions were reported, each killed with its process group after the
hooks' timeout, or when the process running them dies (through `run_script`). The caller only
enqueues. The queue is bounded: when it is full the oldest waiting hook is dropped (and logged),
because the newest transitions describe the state that holds now.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import functools
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from lvsha.scripts import SCRIPT_PATH, ScriptCommand, run_hook

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 64
"""Hook runs waiting at most; a flapping instance reaches this only when its hooks hang."""


class NotifySubject(enum.Enum):
    INSTANCE = "INSTANCE"
    GROUP = "GROUP"


class NotifyState(enum.Enum):
    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    STOP = "STOP"


@dataclass(frozen=True, slots=True)
class Transition:
    """What happened: an instance or sync group entered `state`."""

    subject: NotifySubject
    name: str
    state: NotifyState
    priority: int
    """The instance's effective priority; 0 for a sync group, as keepalived passes."""

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} outside 0..255")
        if self.subject is NotifySubject.GROUP and self.priority != 0:
            raise ValueError("a sync group's notify priority is always 0")

    @classmethod
    def instance(cls, name: str, state: NotifyState, priority: int) -> Transition:
        return cls(NotifySubject.INSTANCE, name, state, priority)

    @classmethod
    def group(cls, name: str, state: NotifyState) -> Transition:
        return cls(NotifySubject.GROUP, name, state, 0)

    def arguments(self) -> tuple[str, str, str, str]:
        return (self.subject.value, self.name, self.state.value, str(self.priority))

    def describe(self) -> str:
        return " ".join(self.arguments())


@dataclass(frozen=True, slots=True)
class NotifyHooks:
    """The hooks of one instance or sync group."""

    master: ScriptCommand | None = None
    backup: ScriptCommand | None = None
    fault: ScriptCommand | None = None
    stop: ScriptCommand | None = None
    any: ScriptCommand | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"notify timeout must be > 0, got {self.timeout}")

    def for_state(self, state: NotifyState) -> ScriptCommand | None:
        return {
            NotifyState.MASTER: self.master,
            NotifyState.BACKUP: self.backup,
            NotifyState.FAULT: self.fault,
            NotifyState.STOP: self.stop,
        }[state]


@dataclass(frozen=True, slots=True)
class HookRun:
    """One hook to run for one transition, with its final argv."""

    hook: str
    """"master", "backup", "fault", "stop" or "any"."""
    command: ScriptCommand
    transition: Transition
    timeout: float
    configured: tuple[str, ...] = ()
    """The hook's argv as configured, without the arguments the "any" hook gets (empty: the
    command's own)."""

    @property
    def script(self) -> str:
        """The hook's command line as configured: what logs and events name it by."""
        return shlex.join(self.configured or self.command.argv)

    def environment(self) -> dict[str, str]:
        subject, name, state, priority = self.transition.arguments()
        return {
            "PATH": SCRIPT_PATH,
            "LVSHA_NOTIFY_TYPE": subject,
            "LVSHA_NOTIFY_NAME": name,
            "LVSHA_NOTIFY_STATE": state,
            "LVSHA_NOTIFY_PRIORITY": priority,
        }

    def describe(self) -> str:
        return f"notify {self.hook} hook for {self.transition.describe()}"


def hook_runs(hooks: NotifyHooks, transition: Transition) -> list[HookRun]:
    """The hooks a transition calls for, in the order they run: the state's own, then "any"."""
    runs = []
    own = hooks.for_state(transition.state)
    if own is not None:
        runs.append(HookRun(transition.state.value.lower(), own, transition, hooks.timeout))
    if hooks.any is not None:
        argv = hooks.any.argv + transition.arguments()
        command = dataclasses.replace(hooks.any, argv=argv)
        runs.append(HookRun("any", command, transition, hooks.timeout, hooks.any.argv))
    return runs


RunCallback = Callable[[HookRun, str | None], None]
"""on_run(run, refusal): after each hook run, why it was refused (not started: script security,
not found, unknown user...), or None when it ran, whatever its exit status."""


class Notifier:
    """Runs hooks one at a time in the order they were queued; `notify` never waits.
    `on_run` hears of each hook run, refused or not."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT, on_run: RunCallback | None = None) -> None:
        if queue_limit < 1:
            raise ValueError(f"queue_limit must be >= 1, got {queue_limit}")
        self.queue_limit = queue_limit
        self._on_run = on_run
        self._queue: collections.deque[HookRun] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def notify(self, hooks: NotifyHooks, transition: Transition) -> None:
        """Queue the hooks for `transition` and return at once. Call from the event loop."""
        runs = hook_runs(hooks, transition)
        if not runs:
            return
        if self._closing:
            logger.warning(
                "notify hooks for %s not run: the notifier is shutting down",
                transition.describe(),
            )
            return
        for run in runs:
            if len(self._queue) >= self.queue_limit:
                dropped = self._queue.popleft()
                logger.error(
                    "notify queue full (%d waiting): dropped the oldest, the %s",
                    self.queue_limit,
                    dropped.describe(),
                )
            self._queue.append(run)
        self._idle.clear()
        self._wakeup.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="notify-hooks")

    async def wait_idle(self) -> None:
        """Until every queued hook has run."""
        await self._idle.wait()

    async def close(self) -> None:
        """Run the hooks still queued (stop hooks among them), then stop.

        Cancelling this kills the hook that is running; the rest are not run.
        """
        self._closing = True
        self._wakeup.set()
        if self._worker is None:
            return
        try:
            await asyncio.shield(self._worker)
        except asyncio.CancelledError:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            raise

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            run = self._queue.popleft()
            try:
                await self._execute(run)
            except Exception:
                logger.exception("%s failed", run.describe())

    async def _execute(self, run: HookRun) -> None:
        tell = None if self._on_run is None else functools.partial(self._on_run, run)
        await run_hook(
            run.command,
            run.environment(),
            run.timeout,
            what=run.describe(),
            logger=logger,
            tell=tell,
        )
