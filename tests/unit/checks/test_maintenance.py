from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pwd
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lvsha.checks.maintenance import (
    MaintenanceWatcher,
    Selector,
    describe_file,
    drained_by,
    parse_file_name,
)
from lvsha.checks.pool import CheckPool
from lvsha.checks.state import CheckTransitionError
from lvsha.checks.targets import CheckPlan
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict

WEB_21 = RealServerId("192.0.2.80:80/tcp", "192.0.2.21", 80, "web_front")
WEB_22 = RealServerId("192.0.2.80:80/tcp", "192.0.2.22", 80, "web_front")
TLS_21 = RealServerId("192.0.2.80:443/tcp", "192.0.2.21", 443, "tls")
V6 = RealServerId("[2001:db8::80]:443/tcp", "2001:db8::21", 443)
SERVERS = (WEB_21, WEB_22, TLS_21, V6)
ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.mark.parametrize(
    ("name", "selector"),
    [
        ("192.0.2.21_80", Selector("192.0.2.21", 80)),
        ("192.0.2.21", Selector("192.0.2.21")),
        ("2001:db8::21_443", Selector("2001:db8::21", 443)),
        ("2001:DB8:0::21", Selector("2001:db8::21")),
        ("web_front_192.0.2.21_80", Selector("192.0.2.21", 80, "web_front")),
        ("tls_192.0.2.21", Selector("192.0.2.21", None, "tls")),
        ("80_10.0.0.1", Selector("10.0.0.1", None, "80")),
        ("notes.txt", None),
        ("192.0.2.21_99999", None),
        ("192.0.2.21_", None),
        ("web_80", None),
    ],
)
def test_file_names(name: str, selector: Selector | None) -> None:
    assert parse_file_name(name) == selector


def test_files_select_real_servers() -> None:
    drained, unmatched = drained_by(
        ["192.0.2.21", "tls_192.0.2.21_443", "2001:db8::21_443", ".192.0.2.22_80.swp", "junk"],
        SERVERS,
    )
    assert drained == {
        WEB_21: "192.0.2.21",
        TLS_21: "192.0.2.21",  # sorted first; tls_192.0.2.21_443 also drains it
        V6: "2001:db8::21_443",
    }
    assert unmatched == ["junk"]
    drained, _ = drained_by(["web_front_192.0.2.22_80", "tls_192.0.2.22_80"], SERVERS)
    assert drained == {WEB_22: "web_front_192.0.2.22_80"}


class RecordingPool:
    def __init__(self, real_servers: tuple[RealServerId, ...] = SERVERS) -> None:
        self.real_servers = real_servers
        self.disabled: dict[RealServerId, str] = {}
        self.calls: list[tuple[str, RealServerId]] = []

    def disable(self, real_server: RealServerId, reason: str) -> None:
        if real_server in self.disabled:
            raise CheckTransitionError("already")
        self.disabled[real_server] = reason
        self.calls.append(("disable", real_server))

    def enable(self, real_server: RealServerId, reason: str) -> None:
        if real_server not in self.disabled:
            raise CheckTransitionError("not disabled")
        del self.disabled[real_server]
        self.calls.append(("enable", real_server))


def test_a_file_drains_while_it_exists(tmp_path: Path) -> None:
    pool = RecordingPool()
    watcher = MaintenanceWatcher(pool, tmp_path)
    watcher.poll()
    assert pool.calls == []
    (tmp_path / "192.0.2.21_80").write_text("\n  disk swap, ticket 4711  \nmore\n")
    watcher.poll()
    watcher.poll()
    assert pool.calls == [("disable", WEB_21)]
    assert pool.disabled[WEB_21] == (
        f"maintenance file {tmp_path}/192.0.2.21_80 (owner {ME}): disk swap, ticket 4711"
    )
    (tmp_path / "192.0.2.21_80").unlink()
    watcher.poll()
    assert pool.calls == [("disable", WEB_21), ("enable", WEB_21)]
    assert watcher.drained == {}


