"""The event stream: every event as one JSON line, in order, to whoever listens on a unix socket.

Ops tail it with `socat - UNIX-CONNECT:/run/lvsha/events.sock`. Each line carries a sequence
number `seq` (1, 2, 3, ... for the life of the stream, so a gap shows a lost connection), the
wall-clock `time` in UTC, the event's `type` and its fields, e.g.
`{"seq": 12, "time": "2025-01-01T12:00:00.000Z", "type": "vrrp_state", "instance": "VI_1", ...}`.

Publishing never blocks: a line is written into each client's transport buffer. A client whose
unsent backlog grows past `client_buffer_limit` is disconnected and logged, so one stuck reader
never slows the daemon or the other readers. A new client first gets the last `replay` events,
so a fresh `tail` shows context. Input from clients is read and ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import enum
import grp
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH = "/run/lvsha/events.sock"
REPLAY_EVENTS = 100
"""A screenful or two: enough to see what led up to now, small enough to read at a glance."""
CLIENT_BUFFER_LIMIT = 1 << 20
"""Bytes a client may fall behind (thousands of events) before it is cut off."""
_RESERVED_FIELDS = frozenset({"seq", "time", "type"})


class EventStreamError(Exception):
    """The socket cannot be set up; the message says why and what to do."""


def format_time(wall_clock: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2025-01-01T12:00:00.000Z."""
    moment = datetime.datetime.fromtimestamp(wall_clock, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_value(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)  # addresses, paths and the like read naturally as strings


class _Client:
    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.name = f"event client #{number}{_peer(writer)}"


def _peer(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    try:
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return ""
    pid, uid, _gid = struct.unpack("3i", credentials)
    return f" (pid {pid}, uid {uid})"


class EventStream:
    """The server side of the event socket."""

    def __init__(
        self,
        path: str = DEFAULT_SOCKET_PATH,
        *,
        mode: int = 0o660,
        group: str | None = None,
        replay: int = REPLAY_EVENTS,
        client_buffer_limit: int = CLIENT_BUFFER_LIMIT,
        close_grace: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`close_grace`: seconds clients get on close to take their last lines before they are
        cut off. `clock`: the wall clock for the events' `time`."""
        if replay < 0:
            raise ValueError(f"replay must be >= 0, got {replay}")
        if client_buffer_limit < 1:
            raise ValueError(f"client_buffer_limit must be >= 1, got {client_buffer_limit}")
        self.path = path
        self.mode = mode
        self.group = group
        self.client_buffer_limit = client_buffer_limit
        self.close_grace = close_grace
        self._clock = clock
        self._seq = 0
        self._replay: collections.deque[bytes] = collections.deque(maxlen=replay)
        self._clients: set[_Client] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._socket_inode: int | None = None

    @property
    def seq(self) -> int:
        """The sequence number of the last event published; 0 before the first."""
        return self._seq

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        """Listen on `path`, replacing a stale socket left by a crashed run."""
        if self._server is not None:
            raise RuntimeError("event stream already started")
        gid = self._group_id()
        self._remove_stale_socket()
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            # Set before listen(): until then nobody can connect through looser permissions.
            os.chmod(self.path, self.mode)
            if gid is not None:
                os.chown(self.path, -1, gid)
            self._socket_inode = os.stat(self.path).st_ino
            self._server = await asyncio.start_unix_server(self._serve, sock=listener)
        except BaseException:
            listener.close()
            self._unlink_own_socket()
            raise
        logger.info("event stream listening on %s", self.path)

    def publish(self, event_type: str, **fields: object) -> int:
        """Send one event to every client; returns its sequence number. Never waits."""
        reserved = _RESERVED_FIELDS & fields.keys()
        if reserved:
            raise ValueError(f"event fields may not be named {sorted(reserved)}")
        self._seq += 1
        record = {"seq": self._seq, "time": format_time(self._clock()), "type": event_type}
        record.update(fields)
        line = (json.dumps(record, default=_json_value) + "\n").encode()
        self._replay.append(line)
        for client in list(self._clients):
            self._deliver(client, line)
        return self._seq

    async def close(self) -> None:
        """Stop listening, give clients a moment to take what was sent, remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._unlink_own_socket()
        for client in self._clients:
            client.writer.close()
        if self._handlers:
            _done, lingering = await asyncio.wait(self._handlers, timeout=self.close_grace)
            for client in list(self._clients):
                client.writer.transport.abort()
            if lingering:
                await asyncio.wait(lingering)
        await server.wait_closed()

    def _deliver(self, client: _Client, line: bytes) -> None:
        transport = client.writer.transport
        if transport.is_closing():
            self._clients.discard(client)
            return
        transport.write(line)
        backlog = transport.get_write_buffer_size()
        if backlog > self.client_buffer_limit:
            logger.warning(
                "%s disconnected: %d bytes behind, more than the limit of %d",
                client.name,
                backlog,
                self.client_buffer_limit,
            )
            self._clients.discard(client)
            transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._connections += 1
        client = _Client(self._connections, writer)
        try:
            if self._server is None:
                return
            logger.info("%s connected", client.name)
            # Replay and joining happen with no await in between: no event falls in a gap.
            self._clients.add(client)
            for line in self._replay:
                self._deliver(client, line)
            with contextlib.suppress(ConnectionError):
                while await reader.read(4096):
                    pass
        finally:
            self._clients.discard(client)
            writer.close()
            self._handlers.discard(handler)
            logger.info("%s gone", client.name)

    def _group_id(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise EventStreamError(
                f"event socket group {self.group!r} does not exist: create it or choose another"
            ) from None

    def _remove_stale_socket(self) -> None:
        try:
            status = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(status.st_mode):
            raise EventStreamError(
                f"{self.path} exists and is not a socket: move it away or choose another path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            logger.info("replacing stale event socket %s", self.path)
            os.unlink(self.path)
            return
        except OSError as error:
            raise EventStreamError(f"cannot check {self.path}: {error}") from None
        finally:
            probe.close()
        raise EventStreamError(
            f"{self.path} is in use by another running process: stop it or choose another path"
        )

    def _unlink_own_socket(self) -> None:
        # Only our own socket: a newer process may have replaced it already.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._socket_inode:
                os.unlink(self.path)
        self._socket_inode = None
