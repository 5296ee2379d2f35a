"""desired_service(): verdicts stepped by hand through quorum, hysteresis, sorry server, inhibit."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address

import pytest

from lvsha.checks.verdict import Health, Verdict
from lvsha.ipvs.desired import (
    DesiredService,
    QuorumState,
    RealServerSpec,
    SorryServerSpec,
    VirtualServiceSpec,
    desired_service,
)
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Forwarding,
    ServiceOptions,
    TransportProtocol,
)
from lvsha.ipvs.plan import AddDestination, DeleteDestination, plan

WEB = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 80)
A = Destination(ip_address("10.0.0.1"), 80, weight=2, forwarding=Forwarding.DIRECT_ROUTE)
B = Destination(ip_address("10.0.0.2"), 80, weight=2, forwarding=Forwarding.DIRECT_ROUTE)
C = Destination(ip_address("10.0.0.3"), 80, weight=1, forwarding=Forwarding.DIRECT_ROUTE)
SORRY = Destination(ip_address("10.0.9.9"), 80, weight=1, forwarding=Forwarding.MASQUERADE)

HEALTHY = Verdict(Health.HEALTHY)
UNHEALTHY = Verdict(Health.UNHEALTHY)
DISABLED = Verdict(Health.DISABLED)
MAINTENANCE = Verdict(Health.MAINTENANCE)


def spec(
    *,
    quorum: int = 1,
    hysteresis: int = 0,
    sorry: SorryServerSpec | None = None,
    inhibit_on_failure: bool = False,
    real_servers: tuple[RealServerSpec, ...] = (
        RealServerSpec(A),
        RealServerSpec(B),
        RealServerSpec(C),
    ),
) -> VirtualServiceSpec:
    return VirtualServiceSpec(
        key=WEB,
        options=ServiceOptions(scheduler="wrr"),
        real_servers=real_servers,
        quorum=quorum,
        hysteresis=hysteresis,
        sorry_server=sorry,
        inhibit_on_failure=inhibit_on_failure,
    )


def verdicts(
    a: Verdict = HEALTHY, b: Verdict = HEALTHY, c: Verdict = HEALTHY
) -> dict[DestinationKey, Verdict]:
    return {A.key: a, B.key: b, C.key: c}


def pool(result: DesiredService) -> Mapping[DestinationKey, int]:
    """Each destination in the desired service, with its weight."""
    return {d.key: d.weight for d in result.service.destinations}


def test_healthy_servers_are_in_at_their_configured_weight() -> None:
    result = desired_service(spec(), verdicts(), None)

    assert result.service.key == WEB
    assert result.service.options == ServiceOptions(scheduler="wrr")
    assert result.service.destinations == (A, B, C)
    assert result.quorum == QuorumState(up=True, live_weight=5)
    assert not result.sorry_server_active


def test_an_unhealthy_server_is_removed() -> None:
    result = desired_service(spec(), verdicts(b=UNHEALTHY), None)

    assert pool(result) == {A.key: 2, C.key: 1}
    assert result.quorum.live_weight == 3


def test_an_unhealthy_server_is_kept_at_weight_zero_with_inhibit_on_failure() -> None:
    result = desired_service(spec(inhibit_on_failure=True), verdicts(b=UNHEALTHY), None)

    assert pool(result) == {A.key: 2, B.key: 0, C.key: 1}
    kept = result.service.destinations_by_key[B.key]
    assert kept.forwarding is Forwarding.DIRECT_ROUTE


def test_a_real_server_can_override_the_virtual_service_inhibit_setting() -> None:
    servers = (RealServerSpec(A, inhibit_on_failure=False), RealServerSpec(B), RealServerSpec(C))
    result = desired_service(
        spec(inhibit_on_failure=True, real_servers=servers),
        verdicts(a=UNHEALTHY, b=UNHEALTHY),
        None,
    )

    assert pool(result) == {B.key: 0, C.key: 1}


def test_a_disabled_server_is_kept_at_weight_zero_and_does_not_count_for_quorum() -> None:
    result = desired_service(spec(), verdicts(a=DISABLED), None)

    assert pool(result) == {A.key: 0, B.key: 2, C.key: 1}
    assert result.quorum.live_weight == 3


@pytest.mark.parametrize("inhibit_on_failure", [False, True])
def test_a_server_in_maintenance_is_out_of_the_pool_and_of_quorum(
    inhibit_on_failure: bool,
) -> None:
    vs = spec(quorum=4, sorry=SorryServerSpec(SORRY), inhibit_on_failure=inhibit_on_failure)
    result = desired_service(vs, verdicts(a=MAINTENANCE), None)

    inhibited = {B.key: 0, C.key: 0} if inhibit_on_failure else {}
    assert pool(result) == {**inhibited, SORRY.key: 1}
    assert result.quorum == QuorumState(up=False, live_weight=3)
    # Even with a dynamic weight and quorum held, it stays out.
    kept = desired_service(spec(), verdicts(a=Verdict(Health.MAINTENANCE, 5)), None)
    assert pool(kept) == {B.key: 2, C.key: 1}


def test_a_dynamic_weight_replaces_the_configured_one_and_counts_for_quorum() -> None:
    result = desired_service(
        spec(), verdicts(a=Verdict(Health.HEALTHY, weight=7), c=Verdict(Health.HEALTHY, 0)), None
    )

    assert pool(result) == {A.key: 7, B.key: 2, C.key: 0}
    assert result.quorum.live_weight == 9


def test_a_dynamic_weight_of_an_unhealthy_server_counts_for_nothing() -> None:
    result = desired_service(spec(), verdicts(a=Verdict(Health.UNHEALTHY, weight=7)), None)

    assert pool(result) == {B.key: 2, C.key: 1}
    assert result.quorum.live_weight == 3


def test_quorum_with_hysteresis_and_sorry_server_stepped_through_failures() -> None:
    # Quorum 4 with hysteresis 1: held quorum is lost below 3, lost quorum returns at 5.
    vs = spec(quorum=4, hysteresis=1, sorry=SorryServerSpec(SORRY))

    start = desired_service(vs, verdicts(), None)
    assert start.quorum == QuorumState(True, 5)
    assert pool(start) == {A.key: 2, B.key: 2, C.key: 1}

    a_down = desired_service(vs, verdicts(a=UNHEALTHY), start.quorum)
    assert a_down.quorum == QuorumState(True, 3)  # 3 is not below 4 - 1
    assert pool(a_down) == {B.key: 2, C.key: 1}

    b_down = desired_service(vs, verdicts(a=UNHEALTHY, b=UNHEALTHY), a_down.quorum)
    assert b_down.quorum == QuorumState(False, 1)
    assert b_down.sorry_server_active
    # keepalived takes the still-healthy C out too: the sorry server serves alone
    assert b_down.service.destinations == (SORRY,)

    b_back = desired_service(vs, verdicts(a=UNHEALTHY), b_down.quorum)
    assert b_back.quorum == QuorumState(False, 3)  # 3 is short of 4 + 1
    assert b_back.service.destinations == (SORRY,)

    a_back = desired_service(vs, verdicts(), b_back.quorum)
    assert a_back.quorum == QuorumState(True, 5)
    assert not a_back.sorry_server_active
    assert a_back.service.destinations == (A, B, C)


def test_the_first_evaluation_needs_the_upper_bound_to_hold_quorum() -> None:
    vs = spec(quorum=4, hysteresis=1, sorry=SorryServerSpec(SORRY))

    result = desired_service(vs, verdicts(a=UNHEALTHY), None)

    assert result.quorum == QuorumState(False, 3)
    assert result.service.destinations == (SORRY,)


def test_while_the_sorry_server_is_in_inhibited_servers_stay_at_weight_zero() -> None:
    vs = spec(quorum=4, sorry=SorryServerSpec(SORRY), inhibit_on_failure=True)

    result = desired_service(vs, verdicts(a=UNHEALTHY, b=DISABLED), None)

    assert result.sorry_server_active
    assert pool(result) == {A.key: 0, B.key: 0, C.key: 0, SORRY.key: 1}


def test_an_inhibited_sorry_server_waits_at_weight_zero_while_quorum_holds() -> None:
    vs = spec(quorum=3, sorry=SorryServerSpec(SORRY, inhibit=True))

    held = desired_service(vs, verdicts(), None)
    lost = desired_service(vs, verdicts(a=UNHEALTHY, b=UNHEALTHY), held.quorum)

    assert pool(held) == {A.key: 2, B.key: 2, C.key: 1, SORRY.key: 0}
    assert pool(lost) == {SORRY.key: 1}


def test_without_a_sorry_server_losing_quorum_leaves_the_pool_alone() -> None:
    vs = spec(quorum=4)

    held = desired_service(vs, verdicts(), None)
    lost = desired_service(vs, verdicts(a=UNHEALTHY, b=UNHEALTHY), held.quorum)

    assert not lost.quorum.up
    assert not lost.sorry_server_active
    assert pool(lost) == {C.key: 1}


def test_a_sorry_server_sharing_a_real_servers_address_takes_its_place_only_when_active() -> None:
    sorry_on_c = Destination(C.address, C.port, weight=9, forwarding=Forwarding.MASQUERADE)
    vs = spec(quorum=4, sorry=SorryServerSpec(sorry_on_c, inhibit=True))

    held = desired_service(vs, verdicts(), None)
    lost = desired_service(vs, verdicts(a=UNHEALTHY), held.quorum)

    assert held.service.destinations_by_key[C.key] == C
    assert lost.service.destinations == (sorry_on_c,)


def test_switching_to_the_sorry_server_adds_it_before_removing_the_real_servers() -> None:
    vs = spec(quorum=4, sorry=SorryServerSpec(SORRY))
    held = desired_service(vs, verdicts(), None)
    lost = desired_service(vs, verdicts(a=UNHEALTHY, b=UNHEALTHY), held.quorum)

    operations = plan({WEB: lost.service}, {WEB: held.service}, managed=frozenset({WEB}))

    assert operations == [
        AddDestination(WEB, SORRY),
        DeleteDestination(WEB, A.key),
        DeleteDestination(WEB, B.key),
        DeleteDestination(WEB, C.key),
    ]


def test_every_real_server_needs_a_verdict() -> None:
    with pytest.raises(ValueError, match=r"no verdict for 10\.0\.0\.3:80"):
        desired_service(spec(), {A.key: HEALTHY, B.key: HEALTHY}, None)


def test_verdicts_for_servers_the_spec_does_not_list_are_ignored() -> None:
    stray = Destination(ip_address("10.0.0.77"), 80)
    result = desired_service(spec(), {**verdicts(), stray.key: HEALTHY}, None)

    assert stray.key not in pool(result)


@pytest.mark.parametrize(
    ("quorum", "hysteresis", "message"),
    [(0, 0, "quorum 0"), (3, 3, "hysteresis 3"), (3, -1, "hysteresis -1")],
)
def test_quorum_and_hysteresis_are_validated(quorum: int, hysteresis: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(quorum=quorum, hysteresis=hysteresis)


def test_a_real_server_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        spec(real_servers=(RealServerSpec(A), RealServerSpec(A)))
