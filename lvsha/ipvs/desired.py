"""The service a virtual service should have in IPVS, given its spec and its real servers' verdicts.

Semantics follow keepalived 2.2 (check/ipwrapper.c: update_quorum_state, perform_quorum_state,
perform_svr_state, and ipvs_cmd turning a removal into weight 0 under inhibit_on_failure):

- a healthy real server is in the pool at its dynamic weight if the checks gave one, else at its
  configured weight;
- an unhealthy one is left out, or kept at weight 0 with inhibit_on_failure;
- a disabled (operator-drained) one is kept at weight 0, so its connections finish;
- one in maintenance is left out, always (inhibit_on_failure or not): the operator took it out;
- quorum is the summed weight of healthy real servers. Held quorum is lost when that sum drops
  below quorum - hysteresis and regained when it reaches quorum + hysteresis; on the first
  evaluation only the upper bound counts, as keepalived starts pessimistic;
- while quorum is lost and a sorry server is configured, the sorry server is in the pool and the
  healthy real servers are taken out exactly as if they had failed (removed, or weight 0 with
  inhibit_on_failure). Without a sorry server losing quorum changes nothing in the pool.
- a sorry server with `inhibit` is kept at weight 0 while not needed, as keepalived's
  sorry_server_inhibit does.

Whether quorum is held is the only memory this needs; it goes in and comes out as a
`QuorumState` so the caller keeps it, not this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from lvsha.checks.verdict import Health, Verdict
from lvsha.ipvs.model import Destination, DestinationKey, Service, ServiceKey, ServiceOptions


@dataclass(frozen=True, slots=True)
class RealServerSpec:
    destination: Destination
    """As configured; its weight is the configured weight."""
    inhibit_on_failure: bool | None = None
    """None takes the virtual service's setting."""

    @property
    def key(self) -> DestinationKey:
        return self.destination.key


@dataclass(frozen=True, slots=True)
class SorryServerSpec:
    destination: Destination
    inhibit: bool = False
    """Keep the sorry server in the pool at weight 0 while quorum is held."""


@dataclass(frozen=True, slots=True)
class VirtualServiceSpec:
    key: ServiceKey
    options: ServiceOptions
    real_servers: tuple[RealServerSpec, ...]
    quorum: int = 1
    hysteresis: int = 0
    sorry_server: SorryServerSpec | None = None
    inhibit_on_failure: bool = False

    def __post_init__(self) -> None:
        seen: set[DestinationKey] = set()
        for real_server in self.real_servers:
            if real_server.key in seen:
                raise ValueError(f"virtual service {self.key}: real server {real_server.key} twice")
            seen.add(real_server.key)
        if self.quorum < 1:
            raise ValueError(f"virtual service {self.key}: quorum {self.quorum} must be at least 1")
        # With hysteresis >= quorum, quorum - hysteresis <= 0 and held quorum could never be lost.
        if not 0 <= self.hysteresis < self.quorum:
            raise ValueError(
                f"virtual service {self.key}: hysteresis {self.hysteresis} must be "
                f"0..{self.quorum - 1} (below quorum {self.quorum})"
            )


@dataclass(frozen=True, slots=True)
class QuorumState:
    up: bool
    live_weight: int
    """The summed weight of healthy real servers it was decided on."""


@dataclass(frozen=True, slots=True)
class DesiredService:
    service: Service
    quorum: QuorumState
    sorry_server_active: bool


def desired_service(
    spec: VirtualServiceSpec,
    verdicts: Mapping[DestinationKey, Verdict],
    previous: QuorumState | None,
) -> DesiredService:
    """The service `spec` should have now, and the quorum state to pass in next time.

    `previous` is None on the first evaluation. Every real server needs a verdict; verdicts for
    servers the spec does not list are ignored.
    """
    weights: dict[DestinationKey, int] = {}
    health: dict[DestinationKey, Health] = {}
    for real_server in spec.real_servers:
        verdict = verdicts.get(real_server.key)
        if verdict is None:
            raise ValueError(f"virtual service {spec.key}: no verdict for {real_server.key}")
        health[real_server.key] = verdict.health
        configured = real_server.destination.weight
        weights[real_server.key] = configured if verdict.weight is None else verdict.weight

    live_weight = sum(weights[key] for key, h in health.items() if h is Health.HEALTHY)
    quorum = QuorumState(_quorum_held(spec, live_weight, previous), live_weight)
    sorry_active = spec.sorry_server is not None and not quorum.up

    pool: dict[DestinationKey, Destination] = {}
    for real_server in spec.real_servers:
        inhibit = (
            spec.inhibit_on_failure
            if real_server.inhibit_on_failure is None
            else real_server.inhibit_on_failure
        )
        state = health[real_server.key]
        if state is Health.MAINTENANCE:
            continue
        if state is Health.HEALTHY and not sorry_active:
            weight = weights[real_server.key]
        elif state is Health.DISABLED or inhibit:
            weight = 0
        else:
            continue
        pool[real_server.key] = dataclasses.replace(real_server.destination, weight=weight)

    sorry = spec.sorry_server
    if sorry is not None:
        if sorry_active:
            # A sorry server sharing a real server's address and port takes its place.
            pool[sorry.destination.key] = sorry.destination
        elif sorry.inhibit and sorry.destination.key not in pool:
            pool[sorry.destination.key] = dataclasses.replace(sorry.destination, weight=0)

    # The canonical order: real servers added in the order of the configuration (the sorry
    # server after them), so the kernel lists the last one first. Every director with the
    # same file has its destinations in this order, which hashing schedulers depend on.
    service = Service(spec.key, spec.options, tuple(pool.values()), tuple(reversed(pool)))
    return DesiredService(service, quorum, sorry_active)


def _quorum_held(spec: VirtualServiceSpec, live_weight: int, previous: QuorumState | None) -> bool:
    if previous is not None and previous.up:
        return live_weight >= spec.quorum - spec.hysteresis
    return live_weight >= spec.quorum + spec.hysteresis
