from __future__ import annotations

import asyncio
import contextlib
import enum
import grp
import ipaddress
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from lvsha.daemon.events import EventStream, EventStreamError, format_time

CLOCK_START = 1_735_732_800.0  # 2025-01-01T12:00:00Z


class FakeWallClock:
    def __init__(self) -> None:
        self.now = CLOCK_START

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


async def wait_until(condition: Callable[[], bool], deadline: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline
    while not condition():
        if loop.time() > give_up_at:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[EventStream]:
    events = EventStream(str(tmp_path / "ev.sock"), replay=5, clock=FakeWallClock())
    await events.start()
    try:
        yield events
    finally:
        await events.close()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, stream: EventStream) -> Client:
        """Connect and wait until the stream counts us, so later events are ours."""
        before = stream.clients
        reader, writer = await asyncio.open_unix_connection(stream.path)
        assert await wait_until(lambda: stream.clients == before + 1)
        return cls(reader, writer)

    async def event(self) -> dict[str, object]:
        line = await asyncio.wait_for(self.reader.readline(), 5.0)
        assert line.endswith(b"\n"), line
        decoded: dict[str, object] = json.loads(line)
        return decoded

    async def events(self, count: int) -> list[dict[str, object]]:
        return [await self.event() for _ in range(count)]

    async def seqs(self, count: int) -> list[object]:
        return [event["seq"] for event in await self.events(count)]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Role(enum.Enum):
    MASTER = "MASTER"


def test_time_format() -> None:
    assert format_time(CLOCK_START + 0.5) == "2025-01-01T12:00:00.500Z"


async def test_events_arrive_in_order_as_json_lines(stream: EventStream) -> None:
    client = await Client.connect(stream)
    assert stream.publish("vrrp_state", instance="VI_1", old="BACKUP", new=Role.MASTER) == 1
    stream.publish("check", address=ipaddress.ip_address("192.0.2.10"), up=False)
    stream.publish("reload", ok=True, changes=["VI_1"])
    assert await client.events(3) == [
        {
            "seq": 1,
            "time": "2025-01-01T12:00:00.250Z",
            "type": "vrrp_state",
            "instance": "VI_1",
            "old": "BACKUP",
            "new": "MASTER",
        },
        {
            "seq": 2,
            "time": "2025-01-01T12:00:00.500Z",
            "type": "check",
            "address": "192.0.2.10",
            "up": False,
        },
        {
            "seq": 3,
            "time": "2025-01-01T12:00:00.750Z",
            "type": "reload",
            "ok": True,
            "changes": ["VI_1"],
        },
    ]
    assert stream.seq == 3
    await client.close()


async def test_a_new_client_gets_the_last_events_then_the_live_ones(stream: EventStream) -> None:
    for number in range(8):
        stream.publish("tick", number=number)
    client = await Client.connect(stream)
    stream.publish("tick", number=8)
    assert await client.seqs(6) == [4, 5, 6, 7, 8, 9]
    await client.close()


async def test_two_clients_each_get_everything_after_they_connected(stream: EventStream) -> None:
    first = await Client.connect(stream)
    stream.publish("tick", number=0)
    second = await Client.connect(stream)
    for number in range(1, 20):
        stream.publish("tick", number=number)
    assert await first.seqs(20) == list(range(1, 21))
    # The second joined after event 1, which it has from the replay buffer.
    assert await second.seqs(20) == list(range(1, 21))
    await first.close()
    assert await wait_until(lambda: stream.clients == 1)
    stream.publish("tick", number=20)
    assert await second.seqs(1) == [21]
    await second.close()


async def test_a_slow_client_is_cut_off_without_slowing_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = EventStream(str(tmp_path / "ev.sock"), replay=5, client_buffer_limit=64 * 1024)
    await stream.start()
    try:
        slow = await Client.connect(stream)  # never reads
        fast = await Client.connect(stream)
        received: list[object] = []

        async def read_fast() -> None:
            while line := await fast.reader.readline():
                received.append(json.loads(line)["seq"])

        reader = asyncio.create_task(read_fast())
        padding = "x" * 200
        # The slow client's kernel buffers take a few hundred kB before our buffer grows.
        while stream.clients == 2 and stream.seq < 20_000:
            for _ in range(50):
                stream.publish("tick", padding=padding)
            assert await wait_until(lambda: received[-1:] == [stream.seq])
        assert stream.clients == 1, "the slow client was never cut off"
        last_seq = stream.seq
        for _ in range(50):
            stream.publish("tick", padding=padding)
        assert await wait_until(lambda: received[-1:] == [stream.seq])
        assert received == list(range(1, last_seq + 51))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].startswith("event client #1 (pid ")
        assert "disconnected: " in warnings[0]
        assert warnings[0].endswith(" bytes behind, more than the limit of 65536")
        # What the slow client did get is an unbroken prefix, then the end.
        slow_seqs = []
        with contextlib.suppress(ConnectionError):
            while line := await asyncio.wait_for(slow.reader.readline(), 5.0):
                slow_seqs.append(json.loads(line)["seq"])
        assert 0 < len(slow_seqs) < last_seq
        assert slow_seqs == list(range(1, len(slow_seqs) + 1))
        await fast.close()
        await reader
        await slow.close()
    finally:
        await stream.close()


