"""The checker's events to the parent (`ChildEvent`, fields as lvsha.alerts.events lists them)
and its answer to the parent's `Ping`: a checker on the in-memory IPVS table, its TCP checks
against a listener the test opens and closes on loopback, and a fake channel that keeps what
the checker sends."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lvsha.checks.verdict import Health, RealServerId
from lvsha.config import load_text
from lvsha.daemon.channel import ParentChannel
from lvsha.daemon.checker_process import Checker, HeldUntilReady, follow_parent, read_parent
from lvsha.daemon.metrics import LoopLag
from lvsha.daemon.overrides import Mode, Override, Selector, encode
from lvsha.ipvs.syncd import MemorySyncDaemons
from lvsha.messages import (
    ChildEvent,
    ChildReady,
    Message,
    OverridesApplied,
    Ping,
    Pong,
    SetOverrides,
    StatusRequest,
)
from tests.unit.daemon.test_checker_status import CountingPort, closed_port

WEB_ID = "192.0.2.10:80/tcp"


class Listener:
    """A TCP listener on a fixed loopback port, opened and closed at will: the check target."""

    def __init__(self) -> None:
        self.port = closed_port()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @staticmethod
    async def _accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()


class Channel:
    """What the checker sends its parent, in order."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = []
        for message in self.sent:
            if isinstance(message, ChildEvent) and kind in (None, message.type):
                fields = json.loads(message.fields)
                assert isinstance(fields, dict)
                found.append({"type": message.type, **fields})
        return found


def check(port: int) -> str:
    return (
        f"{{type: tcp, address: 127.0.0.1, port: {port}, interval: 0.05, warmup: 0, "
        "timeout: 1, retries: 0}"
    )


def config_text(port: int) -> str:
    # web holds quorum (1) while its one real server is up; 10.0.0.2 has no checks.
    return (
        "virtual_servers:\n"
        "  - {name: web, address: 192.0.2.10, port: 80, protocol: TCP, forwarding: NAT,\n"
        f"     real_servers: [{{address: 10.0.0.1, weight: 3, checks: [{check(port)}]}}]}}\n"
        "  - {name: api, address: 192.0.2.10, port: 443, protocol: TCP, forwarding: NAT,\n"
        "     real_servers: [{address: 10.0.0.2}]}\n"
    )


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.table = CountingPort()
        self.daemons = MemorySyncDaemons({"eth0": 1500, "lo": 65536})
        self.maintenance = tmp_path / "maintenance"
        self.maintenance.mkdir()
        self.channel = Channel()
        self.listener = Listener()
        self.checkers: list[Checker] = []

    async def checker(self, text: str) -> Checker:
        checker = Checker(
            load_text(text), self.table, self.daemons, self.maintenance, send=self.channel.send
        )
        self.checkers.append(checker)
        await checker.start()
        return checker


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    setup = Setup(tmp_path)
    yield setup
    for checker in setup.checkers:
        await checker.stop()
    await setup.listener.close()


WEB_A = RealServerId(WEB_ID, "10.0.0.1", 80)


async def test_a_real_server_going_down_and_flapping_and_the_quorum_it_takes_along(
    setup: Setup,
) -> None:
    listener, channel = setup.listener, setup.channel
    await listener.open()
    checker = await setup.checker(config_text(listener.port))
    pool = checker.pool
    await wait_for(lambda: pool.check_reports(WEB_A)[0].last_result is not None, "a probe")
    assert channel.events() == []  # healthy at start, as guessed: no news

    await listener.close()
    await wait_for(lambda: len(channel.events("quorum")) == 1, "quorum lost")
    (down,) = channel.events("real_server")
    assert down == {
        "type": "real_server",
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "real_server": "10.0.0.1:80",
        "old": "healthy",
        "new": "unhealthy",
        "reason": "tcp connect refused",
        "check": f"tcp 127.0.0.1:{listener.port}",
    }
    assert channel.events("quorum") == [
        {
            "type": "quorum",
            "virtual_server": "web",
            "service": "TCP 192.0.2.10:80",
            "held": False,
            "live_weight": 0,
            "quorum": 1,
            "sorry_server": None,
        }
    ]

    # Back, and down again: each change is one event, and quorum follows.
    await listener.open()
    await wait_for(lambda: len(channel.events("quorum")) == 2, "quorum regained")
    await listener.close()
    await wait_for(lambda: len(channel.events("quorum")) == 3, "quorum lost again")
    assert [(e["old"], e["new"]) for e in channel.events("real_server")] == [
        ("healthy", "unhealthy"),
        ("unhealthy", "healthy"),
        ("healthy", "unhealthy"),
    ]
    assert [(e["held"], e["live_weight"]) for e in channel.events("quorum")] == [
        (False, 0),
        (True, 3),
        (False, 0),
    ]
    # The api service, without checks, never said anything.
    assert all(e["virtual_server"] == "web" for e in channel.events())


