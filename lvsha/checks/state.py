"""Health state of one check of one real server: rounds, retries, rise/fall, maintenance.

Pure and synchronous: results and operator commands come in with an explicit `now`, transitions
go out as events, and `next_probe_at` says when the pool should probe next.

Vocabulary: an *attempt* is one probe. A *round* is one attempt plus up to `retries` more, each
`delay_before_retry` after the previous failure; it passes on the first passing attempt and fails
when every attempt failed. `rise` consecutive passing rounds bring a Down check Up, `fall`
consecutive failing rounds take an Up check Down.

Start-up: with `alpha` a check starts Down and must pass `rise` rounds. Without it the check starts
Unknown, meaning "no round completed yet", and Unknown counts as in service, as keepalived puts
real servers in service at start; its first round settles it either way, with no rise or fall
grace, since nothing has been proven yet.

Restart: a checker that restarts finds the IPVS table its predecessor left, which says how each
real server stood. A `Presumption` carries that: a real server that was in service stays in
service (Unknown: its first round settles it), one that was out stays out (Down: it must pass
`rise` rounds, as with alpha), until its checks have spoken. Without one (a first start on an
empty table) `alpha` decides, as above.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lvsha.checks.result import ProbeResult


class CheckStatus(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    DISABLED = "disabled"
    """Drained by an operator: reported whatever the probes say; they keep running underneath."""


@dataclass(frozen=True, slots=True)
class CheckParams:
    """Timing and thresholds of one check. Defaults are keepalived's (delay_loop 60 s,
    connect_timeout 5 s, retry 1, delay_before_retry 1 s); rise and fall of 1 behave as keepalived,
    which has neither."""

    interval: float = 60.0
    """Seconds from the start of the attempt that ended a round to the start of the next round."""
    timeout: float = 5.0
    retries: int = 1
    """Extra attempts after a failed one, within a round, while the check is not Down."""
    delay_before_retry: float = 1.0
    rise: int = 1
    fall: int = 1
    alpha: bool = False

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be > 0, got {self.interval}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.delay_before_retry < 0:
            raise ValueError(f"delay_before_retry must be >= 0, got {self.delay_before_retry}")
        if self.rise < 1:
            raise ValueError(f"rise must be >= 1, got {self.rise}")
        if self.fall < 1:
            raise ValueError(f"fall must be >= 1, got {self.fall}")


# Inputs.


@dataclass(frozen=True, slots=True)
class ProbeCompleted:
    result: ProbeResult
    now: float
    due: float | None = None
    """When the probe was scheduled to start; None: take its start as now - latency."""


@dataclass(frozen=True, slots=True)
class Disable:
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class Enable:
    reason: str
    now: float


CheckInput = ProbeCompleted | Disable | Enable


# Outputs: one per change of the reported status or of the dynamic weight.


@dataclass(frozen=True, slots=True)
class Up:
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Down:
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class WeightChanged:
    weight: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Disabled:
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Enabled:
    """Maintenance is over; `status` and `weight` are what the probes said meanwhile."""

    status: CheckStatus
    weight: int | None
    reason: str
    at: float


CheckEvent = Up | Down | WeightChanged | Disabled | Enabled


class CheckTransitionError(Exception):
    """An input the current status cannot take (enabling a check that is not disabled, ...)."""


@dataclass(frozen=True, slots=True)
class Presumption:
    """How a real server stood before this start, as the IPVS table shows it."""

    up: bool
    """In service (present at a weight, or at weight 0 without inhibit_on_failure), or out."""
    weight: int | None = None
    """The weight it had when that differs from the configured one; None: the configured."""


PRESUMED_UP_REASON = "in service in the IPVS table at start, no probe yet"
PRESUMED_DOWN_REASON = "out of service in the IPVS table at start, no probe yet"


def initial_health(alpha: bool, presumed_up: Iterable[bool] = ()) -> CheckStatus:
    """The health a check starts in, given how the real servers it serves stood before
    (`presumed_up`, one per real server with a presumption; none on a first start).

    One that was in service anywhere starts Unknown (in service, settled by its first round),
    so no real server that was serving is taken out before a probe says so; one that was out
    everywhere starts Down. Without presumptions, alpha decides.
    """
    presumed = list(presumed_up)
    if not presumed:
        return CheckStatus.DOWN if alpha else CheckStatus.UNKNOWN
    return CheckStatus.UNKNOWN if any(presumed) else CheckStatus.DOWN


def presumed_status(
    status: CheckStatus, spoken: bool, presumption: Presumption | None
) -> CheckStatus:
    """What a check counts as for one real server: its `status`, or, until it has `spoken`
    (ended a round), how that real server stood before (a check shared with a real server
    that was serving starts Unknown, but counts as Down for one that was out)."""
    if presumption is None or spoken or status is CheckStatus.DISABLED:
        return status
    return CheckStatus.UP if presumption.up else CheckStatus.DOWN


class CheckState:
    """One (real server, check) pair.

    `initial` is the health to start in (see `initial_health`); None lets `alpha` decide.
    """

    def __init__(
        self,
        params: CheckParams,
        now: float,
        first_probe_at: float | None = None,
        initial: CheckStatus | None = None,
    ):
        self.params = params
        self._now = now
        if initial is None:
            initial = CheckStatus.DOWN if params.alpha else CheckStatus.UNKNOWN
            reason = "alpha: not yet proven healthy" if params.alpha else "no probe yet"
        elif initial is CheckStatus.UNKNOWN:
            reason = PRESUMED_UP_REASON
        elif initial is CheckStatus.DOWN:
            reason = PRESUMED_DOWN_REASON
        else:
            raise ValueError(f"a check starts Unknown or Down, not {initial.name}")
        self._health = initial
        self._disabled = False
        self._weight: int | None = None
        self._failed_attempts = 0
        self._consecutive_passes = 0
        self._consecutive_failures = 0
        self._rounds = 0
        self._next_probe_at = now if first_probe_at is None else first_probe_at
        self._reason = reason
        self._last_result: ProbeResult | None = None
        self._last_result_at: float | None = None

    @property
    def status(self) -> CheckStatus:
        return CheckStatus.DISABLED if self._disabled else self._health

    @property
    def health(self) -> CheckStatus:
        """What the probes say, maintenance aside: Unknown, Up or Down."""
        return self._health

    @property
    def weight(self) -> int | None:
        """The last dynamic weight reported by a passing probe; None keeps the configured one."""
        return self._weight

    @property
    def next_probe_at(self) -> float:
        return self._next_probe_at

    @property
    def failed_attempts(self) -> int:
        """Failed attempts so far in the current round."""
        return self._failed_attempts

    @property
    def spoken(self) -> bool:
        """Whether a round has ended: the probes, not a presumption, say how it stands."""
        return self._rounds > 0

    @property
    def consecutive_passes(self) -> int:
        return self._consecutive_passes

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def reason(self) -> str:
        """The reason of the last probe result or operator command."""
        return self._reason

    @property
    def last_result(self) -> ProbeResult | None:
        """The last probe's result (any attempt, retries included); None: no probe yet."""
        return self._last_result

    @property
    def last_result_at(self) -> float | None:
        """When the last probe ended (the `now` it was handed in with)."""
        return self._last_result_at

    def handle(self, event: CheckInput) -> list[CheckEvent]:
        if event.now < self._now:
            raise ValueError(f"time went backwards: {event.now} < {self._now}")
        handler = _TRANSITIONS.get((self.status, type(event)))
        if handler is None:
            raise CheckTransitionError(f"{type(event).__name__} in status {self.status.name}")
        self._now = event.now
        return handler(self, event)

    def probe_completed(
        self, result: ProbeResult, now: float, due: float | None = None
    ) -> list[CheckEvent]:
        return self.handle(ProbeCompleted(result, now, due))

    def disable(self, reason: str, now: float) -> list[CheckEvent]:
        return self.handle(Disable(reason, now))

    def enable(self, reason: str, now: float) -> list[CheckEvent]:
        return self.handle(Enable(reason, now))

    def _on_probe_completed(self, event: CheckInput) -> list[CheckEvent]:
        assert isinstance(event, ProbeCompleted)
        result, now = event.result, event.now
        self._reason = result.reason
        self._last_result = result
        self._last_result_at = now
        # Cadence is start to start (keepalived's misc check does the same), never in the past;
        # from the scheduled start when known, so that late starts do not push the schedule.
        started_at = now - result.latency if event.due is None else event.due
        events: list[CheckEvent] = []
        round_passed: bool | None
        if result.ok:
            if result.weight is not None and result.weight != self._weight:
                self._weight = result.weight
                events.append(WeightChanged(result.weight, result.reason, now))
            round_passed = True
            self._next_probe_at = max(now, started_at + self.params.interval)
        elif self._health is not CheckStatus.DOWN and self._failed_attempts < self.params.retries:
            # keepalived retries only a server it believes alive; a Down one fails the round.
            round_passed = None
            self._failed_attempts += 1
            self._next_probe_at = max(now, started_at + self.params.delay_before_retry)
        else:
            round_passed = False
            self._next_probe_at = max(now, started_at + self.params.interval)
        if round_passed is not None:
            previous = self._health
            self._end_round(round_passed)
            if self._health is not previous:
                events.append(Up(result.reason, now) if round_passed else Down(result.reason, now))
        # While drained nothing but the status matters; Enabled carries the news.
        return [] if self._disabled else events

    def _end_round(self, passed: bool) -> None:
        self._failed_attempts = 0
        self._rounds += 1
        if passed:
            self._consecutive_passes += 1
            self._consecutive_failures = 0
        else:
            self._consecutive_failures += 1
            self._consecutive_passes = 0
        if self._health is CheckStatus.UNKNOWN:
            self._health = CheckStatus.UP if passed else CheckStatus.DOWN
        elif self._health is CheckStatus.UP and self._consecutive_failures >= self.params.fall:
            self._health = CheckStatus.DOWN
        elif self._health is CheckStatus.DOWN and self._consecutive_passes >= self.params.rise:
            self._health = CheckStatus.UP

    def _on_disable(self, event: CheckInput) -> list[CheckEvent]:
        assert isinstance(event, Disable)
        self._disabled = True
        self._reason = event.reason
        return [Disabled(event.reason, event.now)]

    def _on_enable(self, event: CheckInput) -> list[CheckEvent]:
        assert isinstance(event, Enable)
        self._disabled = False
        self._reason = event.reason
        return [Enabled(self._health, self._weight, event.reason, event.now)]