async def test_close_ends_clients_and_removes_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "ev.sock"
    stream = EventStream(str(path))
    await stream.start()
    client = await Client.connect(stream)
    stream.publish("stopping")
    await asyncio.wait_for(stream.close(), 5.0)
    assert not path.exists()
    assert (await client.event())["type"] == "stopping"
    assert await asyncio.wait_for(client.reader.read(), 5.0) == b""
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(str(path))
    await client.close()


async def test_socket_mode_defaults_to_0660_and_can_be_set(tmp_path: Path) -> None:
    default = EventStream(str(tmp_path / "a.sock"))
    private = EventStream(str(tmp_path / "b.sock"), mode=0o600)
    await default.start()
    await private.start()
    try:
        assert stat.S_IMODE(os.stat(default.path).st_mode) == 0o660
        assert stat.S_IMODE(os.stat(private.path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(default.path).st_mode)
    finally:
        await default.close()
        await private.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another group")
async def test_socket_group_can_be_set(tmp_path: Path) -> None:
    stream = EventStream(str(tmp_path / "ev.sock"), group="daemon")
    await stream.start()
    try:
        assert os.stat(stream.path).st_gid == grp.getgrnam("daemon").gr_gid
    finally:
        await stream.close()


async def test_unknown_group_is_refused(tmp_path: Path) -> None:
    stream = EventStream(str(tmp_path / "ev.sock"), group="lvsha-no-such-group")
    with pytest.raises(EventStreamError, match="'lvsha-no-such-group' does not exist"):
        await stream.start()
    assert not (tmp_path / "ev.sock").exists()


async def test_a_stale_socket_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lvsha.daemon.events")
    path = tmp_path / "ev.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.close()  # what a killed process leaves behind
    stream = EventStream(str(path))
    await stream.start()
    try:
        client = await Client.connect(stream)
        stream.publish("hello")
        assert (await client.event())["seq"] == 1
        assert f"replacing stale event socket {path}" in caplog.text
        await client.close()
    finally:
        await stream.close()


async def test_a_live_socket_or_another_file_is_left_alone(
    stream: EventStream, tmp_path: Path
) -> None:
    rival = EventStream(stream.path)
    with pytest.raises(EventStreamError, match="in use by another running process"):
        await rival.start()
    client = await Client.connect(stream)
    stream.publish("still here")
    assert (await client.event())["type"] == "still here"
    await client.close()

    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(EventStreamError, match="exists and is not a socket"):
        await EventStream(str(regular)).start()
    assert regular.read_text() == "keep me"


async def test_close_leaves_a_newer_socket_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ev.sock"
    old = EventStream(str(path))
    await old.start()
    path.unlink()
    new = EventStream(str(path))
    await new.start()
    try:
        await old.close()
        assert path.exists()
        client = await Client.connect(new)
        await client.close()
    finally:
        await new.close()
    assert not path.exists()


async def test_reserved_field_names_are_refused(stream: EventStream) -> None:
    with pytest.raises(ValueError, match="may not be named"):
        stream.publish("oops", seq=7)
    assert stream.seq == 0


async def test_close_does_not_wait_forever_for_a_stuck_client(tmp_path: Path) -> None:
    stream = EventStream(str(tmp_path / "ev.sock"), close_grace=0.1)
    await stream.start()
    stuck = await Client.connect(stream)  # never reads
    for _ in range(3000):
        stream.publish("tick", padding="x" * 200)
    assert stream.clients == 1, "the client should be behind, not yet over the limit"
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    await asyncio.wait_for(stream.close(), 5.0)
    assert loop.time() - started_at < 2.0
    assert stream.clients == 0
    assert not (tmp_path / "ev.sock").exists()
    await stuck.close()
