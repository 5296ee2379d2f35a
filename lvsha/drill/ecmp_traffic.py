"""Traffic for the ECMP drill: an echo server per real server, and a client process.

`python -m lvsha.drill.ecmp_traffic server NAME PORT` greets each connection with `NAME\\n`
(so the client learns which real server took it) and echoes whatever it receives.

`python -m lvsha.drill.ecmp_traffic client VIP PORT INTERVAL` keeps long-lived connections to
the VIP, each sending a 16-byte message every INTERVAL s and waiting for its echo before the
next (stop and wait), and on request opens short connections continuously. It runs in a
process of its own, in the client's namespace, so that nothing the drill does stalls it. The
drill drives it with one JSON object per line on its stdin, and it answers each with one line
on its stdout (`TrafficClient` is the drill's side):

- `{"cmd": "open", "count": N}` opens N more long-lived connections;
- `{"cmd": "churn", "rate": R}` opens R short connections a second from now on (0 stops);
- `{"cmd": "report", "since": T}` says what every long-lived connection went through, and
  the short connections begun at T or later;
- `{"cmd": "close"}` closes the long-lived connections.

Every time is CLOCK_MONOTONIC, which the drill's `time.monotonic()` reads too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MESSAGE = b"lvsha-ecmp-drill"  # 16 bytes
TICK = 0.01
"""The client's scheduling step: each connection is served on one tick in every interval."""
CONNECT_TIMEOUT = 5.0
OPEN_CONCURRENCY = 32
SHORT_TIMEOUT = 3.0
"""A short connection that has not connected, been greeted and echoed in this long failed."""
LONG_WAIT = 0.5
"""Waits for an echo longer than this are reported one by one (a stall is longer still)."""


