from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from lvsha.checks.result import ProbeResult
from lvsha.checks.tcp_fast import DeadlineSweep, TcpConnector, TcpEndpoint

# The deadline sweep, on plain floats.


class Items:
    """Which items are still pending, and for which deadline."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}

    def start(self, sweep: DeadlineSweep[str], item: str, now: float, timeout: float) -> None:
        self.deadlines[item] = sweep.add(item, now, timeout)

    def pending(self, item: str, deadline: float) -> bool:
        return self.deadlines.get(item) == deadline


@pytest.fixture
def items() -> Items:
    return Items()


def test_sweep_expires_items_at_their_deadline_per_timeout(items: Items) -> None:
    sweep: DeadlineSweep[str] = DeadlineSweep(items.pending)
    items.start(sweep, "a", 0.0, 3.0)
    items.start(sweep, "b", 0.5, 1.0)
    items.start(sweep, "c", 1.0, 3.0)
    items.start(sweep, "d", 1.0, 1.0)
    assert sweep.next_deadline() == 1.5
    assert sweep.expire(1.4) == []
    assert sweep.expire(2.0) == ["b", "d"]
    assert sweep.next_deadline() == 3.0
    assert sweep.expire(10.0) == ["a", "c"]
    assert sweep.next_deadline() is None
    assert len(sweep) == 0


def test_sweep_skips_items_settled_before_their_deadline(items: Items) -> None:
    sweep: DeadlineSweep[str] = DeadlineSweep(items.pending)
    for index, item in enumerate("abcd"):
        items.start(sweep, item, index * 0.1, 2.0)
    del items.deadlines["a"], items.deadlines["b"], items.deadlines["d"]
    # Settled heads are dropped: the next deadline is the first pending one, c's.
    assert sweep.next_deadline() == pytest.approx(2.2)
    assert len(sweep) == 2  # c, and d behind it until its deadline
    assert sweep.expire(5.0) == ["c"]
    assert sweep.next_deadline() is None


def test_sweep_ignores_an_entry_whose_item_started_again(items: Items) -> None:
    sweep: DeadlineSweep[str] = DeadlineSweep(items.pending)
    items.start(sweep, "fd7", 0.0, 1.0)
    items.start(sweep, "fd7", 0.5, 1.0)  # reused: the first entry is stale
    assert sweep.next_deadline() == 1.5
    assert sweep.expire(1.2) == []
    assert sweep.expire(1.5) == ["fd7"]


def test_sweep_refuses_time_going_backwards(items: Items) -> None:
    sweep: DeadlineSweep[str] = DeadlineSweep(items.pending)
    items.start(sweep, "a", 5.0, 1.0)
    with pytest.raises(ValueError, match="backwards"):
        sweep.add("b", 4.0, 1.0)
    sweep.add("c", 4.0, 2.0)  # another timeout: its own queue, a later deadline anyway


def test_sweep_clear_forgets_everything(items: Items) -> None:
    sweep: DeadlineSweep[str] = DeadlineSweep(items.pending)
    items.start(sweep, "a", 0.0, 1.0)
    sweep.clear()
    assert sweep.next_deadline() is None and sweep.expire(9.0) == []


# Endpoints.


def test_endpoint_parses_the_family_once() -> None:
    v4 = TcpEndpoint.parse("192.0.2.1", 80, 2.0, source="192.0.2.9")
    assert (v4.family, v4.sockaddr, v4.source, v4.problem) == (
        socket.AF_INET,
        ("192.0.2.1", 80),
        ("192.0.2.9", 0),
        None,
    )
    v6 = TcpEndpoint.parse("2001:db8::1", 443, 2)
    assert (v6.family, v6.source) == (socket.AF_INET6, None)
    assert v6.timeout_reason == "tcp connect timeout after 2.0 s"
    bad = TcpEndpoint.parse("real-server.example", 80, 1.0)
    assert bad.problem == "tcp address is not an IP address: 'real-server.example'"


# The connector, on loopback.


class Results:
    def __init__(self) -> None:
        self.results: list[ProbeResult] = []

    def __call__(self, result: ProbeResult) -> None:
        self.results.append(result)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.fixture
async def connector() -> AsyncIterator[TcpConnector]:
    made = TcpConnector(asyncio.get_running_loop())
    yield made
    made.close()


def listener(sockets: list[socket.socket], backlog: int = 16) -> int:
    sock = socket.socket()
    sockets.append(sock)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    port: int = sock.getsockname()[1]
    return port


def closed_port(sockets: list[socket.socket]) -> int:
    # Bound but not listening: the port is ours, so nothing else can be listening on it.
    sock = socket.socket()
    sockets.append(sock)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return port


def full_listener(sockets: list[socket.socket]) -> int:
    # Linux drops a SYN while the listener's accept queue is full, so the handshake never ends.
    port = listener(sockets, backlog=0)
    for _ in range(3):
        filler = socket.socket()
        sockets.append(filler)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    return port


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


async def test_connects_refuses_and_times_out(
    connector: TcpConnector, sockets: list[socket.socket]
) -> None:
    outcomes = {"open": Results(), "closed": Results(), "full": Results()}
    ports = {
        "open": listener(sockets),
        "closed": closed_port(sockets),
        "full": full_listener(sockets),
    }
    for name, port in ports.items():
        timeout = 0.2 if name == "full" else 2.0
        connector.connect(TcpEndpoint.parse("127.0.0.1", port, timeout), outcomes[name])
    assert connector.in_flight >= 1  # at least the full listener's
    assert all(not results.results for results in outcomes.values())  # never from connect()
    await wait_for(lambda: all(r.results for r in outcomes.values()), "three results")
    (opened,), (refused,), (timed_out,) = (r.results for r in outcomes.values())
    assert (opened.ok, opened.reason) == (True, "tcp connect ok")
    assert (refused.ok, refused.reason) == (False, "tcp connect refused")
    assert (timed_out.ok, timed_out.reason) == (False, "tcp connect timeout after 0.2 s")
    assert 0.2 <= timed_out.latency < 1.5
    assert opened.latency < 2.0
    assert connector.in_flight == 0


async def test_immediate_failures_are_reported_from_the_loop(
    connector: TcpConnector,
) -> None:
    results = Results()
    connector.connect(TcpEndpoint.parse("not-an-address", 80, 1.0), results)
    connector.connect(TcpEndpoint.parse("127.0.0.1", 80, 1.0, source="192.0.2.77"), results)
    assert results.results == []
    await wait_for(lambda: len(results.results) == 2, "two results")
    assert [r.reason for r in results.results] == [
        "tcp address is not an IP address: 'not-an-address'",
        "tcp bind to 192.0.2.77 failed: Cannot assign requested address",
    ]
    assert not any(r.ok for r in results.results)


async def test_a_cancelled_attempt_closes_its_socket_and_reports_nothing(
    connector: TcpConnector, sockets: list[socket.socket]
) -> None:
    port = full_listener(sockets)
    before = open_fds()
    results = Results()
    attempt = connector.connect(TcpEndpoint.parse("127.0.0.1", port, 0.05), results)
    assert connector.in_flight == 1 and open_fds() != before
    attempt.cancel()
    assert connector.in_flight == 0 and open_fds() == before
    await asyncio.sleep(0.1)  # past the timeout: no verdict may come
    assert results.results == []


async def test_results_come_back_in_bulk_and_leave_no_fd(
    connector: TcpConnector, sockets: list[socket.socket]
) -> None:
    open_port, refused_port = listener(sockets, backlog=512), closed_port(sockets)
    before = open_fds()
    results = Results()
    for index in range(300):
        port = open_port if index % 2 else refused_port
        connector.connect(TcpEndpoint.parse("127.0.0.1", port, 2.0), results)
    await wait_for(lambda: len(results.results) == 300, "300 results")
    assert sum(r.ok for r in results.results) == 150
    assert {r.reason for r in results.results} == {"tcp connect ok", "tcp connect refused"}
    assert open_fds() == before


async def test_a_callback_may_start_the_next_connect(
    connector: TcpConnector, sockets: list[socket.socket]
) -> None:
    port = listener(sockets, backlog=64)
    results: list[ProbeResult] = []
    endpoint = TcpEndpoint.parse("127.0.0.1", port, 2.0)

    def again(result: ProbeResult) -> None:
        results.append(result)
        if len(results) < 20:
            connector.connect(endpoint, again)

    connector.connect(endpoint, again)
    await wait_for(lambda: len(results) == 20, "a chain of 20 connects")
    assert all(r.ok for r in results)


async def test_close_cancels_everything_in_flight(sockets: list[socket.socket]) -> None:
    port = full_listener(sockets)
    before = open_fds()
    connector = TcpConnector(asyncio.get_running_loop())
    results = Results()
    for _ in range(5):
        connector.connect(TcpEndpoint.parse("127.0.0.1", port, 0.05), results)
    connector.close()
    connector.close()  # twice is harmless
    assert open_fds() == before  # the sockets and the connector's epoll set
    await asyncio.sleep(0.1)
    assert results.results == []
    with pytest.raises(RuntimeError, match="closed"):
        connector.connect(TcpEndpoint.parse("127.0.0.1", port, 1.0), results)
