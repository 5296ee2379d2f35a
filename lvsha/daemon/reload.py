"""Reload: validate a file away from the supervising loop, plan it, and apply it child by child.

The parent owns the running configuration and its generation. A reload validates the new file
in a thread (the children never parse or validate anything), computes the plan against the
running configuration, then hands each child the finished model (`ApplyConfig`) and waits for
its answer (`ConfigApplied`). The checker goes first: it only adds what the new configuration
needs to the IPVS table before VRRP moves anything. If a child refuses, every child that
already applied goes back to the running configuration, and the answer says so; nothing that
was running is lost. Children the new configuration no longer needs are stopped only once
every other child has applied it, since a stopped child cannot be rolled back.

A reload whose file is invalid changes nothing and answers with every problem, located, as
`lvsha check-config` prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lvsha.config import ConfigError, LvshaConfig, load_text, read_config_text
from lvsha.daemon.child import config_snapshot
from lvsha.messages import ApplyConfig, ChildReady, ConfigApplied, Message, for_vrrp
from lvsha.vrrp.params import instance_identity

if TYPE_CHECKING:
    from lvsha.daemon.reload_plan import ReloadPlan

log = logging.getLogger("lvsha")

APPLY_TIMEOUT = 120.0
"""Seconds a child has to answer an `ApplyConfig` (a checker adopting 10,000 real servers
needs a few), or to become ready when a reload starts it."""

DIGEST_SHOWN = 12
"""Hex digits of the file's SHA-256 that logs and messages show."""


def validate(path: str, max_size: int) -> tuple[str, LvshaConfig]:
    """The file's text and its validated configuration; raises ConfigError."""
    text = read_config_text(path, max_size)
    return text, load_text(text, path, max_size)


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Running:
    """What the parent runs: the configuration, the text it came from and its snapshots."""

    path: str
    text: str
    config: LvshaConfig
    generation: int
    digest: str
    snapshot: int
    """A sealed memory file of `config`, pickled, which a (re)started checker reads."""
    vrrp_snapshot: int
    """The same for the VRRP child, without the virtual servers (`for_vrrp`)."""

    @classmethod
    def start(
        cls, path: str, text: str, config: LvshaConfig, generation: int, digest: str
    ) -> Running:
        """With fresh snapshots of `config` (close them with `close`)."""
        snapshot = config_snapshot(config, path)
        try:
            vrrp_snapshot = config_snapshot(for_vrrp(config), path)
        except BaseException:
            os.close(snapshot)
            raise
        return cls(path, text, config, generation, digest, snapshot, vrrp_snapshot)

    def close(self) -> None:
        for fd in (self.snapshot, self.vrrp_snapshot):
            with contextlib.suppress(OSError):
                os.close(fd)

    def describe(self) -> str:
        return f"generation {self.generation} (sha256 {self.digest[:DIGEST_SHOWN]})"


@dataclass
class ReloadAnswer:
    """What a reload did, for the CLI (JSON over the control socket) and the log."""

    outcome: str
    """"applied", "plan" (nothing changed: a plan was asked for), "invalid" (the file has
    errors), "refused" (the request cannot be served), "failed" (a child refused; rolled
    back, or `left` says what is left)."""
    file: str
    generation: int
    """The running configuration's generation after the reload."""
    digest: str
    """The running configuration's digest after the reload."""
    plan: ReloadPlan | None = None
    new_digest: str = ""
    """The digest of the file that was read (the plan's target)."""
    errors: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    target: LvshaConfig | None = None
    """The configuration the file holds (None: it is invalid)."""
    overrides: list[str] = field(default_factory=list)
    """The operators' overrides in force, as they apply to `target` (lvsha drain, ...)."""

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "plan")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcome": self.outcome,
            "file": self.file,
            "generation": self.generation,
            "digest": self.digest,
            "new_digest": self.new_digest,
            "plan": None if self.plan is None else self.plan.to_json(),
            "plan_text": None if self.plan is None else self.plan.text(),
            "errors": self.errors,
            "left": self.left,
            "overrides": self.overrides,
        }


