"""LinkMonitor on a stand-in for the kernel's socket: messages are taken in the order the kernel
queued them, an overflow starts over with a fresh dump, and closing ends the iteration. The
real thing is in tests/netns/test_links.py."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2.netlink import NLMSG_DONE

from lvsha.net import links
from lvsha.net.links import LinkChanged, LinkMonitor
from lvsha.net.rtnl_dump import RTM_DELLINK
from tests.unit.net.test_rtnl_dump import end_message, link_message

UP = 0x1 | 0x40
DOWN = 0x1

Answer = Callable[[int], list[bytes]]


class FakeNetlink:
    """One end of a datagram socket pair; the kernel's answers to a dump request come from
    `answer`, notifications from `notify`."""

    def __init__(self, answer: Answer) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.answer = answer
        self.overflow = False
        self.closed = False

    def fileno(self) -> int:
        return self.ours.fileno()

    def setsockopt(self, *option: Any) -> None:
        pass  # the group membership and buffer size of a netlink socket

    def send(self, request: bytes) -> int:
        sequence = struct.unpack_from("=I", request, 8)[0]
        for datagram in self.answer(sequence):
            self.theirs.send(datagram)
        return len(request)

    def notify(self, datagram: bytes) -> None:
        self.theirs.send(datagram)

    def recvmsg(self, size: int) -> tuple[bytes, list[Any], int, Any]:
        if self.overflow:
            self.overflow = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        return self.ours.recvmsg(size)

    def close(self) -> None:
        self.closed = True
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Answer | FakeNetlink]]:
    """Put the answers of the dumps to come in; each socket opened is appended after them."""
    plan: list[Answer | FakeNetlink] = []

    def open_socket(timeout: float | None) -> FakeNetlink:
        answer = plan.pop(0)
        assert not isinstance(answer, FakeNetlink)
        fake = FakeNetlink(answer)
        plan.append(fake)
        return fake

    monkeypatch.setattr(links, "route_socket", open_socket)
    yield plan
    for fake in plan:
        if isinstance(fake, FakeNetlink) and not fake.closed:
            fake.close()


def dump(*entries: tuple[int, str, int], before: bytes = b"", after: bytes = b"") -> Answer:
    """A dump's answer in two datagrams, with notifications queued before or after its links."""

    def answer(sequence: int) -> list[bytes]:
        parts = [link_message(i, n, f, sequence=sequence, multi=True) for i, n, f in entries]
        return [before + b"".join(parts) + after, end_message(NLMSG_DONE, sequence)]

    return answer


async def next_change(monitor: LinkMonitor) -> LinkChanged:
    return await asyncio.wait_for(anext(monitor), timeout=5)


async def test_a_notification_queued_before_a_dump_part_is_older_than_it(
    kernel: list[Answer | FakeNetlink],
) -> None:
    # eth0 went down before the dump read it (up again): the dump's state stands. eth1 went
    # down after the dump read it: the notification's stands.
    kernel.append(
        dump(
            (2, "eth0", UP),
            (3, "eth1", UP),
            before=link_message(2, "eth0", DOWN),
            after=link_message(3, "eth1", DOWN),
        )
    )
    async with LinkMonitor(["eth0", "eth1"]) as monitor:
        assert monitor.states == {"eth0": True, "eth1": False}


async def test_a_link_deleted_during_the_dump_is_gone(kernel: list[Answer | FakeNetlink]) -> None:
    kernel.append(dump((2, "eth0", UP), after=link_message(2, "eth0", UP, kind=RTM_DELLINK)))
    async with LinkMonitor(["eth0"]) as monitor:
        assert monitor.states == {"eth0": False}


async def test_changes_follow_and_an_overflow_reads_every_link_again(
    kernel: list[Answer | FakeNetlink], caplog: pytest.LogCaptureFixture
) -> None:
    kernel += [dump((2, "eth0", UP), (3, "eth1", UP)), dump((2, "eth0", UP), (3, "eth1", DOWN))]
    async with LinkMonitor(["eth0", "eth1"]) as monitor:
        first = kernel[-1]
        assert isinstance(first, FakeNetlink)
        first.notify(link_message(2, "eth0", DOWN) + link_message(9, "other", DOWN))
        assert await next_change(monitor) == LinkChanged("eth0", False)
        # The kernel dropped notifications (eth0 came back, eth1 went down): a fresh dump says.
        first.overflow = True
        first.notify(b"")
        assert await next_change(monitor) == LinkChanged("eth0", True)
        assert await next_change(monitor) == LinkChanged("eth1", False)
        assert first.closed
        assert "overflowed" in caplog.text


async def test_closing_ends_the_iteration(kernel: list[Answer | FakeNetlink]) -> None:
    kernel.append(dump((2, "eth0", UP)))
    monitor = LinkMonitor(["eth0"])
    with pytest.raises(RuntimeError):
        await anext(monitor)
    await monitor.start()
    waiting = asyncio.ensure_future(anext(monitor))
    asyncio.get_running_loop().call_soon(monitor.close)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, timeout=5)
    with pytest.raises(RuntimeError):
        await anext(monitor)
