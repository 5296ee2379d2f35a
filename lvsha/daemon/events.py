"""The event stream: every event as one JSON line, in order, to whoever listens on a unix socket.

Ops tail it with `socat - UNIX-CONNECT:/run/lvsha/events.sock`. Each line carries a sequence
number `seq` (1, 2, 3, ... for the life of the stream, so a gap shows a lost connection), the
wall-clock `time` in UTC, the event's `type` and its fields, e.g.
`{"seq": 12, "time": "2025-01-01T12:00:00.000Z", "type": "vrrp_state", "instance": "VI_1", ...}`.

Publishing never blocks: a line is written into each client's transport buffer. A client whose
unsent backlog grows past `client_buffer_limit` is cut off at once, so one stuck reader never
slows the daemon or the other readers. A new client first gets the last `replay` events, so a
fresh `tail` shows context. Input from clients is read and ignored.

Any local user in the socket's group can connect, so the server is bounded: at most
`max_clients` connections hold a descriptor. When all places are taken, a newcomer takes the
place of the client with the most unread data among those connected for `evict_after` seconds
(a reader gets that long to take its replay); if none is behind, the newcomer is accepted and
closed at once. Either way the listen backlog never fills, and clients
that connect and never read cannot keep a reader out. When the process runs out of descriptors
or memory, accepting pauses for `accept_pause` seconds instead of spinning. Connections are
logged at debug level; refusals, cut-offs and accept errors as warnings at most once per
`log_interval`, with counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import enum
import fcntl
import grp
import json
import logging
import os
import socket
import struct
import termios
import time
from collections.abc import Callable

from lvsha.daemon.unixsock import SocketPathError, listen_unix, unlink_if_ours
from lvsha.ratelimit import DEFAULT_INTERVAL, RateLimitedLog

logger = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH = "/run/lvsha/events.sock"
REPLAY_EVENTS = 100
"""A screenful or two: enough to see what led up to now, small enough to read at a glance."""
CLIENT_BUFFER_LIMIT = 1 << 20
"""Bytes a client may fall behind (thousands of events) before it is cut off."""
MAX_CLIENTS = 64
"""Readers are people tailing the stream, the drill and a monitoring agent or two: a few, rarely
more than ten. 64 leaves room for them and bounds the cost: 64 descriptors of 1024
(LimitNOFILE), and at most 64 MiB of buffered events at the default `CLIENT_BUFFER_LIMIT`."""
LISTEN_BACKLOG = 128
"""Connections accept() has yet to take: they are taken (or refused) as fast as they come, so
this only absorbs a burst."""
ACCEPT_BATCH = 32
"""Accepts in a row before the rest of the event loop gets a turn."""
EVICT_AFTER = 1.0
"""Seconds a newcomer has to take its replay before a later newcomer may take its place."""
ACCEPT_PAUSE = 0.1
"""Seconds to rest after an accept failed for lack of descriptors or memory: long enough not to
spin, short enough that a client retrying a moment later gets in."""
LOG_INTERVAL = DEFAULT_INTERVAL
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


class _Client(asyncio.Protocol):
    """One reader of the stream, from connection until its descriptor is closed."""

    # Both set by connection_made, before the stream sees the client.
    transport: asyncio.Transport
    joined_at: float  # on the loop's clock

    def __init__(self, stream: EventStream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.joined_at = asyncio.get_running_loop().time()
        self.stream._join(self)

    def data_received(self, data: bytes) -> None:
        pass  # clients have nothing to say; reading keeps what they send from piling up

    def eof_received(self) -> bool:
        return False  # the client hung up: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream._leave(self)
        if not self.gone.done():
            self.gone.set_result(None)


def _unread(client: _Client) -> int:
    """Bytes sent to a client that it has not read: our buffer, and the socket's (SIOCOUTQ)."""
    transport = client.transport
    if transport.is_closing():
        return 0  # leaving already
    unread = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
        unread += struct.unpack("i", queued)[0]
    return unread


def _peer(connection: socket.socket) -> str:
    try:
        credentials = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    except OSError:
        return ""
    pid, uid, _gid = struct.unpack("3i", credentials)
    return f" (pid {pid}, uid {uid})"


