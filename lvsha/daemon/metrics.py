"""Figures each process measures about itself, in Prometheus' text format.

Each child writes `RUN_DIR/metrics-<process>.prom` every few seconds (atomically, by rename),
the format node_exporter's textfile collector reads. These files are also the snapshot the
parent serves on `global.metrics.listen`: a scrape reads them and merges them with the
parent's own figures (`merge`), so it never makes a child wait.

Every sample belongs to a `Family` (name, type, help) declared by the process that measures
it; `render` writes each family once, with its `# HELP` and `# TYPE` lines, and its samples
together. A sample of a family nobody declared is a bug: `render` raises KeyError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lvsha.stats import RecentSamples

log = logging.getLogger("lvsha.metrics")

Sample = tuple[str, dict[str, str], float]
"""(metric name, labels, value). A histogram's samples are named `<family>_bucket` (with an
`le` label), `<family>_sum` and `<family>_count`."""

Kind = Literal["counter", "gauge", "histogram", "summary"]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: Kind
    help: str


Families = Mapping[str, Family]


def catalog(*families: Family) -> dict[str, Family]:
    """The families by name; a name declared twice is a bug."""
    out: dict[str, Family] = {}
    for family in families:
        if family.name in out:
            raise ValueError(f"metric family {family.name} declared twice")
        out[family.name] = family
    return out


def family_of(name: str, families: Families) -> Family:
    """The family a sample named `name` belongs to; KeyError when none was declared."""
    family = families.get(name)
    if family is not None:
        return family
    base, _, suffix = name.rpartition("_")
    family = families.get(base)
    if family is not None and (
        (family.kind in ("histogram", "summary") and suffix in ("sum", "count"))
        or (family.kind == "histogram" and suffix == "bucket")
    ):
        return family
    raise KeyError(f"metric {name} belongs to no declared family")


def summary(name: str, labels: dict[str, str], recent: RecentSamples) -> list[Sample]:
    """A summary's samples: the median and p99 of the recent window, and the count and sum
    since the start."""
    return [
        (name, {**labels, "quantile": "0.5"}, recent.p50),
        (name, {**labels, "quantile": "0.99"}, recent.p99),
        (f"{name}_sum", labels, recent.total),
        (f"{name}_count", labels, float(recent.count)),
    ]


LOOP_FAMILIES = (
    Family(
        "lvsha_event_loop_lag_seconds",
        "summary",
        "How late the process's event loop ran a callback due at a known time; quantiles over "
        "the last 2000 ticks (one every 50 ms).",
    ),
    Family(
        "lvsha_event_loop_lag_max_seconds",
        "gauge",
        "The most the process's event loop ran late since it started.",
    ),
)
"""Declared by every process (the samples differ by the `process` label)."""


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
            *summary("lvsha_event_loop_lag_seconds", labels, self.lag),
            ("lvsha_event_loop_lag_max_seconds", labels, self.lag.max),
        ]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, labels: dict[str, str], value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
        return f"{name}{{{inner}}} {value:.9g}"
    return f"{name} {value:.9g}"


class _Blocks:
    """Sample lines grouped by family, in the order the families first appear."""

    def __init__(self, families: Families) -> None:
        self.families = families
        self.lines: dict[str, list[str]] = {}

    def add(self, sample: Sample) -> None:
        name, labels, value = sample
        family = family_of(name, self.families)
        self.lines.setdefault(family.name, []).append(_line(name, labels, value))

    def text(self) -> str:
        out = []
        for name, lines in self.lines.items():
            family = self.families[name]
            help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.kind}\n")
            out.append("\n".join(lines) + "\n")
        return "".join(out)


def render(samples: Iterable[Sample], families: Families) -> str:
    blocks = _Blocks(families)
    for sample in samples:
        blocks.add(sample)
    return blocks.text()


RENDER_SLICE = 2000
"""Samples collected and rendered between two turns of the event loop."""


async def render_sliced(samples: Iterable[Sample], families: Families) -> str:
    """`render`, giving the event loop a turn every `RENDER_SLICE` samples: `samples` may be a
    generator that collects as it goes, so collecting is sliced too."""
    blocks = _Blocks(families)
    for count, sample in enumerate(samples, 1):
        blocks.add(sample)
        if count % RENDER_SLICE == 0:
            await asyncio.sleep(0)
    return blocks.text()


Blocks = dict[str, tuple[str, str]]
"""A rendered text by family: its `# HELP` and `# TYPE` lines, and its sample lines."""


def parse(text: str) -> Blocks:
    """The families of a text `render` wrote, in order (for `merge_blocks`)."""
    headers: dict[str, list[str]] = {}
    lines: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            headers[name] = [line]
            current = lines.setdefault(name, [])
        elif line.startswith("# TYPE ") and current is not None:
            headers[line.split(" ", 3)[2]].append(line)
        elif line and current is not None:
            current.append(line)
    return {
        name: ("".join(f"{h}\n" for h in headers[name]), "".join(f"{x}\n" for x in lines[name]))
        for name in headers
    }


def merge_blocks(parsed: Iterable[Blocks]) -> str:
    """Several processes' families as one exposition: a family several of them have appears
    once, with the samples of each (they differ by labels, e.g. `process`)."""
    headers: dict[str, str] = {}
    samples: dict[str, list[str]] = {}
    for blocks in parsed:
        for name, (header, lines) in blocks.items():
            headers.setdefault(name, header)
            samples.setdefault(name, []).append(lines)
    return "".join(headers[name] + "".join(samples[name]) for name in headers)


def merge(texts: Iterable[str]) -> str:
    """Texts `render` wrote (one per process) as one exposition (`merge_blocks`)."""
    return merge_blocks(parse(text) for text in texts)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


Collect = Callable[[], Iterable[Sample]]


async def export_periodically(
    path: Path, collect: Collect, families: Families, interval: float = 5.0
) -> None:
    """Write `collect()` to `path` every `interval` seconds until cancelled (rendered in
    slices: see `render_sliced`); once more at the end."""
    try:
        while True:
            try:
                write_atomically(path, await render_sliced(collect(), families))
            except OSError as exc:
                log.warning("cannot write metrics to %s: %s", path, exc)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(OSError):
            write_atomically(path, render(collect(), families))
