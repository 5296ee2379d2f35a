"""The control socket, `RUN_DIR/control.sock`: HTTP with JSON bodies, served by the parent.

Versioned paths:
- `GET /v1/status`: the running configuration's file, generation and digest, the children,
  the VRRP states the parent last heard;
- `POST /v1/reload` with `{"plan": false, "file": null}`: validate, plan and (unless `plan`)
  apply; the answer is the reload's outcome (lvsha.daemon.reload.ReloadAnswer.to_json), sent
  once every child has answered.

Who may use it comes from the caller's credentials (SO_PEERCRED): root, or the user lvsha runs
as. Anyone else gets 403, and the refusal is logged. The socket is mode 0660.

aiohttp is imported when the server starts serving, not with this module: the parent binds the
socket, starts the VRRP child, and only then pays for aiohttp (bench/startup.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lvsha.daemon.reload import ReloadAnswer
from lvsha.daemon.unixsock import listen_unix, unlink_if_ours
from lvsha.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from aiohttp import web
log = logging.getLogger("lvsha.control")

CONTROL_SOCKET = "control.sock"
MAX_REQUEST = 64 * 1024
"""Request bodies are a few flags and a path."""

_STATUS = {"applied": 200, "plan": 200, "invalid": 422, "refused": 409, "failed": 409}

ReloadHandler = Callable[[str | None, bool], Awaitable[ReloadAnswer]]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


class ControlServer:
    """Serves the control API on a Unix socket until closed."""

    def __init__(
        self, path: str, reload: ReloadHandler, status: Callable[[], dict[str, object]]
    ) -> None:
        self.path = path
        self._reload = reload
        self._status = status
        self._runner: web.AppRunner | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._refusals = RateLimitedLog(log)

    async def start(self) -> None:
        """Listen and serve; raises SocketPathError or OSError when the socket cannot be bound."""
        self.bind()
        await self.serve()

    def bind(self) -> None:
        """Listen; raises SocketPathError or OSError when the socket cannot be bound. Clients
        wait in the socket's backlog until `serve`."""
        self._listener = listen_unix(self.path, 0o660, None, 16, what="control socket", log=log)
        self._inode = os.stat(self.path).st_ino

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
        app.router.add_post("/v1/reload", self._post_reload)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
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

    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        try:
            pid, uid, _ = peer_credentials(sock) if sock is not None else (0, -1, -1)
        except OSError:
            pid, uid = 0, -1
        if uid not in (0, os.geteuid()):
            self._refusals.log(
                "control: refused %s %s from uid %d (pid %d): only root or the user lvsha "
                "runs as may use the control socket",
                request.method,
                request.path,
                uid,
                pid,
            )
            return _error(403, f"uid {uid} may not use the control socket")
        return await handler(request)

    async def _get_status(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        return web.json_response(self._status())

    async def _post_reload(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json(loads=json.loads) if request.can_read_body else {}
        except ValueError as exc:
            return _error(400, f"the request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        unknown = sorted(set(body) - {"plan", "file"})
        if unknown:
            return _error(400, f"unknown field(s) {unknown}: expected 'plan' and 'file'")
        plan = body.get("plan", False)
        file = body.get("file")
        if not isinstance(plan, bool):
            return _error(400, "'plan' must be true or false")
        if file is not None and (not isinstance(file, str) or not os.path.isabs(file)):
            return _error(400, "'file' must be an absolute path")
        answer = await self._reload(file, plan)
        from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

        return web.json_response(answer.to_json(), status=_STATUS.get(answer.outcome, 500))


def _error(status: int, message: str) -> web.Response:
    from aiohttp import web  # noqa: PLC0415 - imported by `serve` already

    body: dict[str, Any] = {"ok": False, "error": message}
    return web.json_response(body, status=status)
