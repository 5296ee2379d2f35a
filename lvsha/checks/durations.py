"""How long probes take, by check type, counted into fixed buckets (a Prometheus histogram).

Observed once per probe that completes (a result, a failure, or one cut as hung), so it must
cost next to nothing: a bisect and three additions. A probe cancelled (a reload stopped its
check, maintenance paused it) has no duration.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds in seconds: a TCP connect on a LAN takes about a millisecond, an HTTP check a
few, a script or a slow server seconds; a probe that times out lands at its timeout (typically
1-10 s), and anything longer in +Inf."""


@dataclass(slots=True)
class Distribution:
    """The probes of one check type: how many ended within each bucket's bound (not yet
    cumulative), their count and the sum of their durations."""

    per_bucket: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    """One count per bound of DURATION_BUCKETS, then one for longer (+Inf)."""
    count: int = 0
    total: float = 0.0

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, probes that took at most that long), +Inf (math.inf) last."""
        running = 0
        for bound, counted in zip((*DURATION_BUCKETS, float("inf")), self.per_bucket, strict=True):
            running += counted
            yield bound, running


class CheckDurations:
    """Probe durations by check type ("tcp", "http", "https", "script", ...): those declared
    (the pool declares each check's as it creates it) and those observed."""

    def __init__(self) -> None:
        self._by_type: dict[str, Distribution] = {}

    def declare(self, check_type: str) -> None:
        """Count `check_type` from now on, at 0 until a probe of it completes: its series
        exist from the start (a rate over them works at once)."""
        if check_type not in self._by_type:
            self._by_type[check_type] = Distribution()

    def observe(self, check_type: str, seconds: float) -> None:
        distribution = self._by_type.get(check_type)
        if distribution is None:
            distribution = self._by_type[check_type] = Distribution()
        seconds = max(0.0, seconds)
        # bisect_left: a duration equal to a bound belongs to that bound's bucket (le).
        distribution.per_bucket[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        distribution.count += 1
        distribution.total += seconds

    def by_type(self) -> dict[str, Distribution]:
        """Every check type observed so far, in the order first observed."""
        return dict(self._by_type)
