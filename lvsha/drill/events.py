"""A director's own word on its VRRP state, read from lvsha's event stream (`events.sock`).

A backup is silent on the wire, so the client cannot tell a backup that is listening from one
whose VRRP process is still starting; the director itself can. The stream replays its recent
events to every new client, so connecting and reading tells the current state, and reading on
tells every change. Reads are polled, never waited on, so no thread is needed.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

STATE_EVENT = "vrrp_state"


class EventStreamError(RuntimeError):
    """The stream carried a line that is not a JSON event: the director's bug, named here."""


class EventFollower:
    """The state a director last reported on the event stream at `path`.

    Connects on first use, and again after the director closed the stream (it was restarted):
    the replay on connecting brings the state up to date.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream: socket.socket | None = None
        self._pending = b""
        self._state: str | None = None

    def state(self) -> str | None:
        """The `new` state of the last vrrp_state event heard; None while not connected."""
        if self._stream is None:
            self._connect()
        if self._stream is not None:
            self._read_available()
        return self._state

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = None
        self._pending = b""
        self._state = None

    def _connect(self) -> None:
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stream.connect(str(self.path))
        except OSError:
            # Not there yet, or left behind by a killed director (connection refused).
            stream.close()
            return
        stream.setblocking(False)
        self._stream = stream

    def _read_available(self) -> None:
        assert self._stream is not None
        while True:
            try:
                data = self._stream.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            if not data:
                self.close()
                return
            self._pending += data
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                self._take(line)

    def _take(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise EventStreamError(f"{self.path}: not a JSON event: {line[:200]!r}") from exc
        if not isinstance(event, dict):
            raise EventStreamError(f"{self.path}: not a JSON object: {line[:200]!r}")
        if event.get("type") == STATE_EVENT and isinstance(event.get("new"), str):
            self._state = event["new"]
