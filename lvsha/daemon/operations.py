"""What the control API does, in the parent: status from the children's last reports, and the
operator's overrides (drain, maint, ready, handover), kept in the state file and sent to the
children.

Nothing here makes the VRRP process wait: it sends its status unasked (`VrrpStatus`, every
second and after each change), and the API answers from the last one, whatever the number of
clients. The checker is asked (`StatusRequest`) when a client wants the services, one request
at a time however many clients ask: they share the answer in flight, or one younger than
`CHECKER_STATUS_FRESH`.

An override is written to the state file before any child hears of it, so what a child runs is
always what a restart would run. A child that (re)starts reads it from there (`--state-file`)
before it acts, and the parent sends it the whole set again once it is up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvsha import __version__
from lvsha.daemon import overrides as ov
from lvsha.messages import (
    CheckerStatus,
    Message,
    OverridesApplied,
    SetHandover,
    SetOverrides,
    StatusRequest,
    VrrpStatus,
)

if TYPE_CHECKING:
    from lvsha.bgp.announcer import Announcer
    from lvsha.checks.verdict import RealServerId
    from lvsha.config import LvshaConfig
    from lvsha.daemon.reload import Running

log = logging.getLogger("lvsha.control")

CHECKER_STATUS_FRESH = 0.25
"""Seconds a checker's status answer serves further clients before it is asked again."""
CHECKER_TIMEOUT = 10.0
"""Seconds the checker has to answer a status request or apply overrides."""
DRAIN_POLL = 0.5
"""Seconds between two reads of the connection counters while `drain --wait` waits."""
HANDOVER_FAILED = "handover failed"
"""How the reason of an instance that gave a handover up begins (lvsha.vrrp.machine)."""
HANDOVER_MARGIN = 2.0
"""Seconds past the longest Master_Down_Interval a handover waits for the peer."""


