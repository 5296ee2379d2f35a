"""The control socket: who may use it, what it answers, and how it refuses bad requests."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lvsha import client
from lvsha.config.model import ControlSettings
from lvsha.daemon import overrides as ov
from lvsha.daemon.control import AccessRules, ControlServer
from lvsha.daemon.events import EventStream
from lvsha.daemon.operations import OperationError
from lvsha.daemon.reload import ReloadAnswer
from tests.tools import api_schema

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a second uid)")

READ_GID = 64101
ADMIN_GID = 64102
NOBODY = 65534


class Calls:
    """Stands in for the parent's reload and operations, recording what it was asked."""

    def __init__(self) -> None:
        self.reloads: list[tuple[str | None, bool]] = []
        self.admin: list[tuple[str | None, ov.Selector, str, str]] = []
        self.handovers: list[tuple[str | None, bool, str]] = []

    async def reload(self, file: str | None, plan: bool) -> ReloadAnswer:
        self.reloads.append((file, plan))
        outcome = "plan" if plan else ("invalid" if file == "/bad.yaml" else "applied")
        errors = ["/bad.yaml:1:1: (top level): broken"] if outcome == "invalid" else []
        return ReloadAnswer(outcome, file or "/etc/lvsha/lvsha.yaml", 7, "ab" * 32, errors=errors)

    async def status(self) -> dict[str, Any]:
        return {"ok": True, "generation": 7}

    async def set_admin(
        self, mode: ov.Mode | None, selector: ov.Selector, reason: str, by: str
    ) -> dict[str, Any]:
        if selector.address == "192.0.2.99":
            raise OperationError(404, "no real server 192.0.2.99 in every virtual server")
        self.admin.append((None if mode is None else mode.value, selector, reason, by))
        return {"ok": True, "generation": 7, "changed": True, "selected": ["web 10.0.0.21:80"]}

    async def wait_drained(self, selector: ov.Selector, timeout: float) -> dict[str, Any]:
        return {"done": False, "left": 1, "seconds": timeout}

    async def handover(self, instance: str | None, cancel: bool, by: str) -> dict[str, Any]:
        self.handovers.append((instance, cancel, by))
        return {"ok": True, "generation": 7, "changed": True, "selected": ["VI_1"]}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Calls, EventStream]]:
    calls = Calls()
    events = EventStream(str(tmp_path / "events.sock"))
    await events.start()
    path = str(tmp_path / "control.sock")
    server = ControlServer(
        path,
        calls.reload,
        calls,  # type: ignore[arg-type]
        events,
        generation=lambda: 7,
    )
    await server.start()
    try:
        yield path, calls, events
    finally:
        await server.close()
        await events.close()
    assert not os.path.exists(path)


