"""UDP probe: send a payload, then require a matching reply or only the absence of a refusal."""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass

import asyncio_dgram

from lvsha.checks.result import ProbeResult

# asyncio-dgram queues an error that arrives while recv() waits without waking it
# (jsbronder/asyncio-dgram#9), so the refusal is looked for on a doubling backoff.
_FIRST_ERROR_LOOK = 0.001


@dataclass(frozen=True, slots=True)
class ReplyMatch:
    """What a reply must be: exactly `exact`, or bytes that `regex` finds a match in."""

    exact: bytes | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class UdpParams:
    address: str
    port: int
    timeout: float
    payload: bytes = b""
    reply: ReplyMatch | None = None
    """None: healthy unless ICMP port unreachable comes back before the timeout (any reply is
    also healthy). Otherwise a reply must come and match."""


async def probe_udp(params: UdpParams) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = loop.time()
    ok, reason = await _exchange(params, deadline=started + params.timeout)
    return ProbeResult(ok=ok, reason=reason, latency=loop.time() - started)


async def _exchange(params: UdpParams, deadline: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout_at(deadline):
            stream = await asyncio_dgram.connect((params.address, params.port))
    except TimeoutError:
        return False, f"timeout after {float(params.timeout)} s"
    except OSError as error:
        return False, f"udp connect failed: {error.strerror or error}"
    try:
        await stream.send(params.payload)
        reply = await _reply_or_refusal(stream, deadline)
    except ConnectionRefusedError:
        return False, "udp port unreachable"
    except OSError as error:
        return False, f"udp failed: {error.strerror or error}"
    finally:
        stream.close()
    if reply is None:
        if params.reply is None:
            return True, "udp no port unreachable"
        return False, f"udp no reply after {float(params.timeout)} s"
    if params.reply is None:
        return True, "udp reply received"
    return _judge_reply(params.reply, reply)


async def _reply_or_refusal(stream: asyncio_dgram.DatagramClient, deadline: float) -> bytes | None:
    """The first datagram before `deadline`, or None; raises ConnectionRefusedError on ICMP
    port unreachable, which the kernel reports on a connected socket."""
    loop = asyncio.get_running_loop()
    receiving = asyncio.ensure_future(stream.recv())
    look_after = _FIRST_ERROR_LOOK
    try:
        while True:
            stream.exception  # noqa: B018 (the property raises a queued socket error)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            done, _ = await asyncio.wait({receiving}, timeout=min(look_after, remaining))
            if done:
                data: bytes = receiving.result()[0]
                return data
            look_after *= 2
    finally:
        receiving.cancel()


def _judge_reply(match: ReplyMatch, reply: bytes) -> tuple[bool, str]:
    if match.exact is not None and reply != match.exact:
        return False, "udp reply mismatch"
    if match.regex is not None:
        try:
            pattern = _compiled(match.regex)
        except re.error as error:
            return False, f"udp regex invalid: {error}"
        if pattern.search(reply) is None:
            return False, "udp reply regex not matched"
    return True, "udp reply matched"


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode())
