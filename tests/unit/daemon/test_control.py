"""The control socket: who may use it, what it answers, and how it refuses bad requests."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsha import client
from lvsha.daemon.control import ControlServer
from lvsha.daemon.reload import ReloadAnswer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a second uid)")


class Calls:
    def __init__(self) -> None:
        self.reloads: list[tuple[str | None, bool]] = []

    async def reload(self, file: str | None, plan: bool) -> ReloadAnswer:
        self.reloads.append((file, plan))
        outcome = "plan" if plan else ("invalid" if file == "/bad.yaml" else "applied")
        errors = ["/bad.yaml:1:1: (top level): broken"] if outcome == "invalid" else []
        return ReloadAnswer(outcome, file or "/etc/lvsha/lvsha.yaml", 7, "ab" * 32, errors=errors)

    def status(self) -> dict[str, object]:
        return {"generation": 7}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Calls]]:
    calls = Calls()
    path = str(tmp_path / "control.sock")
    server = ControlServer(path, calls.reload, calls.status)
    await server.start()
    try:
        yield path, calls
    finally:
        await server.close()
    assert not os.path.exists(path)


async def ask(
    path: str, method: str, url: str, body: dict[str, object] | None = None
) -> tuple[int, dict[str, object]]:
    return await asyncio.to_thread(client.request, path, method, url, body, 10.0)


async def test_a_reload_is_answered_with_its_outcome(served: tuple[str, Calls]) -> None:
    path, calls = served
    status, answer = await ask(path, "POST", "/v1/reload", {"plan": False, "file": None})
    assert status == 200
    assert answer["outcome"] == "applied" and answer["generation"] == 7 and answer["ok"] is True
    status, answer = await ask(path, "POST", "/v1/reload", {"plan": False, "file": "/bad.yaml"})
    assert status == 422
    assert answer["errors"] == ["/bad.yaml:1:1: (top level): broken"]
    status, answer = await ask(path, "POST", "/v1/reload", {"plan": True})
    assert status == 200 and answer["outcome"] == "plan"
    assert calls.reloads == [(None, False), ("/bad.yaml", False), (None, True)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


async def test_status(served: tuple[str, Calls]) -> None:
    path, _ = served
    assert await ask(path, "GET", "/v1/status") == (200, {"generation": 7})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"plan": "yes"}, "'plan' must be true or false"),
        ({"file": "relative.yaml"}, "'file' must be an absolute path"),
        ({"force": True}, "unknown field(s) ['force']"),
    ],
)
async def test_bad_requests_are_refused_with_the_reason(
    served: tuple[str, Calls], body: dict[str, object], error: str
) -> None:
    path, calls = served
    status, answer = await ask(path, "POST", "/v1/reload", body)
    assert status == 400
    assert str(answer["error"]).startswith(error)
    assert calls.reloads == []


async def test_another_user_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    # Out of pytest's tmp_path, whose parents only root may enter.
    directory = tempfile.mkdtemp(prefix="lvsha-control-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "control.sock")
    server = ControlServer(path, calls.reload, calls.status)
    await server.start()
    os.chmod(path, 0o666)  # let the other user reach it, so that the API itself must refuse
    caplog.set_level(logging.WARNING, logger="lvsha.control")
    script = (
        "import json, os, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "from lvsha import client\n"
        f"print(json.dumps(client.request({path!r}, 'POST', '/v1/reload', {{}}, 10.0)))\n"
    )
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        await server.close()
        shutil.rmtree(directory)
    assert result.returncode == 0, result.stderr
    status, answer = json.loads(result.stdout)
    assert status == 403
    assert answer == {"ok": False, "error": "uid 65534 may not use the control socket"}
    assert calls.reloads == []
    assert "refused POST /v1/reload from uid 65534" in caplog.text
