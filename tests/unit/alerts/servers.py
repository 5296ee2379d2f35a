"""Servers the alert tests deliver to, on 127.0.0.1 at ephemeral ports, in the test's loop: an
SMTP server (aiosmtpd; STARTTLS, implicit TLS and login as asked), an HTTP receiver (webhook
or Alertmanager stand-in, answering as told or never), and a black hole (accepts, says
nothing); plus a self-made certificate and a deadline-bound wait."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from lvsha.config.model import LvshaConfig

LOOPBACK = "127.0.0.1"


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once `condition()` holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


def config(*sinks: dict[str, Any], **root: Any) -> LvshaConfig:
    """A configuration with these alert sinks and router_id lb-nat-1 (`root` adds keys)."""
    notification = root.pop("notification", {})
    document: dict[str, Any] = {
        "global": {
            "router_id": root.pop("router_id", "lb-nat-1"),
            "notification": {**notification, "sinks": list(sinks)},
        },
        **root,
    }
    return LvshaConfig.model_validate(document)


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts this certificate only."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out",
            str(cert), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage
    tls: bool
    login: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return str(self.message.get_content())


@dataclass
class SmtpReceiver:
    port: int = 0
    mails: list[Mail] = field(default_factory=list)


class _MailHandler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        message = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        assert isinstance(message, email.message.EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.receiver.mails.append(
            Mail(
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                message,
                server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                login,
            )
        )
        return "250 OK"


def _authenticator(users: dict[str, str]) -> Callable[..., AuthResult]:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and (
            users.get(data.login.decode()) == data.password.decode()
        ):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    return check


@asynccontextmanager
async def smtp_server(
    *,
    starttls: ssl.SSLContext | None = None,
    require_starttls: bool = False,
    implicit_tls: ssl.SSLContext | None = None,
    users: dict[str, str] | None = None,
) -> AsyncIterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    handler = _MailHandler(receiver)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="receiver.test",
            tls_context=starttls,
            require_starttls=require_starttls,
            authenticator=_authenticator(users) if users else None,
            auth_required=bool(users),
            auth_require_tls=bool(users) and (starttls is not None or implicit_tls is not None),
        )

    server = await asyncio.get_running_loop().create_server(protocol, LOOPBACK, 0, ssl=implicit_tls)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A TCP listener that accepts and never sends a byte (an SMTP relay stuck before its
    220 banner): yields its port."""
    connections: list[asyncio.Transport] = []

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            connections.append(transport)

    server = await asyncio.get_running_loop().create_server(Silent, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for transport in connections:
            transport.abort()
        await server.wait_closed()


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """What the receiver got; `statuses` are answered in turn (then 200); `hang` makes it
    never answer."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    taken: int = 0
    """Requests that arrived, answered or not."""

    def url(self, path: str = "") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert an Alertmanager stand-in got, in order."""
        return [alert for request in self.requests for alert in request.json()]


@asynccontextmanager
async def http_server(path: str = "/hook") -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver()
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        receiver.taken += 1
        if receiver.hang:
            await release.wait()
        body = await request.read()
        status = receiver.statuses.pop(0) if receiver.statuses else 200
        if status == 200:
            receiver.requests.append(Request(dict(request.headers), body))
            return web.json_response({})
        return web.Response(status=status, text="refused by the test")

    app = web.Application()
    app.router.add_post(path, handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    address = runner.addresses[0]
    receiver.port = address[1]
    try:
        yield receiver
    finally:
        release.set()
        await runner.cleanup()
