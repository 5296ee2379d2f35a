"""Targets for the check benchmarks: many listening ports served by one process.

    python -m bench.check_servers --tcp-ports 20000-20099 --http-ports 30000-30009

Each port is bound on the wildcard address, so every address of the host answers on it: a host
with A addresses and P ports is A * P targets. TCP ports accept and close at once; HTTP ports read
a request head and answer "200 OK" with a short body, then close. The process prints "ready"
once every port listens, and on each SIGUSR1 prints "accepted N": connections accepted so far,
which counts the checks of a checker that reports none itself (keepalived).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    b"Connection: close\r\n\r\nok\n"
)
_HEAD_LIMIT = 16384


def port_range(text: str) -> range:
    """ "20000-20099" or "20000" as a range of ports; "" as none."""
    if not text:
        return range(0)
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def _listen(port: int, backlog: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(backlog)
    listener.setblocking(False)
    return listener


class TargetServer:
    """One epoll loop over every listener and every HTTP connection in progress."""

    def __init__(self, tcp_ports: range, http_ports: range, backlog: int = 4096):
        self.accepted = 0
        self._epoll = select.epoll()
        self._tcp: dict[int, socket.socket] = {}
        self._http: dict[int, socket.socket] = {}
        self._requests: dict[int, tuple[socket.socket, bytearray]] = {}
        for ports, listeners in ((tcp_ports, self._tcp), (http_ports, self._http)):
            for port in ports:
                listener = _listen(port, backlog)
                listeners[listener.fileno()] = listener
                self._epoll.register(listener.fileno(), select.EPOLLIN)

    def serve_forever(self) -> None:
        while True:
            for fd, _ in self._epoll.poll():
                if fd in self._tcp:
                    self._accept_and_close(self._tcp[fd])
                elif fd in self._http:
                    self._accept_request(self._http[fd])
                else:
                    self._read_request(fd)

    def _accept_and_close(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                return
            self.accepted += 1
            connection.close()

    def _accept_request(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                return
            self.accepted += 1
            connection.setblocking(False)
            self._requests[connection.fileno()] = (connection, bytearray())
            self._epoll.register(connection.fileno(), select.EPOLLIN)

    def _read_request(self, fd: int) -> None:
        connection, head = self._requests[fd]
        try:
            chunk = connection.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        head += chunk
        if chunk and b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
            return
        if chunk:
            # A reply this short fits any socket buffer: send() takes it whole.
            with contextlib.suppress(OSError):
                connection.send(_RESPONSE)
        self._epoll.unregister(fd)
        del self._requests[fd]
        connection.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve many ports as check targets.")
    parser.add_argument("--tcp-ports", default="", help="e.g. 20000-20099")
    parser.add_argument("--http-ports", default="", help="e.g. 30000-30009")
    args = parser.parse_args(argv)
    server = TargetServer(port_range(args.tcp_ports), port_range(args.http_ports))

    def report(signum: int, frame: FrameType | None) -> None:
        os.write(sys.stdout.fileno(), f"accepted {server.accepted}\n".encode())

    signal.signal(signal.SIGUSR1, report)
    os.write(sys.stdout.fileno(), b"ready\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