def _report_accept_loop_end(task: asyncio.Task[None]) -> None:
    # Only a bug ends the accept loop before close(): say so now, not when the task is collected.
    if not task.cancelled() and task.exception() is not None:
        logger.error("event stream stopped accepting connections", exc_info=task.exception())


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
        max_clients: int = MAX_CLIENTS,
        evict_after: float = EVICT_AFTER,
        close_grace: float = 1.0,
        accept_pause: float = ACCEPT_PAUSE,
        log_interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`max_clients`: connections served at once. `evict_after`: seconds a client is
        connected before a newcomer may take its place, if it has not read all it was sent.
        `close_grace`: seconds clients get on close to take their last lines before they are
        cut off. `accept_pause`: seconds accepting rests after the process ran out of
        descriptors or memory. `log_interval`: seconds between two warnings of one kind.
        `clock`: the wall clock for the events' `time`."""
        if replay < 0:
            raise ValueError(f"replay must be >= 0, got {replay}")
        if client_buffer_limit < 1:
            raise ValueError(f"client_buffer_limit must be >= 1, got {client_buffer_limit}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        if not accept_pause > 0:
            raise ValueError(f"accept_pause must be > 0, got {accept_pause}")
        self.path = path
        self.mode = mode
        self.group = group
        self.client_buffer_limit = client_buffer_limit
        self.max_clients = max_clients
        self.evict_after = evict_after
        self.close_grace = close_grace
        self.accept_pause = accept_pause
        self._clock = clock
        self._seq = 0
        self._replay: collections.deque[bytes] = collections.deque(maxlen=replay)
        self._listeners: list[Callable[[bytes], None]] = []
        self._clients: set[_Client] = set()  # those that get events
        self._open: set[_Client] = set()  # those that hold a descriptor: receivers and leavers
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._socket_inode: int | None = None
        self._connections_total = 0
        self._refused_total = 0
        self._dropped_slow_total = 0
        self._accept_errors_total = 0
        self._evicted_total = 0
        self._refused_log = RateLimitedLog(logger, interval=log_interval)
        self._dropped_log = RateLimitedLog(logger, interval=log_interval)
        self._accept_error_log = RateLimitedLog(logger, interval=log_interval)
        self._evicted_log = RateLimitedLog(logger, interval=log_interval)

    @property
    def seq(self) -> int:
        """The sequence number of the last event published; 0 before the first."""
        return self._seq

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def connections_total(self) -> int:
        """Connections accepted since start, the refused ones included."""
        return self._connections_total

    @property
    def refused_total(self) -> int:
        """Connections closed as soon as accepted: `max_clients` were connected, and all of
        them had read everything sent to them."""
        return self._refused_total

    @property
    def evicted_total(self) -> int:
        """Clients cut off to make room for a newcomer: all places taken, and they had the
        most unread of those connected."""
        return self._evicted_total

    @property
    def dropped_slow_total(self) -> int:
        """Clients cut off because they fell more than `client_buffer_limit` bytes behind."""
        return self._dropped_slow_total

    @property
    def accept_errors_total(self) -> int:
        """Failed accepts (out of descriptors or memory, ...), each followed by a pause."""
        return self._accept_errors_total

    async def start(self) -> None:
        """Listen on `path`, replacing a stale socket left by a crashed run."""
        if self._listener is not None:
            raise RuntimeError("event stream already started")
        gid = self._group_id()
        try:
            listener = listen_unix(
                self.path, self.mode, gid, LISTEN_BACKLOG, what="event socket", log=logger
            )
        except SocketPathError as exc:
            raise EventStreamError(str(exc)) from None
        self._socket_inode = os.stat(self.path).st_ino
        self._listener = listener
        self._accepting = asyncio.get_running_loop().create_task(
            self._accept_forever(listener), name=f"accept {self.path}"
        )
        self._accepting.add_done_callback(_report_accept_loop_end)
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
        for listener in list(self._listeners):
            listener(line)
        return self._seq

    def recent(self) -> list[bytes]:
        """The last `replay` events, oldest first, each a JSON line."""
        return list(self._replay)

    def listen(self, listener: Callable[[bytes], None]) -> Callable[[], None]:
        """Call `listener` with each event's JSON line from now on (it must not block or
        raise); returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def close(self) -> None:
        """Stop listening, give clients a moment to take what was sent, remove the socket file."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.wait([self._accepting])
            self._accepting = None
        listener.close()
        self._unlink_own_socket()
        self._clients.clear()
        for client in list(self._open):
            client.transport.close()  # sends what is buffered, then closes
        if self._open:
            await asyncio.wait([client.gone for client in self._open], timeout=self.close_grace)
        for client in list(self._open):
            client.transport.abort()
        if self._open:
            await asyncio.wait([client.gone for client in self._open])
        for log in (
            self._refused_log,
            self._dropped_log,
            self._evicted_log,
            self._accept_error_log,
        ):
            log.flush()

    async def _accept_forever(self, listener: socket.socket) -> None:
        # Our own loop rather than asyncio's server: its accept errors go to the loop's
        # exception handler as tracebacks, and it cannot refuse a connection over a limit.
        loop = asyncio.get_running_loop()
        accepted_in_a_row = 0
        while True:
            if accepted_in_a_row == ACCEPT_BATCH:
                # sock_accept returns without yielding while the backlog is full: let the
                # rest of the loop run between batches under a flood of connections.
                accepted_in_a_row = 0
                await asyncio.sleep(0)
            try:
                connection, _address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as error:
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: the backlog stays readable, so retrying at
                # once would spin. Those waiting in the backlog get their turn after the pause.
                self._accept_errors_total += 1
                self._accept_error_log.log(
                    "event stream cannot accept a connection: %s; pausing %g s",
                    error.strerror or error,
                    self.accept_pause,
                )
                await asyncio.sleep(self.accept_pause)
                continue
            accepted_in_a_row += 1
            self._connections_total += 1
            if len(self._open) >= self.max_clients and not self._make_room():
                connection.close()
                self._refused_total += 1
                self._refused_log.log(
                    "event stream refused a connection: %d clients connected, the most allowed",
                    self.max_clients,
                )
                continue
            await self._serve(connection)

    async def _serve(self, connection: socket.socket) -> None:
        client = _Client(self, f"event client #{self._connections_total}{_peer(connection)}")
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: client, connection)
        except OSError as error:
            connection.close()
            self._accept_errors_total += 1
            self._accept_error_log.log(
                "event stream cannot serve a connection: %s", error.strerror or error
            )

    def _make_room(self) -> bool:
        """Cut off the client furthest behind, if any is behind at all: else clients that
        connect and never read would keep everyone else out for good."""
        settled_before = asyncio.get_running_loop().time() - self.evict_after
        candidates = [c for c in self._clients if c.joined_at <= settled_before]
        behind, stuck = max(
            ((_unread(c), c) for c in candidates), key=lambda pair: pair[0], default=(0, None)
        )
        if stuck is None or behind == 0:
            return False  # everyone is keeping up: the newcomer is the one refused
        self._evicted_total += 1
        self._evicted_log.log(
            "%s disconnected to make room: %d bytes unread with %d clients connected, the most"
            " allowed",
            stuck.name,
            behind,
            self.max_clients,
        )
        self._clients.discard(stuck)
        stuck.transport.abort()
        return True

    def _join(self, client: _Client) -> None:
        self._open.add(client)
        if self._listener is None:  # closing: too late to join
            client.transport.abort()
            return
        logger.debug("%s connected", client.name)
        # Replay and joining happen with no await in between: no event falls in a gap.
        self._clients.add(client)
        for line in self._replay:
            self._deliver(client, line)

    def _leave(self, client: _Client) -> None:
        self._clients.discard(client)
        self._open.discard(client)
        logger.debug("%s gone", client.name)

    def _deliver(self, client: _Client, line: bytes) -> None:
        transport = client.transport
        if transport.is_closing():
            self._clients.discard(client)
            return
        transport.write(line)
        backlog = transport.get_write_buffer_size()
        if backlog > self.client_buffer_limit:
            self._dropped_slow_total += 1
            self._dropped_log.log(
                "%s disconnected: %d bytes behind, more than the limit of %d",
                client.name,
                backlog,
                self.client_buffer_limit,
            )
            self._clients.discard(client)
            # Not close(): that waits for a reader who is not reading, and holds the descriptor.
            transport.abort()

    def _group_id(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise EventStreamError(
                f"event socket group {self.group!r} does not exist: create it or choose another"
            ) from None

    def _unlink_own_socket(self) -> None:
        unlink_if_ours(self.path, self._socket_inode)
        self._socket_inode = None
