"""Real servers that receive lvsha's alerts in tests: an SMTP server (aiosmtpd), a webhook
receiver and an Alertmanager stand-in (`POST /api/v2/alerts`), plus the broken kinds (an SMTP
server that never answers, a webhook that hangs).

They serve listening sockets the caller made (`Receivers.listen(make_socket)`): made inside a
lab host's namespace (`Host.call`), they stay there, so a director in that namespace reaches
them on 127.0.0.1. They run on their own event loop in a thread, so synchronous tests can wait
on what they received.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"]).strip()

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_with(self, secret: bytes) -> bool:
        """Whether X-Lvsha-Signature is the HMAC-SHA256 of the body with `secret`."""
        expected = "sha256=" + hmac.new(secret, self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("X-Lvsha-Signature", ""), expected)


@dataclass
class Received:
    mails: list[Mail] = field(default_factory=list)
    hooks: list[Post] = field(default_factory=list)
    alertmanager: list[Post] = field(default_factory=list)
    hung: int = 0
    """Requests the hanging webhook has taken and never answered."""


class _Handler:
    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        sender = envelope.mail_from or ""
        self.received.mails.append(Mail(sender, list(envelope.rcpt_tos), message))
        return "250 OK"


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


class Receivers:
    """The servers, on a loop in a thread. `smtp_port`, `webhook_port`, `alertmanager_port`,
    `blackhole_port`, `hanging_port` say where each listens."""

    def __init__(self, make_socket: Callable[[Callable[[], socket.socket]], socket.socket]):
        """`make_socket(factory)` returns `factory()` made where the servers should be (e.g.
        `host.call`), or just calls it."""
        self.received = Received()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receivers")
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.AbstractServer] = []
        sockets = {
            name: make_socket(listening_socket)
            for name in ("smtp", "webhook", "alertmanager", "hanging")
        }
        # Accepted by nobody, and with a backlog of one: its first connection waits for the
        # banner forever, later ones for the handshake itself.
        blackhole = make_socket(listening_socket)
        blackhole.listen(0)
        self._blackhole = blackhole
        self.smtp_port = sockets["smtp"].getsockname()[1]
        self.webhook_port = sockets["webhook"].getsockname()[1]
        self.alertmanager_port = sockets["alertmanager"].getsockname()[1]
        self.hanging_port = sockets["hanging"].getsockname()[1]
        self.blackhole_port = blackhole.getsockname()[1]
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(sockets), self._loop).result(10)

    async def _start(self, sockets: dict[str, socket.socket]) -> None:
        received = self.received
        handler = _Handler(received)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="receiver.test"), sock=sockets["smtp"]
        )
        self._servers.append(server)

        async def hook(request: web.Request) -> web.Response:
            received.hooks.append(Post(dict(request.headers), await request.read()))
            return web.Response(text="ok")

        async def alerts(request: web.Request) -> web.Response:
            received.alertmanager.append(Post(dict(request.headers), await request.read()))
            return web.json_response({})

        async def hang(request: web.Request) -> web.Response:
            received.hung += 1
            await asyncio.Event().wait()  # never answers
            raise AssertionError("unreachable")

        for name, route, handler_function in (
            ("webhook", "/hook", hook),
            ("alertmanager", "/api/v2/alerts", alerts),
            ("hanging", "/hook", hang),
        ):
            app = web.Application()
            app.router.add_post(route, handler_function)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
            await runner.setup()
            await web.SockSite(runner, sockets[name]).start()
            self._runners.append(runner)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert the Alertmanager stand-in got, in order."""
        return [alert for post in list(self.received.alertmanager) for alert in post.json()]

    async def _stop(self) -> None:
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        # What is left (the hanging webhook's handlers, SMTP sessions) ends with the loop.
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._blackhole.close()

    def __enter__(self) -> Receivers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
