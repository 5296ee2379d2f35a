"""Real servers for the check tests, run as processes inside lab hosts.

    python -m tests.netns.servers tcp   --address A --port P
    python -m tests.netns.servers http  --address A --port P --mode-file F [--cert C --key K]
    python -m tests.netns.servers udp   --address A --port P
    python -m tests.netns.servers smtp  --address A --port P

Each prints "ready" on stdout once its socket is bound and listening. The HTTP server reads its
mode file on every request, so a test switches its behaviour by rewriting the file (see
`set_mode`): "ok" answers 200 with `PAGE`, "503" answers 503, "changed" answers 200 with
`CHANGED_PAGE`, "hang" reads the request and never answers. The SMTP server greets with a
multi-line 220, answers HELO with 250 and QUIT with 221, and records each HELO name it hears in
its stdout after "ready".
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from lvsha.drill.lab import Host

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = b"lvsha check test page\n"
CHANGED_PAGE = b"lvsha check test page, edited by someone\n"
MODES = ("ok", "503", "changed", "hang")


def set_mode(mode_file: Path, mode: str) -> None:
    """Switch the HTTP server's behaviour from its next request on (atomic rename)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}, want one of {MODES}")
    staging = mode_file.with_name(mode_file.name + ".new")
    staging.write_text(mode)
    staging.rename(mode_file)


def start(host: Host, kind: str, *args: str) -> subprocess.Popen[bytes]:
    """Start a server of `kind` in `host` and return once it reports ready."""
    process = host.popen(
        sys.executable,
        "-m",
        "tests.netns.servers",
        kind,
        *args,
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError(f"{kind} server in {host.name} did not start: {line!r}")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a server started by `start`, by its PID, and reap it."""
    process.kill()
    process.wait(timeout=10)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def serve_tcp(address: str, port: int) -> None:
    """Accept connections and close them: all a TCP check needs."""
    listener = socket.socket(_family(address), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(128)
    _ready()
    while True:
        connection, _ = listener.accept()
        connection.close()


def serve_udp_echo(address: str, port: int) -> None:
    server = socket.socket(_family(address), socket.SOCK_DGRAM)
    server.bind((address, port))
    _ready()
    while True:
        datagram, sender = server.recvfrom(65535)
        server.sendto(datagram, sender)


def _smtp_session(connection: socket.socket) -> None:
    with connection, connection.makefile("rwb", buffering=0) as stream:
        stream.write(b"220-mx.lvsha.test ESMTP\r\n220 ready\r\n")
        for line in stream:
            if line.upper().startswith(b"HELO "):
                sys.stdout.write(f"HELO {line[5:].strip().decode(errors='replace')}\n")
                sys.stdout.flush()
                stream.write(b"250 mx.lvsha.test\r\n")
            elif line.upper().startswith(b"QUIT"):
                stream.write(b"221 bye\r\n")
                return
            else:
                stream.write(b"502 not here\r\n")


def serve_smtp(address: str, port: int) -> None:
    """Just enough SMTP for an SMTP check, a thread per connection."""
    listener = socket.socket(_family(address), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(128)
    _ready()
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=_smtp_session, args=(connection,), daemon=True).start()


class _ModalHandler(BaseHTTPRequestHandler):
    mode_file: ClassVar[Path]
    hung: ClassVar[threading.Event] = threading.Event()  # never set: what a hung request awaits

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        mode = self.mode_file.read_text().strip()
        if mode == "hang":
            self.hung.wait()
            return
        status, body = {"ok": (200, PAGE), "503": (503, b"busy\n"), "changed": (200, CHANGED_PAGE)}[
            mode
        ]
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout, refused certificate) is the test's business


def serve_http(address: str, port: int, mode_file: Path, cert: str | None, key: str | None) -> None:
    _ModalHandler.mode_file = mode_file
    _Server.address_family = _family(address)
    server = _Server((address, port), _ModalHandler)
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        # The handshake runs in each request's thread: a client refusing the certificate
        # must not stall the accept loop.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    _ready()
    server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=("tcp", "http", "udp", "smtp"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode-file", type=Path)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    if args.kind == "tcp":
        serve_tcp(args.address, args.port)
    elif args.kind == "udp":
        serve_udp_echo(args.address, args.port)
    elif args.kind == "smtp":
        serve_smtp(args.address, args.port)
    else:
        if args.mode_file is None:
            parser.error("http needs --mode-file")
        serve_http(args.address, args.port, args.mode_file, args.cert, args.key)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
