"""TCP connect probes by callback: no task, coroutine, future or timer handle per probe.

`TcpConnector` runs many connects at once on one event loop. Each connect is a non-blocking
socket registered in the connector's own epoll set, which the loop watches as one readable fd;
a writable socket has finished its handshake either way (SO_ERROR says which). Timeouts come
from a `DeadlineSweep` and one timer for all of them. Results go to a plain callback, always
from the event loop, never from inside `connect` itself.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lvsha.checks.result import ProbeResult

ProbeCallback = Callable[[ProbeResult], None]
T = TypeVar("T")

_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "tcp connect refused",
    errno.EHOSTUNREACH: "tcp no route to host",
    errno.ENETUNREACH: "tcp network unreachable",
    errno.ECONNRESET: "tcp connect reset",
    errno.ETIMEDOUT: "tcp connect timed out in the kernel",
}
_CONNECT_OK = "tcp connect ok"
_SWEEP_GRANULARITY = 0.01
"""Seconds a timeout may be reported late, so that mass timeouts expire in batches."""
_EPOLL_BATCH = 512
"""Connects settled per turn of the event loop, so that timers and other probes get turns too.
Not much fewer: a turn also starts every probe that fell due, and at 10,000 checks/s a batch of
64 let finished connects queue up for a second, which pushed every check off its schedule."""


def connect_error_reason(error: OSError) -> str:
    """The probe reason for a failed connect()."""
    return errno_reason(error.errno or 0, error.strerror or str(error))


def errno_reason(code: int, strerror: str | None = None) -> str:
    known = _CONNECT_ERRORS.get(code)
    if known is not None:
        return known
    return f"tcp connect failed: {strerror or os.strerror(code)}"


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """Everything a connect needs, worked out once per check rather than once per probe."""

    family: int
    sockaddr: tuple[str, int]
    source: tuple[str, int] | None
    timeout: float
    problem: str | None = None
    """Why no connect can be attempted (the address is not an IP address); None if it can."""

    @property
    def timeout_reason(self) -> str:
        return f"tcp connect timeout after {float(self.timeout)} s"

    @classmethod
    def parse(
        cls, address: str, port: int, timeout: float, source: str | None = None
    ) -> TcpEndpoint:
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            problem = f"tcp address is not an IP address: {address!r}"
            return cls(socket.AF_INET, (address, port), None, timeout, problem)
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        return cls(family, (address, port), None if source is None else (source, 0), timeout)


class DeadlineSweep(Generic[T]):
    """When started items time out, with one FIFO per distinct timeout. Pure: time comes in.

    Items with the same timeout expire in the order they started, so each FIFO stays sorted by
    deadline and adding or expiring an item costs O(1), with no heap and no timer per item.
    Items that settled before their deadline stay queued until then (or until they reach the
    head) and are skipped: `pending(item, deadline)` says whether `item` still waits for that
    deadline. Items are small keys (an int), not the probes: queued entries then hold nothing
    the cyclic garbage collector has to walk, and a settled probe is freed at once.
    """

    def __init__(self, pending: Callable[[T, float], bool]):
        self._pending = pending
        self._queues: dict[float, deque[tuple[float, T]]] = {}

    def __len__(self) -> int:
        """Items queued, settled ones included."""
        return sum(len(queue) for queue in self._queues.values())

    def add(self, item: T, now: float, timeout: float) -> float:
        """Queue `item`, started at `now`; returns its deadline."""
        deadline = now + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        elif queue and deadline < queue[-1][0]:
            raise ValueError(f"time went backwards: {item!r} started at {now}")
        queue.append((deadline, item))
        return deadline

    def expire(self, now: float) -> list[T]:
        """The pending items whose deadline is `now` or earlier, in deadline order per timeout."""
        expired: list[T] = []
        pending = self._pending
        for queue in self._queues.values():
            while queue and queue[0][0] <= now:
                deadline, item = queue.popleft()
                if pending(item, deadline):
                    expired.append(item)
        self._drop_settled_heads()
        return expired

    def next_deadline(self) -> float | None:
        """The earliest deadline of a pending item; None if there is none."""
        self._drop_settled_heads()
        return min((queue[0][0] for queue in self._queues.values()), default=None)

    def clear(self) -> None:
        self._queues.clear()

    def _drop_settled_heads(self) -> None:
        pending = self._pending
        for timeout, queue in list(self._queues.items()):
            while queue and not pending(queue[0][1], queue[0][0]):
                queue.popleft()
            if not queue:
                del self._queues[timeout]


class DeadlineTimer(Generic[T]):
    """A `DeadlineSweep` on an event loop: one timer for every item, re-armed only when the
    earliest pending deadline moves earlier. `on_expired(items, now)` gets each batch."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pending: Callable[[T, float], bool],
        on_expired: Callable[[list[T], float], None],
    ):
        self._loop = loop
        self._sweep: DeadlineSweep[T] = DeadlineSweep(pending)
        self._on_expired = on_expired
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._sweep)

    def add(self, item: T, now: float, timeout: float) -> float:
        """Queue `item`, started at `now`; returns its deadline."""
        deadline = self._sweep.add(item, now, timeout)
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return deadline

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sweep.clear()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        expired = self._sweep.expire(now)
        following = self._sweep.next_deadline()
        if following is not None:
            self._arm(max(following, now + _SWEEP_GRANULARITY))
        if expired:
            self._on_expired(expired, now)