async def ask(
    path: str, method: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    status, answer = await asyncio.to_thread(client.request, path, method, url, body, 10.0)
    if status >= 400 and "outcome" not in answer:
        api_schema.check("error", answer)
    return status, answer


async def test_a_reload_is_answered_with_its_outcome(
    served: tuple[str, Calls, EventStream],
) -> None:
    path, calls, _ = served
    status, answer = await ask(path, "POST", "/v1/reload", {"plan": False, "file": None})
    assert status == 200
    assert answer["outcome"] == "applied" and answer["generation"] == 7 and answer["ok"] is True
    api_schema.check("reload", answer)
    status, answer = await ask(path, "POST", "/v1/reload", {"plan": False, "file": "/bad.yaml"})
    assert status == 422
    assert answer["errors"] == ["/bad.yaml:1:1: (top level): broken"]
    status, answer = await ask(path, "POST", "/v1/reload", {"plan": True})
    assert status == 200 and answer["outcome"] == "plan"
    assert calls.reloads == [(None, False), ("/bad.yaml", False), (None, True)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


async def test_drain_names_the_real_server_and_who_asked(
    served: tuple[str, Calls, EventStream],
) -> None:
    path, calls, _ = served
    body = {"virtual_server": "web", "real_server": "10.0.0.21:80", "reason": "disk"}
    status, answer = await ask(path, "POST", "/v1/drain", body)
    assert status == 200 and answer["selected"] == ["web 10.0.0.21:80"]
    status, answer = await ask(path, "POST", "/v1/ready", {"real_server": "[2001:DB8::1]:80"})
    assert status == 200
    assert calls.admin == [
        ("drain", ov.Selector("10.0.0.21", 80, "web"), "disk", "root (uid 0)"),
        (None, ov.Selector("2001:db8::1", 80, None), "", "root (uid 0)"),
    ]
    status, answer = await ask(path, "POST", "/v1/drain", {"real_server": "10.0.0.21", "wait": 3})
    assert status == 200 and answer["waited"] == {"done": False, "left": 1, "seconds": 3.0}


async def test_an_unknown_real_server_is_a_404_with_the_generation(
    served: tuple[str, Calls, EventStream],
) -> None:
    path, calls, _ = served
    status, answer = await ask(path, "POST", "/v1/maint", {"real_server": "192.0.2.99"})
    assert calls.admin == []
    assert (status, answer) == (
        404,
        {
            "ok": False,
            "error": "no real server 192.0.2.99 in every virtual server",
            "generation": 7,
        },
    )


@pytest.mark.parametrize(
    ("url", "body", "error"),
    [
        ("/v1/reload", {"plan": "yes"}, "'plan' must be true or false"),
        ("/v1/reload", {"file": "relative.yaml"}, "'file' must be an absolute path"),
        ("/v1/reload", {"force": True}, "unknown field(s) ['force']"),
        ("/v1/drain", {}, "'real_server' is required"),
        ("/v1/drain", {"real_server": "web1"}, "'web1' is not a real server"),
        ("/v1/drain", {"real_server": "10.0.0.1:99999"}, "'10.0.0.1:99999': port"),
        ("/v1/drain", {"real_server": "10.0.0.1", "wait": -1}, "'wait' must be seconds"),
        ("/v1/drain", {"real_server": "10.0.0.1", "wait": True}, "'wait' must be seconds"),
        ("/v1/maint", {"real_server": "10.0.0.1", "wait": 1}, "unknown field(s) ['wait']"),
        ("/v1/ready", {"real_server": "10.0.0.1", "virtual_server": ""}, "'virtual_server'"),
        ("/v1/handover", {"cancel": "no"}, "'cancel' must be true or false"),
        ("/v1/handover", {"instance": 5}, "'instance' must be an instance name"),
    ],
)
async def test_bad_requests_are_refused_with_the_reason(
    served: tuple[str, Calls, EventStream], url: str, body: dict[str, object], error: str
) -> None:
    path, calls, _ = served
    status, answer = await ask(path, "POST", url, body)
    assert status == 400
    assert str(answer["error"]).startswith(error), answer
    assert answer["generation"] == 7
    assert calls.reloads == [] and calls.admin == [] and calls.handovers == []


async def test_a_body_that_is_not_an_object_is_refused(
    served: tuple[str, Calls, EventStream],
) -> None:
    path, _, _ = served
    status, answer = await asyncio.to_thread(_raw, path, "POST", "/v1/handover", b"[1, 2]")
    assert status == 400 and answer["error"] == "the request body must be a JSON object"
    status, answer = await asyncio.to_thread(_raw, path, "POST", "/v1/handover", b"{nope")
    assert status == 400 and answer["error"].startswith("the request body is not JSON")


def _raw(path: str, method: str, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """A request whose body the client would never send."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10.0)
        sock.connect(path)
        head = (
            f"{method} {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head_text, _, body = raw.partition(b"\r\n\r\n")
    return int(head_text.split(b" ")[1]), json.loads(body)


async def test_events_give_the_last_ones_then_follow(
    served: tuple[str, Calls, EventStream],
) -> None:
    path, _, events = served
    for n in range(105):
        events.publish("test", n=n)
    status, answer = await ask(path, "GET", "/v1/events")
    assert status == 200 and answer["generation"] == 7
    api_schema.check("events", answer)
    assert [e["n"] for e in answer["events"]] == list(range(5, 105))

    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def follow() -> None:
        for event in client.stream_events(path, "/v1/events?follow=1", 10.0):
            seen.append(event)
            if event.get("n") == "last":
                done.set()
                return

    reader = asyncio.create_task(asyncio.to_thread(follow))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(seen) < 100 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    events.publish("test", n="last")
    await asyncio.wait_for(reader, 10)
    assert [e["n"] for e in seen] == [*range(5, 105), "last"]
    assert seen[-1]["seq"] == 106


def _as_user(path: str, method: str, url: str, body: dict[str, Any], groups: list[int]) -> Any:
    """The answer `client.request` gets as uid 65534 in `groups` (printed as JSON by a
    child process, or the error it raised)."""
    script = (
        "import json, sys\n"
        "from lvsha import client\n"
        "try:\n"
        f"    print(json.dumps(client.request({path!r}, {method!r}, {url!r}, {body!r}, 10.0)))\n"
        "except client.ControlError as exc:\n"
        "    print(json.dumps(['error', str(exc)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        user=NOBODY,
        group=NOBODY,
        extra_groups=groups,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[tuple[str, Calls]]:
    """A server with a read and an admin group, on a socket others can reach (out of pytest's
    tmp_path, whose parents only root may enter)."""
    calls = Calls()
    directory = tempfile.mkdtemp(prefix="lvsha-control-")
    os.chmod(directory, 0o755)
    events = EventStream(os.path.join(directory, "events.sock"))
    await events.start()
    path = os.path.join(directory, "control.sock")
    rules = AccessRules(ControlSettings(admin_group=ADMIN_GID, read_group=READ_GID))
    server = ControlServer(
        path,
        calls.reload,
        calls,  # type: ignore[arg-type]
        events,
        generation=lambda: 7,
        rules=rules,
    )
    await server.start()
    try:
        yield path, calls
    finally:
        await server.close()
        await events.close()
        shutil.rmtree(directory)


async def test_the_socket_belongs_to_the_read_group(shared: tuple[str, Calls]) -> None:
    path, _ = shared
    status = os.stat(path)
    assert (status.st_gid, stat.S_IMODE(status.st_mode)) == (READ_GID, 0o660)


async def test_a_user_outside_both_groups_is_refused_and_logged(
    shared: tuple[str, Calls], caplog: pytest.LogCaptureFixture
) -> None:
    path, calls = shared
    caplog.set_level(logging.WARNING, logger="lvsha.control")
    # Through the socket's mode first: not in its group, not even a connection.
    answer = await asyncio.to_thread(_as_user, path, "GET", "/v1/status", {}, [])
    assert answer[0] == "error" and "Permission denied" in answer[1]
    # Let it reach the socket, so that the API itself must refuse.
    os.chmod(path, 0o666)
    status, answer = await asyncio.to_thread(_as_user, path, "GET", "/v1/status", {}, [])
    assert status == 403
    assert answer == {
        "ok": False,
        "error": "uid 65534 may not use the control socket",
        "generation": 7,
    }
    body = {"real_server": "10.0.0.21"}
    status, _ = await asyncio.to_thread(_as_user, path, "POST", "/v1/drain", body, [])
    assert status == 403
    assert calls.admin == []
    assert "refused GET /v1/status from nobody (uid 65534)" in caplog.text


async def test_the_read_group_reads_and_cannot_change(
    shared: tuple[str, Calls], caplog: pytest.LogCaptureFixture
) -> None:
    path, calls = shared
    caplog.set_level(logging.WARNING, logger="lvsha.control")
    reader = [READ_GID]
    status, answer = await asyncio.to_thread(_as_user, path, "GET", "/v1/status", {}, reader)
    assert (status, answer) == (200, {"ok": True, "generation": 7})
    status, answer = await asyncio.to_thread(_as_user, path, "GET", "/v1/events", {}, reader)
    assert status == 200 and answer["events"] == []
    status, answer = await asyncio.to_thread(
        _as_user, path, "POST", "/v1/reload", {"plan": True}, reader
    )
    assert status == 200 and answer["outcome"] == "plan"
    for url, body in (
        ("/v1/drain", {"real_server": "10.0.0.21"}),
        ("/v1/maint", {"real_server": "10.0.0.21"}),
        ("/v1/ready", {"real_server": "10.0.0.21"}),
        ("/v1/handover", {}),
        ("/v1/reload", {"plan": False}),
    ):
        status, answer = await asyncio.to_thread(_as_user, path, "POST", url, body, reader)
        assert status == 403, url
        assert answer["error"] == (
            "uid 65534 may read but not change: ask a member of the admin group"
        )
    assert calls.admin == [] and calls.handovers == [] and calls.reloads == [(None, True)]
    assert "a change needs root or global.control.admin_group" in caplog.text


async def test_the_admin_group_may_change(shared: tuple[str, Calls]) -> None:
    path, calls = shared
    both = [READ_GID, ADMIN_GID]
    body = {"virtual_server": "web", "real_server": "10.0.0.21:80", "reason": "kernel update"}
    status, answer = await asyncio.to_thread(_as_user, path, "POST", "/v1/drain", body, both)
    assert status == 200 and answer["changed"] is True
    status, _ = await asyncio.to_thread(_as_user, path, "POST", "/v1/handover", {}, both)
    assert status == 200
    assert calls.admin == [
        ("drain", ov.Selector("10.0.0.21", 80, "web"), "kernel update", "nobody (uid 65534)")
    ]
    assert calls.handovers == [(None, False, "nobody (uid 65534)")]
