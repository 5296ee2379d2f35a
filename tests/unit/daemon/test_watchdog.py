"""The systemd watchdog (lvsha.daemon.watchdog): fed every half interval while the children
answer their pings, withheld once the VRRP child has left one unanswered past the bound."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest

from lvsha.daemon.watchdog import Watchdog, interval_from_env
from lvsha.messages import Ping


def test_the_interval_comes_from_systemd_for_this_process_only() -> None:
    pid = str(os.getpid())
    assert interval_from_env({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}) == 2.0
    assert interval_from_env({"WATCHDOG_USEC": "500000"}) == 0.5
    assert interval_from_env({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert interval_from_env({"WATCHDOG_USEC": "0"}) is None
    assert interval_from_env({"WATCHDOG_USEC": "soon"}) is None
    assert interval_from_env({}) is None


class Children:
    """Fake children: each answers its pings while `answering` says so."""

    def __init__(self) -> None:
        self.answering = {"vrrp": True, "checker": True}
        self.running = {"vrrp": True, "checker": True}
        self.dog: Watchdog | None = None
        self.pings: list[tuple[str, int]] = []
        self.notes: list[tuple[float, str]] = []

    def send(self, name: str, ping: Ping) -> bool:
        if not self.running[name]:
            return False
        self.pings.append((name, ping.serial))
        if self.answering[name]:
            loop = asyncio.get_running_loop()
            assert self.dog is not None
            loop.call_soon(self.dog.pong, name, ping.serial)
        return True

    def alive(self, name: str) -> bool:
        return self.running[name]

    def notify(self, message: str) -> bool:
        self.notes.append((asyncio.get_running_loop().time(), message))
        return True


async def wait_for(predicate: object, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_fed_while_answered_and_withheld_once_vrrp_stops_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    children = Children()
    dog = Watchdog(0.2, 0.2, send=children.send, alive=children.alive, notify=children.notify)
    children.dog = dog
    task = asyncio.create_task(dog.run())
    try:
        await wait_for(lambda: len(children.notes) >= 4, 2)
        times = [t for t, _ in children.notes]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.08 <= gap <= 0.3 for gap in gaps), gaps  # every half interval (0.1 s)
        loop = asyncio.get_running_loop()
        children.answering["vrrp"] = False
        stopped_at = loop.time()
        pings_before = len([1 for name, _ in children.pings if name == "vrrp"])
        await wait_for(lambda: dog.withheld_total >= 4, 2)
        last = children.notes[-1][0]
        # The ping in flight when it stopped, plus the bound, plus one feeding period.
        assert last - stopped_at <= 0.2 / 4 + 0.2 + 0.1 + 0.05
        assert "the vrrp process has not answered" in caplog.text
        # One ping in flight at a time: a stopped child's channel does not fill up.
        unanswered = [serial for name, serial in children.pings if name == "vrrp"]
        assert len(unanswered) - pings_before <= 1
        fed = dog.fed_total
        children.answering["vrrp"] = True
        # Its pending ping is answered late (as a SIGCONT'd process would): feeding resumes.
        dog.pong("vrrp", max(unanswered))
        await wait_for(lambda: dog.fed_total > fed, 1)
        assert "the vrrp process answers again" in caplog.text
    finally:
        task.cancel()


async def test_a_child_between_restarts_does_not_hold_the_feeding_back() -> None:
    children = Children()
    dog = Watchdog(0.2, 0.2, send=children.send, alive=children.alive, notify=children.notify)
    children.dog = dog
    children.answering["checker"] = False
    children.running["checker"] = False  # crashed; the supervisor restarts it
    task = asyncio.create_task(dog.run())
    try:
        await wait_for(lambda: dog.fed_total >= 4, 2)
        assert dog.withheld_total == 0
        children.running["checker"] = True  # back, and silent: wedged
        dog.started("checker")
        # The checker's bound is the watchdog interval (its loop may be busy for a while).
        await wait_for(lambda: dog.withheld_total >= 1, 2)
    finally:
        task.cancel()
