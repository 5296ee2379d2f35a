"""A client of the daemon's control socket (lvsha.daemon.control), for the CLI.

Standard library only, and not even http.client (whose import of the email package costs more
than the request): `lvsha status` starts, asks and prints in well under the 150 ms an operator
notices (bench/status.py). It speaks the little of HTTP/1.1 the API needs: one request per
connection, answers with Content-Length, or chunked for a followed event stream.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

MAX_HEAD = 64 * 1024
"""Bytes of status line and headers an answer may have."""
MAX_BODY = 512 * 1024 * 1024
"""The largest answer read: the status of 10,000 real servers is a few MiB."""


class ControlError(Exception):
    """The daemon cannot be reached, or answered something that is not the API's."""


class _Answer:
    """One HTTP answer read from a connected socket."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self._sock = sock
        self._where = where
        self._buffer = b""
        self._eof = False
        head = self._read_until(b"\r\n\r\n", MAX_HEAD)
        lines = head.decode("iso-8859-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ControlError(f"{where}: not an HTTP answer: {lines[0][:100]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._sock.recv(65536)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _read_until(self, mark: bytes, limit: int) -> bytes:
        while (at := self._buffer.find(mark)) < 0:
            if len(self._buffer) > limit:
                raise ControlError(f"{self._where}: an answer line longer than {limit} bytes")
            if not self._fill():
                raise ControlError(f"{self._where}: the daemon closed the connection early")
        found, self._buffer = self._buffer[:at], self._buffer[at + len(mark) :]
        return found

    def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not self._fill():
                raise ControlError(f"{self._where}: the daemon closed the connection early")
        found, self._buffer = self._buffer[:count], self._buffer[count:]
        return found

    def chunks(self) -> Iterator[bytes]:
        """The body, as it arrives."""
        if not self.chunked:
            length = self.headers.get("content-length")
            if length is not None and length.isdigit():
                if int(length) > MAX_BODY:
                    raise ControlError(f"{self._where}: an answer of {length} bytes")
                yield self._read_exactly(int(length))
                return
            while self._fill():
                if len(self._buffer) > MAX_BODY:
                    raise ControlError(f"{self._where}: an answer over {MAX_BODY} bytes")
            yield self._buffer
            return
        while True:
            size_line = self._read_until(b"\r\n", 1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ControlError(f"{self._where}: a bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                return
            chunk = self._read_exactly(size)
            self._read_exactly(2)
            yield chunk

    def body(self) -> bytes:
        return b"".join(self.chunks())


def _exchange(
    socket_path: str, method: str, path: str, body: dict[str, Any] | None, timeout: float
) -> tuple[socket.socket, _Answer]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _connect(sock, socket_path, timeout)
        sock.settimeout(timeout)
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: lvsha\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        sock.sendall(head.encode() + b"\r\n" + data)
        return sock, _Answer(sock, socket_path)
    except FileNotFoundError:
        sock.close()
        raise ControlError(
            f"{socket_path} does not exist: is lvsha running, with this run directory (--run-dir)?"
        ) from None
    except ConnectionRefusedError:
        sock.close()
        raise ControlError(f"{socket_path}: nobody listens: is lvsha running?") from None
    except (TimeoutError, BlockingIOError):
        sock.close()
        raise ControlError(f"{socket_path}: no answer within {timeout:g} s") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"{socket_path}: {exc}") from None
    except ControlError:
        sock.close()
        raise


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    """Connect, waiting up to `timeout` for room in the daemon's listen queue: a Unix socket
    with a Python timeout is non-blocking, and its connect fails at once (EAGAIN) when the
    queue is full, where a blocking one waits, for as long as SO_SNDTIMEO allows."""
    seconds = int(timeout)
    micro = int((timeout - seconds) * 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micro))
    sock.setblocking(True)
    sock.connect(path)


def _json_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ControlError(f"{where}: the answer is not JSON: {raw[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{where}: the answer is not a JSON object")
    return answer


def request(
    socket_path: str, method: str, path: str, body: dict[str, Any] | None, timeout: float
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one request; raises ControlError."""
    sock, answer = _exchange(socket_path, method, path, body, timeout)
    try:
        raw = answer.body()
    except TimeoutError:
        raise ControlError(f"{socket_path}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"{socket_path}: {exc}") from None
    finally:
        sock.close()
    return answer.status, _json_object(raw, socket_path)


def stream_events(socket_path: str, path: str, timeout: float) -> Iterator[dict[str, Any]]:
    """The events of `GET /v1/events` (path with `?follow=1`: then every new one, as long as
    the daemon sends them); raises ControlError."""
    sock, answer = _exchange(socket_path, "GET", path, None, timeout)
    try:
        if answer.status != 200 or not answer.headers.get("content-type", "").startswith(
            "application/x-ndjson"
        ):
            value = _json_object(answer.body(), socket_path)
            if answer.status != 200:
                raise ControlError(f"HTTP {answer.status}: {value.get('error', value)}")
            yield from (e for e in value.get("events", []) if isinstance(e, dict))
            return
        sock.settimeout(None)  # following: events come when they come
        pending = b""
        for chunk in answer.chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise ControlError(
                        f"{socket_path}: an event is not JSON: {line[:200]!r}"
                    ) from None
                if isinstance(event, dict):
                    yield event
    except OSError as exc:
        raise ControlError(f"{socket_path}: {exc}") from None
    finally:
        sock.close()
