"""SMTP probe against a tiny scripted SMTP-like server on a loopback TCP port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from lvsha.checks.smtp import MAX_REPLY_LINES, QUIT_GRACE, SmtpParams, probe_smtp
from lvsha.config.checks import SMTP_DEFAULT_HELO

LATE_MARGIN = 0.1

Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Recorded:
    """What the probe sent, line by line, per connection."""

    lines: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def smtp_server(
    greeting: bytes = b"220 mx.lvsha.test ESMTP ready\r\n",
    helo_answer: bytes = b"250 mx.lvsha.test\r\n",
    quit_answer: bytes = b"221 bye\r\n",
) -> Callable[[Recorded], Session]:
    def for_recorder(recorded: Recorded) -> Session:
        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(greeting)
                await writer.drain()
                while line := await reader.readline():
                    recorded.lines.append(line)
                    if line.startswith(b"HELO "):
                        writer.write(helo_answer)
                    elif line == b"QUIT\r\n":
                        writer.write(quit_answer)
                        await writer.drain()
                        break
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
                recorded.closed.set()

        return session

    return for_recorder


@dataclass
class Served:
    address: str
    port: int
    recorded: Recorded


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    servers: list[asyncio.Server] = []

    async def start(behaviour: Callable[[Recorded], Session], address: str = "127.0.0.1") -> Served:
        recorded = Recorded()
        server = await asyncio.start_server(behaviour(recorded), address, 0)
        servers.append(server)
        return Served(address, server.sockets[0].getsockname()[1], recorded)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def params(served: Served, timeout: float = 1.0, helo: str = SMTP_DEFAULT_HELO) -> SmtpParams:
    return SmtpParams(served.address, served.port, timeout, helo)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_a_good_server_is_healthy_and_hears_helo_then_quit(
    serve: Callable[..., Awaitable[Served]], address: str
) -> None:
    served = await serve(smtp_server(), address)

    result = await probe_smtp(params(served, helo="director.lvsha.test"))

    assert result.ok, result.reason
    assert result.reason == "smtp HELO answered 250"
    await asyncio.wait_for(served.recorded.closed.wait(), 1.0)
    assert served.recorded.lines == [b"HELO director.lvsha.test\r\n", b"QUIT\r\n"]


async def test_a_multi_line_greeting_is_taken_whole(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    greeting = b"220-mx.lvsha.test ESMTP\r\n220-no UCE\r\n220 ready\r\n"
    served = await serve(smtp_server(greeting=greeting))

    result = await probe_smtp(params(served))

    assert result.ok, result.reason
    assert served.recorded.lines[0] == f"HELO {SMTP_DEFAULT_HELO}\r\n".encode()


async def test_a_multi_line_helo_answer_is_taken_whole(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(smtp_server(helo_answer=b"250-mx.lvsha.test\n250 ok\n"))

    result = await probe_smtp(params(served))

    assert result.ok, result.reason


async def test_a_554_greeting_fails_naming_the_greeting(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(smtp_server(greeting=b"554 no service here\r\n"))

    result = await probe_smtp(params(served))

    assert not result.ok
    assert result.reason == "smtp greeting 554, want 220: no service here"
    assert served.recorded.lines == []  # no HELO after a refusal


async def test_helo_refused_with_501_fails_naming_the_helo(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(smtp_server(helo_answer=b"501 Syntax: HELO hostname\r\n"))

    result = await probe_smtp(params(served))

    assert not result.ok
    assert result.reason == "smtp HELO answered 501, want 250: Syntax: HELO hostname"


async def test_continuation_lines_with_another_code_are_not_smtp(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(smtp_server(greeting=b"220-hello\r\n250 odd\r\n"))

    result = await probe_smtp(params(served))

    assert result.reason == "smtp greeting is not an SMTP reply: '250 odd'"


async def test_a_greeting_that_is_not_smtp_fails(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(smtp_server(greeting=b"SSH-2.0-OpenSSH_9.2\r\n"))

    result = await probe_smtp(params(served))

    assert result.reason == "smtp greeting is not an SMTP reply: 'SSH-2.0-OpenSSH_9.2'"


async def test_endless_continuation_lines_fail(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(smtp_server(greeting=b"220-more\r\n" * (MAX_REPLY_LINES + 1)))

    result = await probe_smtp(params(served))

    assert result.reason == f"smtp greeting has more than {MAX_REPLY_LINES} lines"


async def test_a_server_that_closes_before_greeting_fails(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    served = await serve(lambda recorded: hang_up)

    result = await probe_smtp(params(served))

    assert result.reason == "smtp server closed the connection before the greeting"


async def test_a_server_that_never_speaks_times_out_waiting_for_the_greeting(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the probe gives up and closes
        writer.close()

    served = await serve(lambda recorded: silent)
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await probe_smtp(params(served, timeout=0.2))

    assert result.reason == "timeout after 0.2 s waiting for the greeting"
    assert 0.2 <= loop.time() - started < 0.2 + LATE_MARGIN


async def test_a_server_silent_after_helo_times_out_waiting_for_the_answer(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(smtp_server(helo_answer=b""))

    result = await probe_smtp(params(served, timeout=0.2))

    assert result.reason == "timeout after 0.2 s waiting for the HELO answer"


async def test_an_unanswered_quit_costs_at_most_the_grace(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    async def mute_after_helo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await reader.readline()
        writer.write(b"250 hello\r\n")
        await reader.read()  # QUIT is never answered; the probe closes
        writer.close()

    served = await serve(lambda recorded: mute_after_helo)
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await probe_smtp(params(served, timeout=5.0))

    assert result.ok, result.reason
    assert QUIT_GRACE <= loop.time() - started < QUIT_GRACE + LATE_MARGIN
    assert result.latency < LATE_MARGIN  # the verdict came with the HELO answer


async def test_connection_refused() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = await probe_smtp(SmtpParams("127.0.0.1", port, 1.0, SMTP_DEFAULT_HELO))

    assert not result.ok
    assert result.reason == "smtp connect refused"


async def test_a_source_address_is_used(serve: Callable[..., Awaitable[Served]]) -> None:
    peers: list[str] = []

    async def note_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        writer.write(b"554 go away\r\n")
        await writer.drain()
        writer.close()

    served = await serve(lambda recorded: note_peer)

    result = await probe_smtp(
        SmtpParams(served.address, served.port, 1.0, SMTP_DEFAULT_HELO, source="127.0.0.2")
    )

    assert result.reason.startswith("smtp greeting 554")
    assert peers == ["127.0.0.2"]


async def test_a_cancelled_probe_closes_its_connection(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    connected, hung_up = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # returns once the probe closes its side
        hung_up.set()
        writer.close()

    served = await serve(lambda recorded: silent)
    probe = asyncio.create_task(probe_smtp(params(served, timeout=30.0)))
    await asyncio.wait_for(connected.wait(), 1.0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await asyncio.wait_for(hung_up.wait(), 1.0)
