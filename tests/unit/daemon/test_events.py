from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import gc
import grp
import ipaddress
import json
import logging
import os
import resource
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterator
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


# Bounds (issue 9, findings 3 and 13): any local user in the socket's group is a client, so
# the number of clients, what each may hold, accept failures and log lines are all bounded.


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds_baseline() -> int:
    gc.collect()  # sockets an earlier test left to the collector must not close mid-count
    return open_fds()


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every line written at INFO or above, from any logger (asyncio's included)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for a thousand client sockets in this process on top of the server's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() != 0:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def connect_raw(path: str) -> socket.socket:
    """A client that never reads. Non-blocking: a full backlog must not stall the server's loop."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + 5.0
    while True:
        try:
            client.connect(path)
            return client
        except BlockingIOError:  # the backlog is full: let the server take some
            if loop.time() > give_up_at:
                client.close()
                raise
            await asyncio.sleep(0.001)


async def test_clients_beyond_max_clients_are_closed_at_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lvsha.daemon.events")
    stream = EventStream(str(tmp_path / "ev.sock"), max_clients=2)
    await stream.start()
    try:
        first = await Client.connect(stream)
        second = await Client.connect(stream)
        stream.publish("tick")
        for _ in range(10):
            reader, writer = await asyncio.open_unix_connection(stream.path)
            # Closed with nothing sent: no replay, no descriptor held on the server.
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
            writer.close()
        assert stream.clients == 2
        assert (stream.connections_total, stream.refused_total) == (12, 10)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "event stream refused a connection: 2 clients connected, the most allowed"
        ]
        # Comings and goings are debug lines only.
        assert not [r for r in caplog.records if r.levelno == logging.INFO and "client" in r.msg]
        assert any(r.getMessage().endswith(" connected") for r in caplog.records)
        # A freed place is taken by the next one, who gets the replay as usual.
        await first.close()
        assert await wait_until(lambda: stream.clients == 1)
        third = await Client.connect(stream)
        assert await third.seqs(1) == [1]
        stream.publish("tick")
        assert await second.seqs(2) == [1, 2]
        assert await third.seqs(1) == [2]
        await second.close()
        await third.close()
    finally:
        await stream.close()
    # What was held back is reported on close, so no count is lost.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[1:] == [
        "event stream refused a connection: 2 clients connected, the most allowed"
        " (9 times since the last report)"
    ]


async def test_a_thousand_clients_that_never_read_hold_few_descriptors_and_starve_nobody(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, many_fds: None
) -> None:
    caplog.set_level(logging.INFO)
    stream = EventStream(str(tmp_path / "ev.sock"), client_buffer_limit=64 * 1024)
    await stream.start()
    idle: list[socket.socket] = []
    try:
        watcher = await Client.connect(stream)
        received: list[object] = []

        async def watch() -> None:
            while line := await watcher.reader.readline():
                received.append(json.loads(line)["seq"])

        watching = asyncio.create_task(watch())
        baseline = fds_baseline()
        for _ in range(1000):
            idle.append(await connect_raw(stream.path))
        assert await wait_until(lambda: stream.connections_total == 1001)
        assert stream.clients == stream.max_clients == 64
        assert stream.refused_total == 1000 - 63
        # The server holds one descriptor per client it serves, not one per connection.
        assert open_fds() - baseline - len(idle) <= 63

        # The watcher gets every event while the stuck clients fill up and are cut off.
        padding = "x" * 8192
        while stream.clients > 1 and stream.seq < 5000:
            for _ in range(20):
                stream.publish("tick", padding=padding)
            assert await wait_until(lambda: received[-1:] == [stream.seq])
        assert stream.clients == 1
        assert stream.dropped_slow_total == 63
        assert received == list(range(1, stream.seq + 1))
        # Cut off means closed: their descriptors are back though they never read.
        assert await wait_until(lambda: open_fds() <= baseline + len(idle))
        # And places are free again for someone who reads (and a small replay to start with).
        for _ in range(100):
            stream.publish("tick")
        newcomer = await Client.connect(stream)
        assert (await newcomer.events(100))[-1]["seq"] == stream.seq
        await newcomer.close()
        await watcher.close()
        await watching
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2, warnings  # one refusal, one cut-off; the rest are counted
    finally:
        for client in idle:
            client.close()
        await stream.close()
    assert len(log_lines(caplog)) < 10


async def test_twenty_thousand_connect_close_cycles_write_few_lines_and_leave_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stream = EventStream(str(tmp_path / "ev.sock"))
    await stream.start()
    try:
        for number in range(3):
            stream.publish("tick", number=number)  # each newcomer has a replay to be sent
        baseline = fds_baseline()
        caplog.clear()
        for _ in range(200):
            batch = [await connect_raw(stream.path) for _ in range(100)]
            for connection in batch:
                connection.close()
        assert await wait_until(lambda: stream.clients == 0 and open_fds() <= baseline, 30.0)
        assert len(log_lines(caplog)) < 100, log_lines(caplog)[:5]
        assert await wait_until(lambda: stream.connections_total == 20_000, 30.0)
        assert await wait_until(lambda: stream.clients == 0 and open_fds() <= baseline, 30.0)
        # The stream still works.
        client = await Client.connect(stream)
        assert await client.seqs(3) == [1, 2, 3]
        await client.close()
    finally:
        await stream.close()
    assert len(log_lines(caplog)) < 100, log_lines(caplog)[:5]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r.getMessage() for r in caplog.records if r.exc_info]
    assert "out of system resource" not in caplog.text


async def test_out_of_descriptors_pauses_accepting_without_a_traceback_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stream = EventStream(str(tmp_path / "ev.sock"))
    await stream.start()
    watcher = await Client.connect(stream)
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # connect needs no new fd
    waiting.setblocking(False)
    loop = asyncio.get_running_loop()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # No new descriptor at all for this process: accept() fails with EMFILE, as in the finding.
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))
    try:
        waiting.connect(stream.path)
        assert await wait_until(lambda: any(r.levelno >= logging.WARNING for r in caplog.records))
        started_at = loop.time()
        no_tracebacks(caplog)
        # Meanwhile those already connected are served as usual.
        stream.publish("tick")
        assert await watcher.seqs(1) == [1]
        # It retries after each pause, and does not spin.
        assert await wait_until(lambda: stream.accept_errors_total >= 4)
        elapsed = loop.time() - started_at
        assert stream.accept_errors_total <= elapsed / stream.accept_pause + 3
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        reader, writer = await asyncio.open_unix_connection(sock=waiting)
        assert json.loads(await asyncio.wait_for(reader.readline(), 5.0))["seq"] == 1
        assert stream.clients == 2
        writer.close()
        await watcher.close()
    finally:
        await stream.close()
    no_tracebacks(caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (
        "event stream cannot accept a connection: Too many open files; pausing 0.1 s"
    )
    assert len(warnings) == 2  # the first at once, the rest counted in one line on close
    assert warnings[1].endswith(f" ({stream.accept_errors_total - 1} times since the last report)")


@pytest.mark.parametrize(
    "code", [errno.ENFILE, errno.ENOBUFS, errno.ENOMEM], ids=["ENFILE", "ENOBUFS", "ENOMEM"]
)
async def test_other_accept_failures_pause_too(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    real_accept = loop.sock_accept
    failures = 3

    async def failing_accept(sock: socket.socket) -> tuple[socket.socket, object]:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(code, os.strerror(code))
        return await real_accept(sock)

    monkeypatch.setattr(loop, "sock_accept", failing_accept)
    stream = EventStream(str(tmp_path / "ev.sock"), accept_pause=0.01)
    await stream.start()
    try:
        client = await Client.connect(stream)  # waits through the three pauses
        stream.publish("tick")
        assert await client.seqs(1) == [1]
        assert stream.accept_errors_total == 3
        await client.close()
    finally:
        await stream.close()
    no_tracebacks(caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"event stream cannot accept a connection: {os.strerror(code)}; pausing 0.01 s",
        f"event stream cannot accept a connection: {os.strerror(code)}; pausing 0.01 s"
        " (2 times since the last report)",
    ]


async def test_a_client_too_slow_for_the_replay_is_cut_off_and_its_descriptor_freed(
    tmp_path: Path,
) -> None:
    stream = EventStream(str(tmp_path / "ev.sock"), replay=100, client_buffer_limit=16 * 1024)
    await stream.start()
    try:
        for _ in range(100):
            stream.publish("tick", padding="x" * 8192)  # 800 kB: more than the kernel buffers
        baseline = fds_baseline()
        stuck = await connect_raw(stream.path)  # never reads
        assert await wait_until(lambda: stream.dropped_slow_total == 1)
        assert stream.clients == 0
        # Its end is closed at once, though it never read and still holds its own end.
        assert await wait_until(lambda: open_fds() <= baseline + 1)
        stuck.setblocking(True)
        stuck.settimeout(5.0)
        with stuck.makefile("rb") as lines:
            seqs = [json.loads(line)["seq"] for line in lines if line.endswith(b"\n")]
        assert 0 < len(seqs) < 100
        assert seqs == list(range(1, len(seqs) + 1))
        stuck.close()
    finally:
        await stream.close()


async def test_max_clients_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_clients must be >= 1"):
        EventStream(str(tmp_path / "ev.sock"), max_clients=0)


def unread_then(connection: socket.socket) -> tuple[int, bool]:
    """What a non-blocking client has waiting, and whether the server has hung up on it."""
    received = 0
    while True:
        try:
            data = connection.recv(65536)
        except BlockingIOError:
            return received, False
        if not data:
            return received, True
        received += len(data)


async def test_a_newcomer_takes_the_place_of_a_client_that_does_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stream = EventStream(str(tmp_path / "ev.sock"), max_clients=2, evict_after=0.05)
    await stream.start()
    idle: list[socket.socket] = []
    try:
        stream.publish("tick")
        baseline = fds_baseline()
        idle = [await connect_raw(stream.path) for _ in range(2)]  # never read their replay
        assert await wait_until(lambda: stream.clients == 2)
        # Those that connect and never read must not keep a reader out: once they had their
        # time to read, the newcomer takes the place of one of them.
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + 5.0
        while True:
            reader, writer = await asyncio.open_unix_connection(stream.path)
            line = await asyncio.wait_for(reader.readline(), 5.0)
            if line or loop.time() > give_up_at:
                break
            writer.close()  # refused: the idle ones are still within evict_after
        assert json.loads(line)["seq"] == 1
        assert stream.evicted_total == 1
        assert stream.clients == 2
        evicted = [connection for connection in idle if unread_then(connection)[1]]
        assert len(evicted) == 1
        # The server holds two descriptors again, ours and the remaining idle client's (the
        # other three are client ends: two idle, one ours).
        assert await wait_until(lambda: open_fds() <= baseline + 2 + 3)
        stream.publish("tick")
        assert json.loads(await asyncio.wait_for(reader.readline(), 5.0))["seq"] == 2
        writer.close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if "to make room" in w]) == 1
    finally:
        for connection in idle:
            connection.close()
        await stream.close()


async def test_a_newcomer_cannot_take_the_place_of_a_client_still_taking_its_replay(
    tmp_path: Path,
) -> None:
    stream = EventStream(str(tmp_path / "ev.sock"), max_clients=1, evict_after=60.0)
    await stream.start()
    try:
        stream.publish("tick")
        early = await connect_raw(stream.path)  # has not read yet, but only just came
        assert await wait_until(lambda: stream.clients == 1)
        reader, writer = await asyncio.open_unix_connection(stream.path)
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        writer.close()
        assert (stream.refused_total, stream.evicted_total) == (1, 0)
        received, hung_up = unread_then(early)
        assert received > 0 and not hung_up  # its replay, and still connected
        early.close()
    finally:
        await stream.close()
