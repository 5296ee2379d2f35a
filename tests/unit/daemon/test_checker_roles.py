"""The checker waits (briefly) for the parent's VRRP roles before its sync daemon starts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from lvsha.daemon.channel import ParentChannel
from lvsha.daemon.checker_process import first_message, read_parent
from lvsha.daemon.supervisor import CHANNEL_FD_ENV
from lvsha.messages import Message, VrrpRoles, VrrpStateChanged, encode


@pytest.fixture
def parent(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The parent's end of a channel whose child end the checker finds in its environment."""
    parent_end, child_end = socket.socketpair()
    monkeypatch.setenv(CHANNEL_FD_ENV, str(child_end.detach()))
    yield parent_end
    parent_end.close()


async def reading(
    channel: ParentChannel,
) -> tuple[asyncio.Queue[Message | None], asyncio.Task[None]]:
    await channel.open()
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()
    return inbox, asyncio.create_task(read_parent(channel, inbox))


async def test_the_roles_the_parent_sends_first_are_taken(parent: socket.socket) -> None:
    channel = ParentChannel()
    inbox, reader = await reading(channel)
    roles = VrrpRoles((("VI_1", "MASTER"),))
    change = VrrpStateChanged("VI_1", "MASTER", "BACKUP", "higher priority", 100)
    parent.sendall(encode(roles) + encode(change))
    loop = asyncio.get_running_loop()
    assert await first_message(inbox, loop.time() + 2.0) == (roles, True)
    assert await inbox.get() == change  # nothing lost behind the roles
    reader.cancel()
    channel.close()


async def test_without_roles_the_wait_ends_at_the_deadline(parent: socket.socket) -> None:
    channel = ParentChannel()
    inbox, reader = await reading(channel)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await first_message(inbox, started + 0.2) == (None, True)
    assert 0.19 <= loop.time() - started < 1.0
    reader.cancel()
    channel.close()


async def test_run_by_hand_there_is_no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHANNEL_FD_ENV, raising=False)
    channel = ParentChannel()
    inbox, _ = await reading(channel)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await first_message(inbox, started + 2.0) == (None, False)
    assert loop.time() - started < 0.5
