"""TCP connect probe: the real server is healthy when its port completes a handshake in time."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket

from lvsha.checks.result import ProbeResult

_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "tcp connect refused",
    errno.EHOSTUNREACH: "tcp no route to host",
    errno.ENETUNREACH: "tcp network unreachable",
    errno.ECONNRESET: "tcp connect reset",
    errno.ETIMEDOUT: "tcp connect timed out in the kernel",
}


def connect_error_reason(error: OSError) -> str:
    """The probe reason for a failed connect()."""
    known = _CONNECT_ERRORS.get(error.errno or 0)
    if known is not None:
        return known
    return f"tcp connect failed: {error.strerror or error}"


async def probe_tcp(
    address: str, port: int, timeout: float, source: str | None = None
) -> ProbeResult:
    """Connect to (address, port), IPv4 or IPv6, from `source` if given, within `timeout` s."""
    loop = asyncio.get_running_loop()
    started_at = loop.time()

    def verdict(ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(ok, reason, loop.time() - started_at)

    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return verdict(False, f"tcp address is not an IP address: {address!r}")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            try:
                sock.bind((source, 0))
            except OSError as error:
                return verdict(False, f"tcp bind to {source} failed: {error.strerror or error}")
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await loop.sock_connect(sock, (address, port))
        except OSError as error:
            # A kernel ETIMEDOUT is a TimeoutError too; only ours is "after N s".
            if deadline.expired():
                return verdict(False, f"tcp connect timeout after {float(timeout)} s")
            return verdict(False, connect_error_reason(error))
        return verdict(True, "tcp connect ok")
    finally:
        sock.close()
