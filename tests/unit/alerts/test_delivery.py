"""A sink's queue and sender task with a transport that records: gather, min_interval,
retries with backoff, the queue bound while a delivery retries, and close."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from lvsha.alerts.delivery import (
    Backoff,
    DeliveryError,
    Pacing,
    Send,
    SinkCounters,
    SinkRunner,
)
from lvsha.alerts.events import Event, Severity
from tests.unit.alerts.servers import wait_until


class Recorder:
    """Sends by appending (loop time, events); fails the first `failures` attempts, and
    hangs while `hang` is set."""

    def __init__(self, failures: int = 0) -> None:
        self.messages: list[tuple[float, list[str]]] = []
        self.attempts: list[float] = []
        self.failures = failures
        self.hang = False

    def compose(self, events: Sequence[Event], now: float) -> Send | None:
        if not events:
            return None
        names = [str(event.fields["n"]) for event in events]

        async def send() -> None:
            loop = asyncio.get_running_loop()
            self.attempts.append(loop.time())
            if self.hang:
                await asyncio.Event().wait()
            if self.failures:
                self.failures -= 1
                raise DeliveryError("refused by the test")
            self.messages.append((loop.time(), names))

        return send

    def due(self) -> float | None:
        return None

    async def aclose(self) -> None:
        return None


FAST = Backoff(0.05, 0.2)


async def finish(sink: SinkRunner) -> None:
    """Close `sink` and wait for its task to end."""
    sink.begin_close()
    if sink.task is not None:
        await asyncio.wait_for(sink.task, 2)


def event(n: int) -> Event:
    return Event("real_server", {"n": n}, 0.0, Severity.WARNING)


def runner(
    recorder: Recorder,
    *,
    queue_size: int = 100,
    gather: float = 0.0,
    min_interval: float = 0.0,
    timeout: float = 1.0,
    retries: int = 0,
    backoff: Backoff = FAST,
) -> SinkRunner:
    pacing = Pacing(queue_size, gather, min_interval, timeout, retries)
    return SinkRunner("test", pacing, recorder, SinkCounters(), backoff=backoff)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [Backoff().delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_gather_makes_a_burst_one_message() -> None:
    recorder = Recorder()
    sink = runner(recorder, gather=0.15)
    sink.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(3):
        sink.offer(event(n))
        await asyncio.sleep(0.03)
    await wait_until(lambda: len(recorder.messages) == 1)
    sent_at, names = recorder.messages[0]
    assert names == ["0", "1", "2"]
    assert 0.15 <= sent_at - began < 0.3
    await finish(sink)


async def test_never_two_messages_within_min_interval() -> None:
    recorder = Recorder()
    sink = runner(recorder, min_interval=0.2)
    sink.start()
    for n in range(8):
        sink.offer(event(n))
        await asyncio.sleep(0.05)
    await wait_until(lambda: sum(len(names) for _, names in recorder.messages) == 8)
    times = [sent_at for sent_at, _ in recorder.messages]
    assert len(times) <= 3  # 0.4 s of events: at 0, 0.2, 0.4
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))
    assert recorder.messages[0][1] == ["0"]  # the first one goes at once
    await finish(sink)


async def test_retries_back_off_and_new_events_queue_meanwhile_within_the_bound() -> None:
    recorder = Recorder(failures=2)
    sink = runner(recorder, retries=3, queue_size=4)
    sink.start()
    sink.offer(event(0))
    await wait_until(lambda: len(recorder.attempts) == 1)
    for n in range(1, 10):  # while the first message is retried
        sink.offer(event(n))
    await wait_until(lambda: len(recorder.messages) == 2)
    first, second, third = recorder.attempts[:3]
    assert 0.05 <= second - first < 0.15  # backoff 0.05 s
    assert 0.1 <= third - second < 0.2  # then 0.1 s
    assert [names for _, names in recorder.messages] == [["0"], ["1", "2", "3", "4"]]
    counters = sink.counters
    assert (counters.failures, counters.sent, counters.delivered) == (2, 2, 5)
    assert counters.dropped["queue_full"] == 5
    assert counters.high_water == 4
    await finish(sink)


async def test_the_last_failure_drops_the_message_and_the_sink_goes_on() -> None:
    recorder = Recorder(failures=2)
    sink = runner(recorder, retries=1)
    sink.start()
    sink.offer(event(0))
    sink.offer(event(1))
    await wait_until(lambda: sink.counters.dropped["delivery_failed"] == 2)
    sink.offer(event(2))
    await wait_until(lambda: len(recorder.messages) == 1)
    assert recorder.messages[0][1] == ["2"]
    assert sink.counters.failures == 2
    await finish(sink)


async def test_an_attempt_is_bounded_by_the_timeout() -> None:
    recorder = Recorder()
    recorder.hang = True
    sink = runner(recorder, timeout=0.1, retries=1)
    sink.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    sink.offer(event(0))
    await wait_until(lambda: sink.counters.dropped["delivery_failed"] == 1)
    assert 0.25 <= loop.time() - began < 0.5  # 0.1 + 0.05 + 0.1, and a little
    assert len(recorder.attempts) == 2
    await finish(sink)


async def test_close_sends_what_waits_at_once_and_ends() -> None:
    recorder = Recorder()
    sink = runner(recorder, gather=30, min_interval=30)
    sink.start()
    sink.offer(event(0))
    sink.offer(event(1))
    sink.begin_close()
    task = sink.task
    assert task is not None
    await asyncio.wait_for(task, 1)
    assert [names for _, names in recorder.messages] == [["0", "1"]]


async def test_abandon_counts_what_was_not_sent() -> None:
    recorder = Recorder()
    recorder.hang = True
    sink = runner(recorder, timeout=60)
    sink.start()
    sink.offer(event(0))
    await wait_until(lambda: len(recorder.attempts) == 1)
    sink.offer(event(1))
    assert sink.abandon() == 2
    assert sink.counters.dropped["shutdown"] == 2
    assert sink.queued == 0
