"""The receive path's edge: adverts the machine cannot take are dropped and counted, and every
drop is explained in the log at most once per (reason, sender) a minute."""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest

from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.receive import (
    MAX_KEYS,
    OTHER_SOURCES,
    DropLog,
    RateLimiter,
    advert_event,
)
from lvsha.vrrp.socket import SocketDropReason
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    Advert,
    AuthType,
    DropCounter,
    DropReason,
    ReceivedAdvert,
    ReceivingInstance,
    VrrpVersion,
)

PEER = IPv4Address("10.0.0.12")
VIP = IPv4Address("10.0.0.100")
INSTANCE = ReceivingInstance(
    vrid=51,
    version=VrrpVersion.V2,
    advert_interval=1,
    virtual_addresses=frozenset({VIP}),
    auth_type=AuthType.SIMPLE_PASSWORD,
    auth_password=b"secret",
)


def received(**fields: object) -> ReceivedAdvert:
    values: dict[str, object] = {
        "version": VrrpVersion.V2,
        "vrid": 51,
        "priority": 100,
        "advert_interval": 1,
        "addresses": (VIP,),
        "auth_type": AuthType.SIMPLE_PASSWORD,
        "auth_data": b"secret",
    }
    values.update(fields)
    source = values.pop("source", PEER)
    assert isinstance(source, IPv4Address | IPv6Address)
    return ReceivedAdvert(source, VRRP_MULTICAST_IPV4, Advert(**values), 0)  # type: ignore[arg-type]


# Finding 7: an advert while the instance is in Initialize


@pytest.mark.parametrize("state", list(VrrpState))
def test_an_advert_is_dropped_only_in_initialize(state: VrrpState) -> None:
    drops = DropCounter()
    event = advert_event(received(), INSTANCE, frozenset(), drops, state=state)
    if state is VrrpState.INITIALIZE:
        # Sockets open before Startup and close after Shutdown: input then, not a bug.
        assert event is None
        assert drops[DropReason.INSTANCE_NOT_RUNNING] == 1
        assert drops.total == 1
    else:
        assert event is not None
        assert drops.total == 0


def test_a_drop_reaches_the_listener_with_sender_and_what_differed() -> None:
    heard: list[tuple[DropReason, object, str]] = []
    drops = DropCounter(listener=lambda *drop: heard.append(drop))
    event = advert_event(
        received(advert_interval=2), INSTANCE, frozenset(), drops, state=VrrpState.BACKUP
    )
    assert event is None
    assert heard == [
        (
            DropReason.ADVERT_INTERVAL_MISMATCH,
            PEER,
            "advert interval 2 s, ours 1 s (RFC 3768 7.1)",
        )
    ]


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"auth_data": b"other"}, "authentication password differs from ours (RFC 2338 7.1)"),
        (
            {"auth_type": AuthType.NONE, "auth_data": b""},
            "authentication none, ours simple password (RFC 2338 7.1)",
        ),
        ({"version": VrrpVersion.V3, "auth_type": AuthType.NONE, "auth_data": b""},
         "VRRP version 3, ours 2 (RFC 5798 7.1)"),
        (
            {"addresses": (VIP, IPv4Address("10.0.0.101"))},
            "virtual addresses differ: only theirs 10.0.0.101, only ours none",
        ),
    ],
)  # fmt: skip
def test_each_mismatch_names_what_differed_and_never_a_password(
    fields: dict[str, object], detail: str
) -> None:
    heard: list[str] = []
    drops = DropCounter(listener=lambda _reason, _source, text: heard.append(text))
    advert_event(received(**fields), INSTANCE, frozenset(), drops, state=VrrpState.MASTER)
    assert heard == [detail]
    assert "other" not in heard[0] and "secret" not in heard[0]


# The rate limiter: pure, the clock passed in


def test_rate_limiter_lets_the_first_hit_through_then_counts_the_rest() -> None:
    limiter: RateLimiter[str] = RateLimiter(60.0)
    assert limiter.hit("a", 100.0) == 0
    assert limiter.hit("a", 100.5) is None
    assert limiter.hit("a", 159.9) is None
    assert limiter.hit("b", 101.0) == 0  # keys are independent
    assert limiter.due(159.9) == []
    assert limiter.next_deadline() == 160.0
    # The period ended with two suppressed: one report, which opens the next period.
    assert limiter.due(160.0) == [("a", 2)]
    assert limiter.hit("a", 170.0) is None
    assert limiter.due(220.0) == [("a", 1)]


def test_rate_limiter_forgets_idle_keys_and_reports_owed_counts_with_the_next_line() -> None:
    limiter: RateLimiter[str] = RateLimiter(10.0)
    limiter.hit("quiet", 0.0)
    limiter.hit("busy", 1.0)
    limiter.hit("busy", 2.0)
    assert limiter.due(10.0) == []  # "quiet" had nothing suppressed: forgotten
    assert "quiet" not in limiter
    assert len(limiter) == 1
    # Without `due` in between, the next hit after the period carries the owed count.
    assert limiter.hit("busy", 30.0) == 1
    assert limiter.next_deadline() is None


