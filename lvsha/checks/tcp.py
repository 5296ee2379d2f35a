"""TCP connect probe: the real server is healthy when its port completes a handshake in time."""

from __future__ import annotations

import asyncio

from lvsha.checks.result import ProbeResult
from lvsha.checks.tcp_fast import TcpConnector, TcpEndpoint, connect_error_reason

__all__ = ["connect_error_reason", "probe_tcp"]


async def probe_tcp(
    address: str, port: int, timeout: float, source: str | None = None
) -> ProbeResult:
    """Connect to (address, port), IPv4 or IPv6, from `source` if given, within `timeout` s.

    One probe on a connector of its own; the check pool shares one connector between its probes.
    """
    loop = asyncio.get_running_loop()
    verdict: asyncio.Future[ProbeResult] = loop.create_future()
    connector = TcpConnector(loop)
    try:
        connector.connect(TcpEndpoint.parse(address, port, timeout, source), verdict.set_result)
        return await verdict
    finally:
        connector.close()
