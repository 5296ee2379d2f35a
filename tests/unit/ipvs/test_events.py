"""The checker's events as the parent gets them: the fields lvsha.alerts.events lists, for a
real server's health, a service's quorum and a refused script."""

from __future__ import annotations

import pytest

from lvsha.alerts.events import EVENT_TYPES, FieldValue
from lvsha.checks.pool import CheckPool, HealthReport, ScriptRefusal
from lvsha.checks.script import ScriptCommand, ScriptTarget
from lvsha.checks.targets import ScriptProbe, check_plan
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.config import load_text
from lvsha.ipvs.desired import QuorumState
from lvsha.ipvs.events import CheckerEvents
from lvsha.ipvs.specs import configured_services
from lvsha.ipvs.syncer import IpvsSyncer, QuorumChange
from tests.unit.ipvs.test_syncer import CONFIG, MAIL, SERVICES, WEB, WEB_A, RecordingPort

Sent = list[tuple[str, dict[str, FieldValue]]]


@pytest.fixture
def sent() -> Sent:
    return []


@pytest.fixture
def syncer() -> IpvsSyncer:
    return IpvsSyncer(RecordingPort(), SERVICES)


@pytest.fixture
def events(sent: Sent, syncer: IpvsSyncer) -> CheckerEvents:
    pool = CheckPool(check_plan(load_text(CONFIG)))
    return CheckerEvents(pool, syncer, lambda kind, fields: sent.append((kind, fields)))


def test_a_real_server_down_names_its_virtual_server_service_reason_and_check(
    events: CheckerEvents, sent: Sent
) -> None:
    down = RealServerVerdict(
        WEB_A, Health.UNHEALTHY, None, "tcp connect refused", "tcp 10.0.0.1:80", 12.5
    )
    events.on_health(HealthReport(Health.HEALTHY, down))
    assert sent == [
        (
            "real_server",
            {
                "virtual_server": "web",
                "service": "TCP 192.0.2.10:80",
                "real_server": "10.0.0.1:80",
                "old": "healthy",
                "new": "unhealthy",
                "reason": "tcp connect refused",
                "check": "tcp 10.0.0.1:80",
            },
        )
    ]
    assert sent[0][0] in EVENT_TYPES


def test_an_ipv6_real_server_unknown_to_the_syncer_is_named_as_the_pool_knows_it(
    events: CheckerEvents, sent: Sent
) -> None:
    stranger = RealServerId("[2001:db8::1]:443/tcp", "2001:db8::5", 443, "api")
    drained = RealServerVerdict(stranger, Health.DISABLED, None, "by alice", None, 1.0)
    events.on_health(HealthReport(Health.HEALTHY, drained))
    (kind, fields) = sent[0]
    assert kind == "real_server"
    assert (fields["virtual_server"], fields["service"], fields["real_server"]) == (
        "api",
        "[2001:db8::1]:443/tcp",
        "[2001:db8::5]:443",
    )
    assert (fields["new"], fields["check"]) == ("disabled", None)


def test_quorum_lost_says_the_sorry_server_serving_and_regained_says_none(
    events: CheckerEvents, sent: Sent
) -> None:
    mail = next(service for service in SERVICES if service.key == MAIL)
    web = next(service for service in SERVICES if service.key == WEB)
    events.on_quorum(QuorumChange(mail, QuorumState(False, 1), sorry_active=True))
    events.on_quorum(QuorumChange(mail, QuorumState(True, 3), sorry_active=False))
    events.on_quorum(QuorumChange(web, QuorumState(False, 0), sorry_active=False))
    assert sent == [
        (
            "quorum",
            {
                "virtual_server": "mail",
                "service": "TCP 192.0.2.10:25",
                "held": False,
                "live_weight": 1,
                "quorum": 2,
                "sorry_server": "10.0.9.9:2525",
            },
        ),
        (
            "quorum",
            {
                "virtual_server": "mail",
                "service": "TCP 192.0.2.10:25",
                "held": True,
                "live_weight": 3,
                "quorum": 2,
                "sorry_server": None,
            },
        ),
        (
            "quorum",
            {
                "virtual_server": "web",
                "service": "TCP 192.0.2.10:80",
                "held": False,
                "live_weight": 0,
                "quorum": 1,
                "sorry_server": None,
            },
        ),
    ]


def test_a_refused_script_is_named_by_its_command(events: CheckerEvents, sent: Sent) -> None:
    command = ScriptCommand(("/usr/local/bin/check db", "--port", "5432"))
    target = ScriptTarget("10.0.0.1", 80, "192.0.2.10:80/tcp", "checks[0]")
    probe = ScriptProbe(command, target, 3.0)
    reason = "script security: /usr/local/bin/check db is world-writable"
    events.on_refusal(ScriptRefusal(probe.describe(), probe, reason, (WEB_A,)))
    assert sent == [
        (
            "script_refused",
            {
                "process": "checker",
                "script": "'/usr/local/bin/check db' --port 5432",
                "reason": reason,
            },
        )
    ]


def test_a_sink_that_raises_is_logged_and_the_caller_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(kind: str, fields: dict[str, FieldValue]) -> None:
        raise BrokenPipeError("parent gone")

    pool = CheckPool(check_plan(load_text(CONFIG)))
    events = CheckerEvents(pool, IpvsSyncer(RecordingPort(), SERVICES), broken)
    down = RealServerVerdict(WEB_A, Health.UNHEALTHY, None, "refused", None, 1.0)
    events.on_health(HealthReport(Health.HEALTHY, down))  # does not raise
    assert "sending a real_server event failed" in caplog.text


def test_labels_follow_a_reload_of_the_syncer(
    events: CheckerEvents, sent: Sent, syncer: IpvsSyncer
) -> None:
    renamed = CONFIG.replace("name: web", "name: www")
    syncer.reconfigure(configured_services(load_text(renamed)))
    down = RealServerVerdict(WEB_A, Health.UNHEALTHY, None, "refused", None, 1.0)
    events.on_health(HealthReport(Health.HEALTHY, down))
    assert sent[0][1]["virtual_server"] == "www"
