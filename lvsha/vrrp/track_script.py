"""VRRP track scripts (keepalived's vrrp_script): periodic runs judged healthy or failed.

TrackScriptState is pure: runs start and finish with an explicit `now`, health changes come out,
and `next_run_at` says when the next run is due. TrackScriptRunner is its asyncio edge: it runs
the script with `run_script` and calls `on_change(script_name, healthy, reason)` on each change.
Through `run_script`, a running script is killed when its VRRP process dies, even by SIGKILL.

Start-up follows keepalived (vrrp_init_script, vrrp_script_child_thread in 2.2): a script starts
in INIT, neither healthy nor failed, so no weight applies and an instance tracking it with weight 0
waits for it; its first result settles it either way with no rise or fall grace. From then on
`rise` successes in a row make a failed script healthy and `fall` failures in a row make a healthy
one failed. The first run is at start-up, then every `interval` seconds on a fixed grid; a run
still going at a tick makes that tick be skipped, as in keepalived, so runs never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from lvsha.scripts import (
    SCRIPT_PATH,
    ScriptCommand,
    ScriptRefusedError,
    judge_run,
    run_script,
)

logger = logging.getLogger(__name__)


class ScriptHealth(enum.Enum):
    INIT = "init"
    """No run has finished yet."""
    HEALTHY = "healthy"
    FAILED = "failed"


class RunPhase(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"


@dataclass(frozen=True, slots=True)
class TrackScriptParams:
    """Timing and thresholds of one vrrp_script; the defaults are keepalived's."""

    interval: float = 1.0
    timeout: float = 1.0
    """A run still going after this many seconds is killed and counts as a failure."""
    rise: int = 1
    fall: int = 1

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0, got {self.interval}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.rise < 1:
            raise ValueError(f"rise must be >= 1, got {self.rise}")
        if self.fall < 1:
            raise ValueError(f"fall must be >= 1, got {self.fall}")


# Inputs.


@dataclass(frozen=True, slots=True)
class RunStarted:
    now: float


@dataclass(frozen=True, slots=True)
class RunFinished:
    ok: bool
    """Exit status 0; anything else, a signal, a timeout or a refusal to run is a failure."""
    reason: str
    now: float


TrackScriptInput = RunStarted | RunFinished


# Output.


@dataclass(frozen=True, slots=True)
class HealthChanged:
    script: str
    healthy: bool
    reason: str
    at: float


class TrackScriptTransitionError(Exception):
    """An input the current phase cannot take (a run finishing that never started, ...)."""


class TrackScriptState:
    """One vrrp_script's health and schedule."""

    def __init__(self, name: str, params: TrackScriptParams, now: float) -> None:
        self.name = name
        self.params = params
        self._now = now
        self._phase = RunPhase.IDLE
        self._health = ScriptHealth.INIT
        self._reason = "no run yet"
        self._next_run_at = now
        # The grid tick the current or last run belongs to.
        self._run_slot = now
        self._consecutive_successes = 0
        self._consecutive_failures = 0

    @property
    def health(self) -> ScriptHealth:
        return self._health

    @property
    def healthy(self) -> bool | None:
        """True or False once a run has finished; None before (keepalived's INIT)."""
        if self._health is ScriptHealth.INIT:
            return None
        return self._health is ScriptHealth.HEALTHY

    @property
    def phase(self) -> RunPhase:
        return self._phase

    @property
    def next_run_at(self) -> float | None:
        """When the next run is due; None while a run is going."""
        return None if self._phase is RunPhase.RUNNING else self._next_run_at

    @property
    def reason(self) -> str:
        """The reason of the last finished run."""
        return self._reason

    @property
    def consecutive_successes(self) -> int:
        return self._consecutive_successes

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def handle(self, event: TrackScriptInput) -> list[HealthChanged]:
        if event.now < self._now:
            raise ValueError(f"time went backwards: {event.now} < {self._now}")
        handler = _TRANSITIONS.get((self._phase, type(event)))
        if handler is None:
            raise TrackScriptTransitionError(
                f"vrrp script {self.name!r}: {type(event).__name__} while {self._phase.name}"
            )
        self._now = event.now
        return handler(self, event)

    def run_started(self, now: float) -> list[HealthChanged]:
        return self.handle(RunStarted(now))

    def run_finished(self, ok: bool, reason: str, now: float) -> list[HealthChanged]:
        return self.handle(RunFinished(ok, reason, now))

    def _on_run_started(self, event: TrackScriptInput) -> list[HealthChanged]:
        assert isinstance(event, RunStarted)
        self._phase = RunPhase.RUNNING
        self._run_slot = self._next_run_at
        return []

    def _on_run_finished(self, event: TrackScriptInput) -> list[HealthChanged]:
        assert isinstance(event, RunFinished)
        self._phase = RunPhase.IDLE
        self._reason = event.reason
        interval = self.params.interval
        ticks_passed = math.floor((event.now - self._run_slot) / interval)
        self._next_run_at = self._run_slot + max(1, ticks_passed + 1) * interval
        if event.ok:
            self._consecutive_successes += 1
            self._consecutive_failures = 0
        else:
            self._consecutive_failures += 1
            self._consecutive_successes = 0
        previous = self._health
        if previous is ScriptHealth.INIT:
            self._health = ScriptHealth.HEALTHY if event.ok else ScriptHealth.FAILED
        elif previous is ScriptHealth.HEALTHY and self._consecutive_failures >= self.params.fall:
            self._health = ScriptHealth.FAILED
        elif previous is ScriptHealth.FAILED and self._consecutive_successes >= self.params.rise:
            self._health = ScriptHealth.HEALTHY
        if self._health is previous:
            return []
        healthy = self._health is ScriptHealth.HEALTHY
        return [HealthChanged(self.name, healthy, event.reason, event.now)]


