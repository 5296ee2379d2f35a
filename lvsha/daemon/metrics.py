"""Figures each process measures about itself, written as Prometheus text files.

Each child writes `RUN_DIR/metrics-<process>.prom` every few seconds (atomically, by
rename), the format node_exporter's textfile collector reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from lvsha.stats import RecentSamples

log = logging.getLogger("lvsha.metrics")

Sample = tuple[str, dict[str, str], float]
"""(metric name, labels, value)."""


class LoopLag:
    """How late the event loop runs a callback asked for at a known time (DESIGN.md: VRRP must
    never wait behind anything; this shows whether it does)."""

    def __init__(self, period: float = 0.05, window: int = 2000) -> None:
        self.period = period
        self.lag = RecentSamples(window)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.period

        def tick(due: float = due) -> None:
            now = loop.time()
            self.lag.record(max(0.0, now - due))
            next_due = now + self.period
            self._handle = loop.call_at(next_due, tick, next_due)

        self._handle = loop.call_at(due, tick, due)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def samples(self, process: str) -> list[Sample]:
        labels = {"process": process}
        return [
            ("lvsha_event_loop_lag_seconds", {**labels, "quantile": "0.5"}, self.lag.p50),
            ("lvsha_event_loop_lag_seconds", {**labels, "quantile": "0.99"}, self.lag.p99),
            ("lvsha_event_loop_lag_max_seconds", labels, self.lag.max),
        ]


def render(samples: Iterable[Sample]) -> str:
    lines = []
    for name, labels, value in samples:
        inner = ",".join(f'{key}="{val}"' for key, val in sorted(labels.items()))
        lines.append(f"{name}{{{inner}}} {value:.9g}" if inner else f"{name} {value:.9g}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


async def export_periodically(
    path: Path, collect: Callable[[], Iterable[Sample]], interval: float = 5.0
) -> None:
    """Write `collect()` to `path` every `interval` seconds until cancelled; once more at the
    end."""
    try:
        while True:
            try:
                write_atomically(path, render(collect()))
            except OSError as exc:
                log.warning("cannot write metrics to %s: %s", path, exc)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(OSError):
            write_atomically(path, render(collect()))
