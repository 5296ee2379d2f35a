"""SMTP probe: the server greets with 220 and answers HELO with 250 (keepalived's SMTP_CHECK).

The dialogue is keepalived's: connect, read the greeting, send `HELO name`, read the answer,
send `QUIT`. Unlike keepalived, a multi-line greeting (`220-...` lines, then `220 ...`, RFC 5321
4.2.1) is taken whole rather than failed on its first line. The server is judged at the HELO
answer; the QUIT is a courtesy, whose answer is awaited briefly (so the server sees an orderly
end) and never changes the verdict.

The whole dialogue is bounded by the check's timeout; a failure's reason names the step it
failed at ("smtp greeting 554, want 220: ...", "timeout after 3.0 s waiting for the HELO
answer").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from dataclasses import dataclass

from lvsha.checks.result import ProbeResult

MAX_LINE_BYTES = 4096
"""A reply line longer than this is not SMTP (RFC 5321 4.5.3.1.5 allows 512 octets)."""
MAX_REPLY_LINES = 64
"""Continuation lines taken in one reply before the server counts as misbehaving."""
QUIT_GRACE = 1.0
"""Seconds at most to wait for the answer to QUIT, within what is left of the timeout."""
_SHOWN_TEXT_CHARS = 80
_REPLY_LINE = re.compile(rb"([0-9]{3})([ -]|$)(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SmtpParams:
    address: str
    port: int
    timeout: float
    helo_name: str
    source: str | None = None
    """Connect from this address (bind_address)."""


@dataclass(frozen=True, slots=True)
class SmtpReply:
    code: int
    text: str
    """The last line's text (after the code), for reasons."""


class _DialogueError(Exception):
    """The dialogue failed; str() is the probe's reason."""


async def probe_smtp(params: SmtpParams) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = loop.time()
    dialogue = _Dialogue(params)
    try:  # closed however the probe ends, cancelled too
        try:
            async with asyncio.timeout(params.timeout):
                reason = await dialogue.judge()
            ok = True
        except TimeoutError:
            reason = f"timeout after {float(params.timeout)} s {dialogue.step}"
            ok = False
        except _DialogueError as error:
            reason = str(error)
            ok = False
        latency = loop.time() - started  # the verdict is in; QUIT is a courtesy
        if ok:
            await dialogue.quit(min(QUIT_GRACE, started + params.timeout - loop.time()))
    finally:
        dialogue.close()
    return ProbeResult(ok=ok, reason=reason, latency=latency)


class _Dialogue:
    def __init__(self, params: SmtpParams) -> None:
        self.params = params
        self.step = "connecting"
        """What the probe is doing, as a timeout's reason ends."""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def judge(self) -> str:
        params = self.params
        local = None if params.source is None else (params.source, 0)
        try:
            self._reader, self._writer = await asyncio.open_connection(
                params.address, params.port, local_addr=local, limit=MAX_LINE_BYTES
            )
        except ConnectionRefusedError:
            raise _DialogueError("smtp connect refused") from None
        except OSError as error:
            raise _DialogueError(f"smtp connect failed: {_describe(error)}") from None
        self.step = "waiting for the greeting"
        greeting = await self._reply("greeting")
        if greeting.code != 220:
            raise _DialogueError(f"smtp greeting {greeting.code}, want 220{_said(greeting)}")
        self.step = "sending HELO"
        await self._send(f"HELO {params.helo_name}\r\n", "HELO")
        self.step = "waiting for the HELO answer"
        answer = await self._reply("HELO answer")
        if answer.code != 250:
            raise _DialogueError(f"smtp HELO answered {answer.code}, want 250{_said(answer)}")
        return "smtp HELO answered 250"

    async def quit(self, grace: float) -> None:
        """Say QUIT and wait up to `grace` s for the answer; whatever happens is no news."""
        if grace <= 0 or self._writer is None:
            return
        with contextlib.suppress(TimeoutError, _DialogueError):
            async with asyncio.timeout(grace):
                await self._send("QUIT\r\n", "QUIT")
                await self._reply("QUIT answer")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # the transport closes at once; nothing to wait for
            self._writer = None

    async def _send(self, line: str, what: str) -> None:
        assert self._writer is not None
        try:
            self._writer.write(line.encode("ascii"))
            await self._writer.drain()
        except OSError as error:
            raise _DialogueError(f"smtp sending {what} failed: {_describe(error)}") from None

    async def _reply(self, what: str) -> SmtpReply:
        """One reply, its continuation lines (same code, then `-`) included."""
        assert self._reader is not None
        code: bytes | None = None
        for _ in range(MAX_REPLY_LINES):
            try:
                raw = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise _DialogueError(
                    f"smtp server closed the connection before the {what}"
                ) from None
            except asyncio.LimitOverrunError:
                raise _DialogueError(
                    f"smtp {what} line longer than {MAX_LINE_BYTES} bytes"
                ) from None
            except OSError as error:
                raise _DialogueError(
                    f"smtp reading the {what} failed: {_describe(error)}"
                ) from None
            line = raw.rstrip(b"\r\n")
            match = _REPLY_LINE.fullmatch(line)
            if match is None or (code is not None and match.group(1) != code):
                raise _DialogueError(f"smtp {what} is not an SMTP reply: {_text(line)!r}")
            code = match.group(1)
            if match.group(2) != b"-":
                return SmtpReply(int(code), _text(match.group(3)))
        raise _DialogueError(f"smtp {what} has more than {MAX_REPLY_LINES} lines")


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > _SHOWN_TEXT_CHARS:
        text = text[:_SHOWN_TEXT_CHARS] + "..."
    return text


def _said(reply: SmtpReply) -> str:
    return f": {reply.text}" if reply.text else ""


def _describe(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return str(error)
    return error.strerror or str(error) or type(error).__name__
