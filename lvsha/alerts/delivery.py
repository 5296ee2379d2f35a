"""One sink's delivery: a bounded queue and one sender task that paces, batches and retries.

`SinkRunner.offer` never waits: an event goes into the queue, or, when `queue_size` events
wait already, is dropped, counted (`dropped["queue_full"]`) and logged at most once a minute.
The sender task waits `gather` seconds after the first event of a burst and never starts a
message sooner than `min_interval` after the previous one; then it takes everything queued
as one message (the transport makes a digest of several). Each attempt is bounded by
`timeout`; a failed one is retried `retries` times, `Backoff` apart (1 s, 2 s, 4 s ... up to
a minute). Events keep queueing (bounded) meanwhile. When the last attempt fails, the
message's events are dropped, counted (`delivery_failed`) and logged.

A transport knows one protocol (SMTP, webhook, Alertmanager): `compose` turns events into
one sending, `due` says when it has something to send without new events (Alertmanager
re-sends firing alerts).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lvsha.alerts.events import Event
from lvsha.ratelimit import RateLimitedLog

log = logging.getLogger("lvsha.alerts")

ERROR_PAUSE = 1.0
"""Seconds a sink rests after a bug stopped it from composing a message."""

Send = Callable[[], Awaitable[None]]
"""One attempt at sending a composed message; raises on failure."""


class DeliveryError(Exception):
    """An attempt failed for a reason outside lvsha (the server refused, a file is missing);
    the message names the server or file and what went wrong."""


class Transport(Protocol):
    def compose(self, events: Sequence[Event], now: float) -> Send | None:
        """The sending of `events` (possibly none, when `due`), or None when there is nothing
        to send. `now` is the event loop's clock."""

    def due(self) -> float | None:
        """When (event loop clock) there is something to send without new events; None:
        nothing."""

    async def aclose(self) -> None:
        """Release connections; the transport is not used again."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between the attempts at one message: base, 2 x base, 4 x base ... up to cap."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, failed_attempts: int) -> float:
        return min(self.cap, self.base * 2.0 ** (failed_attempts - 1))


@dataclass(frozen=True, slots=True)
class Pacing:
    """A sink's delivery settings (lvsha.config.model.Sink and its min_interval)."""

    queue_size: int
    gather: float
    min_interval: float
    timeout: float
    retries: int


@dataclass(slots=True)
class SinkCounters:
    """What a sink did, kept by sink name across reloads."""

    events: int = 0
    """Events the sink's filter took (queued or dropped because the queue was full)."""
    delivered: int = 0
    """Events in messages that were sent (or that needed no message)."""
    sent: int = 0
    """Messages sent: mails, POSTs."""
    failures: int = 0
    """Failed attempts, retried or not."""
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    """Events dropped, by reason."""
    high_water: int = 0
    """The most events ever queued at once."""


def describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(exc) or type(exc).__name__