_Handler = Callable[[CheckState, CheckInput], list[CheckEvent]]

_TRANSITIONS: dict[tuple[CheckStatus, type[CheckInput]], _Handler] = {
    (CheckStatus.UNKNOWN, ProbeCompleted): CheckState._on_probe_completed,
    (CheckStatus.UP, ProbeCompleted): CheckState._on_probe_completed,
    (CheckStatus.DOWN, ProbeCompleted): CheckState._on_probe_completed,
    (CheckStatus.DISABLED, ProbeCompleted): CheckState._on_probe_completed,
    (CheckStatus.UNKNOWN, Disable): CheckState._on_disable,
    (CheckStatus.UP, Disable): CheckState._on_disable,
    (CheckStatus.DOWN, Disable): CheckState._on_disable,
    (CheckStatus.DISABLED, Enable): CheckState._on_enable,
}


def real_server_status(check_statuses: Iterable[CheckStatus]) -> CheckStatus:
    """Combine a real server's checks: Disabled wins (an operator drained it), then Down (any
    failing check fails the server), then Unknown, else Up. A server without checks is Up, as in
    keepalived."""
    statuses = set(check_statuses)
    for status in (CheckStatus.DISABLED, CheckStatus.DOWN, CheckStatus.UNKNOWN):
        if status in statuses:
            return status
    return CheckStatus.UP


def in_service(status: CheckStatus) -> bool:
    """Whether traffic should reach a real server with this (combined) status. Unknown does: it
    only occurs without alpha, where keepalived also starts servers in service."""
    return status in (CheckStatus.UP, CheckStatus.UNKNOWN)