_Handler = Callable[[TrackScriptState, TrackScriptInput], list[HealthChanged]]

_TRANSITIONS: dict[tuple[RunPhase, type[TrackScriptInput]], _Handler] = {
    (RunPhase.IDLE, RunStarted): TrackScriptState._on_run_started,
    (RunPhase.RUNNING, RunFinished): TrackScriptState._on_run_finished,
}


HealthCallback = Callable[[str, bool, str], None]
"""on_change(script_name, healthy, reason)."""

RunCallback = Callable[[str, str | None], None]
"""on_run(script_name, refusal): after each run, why it was refused (not started: script
security, not found, unknown user...), or None when it ran, whatever its exit status."""


class TrackScriptRunner:
    """Runs one vrrp_script on its schedule and reports each change of its health.

    The script sees PATH, LVSHA_VRRP_SCRIPT (its name) and LVSHA_TIMEOUT in its environment.
    Script security applies through `command.script_security`: an insecure script is not run
    and counts as failed, with the reason saying what is wrong; `on_run` hears of each run,
    refused or not.
    """

    def __init__(
        self,
        name: str,
        command: ScriptCommand,
        params: TrackScriptParams,
        on_change: HealthCallback,
        on_run: RunCallback | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.params = params
        self._on_change = on_change
        self._on_run = on_run
        self._state: TrackScriptState | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> TrackScriptState | None:
        """The pure state once started."""
        return self._state

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"vrrp script {self.name!r} already started")
        loop = asyncio.get_running_loop()
        self._state = TrackScriptState(self.name, self.params, loop.time())
        self._task = loop.create_task(
            self._run_forever(self._state), name=f"vrrp-script-{self.name}"
        )

    def cancel(self) -> None:
        """Stop at once: no result reaches `on_change` after this; `close` waits for the end."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Stop; a run in progress is killed with its process group."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": SCRIPT_PATH,
            "LVSHA_VRRP_SCRIPT": self.name,
            "LVSHA_TIMEOUT": str(float(self.params.timeout)),
        }

    async def _run_forever(self, state: TrackScriptState) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = state.next_run_at
            assert due is not None
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            state.run_started(loop.time())
            refused: str | None = None
            try:
                run = await run_script(self.command, self._environment(), self.params.timeout)
                ok, reason, _ = judge_run(run)
            except ScriptRefusedError as refusal:
                ok, reason = False, str(refusal)
                refused = reason
            if self._on_run is not None:
                try:
                    self._on_run(self.name, refused)
                except Exception:
                    logger.exception("vrrp script %s: on_run callback failed", self.name)
            for change in state.run_finished(ok, reason, loop.time()):
                logger.info(
                    "vrrp script %s is now %s: %s",
                    self.name,
                    "healthy" if change.healthy else "failed",
                    change.reason,
                )
                try:
                    self._on_change(change.script, change.healthy, change.reason)
                except Exception:
                    logger.exception("vrrp script %s: on_change callback failed", self.name)