class TcpAttempt:
    """One connect; `cancel()` closes its socket and drops its callback."""

    __slots__ = ("_connector", "deadline", "endpoint", "on_done", "sock", "started_at")

    def __init__(
        self,
        connector: TcpConnector,
        endpoint: TcpEndpoint,
        on_done: ProbeCallback,
        started_at: float,
    ):
        self._connector = connector
        self.endpoint = endpoint
        self.on_done: ProbeCallback | None = on_done
        """None once settled or cancelled."""
        self.sock: socket.socket | None = None
        """While connecting: registered in the connector's epoll set under its fd."""
        self.started_at = started_at
        self.deadline = math.inf

    def cancel(self) -> None:
        if self.on_done is not None:
            self.on_done = None
            self._connector._forget(self)


class TcpConnector:
    """Connects to TCP endpoints for the probes of one event loop; `close()` when done."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._epoll = select.epoll()
        self._connecting: dict[int, TcpAttempt] = {}
        """By socket fd: the attempts whose socket is in the epoll set."""
        self._deadlines: DeadlineTimer[int] = DeadlineTimer(
            loop, self._still_connecting, self._time_out
        )
        self._closed = False
        loop.add_reader(self._epoll.fileno(), self._on_ready)

    @property
    def in_flight(self) -> int:
        """Attempts with an open socket."""
        return len(self._connecting)

    def connect(self, endpoint: TcpEndpoint, on_done: ProbeCallback) -> TcpAttempt:
        """Start connecting; `on_done` gets the result later (never before this returns).

        Raises OSError only when no socket can be had (e.g. out of file descriptors).
        """
        if self._closed:
            raise RuntimeError("the TCP connector is closed")
        loop = self._loop
        attempt = TcpAttempt(self, endpoint, on_done, loop.time())
        if endpoint.problem is not None:
            loop.call_soon(self._settle_soon, attempt, False, endpoint.problem)
            return attempt
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            code, reason = self._start_connect(sock, endpoint)
            if code == errno.EINPROGRESS:
                fd = sock.fileno()
                self._epoll.register(fd, select.EPOLLOUT)
        except BaseException:
            sock.close()
            raise
        if code == errno.EINPROGRESS:
            self._connecting[fd] = attempt
            attempt.sock = sock
            attempt.deadline = self._deadlines.add(fd, attempt.started_at, endpoint.timeout)
            return attempt
        sock.close()
        loop.call_soon(self._settle_soon, attempt, code == 0, reason)
        return attempt

    @staticmethod
    def _start_connect(sock: socket.socket, endpoint: TcpEndpoint) -> tuple[int, str]:
        """connect()'s errno (EINPROGRESS: under way) and the reason of its result so far."""
        if endpoint.source is not None:
            try:
                sock.bind(endpoint.source)
            except OSError as error:
                source = endpoint.source[0]
                return -1, f"tcp bind to {source} failed: {error.strerror or error}"
        try:
            code = sock.connect_ex(endpoint.sockaddr)
        except OSError as error:  # an address connect() cannot take, e.g. a bad IPv6 scope
            return error.errno or -1, connect_error_reason(error)
        if code == 0:
            return code, _CONNECT_OK
        return code, "" if code == errno.EINPROGRESS else errno_reason(code)

    def close(self) -> None:
        """Cancel every attempt in flight (no callbacks) and stop watching."""
        if self._closed:
            return
        self._closed = True
        self._deadlines.close()
        for attempt in list(self._connecting.values()):
            attempt.cancel()
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def _still_connecting(self, fd: int, deadline: float) -> bool:
        # The fd may be another attempt's by now; then its deadline differs (or is the same
        # instant, when timing out either is right).
        attempt = self._connecting.get(fd)
        return attempt is not None and attempt.deadline == deadline

    def _forget(self, attempt: TcpAttempt) -> None:
        sock = attempt.sock
        if sock is not None:
            attempt.sock = None
            # close() takes the socket out of the epoll set too: it holds no other reference.
            del self._connecting[sock.fileno()]
            sock.close()

    def _settle_soon(self, attempt: TcpAttempt, ok: bool, reason: str) -> None:
        on_done = attempt.on_done
        if on_done is not None:
            attempt.on_done = None
            on_done(ProbeResult(ok, reason, self._loop.time() - attempt.started_at))

    def _on_ready(self) -> None:
        ready = self._epoll.poll(0, _EPOLL_BATCH)
        if not ready:
            return
        now = self._loop.time()
        connecting = self._connecting
        verdicts: list[tuple[ProbeCallback, ProbeResult]] = []
        # Every socket is closed before any callback runs: a callback that starts a connect may
        # get a just-freed fd number, which a later entry of this batch must not be taken for.
        for fd, _ in ready:
            attempt = connecting.pop(fd)
            sock = attempt.sock
            on_done = attempt.on_done
            assert sock is not None and on_done is not None
            attempt.sock = attempt.on_done = None
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sock.close()
            reason = _CONNECT_OK if code == 0 else errno_reason(code)
            verdicts.append((on_done, ProbeResult(code == 0, reason, now - attempt.started_at)))
        for on_done, result in verdicts:
            on_done(result)

    def _time_out(self, fds: list[int], now: float) -> None:
        verdicts: list[tuple[ProbeCallback, ProbeResult]] = []
        for fd in fds:
            attempt = self._connecting.get(fd)
            if attempt is None or attempt.on_done is None:
                continue  # a stale entry of the same instant, for an fd timed out just now
            on_done = attempt.on_done
            attempt.cancel()
            reason = attempt.endpoint.timeout_reason
            verdicts.append((on_done, ProbeResult(False, reason, now - attempt.started_at)))
        for on_done, result in verdicts:
            on_done(result)