def test_two_files_for_one_server_both_must_go(tmp_path: Path) -> None:
    pool = RecordingPool()
    watcher = MaintenanceWatcher(pool, tmp_path)
    (tmp_path / "192.0.2.21_443").touch()
    (tmp_path / "tls_192.0.2.21").touch()
    watcher.poll()
    (tmp_path / "192.0.2.21_443").unlink()
    watcher.poll()
    assert pool.calls == [("disable", TLS_21)]
    (tmp_path / "tls_192.0.2.21").unlink()
    watcher.poll()
    assert pool.calls == [("disable", TLS_21), ("enable", TLS_21)]


def test_a_missing_directory_drains_nothing_and_undrains(tmp_path: Path) -> None:
    pool = RecordingPool()
    directory = tmp_path / "maintenance"
    watcher = MaintenanceWatcher(pool, directory)
    watcher.poll()
    directory.mkdir()
    (directory / "192.0.2.22").touch()
    watcher.poll()
    (directory / "192.0.2.22").unlink()
    directory.rmdir()
    watcher.poll()
    assert pool.calls == [("disable", WEB_22), ("enable", WEB_22)]


def test_a_server_disabled_by_someone_else_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = RecordingPool()
    pool.disable(WEB_22, "control socket")
    watcher = MaintenanceWatcher(pool, tmp_path)
    (tmp_path / "192.0.2.22_80").touch()
    (tmp_path / "nonsense").touch()
    with caplog.at_level(logging.INFO, logger="lvsha.checks.maintenance"):
        for _ in range(3):
            watcher.poll()
    (tmp_path / "192.0.2.22_80").unlink()
    watcher.poll()
    assert pool.disabled == {WEB_22: "control socket"}  # the file never owned the drain
    messages = [r.getMessage() for r in caplog.records]
    assert sum("already disabled" in m for m in messages) == 1
    assert sum("selects no real server" in m for m in messages) == 1


@pytest.fixture
async def pool() -> AsyncIterator[CheckPool]:
    checked = CheckPool(CheckPlan(targets=(), real_servers=SERVERS))
    checked.start()
    yield checked
    await checked.close()


async def test_maintenance_file_drains_a_real_server_of_the_pool(
    tmp_path: Path, pool: CheckPool
) -> None:
    published: list[RealServerVerdict] = []
    pool.subscribe(published.append)
    watcher = MaintenanceWatcher(pool, tmp_path)
    (tmp_path / "2001:db8::21_443").write_text("kernel upgrade\n")
    watcher.poll()
    assert [(v.real_server, v.health) for v in published] == [(V6, Health.DISABLED)]
    assert published[0].reason.endswith(f"(owner {ME}): kernel upgrade")
    assert pool.is_drained(V6)
    (tmp_path / "2001:db8::21_443").unlink()
    watcher.poll()
    assert [(v.real_server, v.health) for v in published[1:]] == [(V6, Health.HEALTHY)]
    assert "removed" in published[1].reason


async def test_the_watcher_polls_on_its_own(tmp_path: Path, pool: CheckPool) -> None:
    watcher = MaintenanceWatcher(pool, tmp_path, interval=0.01)
    polling = asyncio.create_task(watcher.run())
    loop = asyncio.get_running_loop()
    try:
        (tmp_path / "192.0.2.22").touch()
        deadline = loop.time() + 5.0
        while not pool.is_drained(WEB_22):
            assert loop.time() < deadline, "the watcher never drained 192.0.2.22"
            await asyncio.sleep(0.005)
        (tmp_path / "192.0.2.22").unlink()
        deadline = loop.time() + 5.0
        while pool.is_drained(WEB_22):
            assert loop.time() < deadline, "the watcher never undrained 192.0.2.22"
            await asyncio.sleep(0.005)
    finally:
        polling.cancel()


def make_specials(directory: Path) -> list[str]:
    """A FIFO, a directory, a link to the FIFO and a socket, each named for a real server."""
    os.mkfifo(directory / "192.0.2.21_80")
    (directory / "192.0.2.21_443").mkdir()
    (directory / "2001:db8::21").symlink_to(directory / "192.0.2.21_80")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(directory / "tls_192.0.2.21"))
    listener.close()
    return ["192.0.2.21_80", "192.0.2.21_443", "2001:db8::21", "tls_192.0.2.21"]


