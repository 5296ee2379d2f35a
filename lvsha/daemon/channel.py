"""A child's end of the channel to the parent: typed messages (lvsha.messages), a JSON line each."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator

from lvsha.daemon.supervisor import CHANNEL_FD_ENV
from lvsha.messages import MAX_LINE, Message, MessageError, decode, encode

log = logging.getLogger("lvsha.channel")


class ParentChannel:
    """Messages to and from the parent; without a parent (run by hand) sends are dropped and
    nothing arrives."""

    def __init__(self) -> None:
        fd = os.environ.get(CHANNEL_FD_ENV)
        self._sock = socket.socket(fileno=int(fd)) if fd else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self._sock is not None:
            self._reader, self._writer = await asyncio.open_connection(
                sock=self._sock, limit=MAX_LINE
            )

    def send(self, message: Message) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        self._writer.write(encode(message))

    async def messages(self) -> AsyncIterator[Message]:
        """What the parent sends, until it closes the channel."""
        if self._reader is None:
            return
        while line := await self._reader.readline():
            try:
                message = decode(line)
            except MessageError as exc:
                log.error("malformed message from the parent: %s: %r", exc, line[:200])
                continue
            yield message

    def close(self) -> None:
        """Close the channel; call it while the event loop still runs. Closing twice, or
        after the loop is gone (an early exit), only closes the socket."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
                return
            except RuntimeError:  # the loop is already closed
                pass
        if self._sock is not None:
            self._sock.close()
