"""Following a director's event stream for the VRRP state it reports."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha.drill.events import EventFollower, EventStreamError


def event(seq: int, kind: str = "vrrp_state", **fields: object) -> bytes:
    record = {"seq": seq, "time": "2025-01-01T00:00:00.000Z", "type": kind, **fields}
    return json.dumps(record).encode() + b"\n"


class StreamServer:
    """The director's side: a listening unix socket whose clients the test writes to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.clients: list[socket.socket] = []

    def accept(self) -> socket.socket:
        self.listener.settimeout(5.0)
        client, _ = self.listener.accept()
        self.clients.append(client)
        return client

    def close(self, unlink: bool = True) -> None:
        for client in self.clients:
            client.close()
        self.listener.close()
        if unlink:
            self.path.unlink(missing_ok=True)


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "events.sock"


def test_no_stream_yet_means_no_state(path: Path) -> None:
    follower = EventFollower(path)
    assert follower.state() is None
    follower.close()


def test_a_stale_socket_of_a_killed_director_means_no_state(path: Path) -> None:
    StreamServer(path).close(unlink=False)
    assert path.exists()
    follower = EventFollower(path)
    assert follower.state() is None
    follower.close()


def test_the_replay_tells_the_state_and_later_events_change_it(path: Path) -> None:
    server = StreamServer(path)
    follower = EventFollower(path)
    try:
        assert follower.state() is None  # connected, nothing sent yet
        client = server.accept()
        client.sendall(
            event(1, instance="VI_LAB", old="INITIALIZE", new="BACKUP") + event(2, "other", new="X")
        )
        assert follower.state() == "BACKUP"
        master = event(3, instance="VI_LAB", old="BACKUP", new="MASTER")
        client.sendall(master[:10])
        assert follower.state() == "BACKUP"  # half a line is not an event yet
        client.sendall(master[10:])
        assert follower.state() == "MASTER"
    finally:
        follower.close()
        server.close()


def test_a_restarted_director_is_followed_again_from_its_replay(path: Path) -> None:
    first = StreamServer(path)
    follower = EventFollower(path)
    try:
        follower.state()
        first.accept().sendall(event(1, old="INITIALIZE", new="MASTER"))
        assert follower.state() == "MASTER"
        first.close()
        assert follower.state() is None  # the stream ended with the director
        second = StreamServer(path)
        try:
            assert follower.state() is None  # reconnected; the replay is not sent yet
            second.accept().sendall(event(1, old="INITIALIZE", new="BACKUP"))
            assert follower.state() == "BACKUP"
        finally:
            second.close()
    finally:
        follower.close()


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n"])
def test_a_line_that_is_not_an_event_is_an_error_naming_the_stream(path: Path, line: bytes) -> None:
    server = StreamServer(path)
    follower = EventFollower(path)
    try:
        follower.state()
        server.accept().sendall(line)
        with pytest.raises(EventStreamError, match=r"events\.sock"):
            follower.state()
    finally:
        follower.close()
        server.close()
