"""When a master announces its VIPs: the bursts of gratuitous ARP / neighbour advertisements.

Pure: the caller passes `now` and sends what `due(now)` returns, one announcement round (one
frame per VIP) per packet counted, then sleeps until `next_deadline()`. The adapter starts a
schedule when the VRRP machine asks to announce on becoming master, and stops it on leaving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GarpSettings:
    """The same knobs as `lvsha.config.vrrp.Garp`, in seconds."""

    burst: int = 5
    """Packets sent on becoming master, and again after `delay`."""
    interval: float = 0.0
    """Gap between the packets of one burst; 0 sends a burst's packets at once."""
    delay: float = 5.0
    """A second burst this long after becoming master; 0 sends none."""
    refresh: float = 0.0
    """Period of refresh bursts while master; 0 is off."""
    refresh_burst: int = 1
    """Packets per refresh burst."""

    def __post_init__(self) -> None:
        if self.burst < 1 or self.refresh_burst < 1:
            raise ValueError(
                f"GARP bursts need at least one packet (burst={self.burst}, "
                f"refresh_burst={self.refresh_burst})"
            )
        for name in ("interval", "delay", "refresh"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"GARP {name} must be a finite number of seconds >= 0: {value}")


class AnnouncementSchedule:
    """The announcements one instance owes for one spell as master."""

    def __init__(self, settings: GarpSettings, became_master_at: float) -> None:
        self.settings = settings
        self.became_master_at = became_master_at
        self._pending: list[float] = []
        """Send times of single packets still owed, sorted; a time may repeat."""
        self._refresh_periods_done = 0
        self._stopped = False
        self._add_burst(became_master_at, settings.burst)
        if settings.delay > 0:
            self._add_burst(became_master_at + settings.delay, settings.burst)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _add_burst(self, start: float, packets: int) -> None:
        self._pending.extend(start + k * self.settings.interval for k in range(packets))
        self._pending.sort()

    def _next_refresh(self) -> float | None:
        if self._stopped or self.settings.refresh == 0:
            return None
        return self.became_master_at + (self._refresh_periods_done + 1) * self.settings.refresh

    def next_deadline(self) -> float | None:
        """When the next packet is due; None once stopped (refreshes never end while master)."""
        candidates = [*self._pending[:1]]
        refresh = self._next_refresh()
        if refresh is not None:
            candidates.append(refresh)
        return min(candidates) if candidates else None

    def due(self, now: float) -> int:
        """How many packets to send now; each is counted once, however late `now` is."""
        if self._stopped:
            return 0
        refresh = self._next_refresh()
        if refresh is not None and now >= refresh:
            self._add_burst(refresh, self.settings.refresh_burst)
            # A loop that woke late sends one refresh burst, not one per period it missed.
            elapsed = math.floor((now - self.became_master_at) / self.settings.refresh)
            self._refresh_periods_done = max(self._refresh_periods_done + 1, elapsed)
        count = 0
        while count < len(self._pending) and self._pending[count] <= now:
            count += 1
        del self._pending[:count]
        return count

    def left_master(self) -> None:
        """The instance is no longer master: nothing more is owed."""
        self._stopped = True
        self._pending.clear()