class OperationError(Exception):
    """A request that cannot be served: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def configured_real_servers(config: LvshaConfig) -> list[RealServerId]:
    """Every real server of `config`, identified as the checker identifies them."""
    from lvsha.checks.targets import real_server_id, virtual_service_id  # noqa: PLC0415

    found: list[RealServerId] = []
    for vs in config.virtual_servers:
        service = virtual_service_id(vs)
        found.extend(real_server_id(vs, rs, service) for rs in vs.real_servers)
    return found


def selection(config: LvshaConfig, selector: ov.Selector) -> tuple[list[RealServerId], list[str]]:
    """The real servers `selector` names in `config`, and (when none) why."""
    real_servers = configured_real_servers(config)
    chosen = [rs for rs in real_servers if selector.matches(rs)]
    if chosen:
        return chosen, []
    vs = selector.virtual_server
    if vs is not None and not any(ov.names_service(vs, rs) for rs in real_servers):
        names = sorted({rs.virtual_server_name or rs.virtual_service for rs in real_servers})
        return [], [
            f"no virtual server '{vs}': this configuration has {', '.join(names) or 'none'}"
        ]
    return [], [f"no real server {selector.describe()}"]


def describe_override(override: ov.Override, config: LvshaConfig) -> str:
    chosen, _ = selection(config, override.selector)
    count = len(chosen)
    what = f"selects {count} real server{'' if count == 1 else 's'}" if count else "selects none"
    by = f" by {override.by}" if override.by else ""
    reason = f": {override.reason}" if override.reason else ""
    return f"{override.mode.value} {override.selector.describe()} ({what}){by}{reason}"


@dataclasses.dataclass
class _CheckerAnswer:
    at: float
    """Loop time it arrived."""
    wall: float
    body: dict[str, Any]


class Operations:
    """The parent's side of status and overrides. `send(child, message)` is the supervisor's;
    `running()` the configuration running now; `children()` the children running."""

    def __init__(
        self,
        state_path: Path,
        state: ov.State,
        *,
        running: Callable[[], Running],
        send: Callable[[str, Message], bool],
        children: Callable[[], list[str]],
        host: str | None = None,
        bgp: Callable[[], Announcer | None] = lambda: None,
    ) -> None:
        self.state_path = state_path
        self.state = state
        self._bgp = bgp
        """The BGP announcer (None: the configuration announces nothing)."""
        self._running = running
        self._send = send
        self._children = children
        self.host = host or socket.gethostname()
        self.vrrp: dict[str, Any] | None = None
        """The VRRP child's last status ({"instances": [...]}), with `updated_at`."""
        self._vrrp_changed = asyncio.Condition()
        self._vrrp_serial = 0
        """How many VRRP reports have come in."""
        self._checker: _CheckerAnswer | None = None
        self._checker_wait: asyncio.Future[dict[str, Any]] | None = None
        self._serial = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._lock = asyncio.Lock()
        """One change at a time: each reads and writes the whole state."""
        self._tasks: set[asyncio.Task[None]] = set()

    # From the children.

    def child_message(self, child: str, message: Message) -> bool:
        """Take a message meant for this; False when it is not one."""
        match message:
            case VrrpStatus(body=body) if child == "vrrp":
                self._take_vrrp(body)
            case CheckerStatus(serial=serial, body=body) if child == "checker":
                self._resolve(serial, body)
            case OverridesApplied(serial=serial, errors=errors) if child == "checker":
                self._resolve(serial, list(errors))
            case _:
                return False
        return True

    def _take_vrrp(self, body: str) -> None:
        try:
            value = json.loads(body)
        except ValueError as exc:
            log.error("VRRP status is not JSON: %s", exc)
            return
        if not isinstance(value, dict) or not isinstance(value.get("instances"), list):
            log.error("VRRP status is not an object with instances")
            return
        value["updated_at"] = time.time()
        self.vrrp = value
        self._vrrp_serial += 1
        self._spawn(self._notify_vrrp())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_vrrp(self) -> None:
        async with self._vrrp_changed:
            self._vrrp_changed.notify_all()

    def _resolve(self, serial: int, value: Any) -> None:
        future = self._pending.pop(serial, None)
        if future is not None and not future.done():
            future.set_result(value)

    def child_started(self, child: str) -> None:
        """Tell a child that is up the overrides in force (it read them at start too: this
        covers a change made while it started)."""
        if child == "checker":
            self._send_overrides()
        elif child == "vrrp":
            self._send("vrrp", SetHandover(tuple(sorted(self.state.handover))))

    def child_exited(self, child: str) -> None:
        if child == "vrrp":
            self.vrrp = None
        if child == "checker":
            for serial, future in list(self._pending.items()):
                if not future.done():
                    future.set_exception(OperationError(503, "the checker process exited"))
                del self._pending[serial]

    def reloaded(self, renamed: Mapping[str, str]) -> None:
        """A reload applied: follow renamed instances, and resend what the children run."""
        self._checker = None  # the services changed: no answer from before serves
        if any(name in self.state.handover for name in renamed):
            self.state.handover = {renamed.get(k, k): v for k, v in self.state.handover.items()}
            self._save()
        self._send("vrrp", SetHandover(tuple(sorted(self.state.handover))))
        self._send_overrides()

    # Status.

    async def status(self) -> dict[str, Any]:
        running = self._running()
        config = running.config
        children = self._children()
        services: dict[str, Any] | None = None
        if config.virtual_servers:
            services = await self.services(children)
        announcer = self._bgp()
        vrrp: dict[str, Any] | None = None
        if config.vrrp_instances:
            last = self.vrrp
            vrrp = {
                "updated_at": None if last is None else last["updated_at"],
                "instances": [] if last is None else last["instances"],
            }
        return {
            "ok": True,
            "generation": running.generation,
            "digest": running.digest,
            "file": running.path,
            "version": __version__,
            "host": config.global_.router_id or self.host,
            "now": time.time(),
            "children": children,
            "vrrp": vrrp,
            "services": services,
            "overrides": [o.to_json() for o in self.state.overrides],
            "handover": dict(sorted(self.state.handover.items())),
            "bgp": None if announcer is None else announcer.status(),
        }

    async def services(self, children: Sequence[str] | None = None) -> dict[str, Any]:
        """The checker's view, fresh (shared with concurrent callers), or the last one with
        the reason it is not fresh."""
        if children is None:
            children = self._children()
        last = self._checker
        if "checker" not in children:
            return self._services(last, "the checker process is not running (restarting?)")
        loop = asyncio.get_running_loop()
        if last is not None and loop.time() - last.at < CHECKER_STATUS_FRESH:
            return self._services(last, None)
        if self._checker_wait is None or self._checker_wait.done():
            self._checker_wait = loop.create_future()
            self._spawn(self._ask_checker(self._checker_wait))
        try:
            body = await asyncio.shield(self._checker_wait)
        except OperationError as exc:
            return self._services(self._checker, str(exc))
        return self._services(_CheckerAnswer(loop.time(), time.time(), body), None)

    async def _ask_checker(self, answer: asyncio.Future[dict[str, Any]]) -> None:
        try:
            body = await self._request("checker", StatusRequest)
            value = json.loads(body)
            if not isinstance(value, dict) or not isinstance(value.get("virtual_servers"), list):
                raise OperationError(502, "the checker's status is not an object of services")
        except OperationError as exc:
            answer.set_exception(exc)
            answer.exception()  # retrieved: callers may all have gone
            return
        except ValueError as exc:
            answer.set_exception(OperationError(502, f"the checker's status is not JSON: {exc}"))
            answer.exception()
            return
        loop = asyncio.get_running_loop()
        self._checker = _CheckerAnswer(loop.time(), time.time(), value)
        answer.set_result(value)

    def _services(self, answer: _CheckerAnswer | None, error: str | None) -> dict[str, Any]:
        return {
            "updated_at": None if answer is None else answer.wall,
            "virtual_servers": [] if answer is None else answer.body["virtual_servers"],
            "error": error,
        }

    async def _request(self, child: str, make: Callable[[int], Message]) -> Any:
        self._serial += 1
        serial = self._serial
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[serial] = future
        if not self._send(child, make(serial)):
            self._pending.pop(serial, None)
            raise OperationError(503, f"the {child} process is not running (restarting?)")
        try:
            async with asyncio.timeout(CHECKER_TIMEOUT):
                return await future
        except TimeoutError:
            raise OperationError(
                504, f"the {child} process did not answer within {CHECKER_TIMEOUT:g} s"
            ) from None
        finally:
            self._pending.pop(serial, None)

    # Real servers: drain, maint, ready.

    async def set_admin(
        self, mode: ov.Mode | None, selector: ov.Selector, reason: str, by: str
    ) -> dict[str, Any]:
        """Drain or maint (or, with `mode` None, ready) the real servers `selector` names."""
        running = self._running()
        chosen, why = selection(running.config, selector)
        if not chosen:
            raise OperationError(404, why[0])
        async with self._lock:
            before = list(self.state.overrides)
            after = _without(before, chosen, running.config)
            if mode is not None:
                after.append(ov.Override(mode, selector, reason, by, time.time()))
            in_force_before = ov.effective(before, chosen)
            in_force_after = ov.effective(after, chosen)
            changed = {rs: o.mode for rs, o in in_force_before.items()} != {
                rs: o.mode for rs, o in in_force_after.items()
            }
            if changed:
                self.state.overrides = after
                self._save(previous_overrides=before)
                errors = await self._apply_overrides()
                if errors:
                    raise OperationError(502, "; ".join(errors))
                for real_server in chosen:
                    now = in_force_after.get(real_server)
                    log.info(
                        "%s: %s by %s%s",
                        real_server,
                        "ready" if now is None else now.mode.value,
                        by,
                        f": {reason}" if reason else "",
                    )
        notes = await self._file_notes(chosen) if mode is None else []
        return self._change_answer(changed, [str(rs) for rs in chosen], notes)

    async def _file_notes(self, chosen: Iterable[RealServerId]) -> list[str]:
        """For `ready`: real servers a maintenance file still drains (the checker knows)."""
        services = await self.services()
        wanted = {(rs.virtual_service, rs.address, rs.port) for rs in chosen}
        notes = []
        for vs in services["virtual_servers"]:
            for rs in vs.get("real_servers", []):
                key = (_real_servers_service(vs), rs.get("address"), rs.get("port"))
                if key in wanted and rs.get("admin_source") == "file":
                    notes.append(
                        f"{vs.get('name') or vs.get('service')} {rs.get('address')}:"
                        f"{rs.get('port')} stays drained by {rs.get('admin_reason')}: remove "
                        "the file to put it back"
                    )
        return notes

    async def wait_drained(self, selector: ov.Selector, timeout: float) -> dict[str, Any]:
        """Wait until the kernel reports no active connection to the selected real servers,
        at most `timeout` seconds; {"done", "left", "seconds"}."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        left = 0
        first = True
        while True:
            services = await self.services()
            if services["error"] is not None:
                raise OperationError(503, services["error"])
            left = _active_connections(services["virtual_servers"], selector)
            waited = loop.time() - began
            if left == 0 or waited >= timeout:
                log.info(
                    "drain --wait of %s: %s after %.1f s",
                    selector.describe(),
                    "no active connection left" if left == 0 else f"{left} still active",
                    waited,
                )
                return {"done": left == 0, "left": left, "seconds": round(waited, 3)}
            if first:
                log.info(
                    "drain --wait of %s: waiting up to %g s for %d active connection%s",
                    selector.describe(),
                    timeout,
                    left,
                    "" if left == 1 else "s",
                )
            first = False
            await asyncio.sleep(min(DRAIN_POLL, timeout - waited))
            # Not served from the cache: a fresh read of the counters.
            self._checker = None

    async def _apply_overrides(self) -> list[str]:
        if "checker" not in self._children():
            return []  # it reads the state file when it starts
        body = ov.encode(self.state.overrides)
        try:
            errors: list[str] = await self._request(
                "checker", lambda serial: SetOverrides(serial, body)
            )
        except OperationError as exc:
            return [str(exc)]
        self._checker = None
        return errors

    def _send_overrides(self) -> None:
        self._serial += 1
        self._send("checker", SetOverrides(self._serial, ov.encode(self.state.overrides)))

    # VRRP: handover.

    async def handover(self, instance: str | None, cancel: bool, by: str) -> dict[str, Any]:
        running = self._running()
        config = running.config
        announcer = self._bgp() if instance is None else None
        if not config.vrrp_instances and announcer is None:
            raise OperationError(
                404,
                "this configuration has no VRRP instance"
                + ("" if config.bgp is None else "; hand BGP over with no instance named"),
            )
        bgp_changed = False
        if announcer is not None:
            # The whole director: its BGP announcements leave first, gracefully.
            bgp_changed = await self._bgp_handover(announcer, cancel, by)
            if not config.vrrp_instances:
                answer = self._change_answer(bgp_changed, ["bgp"], [])
                answer["instances"] = []
                answer["bgp"] = announcer.status()
                return answer
        if instance is not None and instance not in config.vrrp_instances:
            names = ", ".join(config.vrrp_instances)
            raise OperationError(
                404, f"no VRRP instance '{instance}': this configuration has {names}"
            )
        chosen = _with_sync_groups(config, [instance] if instance else list(config.vrrp_instances))
        async with self._lock:
            before = dict(self.state.handover)
            after = dict(before)
            for name in chosen:
                if cancel:
                    after.pop(name, None)
                elif name not in after:
                    after[name] = f"{by} at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
            changed = after != before
            # Changed: wait for a report that follows the change; else the last one will do.
            since = self._vrrp_serial if changed else self._vrrp_serial - 1
            if changed:
                self.state.handover = after
                self._save(previous_handover=before)
                log.info(
                    "%s %s by %s",
                    "handover cancelled:" if cancel else "handover:",
                    ", ".join(chosen),
                    by,
                )
                if not self._send("vrrp", SetHandover(tuple(sorted(after)))):
                    raise OperationError(503, "the VRRP process is not running (restarting?)")
            instances = await self._await_handover(config, chosen, not cancel, since)
            failed = [
                i["name"]
                for i in instances
                if not cancel and not i["handed_over"] and i["name"] in self.state.handover
            ]
            if failed:
                # The instance gave up (no peer took over): it is master and not handed over.
                for name in failed:
                    self.state.handover.pop(name, None)
                self._save()
                self._send("vrrp", SetHandover(tuple(sorted(self.state.handover))))
        answer = self._change_answer(changed or bgp_changed, chosen, [])
        answer["instances"] = instances
        if announcer is not None:
            answer["bgp"] = announcer.status()
        return answer

    async def _bgp_handover(self, announcer: Announcer, cancel: bool, by: str) -> bool:
        """Drain the BGP announcements (GRACEFUL_SHUTDOWN, the wait, the withdrawal), or end
        the drain; kept in the state file. Returns whether the state changed."""
        async with self._lock:
            before = self.state.bgp_handover
            if cancel:
                self.state.bgp_handover = None
            elif before is None:
                self.state.bgp_handover = f"{by} at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
            changed = self.state.bgp_handover != before
            if changed:
                try:
                    self._save()
                except OperationError:
                    self.state.bgp_handover = before
                    raise
                log.info("%s BGP by %s", "handover cancelled:" if cancel else "handover:", by)
        if cancel:
            announcer.undrain()
        else:
            await announcer.drain()
        return changed

    async def _await_handover(
        self, config: LvshaConfig, names: Sequence[str], wanted: bool, since: int
    ) -> list[dict[str, Any]]:
        """Wait until each named instance reports its handover flag as `wanted` and is no
        longer releasing (or has given up: master again, flag cleared), in a report that
        came after the one numbered `since`."""
        longest = max((3 * config.vrrp_instances[n].advert_interval for n in names), default=1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + longest + HANDOVER_MARGIN

        def settled() -> list[dict[str, Any]] | None:
            last = self.vrrp
            if last is None:
                return None
            found = {i["name"]: i for i in last["instances"] if i.get("name") in names}
            if len(found) != len(set(names)):
                return None
            if self._vrrp_serial <= since:
                return None  # nothing heard since the change was sent
            for item in found.values():
                if item["state"] == "RELEASING":
                    return None
                gave_up = str(item["reason"]).startswith(HANDOVER_FAILED)
                if item["handed_over"] != wanted and not (wanted and gave_up):
                    return None
            return [found[n] for n in names]

        async with self._vrrp_changed:
            while (result := settled()) is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise OperationError(
                        504,
                        f"the handover of {', '.join(names)} did not settle within "
                        f"{longest + HANDOVER_MARGIN:g} s; see lvsha status",
                    )
                try:
                    async with asyncio.timeout(remaining):
                        await self._vrrp_changed.wait()
                except TimeoutError:
                    continue
        return result

    # The state file.

    def _save(
        self,
        *,
        previous_overrides: list[ov.Override] | None = None,
        previous_handover: dict[str, str] | None = None,
    ) -> None:
        try:
            ov.save(self.state_path, self.state)
        except OSError as exc:
            if previous_overrides is not None:
                self.state.overrides = previous_overrides
            if previous_handover is not None:
                self.state.handover = previous_handover
            raise OperationError(
                500,
                f"cannot write the state file {self.state_path}: {exc.strerror or exc}; "
                "nothing changed",
            ) from None

    def _change_answer(
        self, changed: bool, selected: list[str], notes: list[str]
    ) -> dict[str, Any]:
        return {
            "ok": True,
            "generation": self._running().generation,
            "changed": changed,
            "selected": selected,
            "notes": notes,
            "overrides": [o.to_json() for o in self.state.overrides],
            "handover": dict(sorted(self.state.handover.items())),
        }

    def plan_lines(self, config: LvshaConfig) -> list[str]:
        """The overrides and handovers in force, described against `config` (reload --plan)."""
        lines = [describe_override(o, config) for o in self.state.overrides]
        for name, by in sorted(self.state.handover.items()):
            where = "" if name in config.vrrp_instances else " (no such instance in this file)"
            lines.append(f"handover {name}{where}, by {by}")
        if self.state.bgp_handover is not None:
            where = "" if config.bgp is not None else " (this file announces nothing over BGP)"
            lines.append(f"handover of BGP{where}, by {self.state.bgp_handover}")
        return lines


def _without(
    overrides: list[ov.Override], chosen: Sequence[RealServerId], config: LvshaConfig
) -> list[ov.Override]:
    """`overrides` with none left selecting a real server of `chosen`: an override selecting
    only such real servers goes; one selecting others too is narrowed to those others (one
    override each)."""
    chosen_set = set(chosen)
    everything = configured_real_servers(config)
    kept: list[ov.Override] = []
    for override in overrides:
        selected = [rs for rs in everything if override.selector.matches(rs)]
        if not any(rs in chosen_set for rs in selected):
            kept.append(override)
            continue
        for rs in selected:
            if rs not in chosen_set:
                narrow = ov.Selector(
                    rs.address, rs.port, rs.virtual_server_name or rs.virtual_service
                )
                kept.append(dataclasses.replace(override, selector=narrow))
    return kept


def _with_sync_groups(config: LvshaConfig, names: Sequence[str]) -> list[str]:
    """`names` and every member of their sync groups, in configuration order."""
    wanted = set(names)
    for group in config.sync_groups.values():
        if wanted & set(group.instances):
            wanted |= set(group.instances)
    return [name for name in config.vrrp_instances if name in wanted]


def _real_servers_service(vs: dict[str, Any]) -> Any:
    """The virtual service a status entry's real servers are identified under: the service,
    or "group NAME" for a member of a virtual server group (`lvsha.checks.targets`)."""
    group = vs.get("group")
    return f"group {group}" if group else vs.get("service")


def _active_connections(virtual_servers: list[dict[str, Any]], selector: ov.Selector) -> int:
    from lvsha.checks.verdict import RealServerId  # noqa: PLC0415

    left = 0
    for vs in virtual_servers:
        for rs in vs["real_servers"]:
            service = _real_servers_service(vs)
            real_server = RealServerId(service, rs["address"], rs["port"], vs["name"])
            if selector.matches(real_server):
                left += rs["active_connections"] or 0
    return left
