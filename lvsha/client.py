"""A client of the daemon's control socket (lvsha.daemon.control), for the CLI.

Standard library only: a command that asks the daemon something starts in milliseconds, not
in the time it takes to import the daemon.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any


class ControlError(Exception):
    """The daemon cannot be reached, or answered something that is not the API's."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("lvsha", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(
    socket_path: str, method: str, path: str, body: dict[str, Any] | None, timeout: float
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one request; raises ControlError."""
    connection = _UnixConnection(socket_path, timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except FileNotFoundError:
        raise ControlError(
            f"{socket_path} does not exist: is lvsha running, with this run directory (--run-dir)?"
        ) from None
    except ConnectionRefusedError:
        raise ControlError(f"{socket_path}: nobody listens: is lvsha running?") from None
    except TimeoutError:
        raise ControlError(f"{socket_path}: no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ControlError(f"{socket_path}: {exc}") from None
    finally:
        connection.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ControlError(f"{socket_path}: the answer is not JSON: {raw[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{socket_path}: the answer is not a JSON object")
    return response.status, answer


def stream_events(socket_path: str, path: str, timeout: float) -> Iterator[dict[str, Any]]:
    """The events of `GET /v1/events` (path with `?follow=1`: then every new one, as long as
    the daemon sends them); raises ControlError."""
    connection = _UnixConnection(socket_path, timeout)
    try:
        try:
            connection.request("GET", path)
            response = connection.getresponse()
        except FileNotFoundError:
            raise ControlError(f"{socket_path} does not exist: is lvsha running?") from None
        except ConnectionRefusedError:
            raise ControlError(f"{socket_path}: nobody listens: is lvsha running?") from None
        except TimeoutError:
            raise ControlError(f"{socket_path}: no answer within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(f"{socket_path}: {exc}") from None
        kind = response.getheader("Content-Type", "")
        if response.status != 200 or not kind.startswith("application/x-ndjson"):
            raw = response.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                raise ControlError(
                    f"{socket_path}: the answer is not JSON: {raw[:200]!r}"
                ) from None
            if response.status != 200 or not isinstance(answer, dict):
                error = answer.get("error", answer) if isinstance(answer, dict) else answer
                raise ControlError(f"HTTP {response.status}: {error}")
            events = answer.get("events", [])
            yield from (event for event in events if isinstance(event, dict))
            return
        if connection.sock is not None:
            connection.sock.settimeout(None)  # following: events come when they come
        while True:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise ControlError(f"{socket_path}: {exc}") from None
            if not line:
                return
            try:
                event = json.loads(line)
            except ValueError:
                raise ControlError(f"{socket_path}: an event is not JSON: {line[:200]!r}") from None
            if isinstance(event, dict):
                yield event
    finally:
        connection.close()