def test_rate_limiter_refuses_a_period_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="not positive"):
        RateLimiter(0.0)


# The drop log: one line per (instance, reason, sender), then at most one a minute


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.scheduled: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, when: float, callback: Callable[[], None]) -> None:
        self.scheduled.append((when, callback))


def drop_log(clock: FakeClock) -> DropLog:
    return DropLog("VI_1", clock=clock, schedule=clock.schedule)


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "lvsha.vrrp"]


def test_the_first_drop_is_logged_at_once_with_what_differed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = drop_log(clock)
    drops = DropCounter(listener=log)
    caplog.set_level(logging.DEBUG, "lvsha.vrrp")
    for _ in range(500):  # a peer advertising every second for eight minutes, say
        advert_event(
            received(advert_interval=2), INSTANCE, frozenset(), drops, state=VrrpState.MASTER
        )
        clock.now += 0.01
    assert messages(caplog) == [
        (
            logging.WARNING,
            "VI_1: advert from 10.0.0.12 dropped: advert interval 2 s, ours 1 s (RFC 3768 7.1)",
        )
    ]
    assert drops[DropReason.ADVERT_INTERVAL_MISMATCH] == 500  # the counter keeps every one
    # The summary is scheduled for the end of the minute, and says how many more.
    ((when, flush),) = clock.scheduled
    assert when == 1060.0
    clock.now = when
    flush()
    assert messages(caplog)[1:] == [
        (
            logging.WARNING,
            "VI_1: 499 more adverts from 10.0.0.12 dropped in the last 60 s "
            "(advert_interval_mismatch)",
        )
    ]


def test_each_reason_and_each_sender_gets_its_own_first_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = drop_log(clock)
    caplog.set_level(logging.INFO, "lvsha.vrrp")
    other = IPv4Address("10.0.0.13")
    log(DropReason.AUTH_PASSWORD_MISMATCH, PEER, "password differs")
    log(DropReason.AUTH_PASSWORD_MISMATCH, PEER, "password differs")
    log(DropReason.AUTH_PASSWORD_MISMATCH, other, "password differs")
    log(DropReason.ADDRESS_LIST_MISMATCH, PEER, "addresses differ")
    log(SocketDropReason.NOT_A_UNICAST_PEER, other, "not one of our unicast peers")
    log(DropReason.BAD_CHECKSUM, None, "checksum")
    assert [m for _, m in messages(caplog)] == [
        "VI_1: advert from 10.0.0.12 dropped: password differs",
        "VI_1: advert from 10.0.0.13 dropped: password differs",
        "VI_1: advert from 10.0.0.12 taken, but addresses differ; reload the other director too",
        "VI_1: advert from 10.0.0.13 dropped: not one of our unicast peers",
        "VI_1: advert from an unknown sender dropped: checksum",
    ]


def test_routine_drops_are_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = drop_log(clock)
    caplog.set_level(logging.DEBUG, "lvsha.vrrp")
    # Another virtual router on the link, and adverts around start and stop.
    log(DropReason.VRID_MISMATCH, PEER, "VRID 52, ours 51")
    log(DropReason.INSTANCE_NOT_RUNNING, PEER, "the instance is not running")
    log(SocketDropReason.OWN_ADVERT, PEER, "our own advert looped back")
    assert {level for level, _ in messages(caplog)} == {logging.DEBUG}
    caplog.clear()
    caplog.set_level(logging.INFO, "lvsha.vrrp")
    log(DropReason.VRID_MISMATCH, IPv4Address("10.0.0.99"), "VRID 52, ours 51")
    assert messages(caplog) == []


def test_a_flood_of_spoofed_senders_stays_within_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = drop_log(clock)
    caplog.set_level(logging.WARNING, "lvsha.vrrp")
    for n in range(10_000):
        log(DropReason.BAD_CHECKSUM, IPv4Address(0x0A000000 + n), "checksum")
    lines = [m for _, m in messages(caplog)]
    assert len(lines) == MAX_KEYS + 1
    assert lines[-1] == f"VI_1: advert from {OTHER_SOURCES} dropped: checksum"


def test_without_a_scheduler_the_summary_comes_with_the_next_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = DropLog("VI_1", clock=clock)
    caplog.set_level(logging.WARNING, "lvsha.vrrp")
    for _ in range(3):
        log(DropReason.TTL_NOT_255, PEER, "TTL/hop limit 64, must be 255")
    clock.now += 61
    log(DropReason.TTL_NOT_255, PEER, "TTL/hop limit 64, must be 255")
    assert [m for _, m in messages(caplog)] == [
        "VI_1: advert from 10.0.0.12 dropped: TTL/hop limit 64, must be 255",
        "VI_1: 2 more adverts from 10.0.0.12 dropped in the last 60 s (ttl_not_255)",
    ]
