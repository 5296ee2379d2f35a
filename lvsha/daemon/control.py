"""The control socket, `RUN_DIR/control.sock`: HTTP with JSON bodies, served by the parent.

Versioned paths; each answer follows a JSON Schema in lvsha/api/schemas/ and carries the
configuration generation it acted on:

- `GET /v1/status` (read): the configuration, every VRRP instance, every virtual server and
  real server, the overrides (status.json);
- `GET /v1/events` (read): the last 100 events (events.json); `?follow=1`: then every new
  one, as JSON lines, until the client goes;
- `POST /v1/reload` with `{"plan": false, "file": null}` (admin; read with `"plan": true`):
  validate, plan and (unless `plan`) apply (reload.json);
- `POST /v1/drain`, `/v1/maint`, `/v1/ready` with `{"virtual_server": null, "real_server":
  "10.0.0.21:80", "reason": ""}`, and for drain `"wait": SECONDS` (admin; overrides.json);
- `POST /v1/handover` with `{"instance": null, "cancel": false}` (admin; overrides.json).

Changes are POST only and idempotent: asking for what already holds changes nothing and says
`"changed": false`. Errors answer `{"ok": false, "error": "...", "generation": N}`
(error.json) with a 4xx or 5xx status.

Who may do what comes from the caller's credentials (SO_PEERCRED, and SO_PEERGROUPS for its
supplementary groups): root, the user lvsha runs as, and members of `global.control.
admin_group` may change things; members of `global.control.read_group` may read. Anyone
else gets 403, and the refusal is logged. The socket is mode 0660, in the read group (else
the admin group).

aiohttp is imported when the server starts serving, not with this module: the parent binds the
socket, starts the VRRP child, and only then pays for aiohttp (bench/startup.py).
"""

from __future__ import annotations

import asyncio
import enum
import grp
import json
import logging
import math
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvsha.daemon import overrides as ov
from lvsha.daemon.operations import OperationError
from lvsha.daemon.reload import ReloadAnswer
from lvsha.daemon.unixsock import listen_unix, unlink_if_ours
from lvsha.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from aiohttp import web

    from lvsha.config.model import ControlSettings
    from lvsha.daemon.events import EventStream
    from lvsha.daemon.operations import Operations
log = logging.getLogger("lvsha.control")

CONTROL_SOCKET = "control.sock"
MAX_REQUEST = 64 * 1024
"""Request bodies are a few flags and a path."""
MAX_FOLLOWERS = 32
"""`events?follow` streams served at once; each holds a queue of at most FOLLOW_BACKLOG."""
FOLLOW_BACKLOG = 10_000
"""Events a follower may fall behind before it is cut off."""
MAX_WAIT = 86_400.0
"""The longest `drain --wait` a request may ask for."""
LISTEN_BACKLOG = 1024
"""Connections waiting for accept (the kernel caps it at net.core.somaxconn, 4096 here): a
burst of clients waits in it rather than being refused; the client waits for room besides."""
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)

_STATUS = {"applied": 200, "plan": 200, "invalid": 422, "refused": 409, "failed": 409}

ReloadHandler = Callable[[str | None, bool], Awaitable[ReloadAnswer]]