@contextmanager
def fifo_rescue(fifo: Path, after: float) -> Iterator[None]:
    """If something blocks opening `fifo` for reading, open it for writing after `after` s so
    the test fails instead of hanging forever."""
    done = threading.Event()

    def rescue() -> None:
        if done.wait(after):
            return
        while not done.is_set():
            with contextlib.suppress(OSError):  # ENXIO: no reader waiting
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(0.05)

    thread = threading.Thread(target=rescue, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


async def test_only_regular_files_count_and_the_loop_never_waits_on_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specials = make_specials(tmp_path)
    (tmp_path / "192.0.2.22_80").write_text("rack move\n")
    pool = RecordingPool()
    watcher = MaintenanceWatcher(pool, tmp_path, interval=0.01)
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(loop.time())
        ticker[0] = loop.call_later(0.01, tick)

    ticker = [loop.call_later(0.01, tick)]
    with (
        fifo_rescue(tmp_path / "192.0.2.21_80", after=3.0),
        caplog.at_level(logging.INFO, logger="lvsha.checks.maintenance"),
    ):
        polling = asyncio.create_task(watcher.run())
        try:
            deadline = loop.time() + 2.0
            while WEB_22 not in pool.disabled or len(ticks) < 20:
                assert loop.time() < deadline, f"nothing drained: {pool.calls}"
                await asyncio.sleep(0.01)
            started = len(ticks)
            while len(ticks) < started + 10:  # a few more polls, each logging nothing new
                assert loop.time() < deadline + 1.0
                await asyncio.sleep(0.01)
        finally:
            polling.cancel()
            ticker[0].cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"
    assert pool.calls == [("disable", WEB_22)]
    assert pool.disabled[WEB_22].endswith(f"(owner {ME}): rack move")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    kinds = {"192.0.2.21_80": "a FIFO", "192.0.2.21_443": "a directory"}
    kinds |= {"2001:db8::21": "a symbolic link", "tls_192.0.2.21": "a socket"}
    assert sorted(warnings) == sorted(
        f"maintenance entry {tmp_path / name} is {kinds[name]}, not a regular file: ignored"
        for name in specials
    )


def test_a_fifo_swapped_in_after_the_listing_is_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "192.0.2.21_80")
    with fifo_rescue(tmp_path / "192.0.2.21_80", after=3.0):
        started = time.monotonic()
        reason = describe_file(tmp_path / "192.0.2.21_80")
    assert time.monotonic() - started < 1.0
    assert reason.endswith("(not a regular file: not read)")
    (tmp_path / "link").symlink_to(tmp_path / "192.0.2.21_80")
    assert "Too many levels of symbolic links" in describe_file(tmp_path / "link")


def test_a_huge_file_is_read_only_up_to_the_cap(tmp_path: Path) -> None:
    (tmp_path / "192.0.2.21").write_bytes(b"x" * 10_000_000)
    reason = describe_file(tmp_path / "192.0.2.21")
    assert reason.endswith(": " + "x" * 200 + "...")


def test_a_directory_over_the_entry_limit_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = RecordingPool()
    watcher = MaintenanceWatcher(pool, tmp_path, max_entries=5)
    (tmp_path / "192.0.2.21_80").touch()
    watcher.poll()
    for index in range(5):
        (tmp_path / f"junk{index}").touch()
    (tmp_path / "192.0.2.21_80").unlink()
    (tmp_path / "192.0.2.22_80").touch()
    with caplog.at_level(logging.WARNING, logger="lvsha.checks.maintenance"):
        watcher.poll()
        watcher.poll()
    assert pool.calls == [("disable", WEB_21)]  # neither undrained nor drained blind
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read maintenance directory {tmp_path}: more than 5 entries: "
        "not read until there are fewer"
    ]
    for index in range(5):
        (tmp_path / f"junk{index}").unlink()
    watcher.poll()
    assert pool.calls == [("disable", WEB_21), ("enable", WEB_21), ("disable", WEB_22)]
