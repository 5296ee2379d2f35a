"""The VRRP process answers the parent's Ping with a Pong at once, from its event loop: before
the engine runs, while a reload is being applied, and never while the loop is wedged."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from lvsha.daemon.channel import ParentChannel
from lvsha.daemon.supervisor import CHANNEL_FD_ENV
from lvsha.daemon.vrrp_process import ParentReader, follow_parent
from lvsha.messages import (
    ApplyConfig,
    ConfigApplied,
    Message,
    Ping,
    Pong,
    decode,
    encode,
    for_vrrp,
)
from lvsha.vrrp.engine import VrrpEngine
from tests.unit.vrrp.engine_harness import (
    Channel,
    Harness,
    StaticLinks,
    config,
    instance,
    vip,
    wait_for,
)

DIGEST = hashlib.sha256(b"the file").hexdigest()


class LiveChannel:
    """The parent's side, message by message: `put` hands the process one, None ends it."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.answers: list[Message] = []

    def put(self, message: Message | None) -> None:
        self.inbox.put_nowait(message)

    async def messages(self) -> AsyncIterator[Message]:
        while (message := await self.inbox.get()) is not None:
            yield message

    def send(self, message: Message) -> None:
        self.answers.append(decode(encode(message)))


def applying(generation: int, priority: int) -> ApplyConfig:
    cfg = config({"VI_1": instance(1, vip(10), priority=priority)})
    return ApplyConfig.of(generation, DIGEST, for_vrrp(cfg))


async def test_each_ping_gets_its_pong_without_waiting_for_a_reload(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    channel = Channel([Ping(1), applying(2, 110), Ping(2), Ping(7)])
    await follow_parent(engine, channel, StaticLinks(engine, set()))
    assert channel.answers == [Pong(1), Pong(2), Pong(7), ConfigApplied(2, True)]


async def test_a_ping_is_answered_while_a_reload_is_applied(
    lab: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    release = asyncio.Event()
    apply = VrrpEngine.apply

    async def slow(self: VrrpEngine, new: object, links: object = None) -> object:
        await release.wait()
        return await apply(self, new, links)  # type: ignore[arg-type]

    monkeypatch.setattr(VrrpEngine, "apply", slow)
    channel = LiveChannel()
    following = asyncio.create_task(follow_parent(engine, channel, StaticLinks(engine, set())))
    channel.put(applying(2, 110))
    channel.put(Ping(5))
    await wait_for(lambda: channel.answers == [Pong(5)])
    release.set()
    await wait_for(lambda: channel.answers == [Pong(5), ConfigApplied(2, True)])
    channel.put(Ping(6))
    await wait_for(lambda: channel.answers[-1] == Pong(6))
    channel.put(None)
    await asyncio.wait_for(following, 3.0)
    assert engine.instances["VI_1"].runner.machine.params.priority == 110


async def test_pings_are_answered_before_the_engine_runs_and_configurations_wait(
    lab: Harness,
) -> None:
    channel = LiveChannel()
    reader = ParentReader(channel)
    reader.start()
    try:
        channel.put(applying(3, 120))
        channel.put(Ping(1))
        await wait_for(lambda: channel.answers == [Pong(1)])
        assert reader.pongs == 1
        engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
        following = asyncio.create_task(reader.follow(engine, StaticLinks(engine, set())))
        await wait_for(lambda: channel.answers == [Pong(1), ConfigApplied(3, True)])
        channel.put(None)
        await asyncio.wait_for(following, 3.0)
    finally:
        await reader.close()


@pytest.fixture
def parent_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The parent's end of a real channel; the child's end is in $LVSHA_CHANNEL_FD."""
    ours, theirs = socket.socketpair()
    monkeypatch.setenv(CHANNEL_FD_ENV, str(theirs.detach()))
    with ours:
        yield ours


def read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "the channel closed"
        line += chunk
    return line


async def test_a_wedged_loop_answers_nothing_until_it_runs_again(
    parent_socket: socket.socket,
) -> None:
    channel = ParentChannel()
    await channel.open()
    reader = ParentReader(channel)
    reader.start()
    try:
        parent_socket.sendall(encode(Ping(1)))
        answer = await asyncio.to_thread(read_line, parent_socket, 3.0)
        assert decode(answer) == Pong(1)

        parent_socket.sendall(encode(Ping(2)))
        time.sleep(0.3)  # the loop is stuck in this callback: nobody else can answer
        parent_socket.setblocking(False)
        with pytest.raises(BlockingIOError):
            parent_socket.recv(4096)
        answer = await asyncio.to_thread(read_line, parent_socket, 3.0)
        assert decode(answer) == Pong(2)
    finally:
        await reader.close()
        channel.close()