class Access(enum.IntEnum):
    NONE = 0
    READ = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]
    access: Access

    def describe(self) -> str:
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            name = "?"
        return f"{name} (uid {self.uid})"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The supplementary groups the peer had when it connected (SO_PEERGROUPS)."""
    size = 64
    while True:
        try:
            data = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
        except OSError as exc:
            if exc.errno == 34 and size < 65536:  # ERANGE: more groups than room
                size *= 4
                continue
            raise
        count = len(data) // 4
        return frozenset(struct.unpack(f"{count}I", data[: 4 * count]))


def group_id(group: str | int | None) -> int | None:
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


class AccessRules:
    """Who may read and who may change, from `global.control`."""

    def __init__(self, settings: ControlSettings | None = None) -> None:
        self.admin_gid: int | None = None
        self.read_gid: int | None = None
        if settings is not None:
            self.update(settings)

    def update(self, settings: ControlSettings) -> None:
        self.admin_gid = group_id(settings.admin_group)
        self.read_gid = group_id(settings.read_group)

    @property
    def socket_gid(self) -> int | None:
        return self.read_gid if self.read_gid is not None else self.admin_gid

    def access(self, uid: int, gid: int, groups: frozenset[int]) -> Access:
        member = groups | {gid}
        if uid in (0, os.geteuid()) or (self.admin_gid is not None and self.admin_gid in member):
            return Access.ADMIN
        if self.read_gid is not None and self.read_gid in member:
            return Access.READ
        return Access.NONE


class ControlServer:
    """Serves the control API on a Unix socket until closed."""

    def __init__(
        self,
        path: str,
        reload: ReloadHandler,
        operations: Operations,
        events: EventStream,
        *,
        generation: Callable[[], int],
        rules: AccessRules | None = None,
    ) -> None:
        self.path = path
        self._reload = reload
        self._ops = operations
        self._events = events
        self._generation = generation
        self.rules = rules if rules is not None else AccessRules()
        self._runner: web.AppRunner | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._refusals = RateLimitedLog(log)
        self._followers = 0

    async def start(self) -> None:
        """Listen and serve; raises SocketPathError or OSError when the socket cannot be bound."""
        self.bind()
        await self.serve()

    def bind(self) -> None:
        """Listen; raises SocketPathError or OSError when the socket cannot be bound. Clients
        wait in the socket's backlog until `serve`."""
        self._listener = listen_unix(
            self.path, 0o660, self.rules.socket_gid, LISTEN_BACKLOG, what="control socket", log=log
        )
        self._inode = os.stat(self.path).st_ino

    def regroup(self) -> None:
        """Give the socket the group the rules name now (after a reload changed them)."""
        gid = self.rules.socket_gid
        try:
            os.chown(self.path, -1, 0 if gid is None else gid)
        except OSError as exc:
            log.error("cannot give %s group %s: %s", self.path, gid, exc.strerror or exc)

    async def serve(self) -> None:
        """Answer clients on the socket `bind` opened."""
        from aiohttp import web  # noqa: PLC0415 - see the module's doc

        assert self._listener is not None, "bind() first"

        @web.middleware
        async def authorize(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            return await self._authorize(request, handler)

        app = web.Application(client_max_size=MAX_REQUEST, middlewares=[authorize])
        app.router.add_get("/v1/status", self._get_status)
        app.router.add_get("/v1/events", self._get_events)
        app.router.add_post("/v1/reload", self._post_reload)
        app.router.add_post("/v1/drain", self._post_drain)
        app.router.add_post("/v1/maint", self._post_maint)
        app.router.add_post("/v1/ready", self._post_ready)
        app.router.add_post("/v1/handover", self._post_handover)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, self._listener).start()
        self._runner = runner
        log.info("control API listening on %s", self.path)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._refusals.flush()
        unlink_if_ours(self.path, self._inode)

    # Access.

    def _caller(self, request: web.Request) -> Caller:
        transport = request.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        try:
            if sock is None:
                raise OSError("no socket")
            pid, uid, gid = peer_credentials(sock)
            groups = peer_groups(sock)
        except OSError:
            return Caller(0, -1, -1, frozenset(), Access.NONE)
        return Caller(pid, uid, gid, groups, self.rules.access(uid, gid, groups))

    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        caller = self._caller(request)
        request["caller"] = caller
        if caller.access is Access.NONE:
            self._refuse(
                request,
                caller,
                "only root, the user lvsha runs as and members of "
                "global.control.admin_group or read_group may use the control socket",
            )
            return self._error(403, f"uid {caller.uid} may not use the control socket")
        return await handler(request)

    def _refuse(self, request: web.Request, caller: Caller, why: str) -> None:
        self._refusals.log(
            "control: refused %s %s from %s (pid %d): %s",
            request.method,
            request.path,
            caller.describe(),
            caller.pid,
            why,
        )

    def _admin_only(self, request: web.Request) -> web.Response | None:
        caller: Caller = request["caller"]
        if caller.access is Access.ADMIN:
            return None
        self._refuse(request, caller, "a change needs root or global.control.admin_group")
        return self._error(
            403, f"uid {caller.uid} may read but not change: ask a member of the admin group"
        )

    # Handlers.

    async def _get_status(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        return web.json_response(await self._ops.status(), dumps=_dumps)

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        follow = request.query.get("follow", "0")
        if follow not in ("0", "1", "true", "false"):
            return self._error(400, "follow must be 0 or 1")
        recent = self._events.recent()
        if follow in ("0", "false"):
            body = {
                "ok": True,
                "generation": self._generation(),
                "events": [json.loads(line) for line in recent],
            }
            return web.json_response(body, dumps=_dumps)
        if self._followers >= MAX_FOLLOWERS:
            return self._error(503, f"{MAX_FOLLOWERS} clients follow the events already")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        behind = False

        def take(line: bytes) -> None:
            nonlocal behind
            if behind:
                return
            if queue.qsize() >= FOLLOW_BACKLOG:
                behind = True
                queue.put_nowait(None)
            else:
                queue.put_nowait(line)

        stop = self._events.listen(take)
        self._followers += 1
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await response.prepare(request)
            for old in recent:
                await response.write(old)
            while (line := await queue.get()) is not None:
                await response.write(line)
            log.warning(
                "control: an events follower fell %d events behind: cut off", FOLLOW_BACKLOG
            )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._followers -= 1
            stop()
        return response

    async def _post_reload(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request, {"plan", "file"})
        if not isinstance(body, dict):
            return body
        plan = body.get("plan", False)
        file = body.get("file")
        if not isinstance(plan, bool):
            return self._error(400, "'plan' must be true or false")
        if file is not None and (not isinstance(file, str) or not os.path.isabs(file)):
            return self._error(400, "'file' must be an absolute path")
        if not plan and (refusal := self._admin_only(request)) is not None:
            return refusal
        answer = await self._reload(file, plan)
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        return web.json_response(answer.to_json(), status=_STATUS.get(answer.outcome, 500))

    async def _post_drain(self, request: web.Request) -> web.StreamResponse:
        return await self._admin_change(request, ov.Mode.DRAIN)

    async def _post_maint(self, request: web.Request) -> web.StreamResponse:
        return await self._admin_change(request, ov.Mode.MAINT)

    async def _post_ready(self, request: web.Request) -> web.StreamResponse:
        return await self._admin_change(request, None)

    async def _admin_change(self, request: web.Request, mode: ov.Mode | None) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        fields = {"virtual_server", "real_server", "reason"}
        if mode is ov.Mode.DRAIN:
            fields.add("wait")
        body = await self._body(request, fields)
        if not isinstance(body, dict):
            return body
        if (refusal := self._admin_only(request)) is not None:
            return refusal
        vs, rs, reason = body.get("virtual_server"), body.get("real_server"), body.get("reason", "")
        wait = body.get("wait")
        if vs is not None and (not isinstance(vs, str) or not vs):
            return self._error(400, "'virtual_server' must be a name, a service or null")
        if not isinstance(rs, str):
            return self._error(400, "'real_server' is required: an address, or address:port")
        if not isinstance(reason, str) or len(reason) > 500:
            return self._error(400, "'reason' must be a string of at most 500 characters")
        if wait is not None and (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not math.isfinite(wait)
            or not 0 <= wait <= MAX_WAIT
        ):
            return self._error(400, f"'wait' must be seconds from 0 to {MAX_WAIT:g}, or null")
        try:
            address, port = ov.parse_real_server(rs)
        except ov.OverrideError as exc:
            return self._error(400, str(exc))
        selector = ov.Selector(address, port, vs)
        caller: Caller = request["caller"]
        try:
            answer = await self._ops.set_admin(mode, selector, reason, caller.describe())
            if wait is not None:
                answer["waited"] = await self._ops.wait_drained(selector, float(wait))
        except OperationError as exc:
            return self._error(exc.status, str(exc))
        return web.json_response(answer, dumps=_dumps)

    async def _post_handover(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        body = await self._body(request, {"instance", "cancel"})
        if not isinstance(body, dict):
            return body
        if (refusal := self._admin_only(request)) is not None:
            return refusal
        instance, cancel = body.get("instance"), body.get("cancel", False)
        if instance is not None and (not isinstance(instance, str) or not instance):
            return self._error(400, "'instance' must be an instance name or null")
        if not isinstance(cancel, bool):
            return self._error(400, "'cancel' must be true or false")
        caller: Caller = request["caller"]
        try:
            answer = await self._ops.handover(instance, cancel, caller.describe())
        except OperationError as exc:
            return self._error(exc.status, str(exc))
        return web.json_response(answer, dumps=_dumps)

    # Helpers.

    async def _body(self, request: web.Request, fields: set[str]) -> dict[str, Any] | web.Response:
        try:
            body = await request.json(loads=json.loads) if request.can_read_body else {}
        except ValueError as exc:
            return self._error(400, f"the request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return self._error(400, "the request body must be a JSON object")
        unknown = sorted(set(body) - fields)
        if unknown:
            return self._error(400, f"unknown field(s) {unknown}: expected {sorted(fields)}")
        return body

    def _error(self, status: int, message: str) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        body: dict[str, Any] = {"ok": False, "error": message, "generation": self._generation()}
        return web.json_response(body, status=status)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