async def test_a_real_server_failing_at_start_is_reported_down(setup: Setup) -> None:
    # As keepalived reports DOWN for a server failing at start (alpha off: it started in
    # service, and its first round takes it out).
    checker = await setup.checker(config_text(setup.listener.port))
    await wait_for(lambda: checker.pool.verdicts()[WEB_A].health is Health.UNHEALTHY, "its fall")
    await wait_for(lambda: len(setup.channel.events("real_server")) == 1, "the event")
    (down,) = setup.channel.events("real_server")
    assert (down["old"], down["new"], down["reason"]) == (
        "healthy",
        "unhealthy",
        "tcp connect refused",
    )


async def test_an_operators_drain_is_an_event_with_the_operators_reason(setup: Setup) -> None:
    await setup.listener.open()
    checker = await setup.checker(config_text(setup.listener.port))
    pool = checker.pool
    await wait_for(lambda: pool.check_reports(WEB_A)[0].last_result is not None, "a probe")
    pool.disable(WEB_A, "disk swap")
    (drained,) = setup.channel.events("real_server")
    assert (drained["old"], drained["new"], drained["reason"], drained["check"]) == (
        "healthy",
        "disabled",
        "disk swap",
        None,
    )


def burst_config(count: int, port: int) -> str:
    # One check (the same target and timing) shared by every real server: one result
    # fans out to all of them at once.
    servers = ", ".join(
        f"{{address: 10.1.{n // 250}.{n % 250 + 1}, checks: [{check(port)}]}}" for n in range(count)
    )
    return (
        "virtual_servers:\n"
        "  - {name: big, address: 192.0.2.20, port: 80, protocol: TCP, forwarding: DR,\n"
        f"     real_servers: [{servers}]}}\n"
    )


async def test_a_burst_of_500_real_servers_failing_at_once_is_500_sends_without_a_stall(
    setup: Setup,
) -> None:
    listener = setup.listener
    await listener.open()
    checker = await setup.checker(burst_config(500, listener.port))
    assert checker.pool.distinct_checks == 1
    await wait_for(lambda: checker.pool.durations.by_type()["tcp"].count > 0, "a probe")
    lag = LoopLag(period=0.005)
    lag.start()
    try:
        began = time.monotonic()
        await listener.close()
        await wait_for(lambda: len(setup.channel.events("real_server")) == 500, "500 events")
        took = time.monotonic() - began
    finally:
        lag.stop()
    events = setup.channel.events()
    assert [e["type"] for e in events].count("real_server") == 500
    assert len({e["real_server"] for e in events if e["type"] == "real_server"}) == 500
    assert [e["type"] for e in events].count("quorum") == 1
    # Generous bounds for a slow machine; the work is a few milliseconds here.
    assert lag.lag.max < 0.5, f"the loop stalled {lag.lag.max:.3f} s"
    assert took < 5.0


async def test_a_ping_is_answered_at_once_even_behind_a_change_in_progress(
    setup: Setup,
) -> None:
    checker = await setup.checker(config_text(setup.listener.port))
    assert await checker.on_message(Ping(3)) == Pong(3)
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()
    gate = setup.table.operations_gate = asyncio.Event()
    follower = asyncio.create_task(follow_parent(checker, inbox, setup.channel.send))
    try:
        # Drain 10.0.0.2: its IPVS pass waits at the gate, and the answer with it.
        drain = Override(Mode.DRAIN, Selector("10.0.0.2"), "", "alice (uid 1000)", 1.0e9)
        body = encode([drain])
        inbox.put_nowait(SetOverrides(1, body))
        inbox.put_nowait(Ping(7))
        await wait_for(lambda: Pong(7) in setup.channel.sent, "the pong")
        assert not any(isinstance(m, OverridesApplied) for m in setup.channel.sent)
        gate.set()
        await wait_for(
            lambda: any(isinstance(m, OverridesApplied) for m in setup.channel.sent),
            "the overrides' answer",
        )
    finally:
        gate.set()
        inbox.put_nowait(None)
        await asyncio.wait_for(follower, 5.0)
    replies = [m for m in setup.channel.sent if isinstance(m, (Pong, OverridesApplied))]
    assert replies[0] == Pong(7)
    assert isinstance(replies[1], OverridesApplied) and replies[1].serial == 1


class ScriptedParent(ParentChannel):
    """A channel whose parent says `said` and then closes it; what the child sends is kept."""

    def __init__(self, said: list[Message]) -> None:
        super().__init__()
        self.said = said
        self.sent: list[Message] = []

    async def messages(self) -> AsyncIterator[Message]:
        for message in self.said:
            yield message

    def send(self, message: Message) -> None:
        self.sent.append(message)


async def test_the_reader_answers_pings_itself_and_queues_the_rest() -> None:
    channel = ScriptedParent([Ping(1), StatusRequest(2), Ping(3)])
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()
    await read_parent(channel, inbox)
    assert channel.sent == [Pong(1), Pong(3)]
    assert [inbox.get_nowait(), inbox.get_nowait()] == [StatusRequest(2), None]


def test_sends_are_held_until_the_parent_heard_child_ready() -> None:
    sent: list[Message] = []
    outbox = HeldUntilReady(sent.append)
    first, second = ChildEvent("real_server", "{}"), ChildEvent("quorum", "{}")
    outbox.send(first)
    assert sent == []
    sent.append(ChildReady())
    outbox.release()
    outbox.send(second)
    assert sent == [ChildReady(), first, second]
