"""Quantiles over a window of recent samples, for the figures lvsha measures and exports."""

from __future__ import annotations

import math
from collections import deque


class RecentSamples:
    """The last `window` samples of one measure (seconds), with their count and maximum."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._recent: deque[float] = deque(maxlen=window)
        self.count = 0
        """Samples since the start, not only those in the window."""
        self.total = 0.0
        """Their sum since the start."""
        self.max = 0.0

    def record(self, value: float) -> None:
        self._recent.append(value)
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float:
        """The q-quantile (nearest rank) of the recent samples; 0.0 before any."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if not self._recent:
            return 0.0
        ordered = sorted(self._recent)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.quantile(0.5)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)
