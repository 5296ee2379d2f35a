"""HTTP/HTTPS probe against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from lvsha.checks.http import (
    BodyDigest,
    BodyRegex,
    HttpClient,
    HttpParams,
    StatusRange,
    TlsOptions,
    probe_http,
)

LATE_MARGIN = 0.05


@dataclass
class Behaviour:
    """What the test server answers next, and what it saw."""

    status: int = 200
    body: bytes = b"all good\n"
    hang: bool = False
    requests: list[web.BaseRequest] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Server:
    address: str
    port: int
    behaviour: Behaviour


async def _serve(address: str, tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, Server]:
    behaviour = Behaviour()

    async def handle(request: web.Request) -> web.Response:
        behaviour.requests.append(request)
        if behaviour.hang:
            await behaviour.release.wait()
        return web.Response(status=behaviour.status, body=behaviour.body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, address, 0, ssl_context=tls)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, Server(address, port, behaviour)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    runner, served = await _serve("127.0.0.1")
    yield served
    served.behaviour.release.set()
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http_client = HttpClient()
    yield http_client
    await http_client.close()


def _params(server: Server, **options: object) -> HttpParams:
    return HttpParams(address=server.address, port=server.port, timeout=2.0, **options)  # type: ignore[arg-type]


async def test_status_200_is_healthy_and_the_virtual_host_is_sent(
    server: Server, client: HttpClient
) -> None:
    result = await probe_http(_params(server, virtualhost="www.lvsha.test"), client)

    assert result.ok, result.reason
    assert result.reason == "http status 200"
    assert 0 < result.latency < 2.0
    [request] = server.behaviour.requests
    assert request.method == "GET"
    assert request.headers["Host"] == f"www.lvsha.test:{server.port}"
    assert request.headers["Connection"] == "close"


async def test_status_503_fails_with_the_wanted_range(server: Server, client: HttpClient) -> None:
    server.behaviour.status = 503

    result = await probe_http(_params(server), client)

    assert not result.ok
    assert result.reason == "http status 503, want 200-299"


async def test_status_codes_and_ranges_are_listed(server: Server, client: HttpClient) -> None:
    wanted = (StatusRange(200, 200), StatusRange(301, 302))
    server.behaviour.status = 302
    assert (await probe_http(_params(server, status=wanted), client)).ok

    server.behaviour.status = 204
    result = await probe_http(_params(server, status=wanted), client)

    assert result.reason == "http status 204, want 200, 301-302"


async def test_head_request_and_path_with_query(server: Server, client: HttpClient) -> None:
    result = await probe_http(_params(server, method="HEAD", path="/health?deep=1"), client)

    assert result.ok, result.reason
    [request] = server.behaviour.requests
    assert request.method == "HEAD"
    assert request.path_qs == "/health?deep=1"


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
async def test_body_digest_matches_then_the_body_changes(
    server: Server, client: HttpClient, algorithm: str
) -> None:
    expected = hashlib.new(algorithm, server.behaviour.body).hexdigest().upper()
    params = _params(server, digest=BodyDigest(algorithm, expected))  # type: ignore[arg-type]
    assert (await probe_http(params, client)).ok

    server.behaviour.body = b"maintenance\n"
    result = await probe_http(params, client)

    assert not result.ok
    assert result.reason == "http body digest mismatch"


async def test_regex_must_match(server: Server, client: HttpClient) -> None:
    params = _params(server, regex=BodyRegex(r"all\s+good"))
    assert (await probe_http(params, client)).ok

    server.behaviour.body = b"degraded"
    result = await probe_http(params, client)

    assert result.reason == "http regex not matched"


async def test_negated_regex_must_not_match(server: Server, client: HttpClient) -> None:
    params = _params(server, regex=BodyRegex("maintenance", negate=True))
    assert (await probe_http(params, client)).ok

    server.behaviour.body = b"down for maintenance"
    result = await probe_http(params, client)

    assert result.reason == "http regex matched"


async def test_a_body_over_the_bound_fails(server: Server, client: HttpClient) -> None:
    server.behaviour.body = b"x" * 300_000

    result = await probe_http(_params(server, regex=BodyRegex("x"), max_body_bytes=100_000), client)

    assert result.reason == "http body larger than 100000 bytes"


async def test_a_hanging_server_times_out_at_the_timeout(
    server: Server, client: HttpClient
) -> None:
    server.behaviour.hang = True
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await probe_http(
        HttpParams(address=server.address, port=server.port, timeout=0.3), client
    )

    elapsed = loop.time() - started
    assert result.reason == "timeout after 0.3 s"
    assert 0.3 <= elapsed < 0.3 + LATE_MARGIN
    assert server.behaviour.requests, "the request reached the server before it hung"


async def test_a_closed_port_is_refused(client: HttpClient) -> None:
    port = _closed_tcp_port()

    result = await probe_http(HttpParams(address="127.0.0.1", port=port, timeout=1.0), client)

    assert result.reason == "http connect refused"


async def test_ipv6_server() -> None:
    runner, served = await _serve("::1")
    http_client = HttpClient()
    try:
        result = await probe_http(_params(served), http_client)
    finally:
        await http_client.close()
        await runner.cleanup()

    assert result.ok, result.reason


def _closed_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# HTTPS


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def _self_signed(directory: Path, name: str) -> Certificate:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Certificate]]:
    directory = tmp_path_factory.mktemp("tls")
    yield {name: _self_signed(directory, name) for name in ("lvsha.test", "probe-client")}


async def _serve_tls(
    certificates: dict[str, Certificate], require_client_cert: bool = False
) -> tuple[web.AppRunner, Server]:
    server_cert = certificates["lvsha.test"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert.cert, server_cert.key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificates["probe-client"].cert)
    server_names: list[str | None] = []

    def record_server_name(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = record_server_name
    runner, served = await _serve("127.0.0.1", context)
    served.behaviour.server_names = server_names
    return runner, served


@pytest.fixture
async def tls_server(certificates: dict[str, Certificate]) -> AsyncIterator[Server]:
    runner, served = await _serve_tls(certificates)
    yield served
    await runner.cleanup()


async def test_https_unverified_succeeds_and_sni_reaches_the_server(
    tls_server: Server, client: HttpClient
) -> None:
    params = _params(tls_server, tls=TlsOptions(verify=False, server_name="sni.lvsha.test"))

    result = await probe_http(params, client)

    assert result.ok, result.reason
    assert tls_server.behaviour.server_names == ["sni.lvsha.test"]


async def test_https_verification_fails_on_a_self_signed_certificate(
    tls_server: Server, client: HttpClient
) -> None:
    result = await probe_http(_params(tls_server, tls=TlsOptions(server_name="lvsha.test")), client)

    assert not result.ok
    assert result.reason == "tls certificate verify failed: self-signed certificate"


async def test_https_verified_with_the_ca_file_and_the_virtual_host_as_sni(
    tls_server: Server, client: HttpClient, certificates: dict[str, Certificate]
) -> None:
    tls = TlsOptions(ca_file=str(certificates["lvsha.test"].cert))

    result = await probe_http(_params(tls_server, tls=tls, virtualhost="lvsha.test"), client)

    assert result.ok, result.reason
    assert tls_server.behaviour.server_names == ["lvsha.test"]
    assert tls_server.behaviour.requests[0].headers["Host"] == f"lvsha.test:{tls_server.port}"


async def test_https_name_mismatch_fails_verification(
    tls_server: Server, client: HttpClient, certificates: dict[str, Certificate]
) -> None:
    tls = TlsOptions(ca_file=str(certificates["lvsha.test"].cert), server_name="other.test")

    result = await probe_http(_params(tls_server, tls=tls), client)

    assert result.reason.startswith("tls certificate verify failed: Hostname mismatch")


async def test_https_client_certificate(
    certificates: dict[str, Certificate], client: HttpClient
) -> None:
    runner, served = await _serve_tls(certificates, require_client_cert=True)
    client_cert = certificates["probe-client"]
    try:
        with_cert = await probe_http(
            _params(served, tls=TlsOptions(verify=False, client_cert_file=str(client_cert.cert),
                                           client_key_file=str(client_cert.key))),
            client,
        )  # fmt: skip
        without_cert = await probe_http(_params(served, tls=TlsOptions(verify=False)), client)
    finally:
        await runner.cleanup()

    assert with_cert.ok, with_cert.reason
    assert not without_cert.ok
    # TLS 1.3 sends the client-certificate alert after the handshake: seen as a close.
    assert without_cert.reason == "http server closed the connection"


async def test_https_missing_ca_file_fails_setup(
    tls_server: Server, client: HttpClient, tmp_path: Path
) -> None:
    tls = TlsOptions(ca_file=str(tmp_path / "absent.pem"))

    result = await probe_http(_params(tls_server, tls=tls), client)

    assert result.reason == "tls setup failed: No such file or directory"


async def test_tls_to_a_plain_http_server_fails_the_handshake(
    server: Server, client: HttpClient
) -> None:
    result = await probe_http(_params(server, tls=TlsOptions(verify=False)), client)

    assert not result.ok
    assert result.reason == "tls handshake failed: wrong version number"
