"""The CLI's control client: waiting for a busy daemon, and answers it cannot use."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha import client


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A listener that accepts nothing, its queue full."""
    path = str(tmp_path / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    waiting = []
    for _ in range(4):  # the queue takes backlog + 1; the rest would fail at once (EAGAIN)
        queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        queued.setblocking(False)
        try:
            queued.connect(path)
        except BlockingIOError:
            queued.close()
            break
        waiting.append(queued)
    try:
        yield path, listener
    finally:
        for queued in waiting:
            queued.close()
        listener.close()


def test_a_full_listen_queue_is_waited_on_until_the_timeout(
    busy: tuple[str, socket.socket],
) -> None:
    path, _ = busy
    began = time.monotonic()
    with pytest.raises(client.ControlError, match=r"no answer within 0\.5 s"):
        client.request(path, "GET", "/v1/status", None, 0.5)
    assert time.monotonic() - began >= 0.45


def test_a_full_listen_queue_that_frees_up_gets_its_answer(
    busy: tuple[str, socket.socket],
) -> None:
    path, listener = busy

    def serve() -> None:
        time.sleep(0.3)  # the daemon is busy for a moment (a stand-in, not a test wait)
        for _ in range(8):
            connection, _ = listener.accept()
            connection.settimeout(1.0)  # the fixture's queued sockets send nothing
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    try:
                        chunk = connection.recv(4096)
                    except TimeoutError:
                        break
                    if not chunk:
                        break
                    data += chunk
                if b"GET /v1/status" in data:
                    body = b'{"ok": true}'
                    connection.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    return

    server = threading.Thread(target=serve)
    server.start()
    try:
        assert client.request(path, "GET", "/v1/status", None, 10.0) == (200, {"ok": True})
    finally:
        server.join(10)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{}", "closed the connection early"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", "not a JSON object"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnot", "the answer is not JSON"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a bad chunk size"),
    ],
)
def test_an_answer_that_is_not_the_apis_is_an_error_that_says_so(
    tmp_path: Path, reply: bytes, error: str
) -> None:
    path = str(tmp_path / "odd.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(reply)

    server = threading.Thread(target=serve)
    server.start()
    try:
        with pytest.raises(client.ControlError, match=error):
            client.request(path, "GET", "/v1/status", None, 5.0)
    finally:
        server.join(10)
        listener.close()


def test_no_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(client.ControlError, match="does not exist: is lvsha running"):
        client.request(str(tmp_path / "none.sock"), "GET", "/v1/status", None, 1.0)
