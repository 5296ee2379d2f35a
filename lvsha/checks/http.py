"""HTTP and HTTPS probe: one request to a real server, judged by status, body digest and regex."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import ssl
from dataclasses import dataclass
from typing import Literal

import aiohttp
from yarl import URL

from lvsha.checks.result import ProbeResult

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_READ_CHUNK_BYTES = 64 * 1024
_USER_AGENT = "lvsha-healthcheck"


@dataclass(frozen=True, slots=True)
class StatusRange:
    """Inclusive range of acceptable HTTP status codes; a single code has low == high."""

    low: int
    high: int

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and self.low <= status <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True, slots=True)
class BodyDigest:
    algorithm: Literal["md5", "sha256"]
    hexdigest: str


@dataclass(frozen=True, slots=True)
class BodyRegex:
    """A regular expression searched in the raw body bytes; `negate` requires it not to match."""

    pattern: str
    negate: bool = False


@dataclass(frozen=True, slots=True)
class TlsOptions:
    verify: bool = True
    """Check the certificate chain and the name; off accepts any certificate."""
    server_name: str | None = None
    """SNI and the name the certificate must carry; defaults to the virtual host, then the IP."""
    ca_file: str | None = None
    """Trust anchors in PEM; None uses the system store."""
    client_cert_file: str | None = None
    client_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class HttpParams:
    address: str
    port: int
    timeout: float
    path: str = "/"
    method: Literal["GET", "HEAD"] = "GET"
    virtualhost: str | None = None
    """Sent as the Host header; None sends the address."""
    status: tuple[StatusRange, ...] = (StatusRange(200, 299),)
    digest: BodyDigest | None = None
    regex: BodyRegex | None = None
    tls: TlsOptions | None = None
    """None probes plain HTTP."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """A larger body fails the probe when a digest or regex needs it read."""

    @property
    def reads_body(self) -> bool:
        return self.digest is not None or self.regex is not None


class HttpClient:
    """One aiohttp session shared by every HTTP check, and its cache of TLS contexts.

    Each probe opens its own connection and closes it after the response (`force_close`), as
    keepalived does: a pooled connection would hide a server that stopped accepting new ones.
    TLS contexts are built once per distinct `TlsOptions`; make a new client to reread
    certificate files (on reload).
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tls_contexts: dict[TlsOptions, ssl.SSLContext] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                timeout=aiohttp.ClientTimeout(),  # the probe's own deadline bounds everything
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
                headers={"User-Agent": _USER_AGENT},
            )
        return self._session

    def tls_context(self, options: TlsOptions) -> ssl.SSLContext:
        context = self._tls_contexts.get(options)
        if context is None:
            context = _build_tls_context(options)
            self._tls_contexts[options] = context
        return context

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def probe_http(params: HttpParams, client: HttpClient) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = loop.time()

    def verdict(ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(ok=ok, reason=reason, latency=loop.time() - started)

    try:
        async with asyncio.timeout(params.timeout):
            ok, reason = await _request(params, client)
    except TimeoutError:
        return verdict(False, f"timeout after {float(params.timeout)} s")
    return verdict(ok, reason)


async def _request(params: HttpParams, client: HttpClient) -> tuple[bool, str]:
    tls_context: ssl.SSLContext | bool = False
    server_name: str | None = None
    if params.tls is not None:
        try:
            tls_context = client.tls_context(params.tls)
        except (OSError, ssl.SSLError) as error:
            return False, f"tls setup failed: {_describe(error)}"
        server_name = params.tls.server_name or params.virtualhost
    headers = {"Host": _host_header(params)} if params.virtualhost else {}
    try:
        async with client.session().request(
            params.method,
            _url(params),
            headers=headers,
            ssl=tls_context,
            server_hostname=server_name,
            allow_redirects=False,
        ) as response:
            if not any(response.status in wanted for wanted in params.status):
                wanted_text = ", ".join(str(wanted) for wanted in params.status)
                return False, f"http status {response.status}, want {wanted_text}"
            if not params.reads_body:
                return True, f"http status {response.status}"
            body = await _read_bounded(response.content, params.max_body_bytes)
    except aiohttp.ClientConnectorCertificateError as error:
        return False, f"tls certificate verify failed: {_certificate_problem(error)}"
    except aiohttp.ClientConnectorSSLError as error:
        return False, f"tls handshake failed: {_describe(error.os_error)}"
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, ConnectionRefusedError):
            return False, "http connect refused"
        return False, f"http connect failed: {_describe(error.os_error)}"
    except aiohttp.ServerDisconnectedError:
        return False, "http server closed the connection"
    except aiohttp.ClientPayloadError:
        return False, "http body incomplete"
    except aiohttp.ClientResponseError as error:
        return False, f"http bad response: {error.message}"
    except _BodyTooLargeError:
        return False, f"http body larger than {params.max_body_bytes} bytes"
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return False, f"http failed: {_describe(error)}"
    return _judge_body(params, body)


class _BodyTooLargeError(Exception):
    pass


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(_READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _judge_body(params: HttpParams, body: bytes) -> tuple[bool, str]:
    if params.digest is not None:
        actual = hashlib.new(params.digest.algorithm, body).hexdigest()
        if actual != params.digest.hexdigest.lower():
            return False, "http body digest mismatch"
    if params.regex is not None:
        try:
            pattern = _compiled(params.regex.pattern)
        except re.error as error:
            return False, f"http regex invalid: {error}"
        matched = pattern.search(body) is not None
        if matched and params.regex.negate:
            return False, "http regex matched"
        if not matched and not params.regex.negate:
            return False, "http regex not matched"
    return True, "http body ok"


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode())


def _url(params: HttpParams) -> URL:
    scheme = "https" if params.tls is not None else "http"
    host = f"[{params.address}]" if ":" in params.address else params.address
    path = params.path if params.path.startswith("/") else f"/{params.path}"
    # Parsed (not built) so a path the operator already percent-encoded is kept as written.
    return URL(f"{scheme}://{host}:{params.port}{path}")


def _host_header(params: HttpParams) -> str:
    default_port = 443 if params.tls is not None else 80
    host = params.virtualhost or params.address
    return host if params.port == default_port else f"{host}:{params.port}"


def _build_tls_context(options: TlsOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.ca_file)
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if options.client_cert_file is not None:
        context.load_cert_chain(options.client_cert_file, options.client_key_file)
    return context


def _certificate_problem(error: aiohttp.ClientConnectorCertificateError) -> str:
    problem = error.certificate_error
    if isinstance(problem, ssl.SSLCertVerificationError) and problem.verify_message:
        return str(problem.verify_message)
    return _describe(problem)


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).lower().replace("_", " ")  # "[SSL: X_Y] x y (_ssl.c:1006)"
    if isinstance(error, OSError) and error.strerror:
        return str(error.strerror)
    return str(error) or type(error).__name__