class SinkRunner:
    """The queue and sender task of one sink."""

    def __init__(
        self,
        name: str,
        pacing: Pacing,
        transport: Transport,
        counters: SinkCounters,
        *,
        backoff: Backoff,
    ) -> None:
        self.name = name
        self.pacing = pacing
        self.transport = transport
        self.counters = counters
        self.backoff = backoff
        self._queue: collections.deque[Event] = collections.deque()
        self._in_flight: list[Event] = []
        self._burst_start: float | None = None
        self._last_message: float | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._detached = False
        self._full_log = RateLimitedLog(log)
        self._failure_log = RateLimitedLog(log)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, event: Event) -> None:
        """Queue `event`, or drop and count it when the queue is full. Never waits."""
        counters = self.counters
        counters.events += 1
        if len(self._queue) >= self.pacing.queue_size:
            counters.dropped["queue_full"] += 1
            self._full_log.log(
                "alert sink %s: %d alerts wait already (queue_size); dropped a %s event",
                self.name,
                len(self._queue),
                event.type,
            )
            return
        if not self._queue:
            self._burst_start = self._clock()
        self._queue.append(event)
        counters.high_water = max(counters.high_water, len(self._queue))
        self._wake.set()

    def requeue(self, event: Event) -> None:
        """Queue an event a predecessor took (and counted) already, or drop it when full."""
        if len(self._queue) >= self.pacing.queue_size:
            self.counters.dropped["queue_full"] += 1
            return
        if not self._queue:
            self._burst_start = self._clock()
        self._queue.append(event)
        self.counters.high_water = max(self.counters.high_water, len(self._queue))
        self._wake.set()

    def poke(self) -> None:
        """Look at the transport's `due` again (it has something new to send)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"alert sink {self.name}"
            )
            self._task.add_done_callback(self._task_done)

    def detach(self) -> list[Event]:
        """Stop at once (a reload rebuilt or removed the sink): the events not sent yet, the
        one in flight included, for a successor to take. The transport is not closed."""
        self._detached = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        pending = [*self._in_flight, *self._queue]
        self._in_flight = []
        self._queue.clear()
        return pending

    def begin_close(self) -> None:
        """Send what is queued now (no gather, no min_interval, no more retries), then end."""
        self._closing.set()
        self._wake.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def abandon(self) -> int:
        """After a close that ran out of time: cancel, and count what was not sent as dropped
        (reason shutdown). Returns that count."""
        lost = self.detach()
        if lost:
            self.counters.dropped["shutdown"] += len(lost)
        self._full_log.flush()
        self._failure_log.flush()
        return len(lost)

    def _clock(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:  # offered before the loop runs: the burst starts when it does
            return float("-inf")

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "alert sink %s stopped by a bug: %r", self.name, task.exception(), exc_info=True
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not await self._wait_for_work():
                return
            if not self._closing.is_set():
                await self._pace()
                if self._detached:
                    return
            batch = list(self._queue)
            self._queue.clear()
            self._in_flight = batch
            self._burst_start = None
            try:
                send = self.transport.compose(batch, loop.time())
            except Exception:
                log.exception("alert sink %s: cannot compose a message (a bug)", self.name)
                self.counters.dropped["error"] += len(batch)
                self._in_flight = []
                self._last_message = loop.time()
                # a transport that says it is due again at once must not spin the loop
                await self._sleep_until(loop.time() + ERROR_PAUSE)
                continue
            if send is None:
                self.counters.delivered += len(batch)
            else:
                await self._deliver(send, batch)
            if self._detached:
                # Cancelled while an attempt ended (Python 3.11's asyncio.timeout may turn
                # that cancellation into a TimeoutError): `detach` took the events.
                return
            self._in_flight = []

    async def _wait_for_work(self) -> bool:
        """Until events wait or the transport is due; False when closing with nothing left."""
        loop = asyncio.get_running_loop()
        while not self._detached:
            self._wake.clear()
            if self._queue:
                return True
            if self._closing.is_set():
                return False
            due = self.transport.due()
            if due is not None and due <= loop.time():
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._wake.wait()
        return False

    async def _pace(self) -> None:
        """Wait for the rest of the burst (`gather`) and for `min_interval` since the last
        message; a close cuts the wait short."""
        pacing = self.pacing
        ready = float("-inf")
        if self._burst_start is not None and self._queue:
            ready = self._burst_start + pacing.gather
        if self._last_message is not None:
            ready = max(ready, self._last_message + pacing.min_interval)
        await self._sleep_until(ready)

    async def _sleep_until(self, when: float) -> None:
        if when <= asyncio.get_running_loop().time():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(when):
                await self._closing.wait()

    async def _deliver(self, send: Send, batch: list[Event]) -> None:
        loop = asyncio.get_running_loop()
        pacing = self.pacing
        counters = self.counters
        attempt = 0
        while True:
            attempt += 1
            self._last_message = loop.time()
            try:
                async with asyncio.timeout(pacing.timeout):
                    await send()
            except Exception as exc:
                if self._detached:
                    return
                counters.failures += 1
                if not isinstance(exc, DeliveryError | TimeoutError | OSError):
                    log.error("alert sink %s: attempt failed on a bug", self.name, exc_info=exc)
                error = describe(exc, pacing.timeout)
                if attempt <= pacing.retries and not self._closing.is_set():
                    delay = self.backoff.delay(attempt)
                    log.info(
                        "alert sink %s: attempt %d failed (%s); again in %g s",
                        self.name,
                        attempt,
                        error,
                        delay,
                    )
                    await self._sleep_until(loop.time() + delay)
                    if self._detached:
                        return
                    continue
                counters.dropped["delivery_failed"] += len(batch)
                self._failure_log.log(
                    "alert sink %s: %d alerts not delivered after %d attempts, dropped: %s",
                    self.name,
                    len(batch),
                    attempt,
                    error,
                )
                return
            if self._detached:
                return
            counters.sent += 1
            counters.delivered += len(batch)
            return