class _ChildError(Exception):
    """A child did not apply a configuration: why."""


class Reloader:
    """Serves reload requests one at a time (SIGHUP, `lvsha reload`) for the parent."""

    def __init__(
        self,
        running: Running,
        max_size: int,
        *,
        send: Callable[[str, Message], bool],
        children: Callable[[], list[str]],
        add_child: Callable[[str, Running], None],
        remove_child: Callable[[str], Any],
        on_applied: Callable[[Running, Running, ReloadPlan], None],
    ) -> None:
        """`send(child, message)` writes to a running child; `children()` names the running
        ones; `add_child(name, running)` starts one from `running`'s snapshot;
        `remove_child(name)` (a coroutine function) stops one for good; `on_applied(old, new,
        plan)` tells the parent a new configuration runs."""
        self.running = running
        self.max_size = max_size
        self._send = send
        self._children = children
        self._add_child = add_child
        self._remove_child = remove_child
        self._on_applied = on_applied
        self._lock = asyncio.Lock()
        self._answers: dict[tuple[str, int], asyncio.Future[ConfigApplied]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self.counts: dict[str, int] = {"applied": 0, "invalid": 0, "failed": 0, "refused": 0}

    # What the children say (from the parent's on_message / on_exited).

    def child_message(self, child: str, message: Message) -> None:
        if isinstance(message, ConfigApplied):
            future = self._answers.get((child, message.generation))
            if future is not None and not future.done():
                future.set_result(message)
        else:
            ready = self._ready.get(child)
            if ready is not None and not ready.done() and isinstance(message, ChildReady):
                ready.set_result(None)

    def child_exited(self, child: str) -> None:
        why = _ChildError(f"the {child} process exited while applying")
        for (name, _), future in self._answers.items():
            if name == child and not future.done():
                future.set_exception(why)
        ready = self._ready.get(child)
        if ready is not None and not ready.done():
            ready.set_exception(_ChildError(f"the {child} process exited before it was ready"))

    # Requests.

    async def reload(self, file: str | None = None, *, plan_only: bool = False) -> ReloadAnswer:
        """Validate `file` (default: the running configuration's file), plan it, and unless
        `plan_only`, apply it. Never raises for a bad file or a refusing child."""
        async with self._lock:
            answer = await self._reload(file or self.running.path, plan_only)
        if answer.outcome in self.counts:
            self.counts[answer.outcome] += 1
        return answer

    async def _reload(self, path: str, plan_only: bool) -> ReloadAnswer:
        running = self.running
        if not plan_only and os.path.abspath(path) != os.path.abspath(running.path):
            return self._answer(
                "refused",
                path,
                errors=[
                    f"lvsha runs {running.path}: a reload applies that file; edit it, or "
                    f"use --plan to compare {path} with it"
                ],
            )
        try:
            # In a thread: the supervising loop keeps restarting children meanwhile.
            text, config = await asyncio.to_thread(validate, path, self.max_size)
        except ConfigError as exc:
            errors = [str(problem) for problem in exc.problems]
            errors.append(f"{path}: {exc.total} error{'' if exc.total == 1 else 's'}")
            return self._answer("invalid", path, errors=errors)
        digest = digest_of(text)
        plan = await asyncio.to_thread(plan_reload, running.config, config)
        if plan_only:
            return self._answer("plan", path, plan=plan, new_digest=digest, target=config)
        new = await asyncio.to_thread(
            Running.start, path, text, config, running.generation + 1, digest
        )
        try:
            errors, left = await self._apply(running, new)
        except BaseException:
            new.close()
            raise
        if errors:
            new.close()
            return self._answer(
                "failed",
                path,
                plan=plan,
                new_digest=digest,
                errors=errors,
                left=left,
                target=config,
            )
        self.running = new
        self._on_applied(running, new, plan)
        running.close()
        return self._answer("applied", path, plan=plan, new_digest=digest, target=config)

    def _answer(self, outcome: str, path: str, **fields: Any) -> ReloadAnswer:
        running = self.running
        return ReloadAnswer(outcome, path, running.generation, running.digest, **fields)

    async def _apply(self, old: Running, new: Running) -> tuple[list[str], list[str]]:
        """Apply `new` child by child; on a refusal put back `old` where it was applied.
        Returns (errors, what is left in an unexpected state); both empty on success."""
        wanted = _children_for(new.config)
        running = self._children()
        done: list[str] = []
        """Children that run `new` now (applied, or started for it)."""
        errors: list[str] = []
        for child in ("checker", "vrrp"):
            if child not in wanted:
                continue
            try:
                if child in running:
                    await self._ask(child, new)
                else:
                    await self._start(child, new)
            except _ChildError as exc:
                errors.append(f"{child}: {exc}")
                break
            done.append(child)
        if not errors:
            for child in running:
                if child not in wanted:
                    await self._remove_child(child)
            return [], []
        left = []
        for child in reversed(done):
            try:
                if child in running:
                    await self._ask(child, old)
                else:
                    await self._remove_child(child)
            except _ChildError as exc:
                left.append(
                    f"{child}: runs {new.describe()}; going back to {old.describe()} failed: {exc}"
                )
        return errors, left

    async def _ask(self, child: str, target: Running) -> None:
        config = for_vrrp(target.config) if child == "vrrp" else target.config
        # Pickling 10,000 real servers takes a while: not on the supervising loop.
        message = await asyncio.to_thread(ApplyConfig.of, target.generation, target.digest, config)
        key = (child, target.generation)
        future: asyncio.Future[ConfigApplied] = asyncio.get_running_loop().create_future()
        self._answers[key] = future
        try:
            if not self._send(child, message):
                raise _ChildError("not running (restarting?)")
            try:
                answer = await asyncio.wait_for(future, APPLY_TIMEOUT)
            except TimeoutError:
                raise _ChildError(f"no answer within {APPLY_TIMEOUT:g} s") from None
        finally:
            del self._answers[key]
        if not answer.ok:
            why = "; ".join(answer.errors) or "refused"
            if answer.left:
                why += f" (left: {answer.left})"
            raise _ChildError(why)

    async def _start(self, child: str, target: Running) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready[child] = ready
        try:
            self._add_child(child, target)
            try:
                await asyncio.wait_for(ready, APPLY_TIMEOUT)
            except TimeoutError:
                await self._remove_child(child)
                raise _ChildError(f"not ready within {APPLY_TIMEOUT:g} s") from None
            except _ChildError:
                await self._remove_child(child)
                raise
        finally:
            del self._ready[child]


def _children_for(config: LvshaConfig) -> set[str]:
    wanted = set()
    if config.vrrp_instances:
        wanted.add("vrrp")
    if config.virtual_servers:
        wanted.add("checker")
    return wanted


def renamed_instances(old: LvshaConfig, new: LvshaConfig) -> dict[str, str]:
    """Old name -> new name of each VRRP instance that kept its identity under a new name."""
    by_identity = {instance_identity(inst): name for name, inst in new.vrrp_instances.items()}
    renamed = {}
    for name, inst in old.vrrp_instances.items():
        now = by_identity.get(instance_identity(inst))
        if now is not None and now != name:
            renamed[name] = now
    return renamed


def plan_reload(old: LvshaConfig, new: LvshaConfig) -> ReloadPlan:
    """lvsha.daemon.reload_plan.reload_plan. The planner (and the check targets, and through
    them the probes, it compares) is imported on first use: the parent starts its children
    first (lvsha.daemon.run)."""
    from lvsha.daemon.reload_plan import reload_plan  # noqa: PLC0415

    return reload_plan(old, new)
