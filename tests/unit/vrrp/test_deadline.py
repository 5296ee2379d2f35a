"""The VRRP deadline timer: never early, re-armed and cancelled cleanly, on timerfd or the loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from lvsha.vrrp.deadline import LoopTimer, TimerfdTimer, deadline_timer

Factory = Callable[[asyncio.AbstractEventLoop, Callable[[], None]], TimerfdTimer | LoopTimer]


@pytest.fixture(params=[TimerfdTimer, LoopTimer])
def factory(request: pytest.FixtureRequest) -> Factory:
    made: Factory = request.param
    return made


async def test_it_fires_once_and_never_before_its_deadline(factory: Factory) -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = factory(loop, lambda: fired.append(loop.time()))
    deadline = loop.time() + 0.02
    timer.arm(deadline)
    async with asyncio.timeout(2):
        while not fired:
            await asyncio.sleep(0.001)
    assert fired[0] >= deadline
    timer.arm(loop.time() + 0.005)
    async with asyncio.timeout(2):
        while len(fired) < 2:
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)  # nothing more is due: it must stay quiet
    assert len(fired) == 2
    timer.close()


async def test_re_arming_replaces_and_cancel_stops_it(factory: Factory) -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    early, late = factory(loop, lambda: fired.append("early")), None
    early.arm(loop.time() + 0.01)
    early.arm(loop.time() + 0.05)  # moved later, as an advert moves Master_Down
    late = factory(loop, lambda: fired.append("late"))
    late.arm(loop.time() + 0.02)
    async with asyncio.timeout(2):
        while len(fired) < 2:
            await asyncio.sleep(0.001)
    assert fired == ["late", "early"]
    early.arm(loop.time() + 0.01)
    early.cancel()
    late.arm(loop.time())  # due now
    async with asyncio.timeout(2):
        while len(fired) < 3:
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.03)
    assert fired == ["late", "early", "late"]
    early.close()
    late.close()


async def test_a_timerfd_is_used_here_and_closed_with_the_timer() -> None:
    loop = asyncio.get_running_loop()
    timer = deadline_timer(loop, lambda: None)
    assert isinstance(timer, TimerfdTimer)
    fd = timer._fd
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[timerfd]"
    timer.close()
    assert (
        not os.path.exists(f"/proc/self/fd/{fd}")
        or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[timerfd]"
    )
