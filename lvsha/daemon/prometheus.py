"""The Prometheus endpoint (`global.metrics.listen`): `GET /metrics` over HTTP.

Served by the parent from snapshots: its own figures, taken at the scrape, and the text files
the children write every few seconds (`RUN_DIR/metrics-<process>.prom`). A scrape reads files
and never talks to a child, so no number of scrapes can make VRRP or a check wait. A child that
is not running contributes nothing (its last file would show a dead process's figures);
`lvsha_metrics_snapshot_age_seconds` says how old each file read was.

The socket is bound before the children start (a port in use stops lvsha with the reason, like
the control socket); aiohttp serves it once they run.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from lvsha.config.model import listen_address
from lvsha.daemon.metrics import LOOP_FAMILIES, Family, catalog

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("lvsha.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MAIN_FAMILIES = catalog(
    *LOOP_FAMILIES,
    Family("lvsha_build_info", "gauge", "Always 1; the labels say which lvsha and Python run."),
    Family("lvsha_config_generation", "gauge", "Generation of the running configuration."),
    Family("lvsha_config_info", "gauge", "Always 1; the running configuration's file and digest."),
    Family("lvsha_config_reloads_total", "counter", "Reloads asked for, by outcome."),
    Family("lvsha_child_restarts_total", "counter", "Restarts of a child process after it exited."),
    Family("lvsha_child_up", "gauge", "1 while the child process runs."),
    Family(
        "lvsha_metrics_snapshot_age_seconds",
        "gauge",
        "Age of the child's metrics file this scrape read (written every few seconds).",
    ),
    Family("lvsha_event_stream_clients", "gauge", "Readers connected to the event stream."),
    Family("lvsha_event_stream_connections_total", "counter", "Connections to the event stream."),
    Family(
        "lvsha_event_stream_refused_total",
        "counter",
        "Event stream connections refused (every place taken).",
    ),
    Family(
        "lvsha_event_stream_evicted_total",
        "counter",
        "Event stream readers that gave their place to a newcomer.",
    ),
    Family(
        "lvsha_event_stream_dropped_slow_total",
        "counter",
        "Event stream readers cut off for falling too far behind.",
    ),
    Family(
        "lvsha_event_stream_accept_errors_total",
        "counter",
        "Event stream accepts that failed (descriptors or memory exhausted).",
    ),
    Family("lvsha_watchdog_fed_total", "counter", "WATCHDOG=1 notifications sent to systemd."),
    Family(
        "lvsha_watchdog_withheld_total",
        "counter",
        "Times the watchdog was due but not fed, a child's loop not answering.",
    ),
    Family(
        "lvsha_bgp_route_announced",
        "gauge",
        "1 while FRR announces the route for lvsha (bgp.announce), else 0.",
    ),
    Family(
        "lvsha_bgp_peer_established",
        "gauge",
        "1 while FRR's BGP session with the peer is established, as last read from FRR.",
    ),
    Family("lvsha_bfd_peer_up", "gauge", "1 while FRR's BFD session with the peer is up."),
    Family(
        "lvsha_bgp_frr_errors_total",
        "counter",
        "vtysh calls that failed or that FRR refused (the log says what and why).",
    ),
)


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on `listen` (host:port); OSError naming the address when the
    address cannot be resolved or bound."""
    host, port = listen_address(listen)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"metrics.listen {listen}: cannot resolve {host}: {exc}") from None
    if not host:  # every address: one dual-stack socket when IPv6 is there
        infos.sort(key=lambda info: info[0] != socket.AF_INET6)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"metrics.listen {listen}: {exc.strerror or exc}") from None
    return sock


def build_labels() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        lvsha_version = version("lvsha")
    except PackageNotFoundError:
        lvsha_version = "unknown"
    python = ".".join(str(part) for part in sys.version_info[:3])
    return {"version": lvsha_version, "python": python}


class MetricsEndpoint:
    """Serves `scrape()` on a bound socket: GET /metrics (and a pointer to it on /)."""

    def __init__(self, listen: str, sock: socket.socket, scrape: Callable[[], str]) -> None:
        self.listen = listen
        self._sock = sock
        self._scrape = scrape
        self._runner: web.AppRunner | None = None

    async def serve(self) -> None:
        from aiohttp import web  # noqa: PLC0415 - imported after the children start

        async def metrics(_request: web.Request) -> web.Response:
            try:
                text = self._scrape()
            except Exception as exc:
                log.exception("metrics: building the scrape failed")
                raise web.HTTPInternalServerError(
                    text="lvsha: the scrape failed; see the log\n"
                ) from exc
            return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

        async def index(_request: web.Request) -> web.Response:
            return web.Response(text="lvsha: metrics at /metrics\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/", index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, self._sock).start()
        log.info("metrics served on http://%s/metrics", self.listen)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sock.close()