# -- the real servers' echo server ---------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.greeting)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def serve(name: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    greeting = f"{name}\n".encode()
    server = await loop.create_server(
        lambda: EchoProtocol(greeting), "0.0.0.0", port, backlog=4096, reuse_address=True
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# -- the client ------------------------------------------------------------------------------


class Flow(asyncio.Protocol):
    """One long-lived connection: its real server, its stalls, how it ended."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.port = 0
        self.server: str | None = None
        self._greeting = b""
        self.greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_at: float | None = None
        """When the message now awaiting its echo left; None when none is."""
        self.awaited = 0
        self.exchanges = 0
        self.last_echo = 0.0
        self.waits: list[tuple[float, float]] = []
        """(sent at, waited s) for each echo that took over LONG_WAIT."""
        self.ended_at: float | None = None
        self.why: str | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.server is None:
            self._greeting += data
            if b"\n" not in self._greeting:
                return
            line, _, data = self._greeting.partition(b"\n")
            self.server = line.decode(errors="replace")
            self.last_echo = now
            if not self.greeted.done():
                self.greeted.set_result(None)
            if not data:
                return
        if self.sent_at is None:
            return
        self.awaited -= len(data)
        if self.awaited <= 0:
            waited = now - self.sent_at
            if waited > LONG_WAIT:
                self.waits.append((self.sent_at, waited))
            self.sent_at = None
            self.exchanges += 1
            self.last_echo = now

    def eof_received(self) -> bool:
        self._end("closed by the server")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._end("closed")
        elif isinstance(exc, ConnectionResetError):
            self._end("reset")
        else:
            self._end(type(exc).__name__)
        if not self.greeted.done():
            self.greeted.set_exception(ConnectionError(self.why or "lost"))

    def _end(self, why: str) -> None:
        if self.ended_at is None and not self.closing:
            self.ended_at = time.monotonic()
            self.why = why

    def tick(self, now: float) -> None:
        if self.ended_at is not None or self.server is None or self.sent_at is not None:
            return
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.sent_at = now
        self.awaited = len(MESSAGE)
        self.transport.write(MESSAGE)

    def report(self, now: float) -> list[Any]:
        waits = list(self.waits)
        if self.sent_at is not None and self.ended_at is None and now - self.sent_at > LONG_WAIT:
            waits.append((self.sent_at, now - self.sent_at))  # still waiting
        return [
            self.port,
            self.server,
            self.ended_at,
            self.why,
            self.last_echo,
            self.exchanges,
            [[round(at, 4), round(waited, 4)] for at, waited in waits],
        ]


@dataclass(slots=True)
class ShortTry:
    began: float
    took: float
    failure: str | None
    server: str | None


class Client:
    def __init__(self, vip: str, port: int, interval: float) -> None:
        self.vip = vip
        self.port = port
        self.interval = interval
        self.buckets = max(1, round(interval / TICK))
        self.flows: list[Flow] = []
        self.shorts: list[ShortTry] = []
        self.short_tasks: set[asyncio.Task[None]] = set()
        self.rate = 0.0
        self._churn: asyncio.Task[None] | None = None
        self._tick = 0

    async def open(self, count: int) -> dict[str, Any]:
        began = time.monotonic()
        limit = asyncio.Semaphore(OPEN_CONCURRENCY)
        loop = asyncio.get_running_loop()

        async def one() -> Flow | None:
            async with limit:
                flow = Flow(self)
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await loop.create_connection(lambda: flow, self.vip, self.port)
                        await flow.greeted
                except (OSError, TimeoutError):
                    if flow.transport is not None:
                        flow.closing = True
                        flow.transport.abort()
                    return None
                return flow

        opened = [flow for flow in await asyncio.gather(*(one() for _ in range(count))) if flow]
        self.flows += opened
        return {
            "opened": len(opened),
            "failed": count - len(opened),
            "seconds": round(time.monotonic() - began, 3),
        }

    def close(self) -> dict[str, Any]:
        for flow in self.flows:
            flow.closing = True
            if flow.transport is not None:
                flow.transport.close()
        closed = len(self.flows)
        self.flows = []
        return {"closed": closed}

    async def run_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            now = time.monotonic()
            bucket = self._tick % self.buckets
            for index in range(bucket, len(self.flows), self.buckets):
                self.flows[index].tick(now)
            self._tick += 1
            next_at += TICK
            delay = next_at - loop.time()
            if delay < 0:  # running late: do not try to catch up in a burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    def churn(self, rate: float) -> dict[str, Any]:
        self.rate = rate
        if self._churn is not None:
            self._churn.cancel()
            self._churn = None
        if rate > 0:
            self._churn = asyncio.get_running_loop().create_task(self._run_churn())
        return {"rate": rate}

    async def _run_churn(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            task = loop.create_task(self._short())
            self.short_tasks.add(task)
            task.add_done_callback(self.short_tasks.discard)
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _short(self) -> None:
        began = time.monotonic()
        failure: str | None = None
        server: str | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(SHORT_TIMEOUT):
                reader, writer = await asyncio.open_connection(self.vip, self.port)
                server = (await reader.readuntil(b"\n")).decode(errors="replace").strip()
                writer.write(MESSAGE)
                await reader.readexactly(len(MESSAGE))
        except TimeoutError:
            failure = "timeout"
        except ConnectionRefusedError:
            failure = "refused"
        except ConnectionResetError:
            failure = "reset"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            failure = "closed"
        except OSError as exc:
            failure = type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
        self.shorts.append(ShortTry(began, time.monotonic() - began, failure, server))

    def report(self, since: float) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "now": now,
            "flows": [flow.report(now) for flow in self.flows],
            "short": [
                [s.began, round(s.took, 4), s.failure, s.server]
                for s in self.shorts
                if s.began >= since
            ],
        }


async def run_client(vip: str, port: int, interval: float) -> None:
    client = Client(vip, port, interval)
    loop = asyncio.get_running_loop()
    ticks = loop.create_task(client.run_ticks())
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            command = request.get("cmd")
            answer: dict[str, Any]
            if command == "open":
                answer = await client.open(int(request["count"]))
            elif command == "churn":
                answer = client.churn(float(request["rate"]))
            elif command == "report":
                answer = client.report(float(request.get("since", 0.0)))
            elif command == "close":
                answer = client.close()
            else:
                answer = {"error": f"unknown command {command!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        ticks.cancel()
        client.churn(0)
        client.close()


# -- the drill's side ------------------------------------------------------------------------


class TrafficError(RuntimeError):
    """The traffic client did not answer as it should."""


class TrafficClient:
    """The client process, started by the drill in the client's namespace."""

    def __init__(self, process: subprocess.Popen[bytes], start_timeout: float) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        ready = self._read(start_timeout)
        if not ready.get("ready"):
            raise TrafficError(f"the traffic client said {ready!r}")

    def _read(self, timeout: float) -> dict[str, Any]:
        readable, _, _ = select.select([self._stdout], [], [], timeout)
        line = self._stdout.readline() if readable else b""
        if not line:
            raise TrafficError(
                f"the traffic client did not answer within {timeout} s "
                f"(exit code {self.process.poll()})"
            )
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise TrafficError(answer["error"])
        return answer

    def ask(self, timeout: float, **request: Any) -> dict[str, Any]:
        self._stdin.write(json.dumps(request).encode() + b"\n")
        self._stdin.flush()
        return self._read(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self._stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["server"] and len(args) == 3:
        asyncio.run(serve(args[1], int(args[2])))
        return 0
    if args[:1] == ["client"] and len(args) == 4:
        asyncio.run(run_client(args[1], int(args[2]), float(args[3])))
        return 0
    print(
        "usage: python -m lvsha.drill.ecmp_traffic server NAME PORT | client VIP PORT INTERVAL",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
