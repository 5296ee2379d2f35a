"""The SMTP sink against a real SMTP server (aiosmtpd) on 127.0.0.1: one mail per alert, a
digest per burst, STARTTLS, implicit TLS, login, and relays that fail or never answer."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsha.alerts.delivery import Backoff
from lvsha.alerts.dispatch import Alerts
from tests.unit.alerts.servers import (
    Certificate,
    black_hole,
    config,
    make_certificate,
    smtp_server,
    wait_until,
)

NOW = 1_735_732_800.0  # 2025-01-01T12:00:00Z
FAST = Backoff(base=0.02, cap=0.1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certificate]:
    yield make_certificate(tmp_path_factory.mktemp("tls"))


def smtp_sink(port: int, **settings: Any) -> dict[str, Any]:
    return {
        "type": "smtp",
        "server": "127.0.0.1",
        "port": port,
        "from": "lvsha@lb-nat-1.example.net",
        "to": ["ops@example.net", "oncall@example.net"],
        "gather": 0,
        "min_interval": 0,
        "timeout": 5,
        **settings,
    }


def vrrp_master(**fields: Any) -> dict[str, Any]:
    return {
        "instance": "VI_1",
        "old": "BACKUP",
        "new": "MASTER",
        "reason": "master down timer expired",
        "priority": 100,
        **fields,
    }


def rs_down(real_server: str = "10.0.0.2:80", **fields: Any) -> dict[str, Any]:
    return {
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "real_server": real_server,
        "old": "healthy",
        "new": "unhealthy",
        "reason": "HTTP GET /health: status 503, expected 200",
        "check": "http_get",
        **fields,
    }


async def test_a_vrrp_transition_is_one_mail_with_the_headers_a_reader_needs() -> None:
    async with smtp_server() as relay:
        alerts = Alerts(config(smtp_sink(relay.port)), hostname="lb-nat-1.example.net")
        await alerts.start()
        alerts.submit("vrrp_state", vrrp_master(), NOW)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    mail = relay.mails[0]
    assert mail.subject == "[lvsha lb-nat-1] VI_1: BACKUP -> MASTER"
    assert mail.sender == "lvsha@lb-nat-1.example.net"
    assert sorted(mail.recipients) == ["oncall@example.net", "ops@example.net"]
    message = mail.message
    assert message["From"] == "lvsha@lb-nat-1.example.net"
    assert message["To"] == "ops@example.net, oncall@example.net"
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == NOW
    assert str(message["Message-ID"]).endswith("@lb-nat-1.example.net>")
    assert message["Auto-Submitted"] == "auto-generated"
    body = mail.body
    assert "2025-01-01T12:00:00.000Z  WARNING  vrrp_state" in body
    assert "reason: master down timer expired" in body
    assert "priority: 100" in body
    counters = alerts.counters("smtp-1")
    assert (counters.events, counters.sent, counters.delivered) == (1, 1, 1)


async def test_a_real_server_down_mail_says_what_the_check_saw() -> None:
    async with smtp_server() as relay:
        alerts = Alerts(config(smtp_sink(relay.port)), hostname="lb-nat-1.example.net")
        await alerts.start()
        alerts.submit("real_server", rs_down(), NOW)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    mail = relay.mails[0]
    assert mail.subject == (
        "[lvsha lb-nat-1] web: real server 10.0.0.2:80 down: "
        "HTTP GET /health: status 503, expected 200"
    )
    assert "reason: HTTP GET /health: status 503, expected 200" in mail.body
    assert "check: http_get" in mail.body
    assert "WARNING  real_server" in mail.body


async def test_a_burst_is_one_digest_and_a_flapping_server_one_line() -> None:
    async with smtp_server() as relay:
        alerts = Alerts(config(smtp_sink(relay.port, gather=0.2)), hostname="lb1.example.net")
        await alerts.start()
        for n in range(3):
            alerts.submit("real_server", rs_down(f"10.0.0.{n + 2}:80"), NOW)
        for n in range(10):  # 10.0.0.9 flaps, ending down
            new, old = ("unhealthy", "healthy") if n % 2 == 0 else ("healthy", "unhealthy")
            alerts.submit("real_server", rs_down("10.0.0.9:80", new=new, old=old), NOW + n)
        alerts.submit("real_server", rs_down("10.0.0.9:80", reason="connect: refused"), NOW + 11)
        alerts.submit("vrrp_state", vrrp_master(), NOW + 12)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    assert len(relay.mails) == 1
    mail = relay.mails[0]
    assert mail.subject == (
        "[lvsha lb-nat-1] 15 events: 4 real servers down, 1 VRRP instance now MASTER"
    )
    lines = [line for line in mail.body.splitlines() if "10.0.0.9:80" in line]
    assert lines == [
        "  web: real server 10.0.0.9:80 down: connect: refused "
        "(11 changes since 2025-01-01T12:00:00.000Z)",
        "    virtual_server: web; service: TCP 192.0.2.10:80; real_server: 10.0.0.9:80; "
        "old: healthy; new: unhealthy; reason: connect: refused; check: http_get",
    ]
    assert mail.body.count("WARNING  real_server") == 4
    assert alerts.counters("smtp-1").delivered == 15


async def test_starttls_required_with_login(certificate: Certificate, tmp_path: Path) -> None:
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret\n")
    async with smtp_server(
        starttls=certificate.server_context(), require_starttls=True, users={"alerts": "s3cret"}
    ) as relay:
        sink = smtp_sink(
            relay.port, tls="starttls", username="alerts", password_file=str(password_file)
        )
        alerts = Alerts(config(sink), tls_context=certificate.client_context())
        await alerts.start()
        alerts.submit("vrrp_state", vrrp_master(), NOW)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    assert relay.mails[0].tls
    assert relay.mails[0].login == "alerts"


async def test_implicit_tls(certificate: Certificate) -> None:
    async with smtp_server(implicit_tls=certificate.server_context()) as relay:
        alerts = Alerts(
            config(smtp_sink(relay.port, tls="tls")), tls_context=certificate.client_context()
        )
        await alerts.start()
        alerts.submit("vrrp_state", vrrp_master(), NOW)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    assert relay.mails[0].tls


async def test_auto_upgrades_to_tls_whatever_the_certificate(certificate: Certificate) -> None:
    async with smtp_server(starttls=certificate.server_context()) as relay:
        alerts = Alerts(config(smtp_sink(relay.port)))  # tls auto, the system's CAs
        await alerts.start()
        alerts.submit("vrrp_state", vrrp_master(), NOW)
        await wait_until(lambda: len(relay.mails) == 1)
        await alerts.close()

    assert relay.mails[0].tls


async def test_required_tls_refuses_a_certificate_nobody_vouches_for(
    certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    async with smtp_server(starttls=certificate.server_context()) as relay:
        alerts = Alerts(config(smtp_sink(relay.port, tls="starttls", retries=0)))
        await alerts.start()
        alerts.submit("vrrp_state", vrrp_master(), NOW)
        counters = alerts.counters("smtp-1")
        await wait_until(lambda: counters.dropped["delivery_failed"] == 1)
        await alerts.close()

    assert relay.mails == []
    assert counters.failures == 1
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_an_unreadable_password_file_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-password"
    async with smtp_server(users={"alerts": "s3cret"}) as relay:
        sink = smtp_sink(relay.port, username="alerts", password_file=str(missing), retries=1)
        alerts = Alerts(config(sink), backoff=FAST)
        await alerts.start()
        with caplog.at_level(logging.INFO, logger="lvsha.alerts"):
            alerts.submit("vrrp_state", vrrp_master(), NOW)
            counters = alerts.counters("smtp-1")
            await wait_until(lambda: counters.dropped["delivery_failed"] == 1)
        await alerts.close()

    assert relay.mails == []
    assert counters.failures == 2
    assert (
        f"alert sink smtp-1: 1 alerts not delivered after 2 attempts, dropped: cannot read "
        f"the SMTP password of alert sink smtp-1 from {missing}: No such file or directory"
    ) in caplog.text


async def test_a_relay_that_never_answers_costs_timeout_times_attempts_and_submit_stays_fast(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeout, retries = 0.2, 2
    async with black_hole() as port:
        sink = smtp_sink(port, timeout=timeout, retries=retries, queue_size=100)
        alerts = Alerts(config(sink), backoff=FAST)
        await alerts.start()
        started = time.monotonic()
        alerts.submit("vrrp_state", vrrp_master(), NOW)
        counters = alerts.counters("smtp-1")
        await wait_until(lambda: counters.dropped["delivery_failed"] == 1)
        failed_after = time.monotonic() - started

        # meanwhile and after, submitting costs microseconds: nothing waits for the relay
        submits = 20_000
        began = time.perf_counter()
        for n in range(submits):
            alerts.submit("real_server", rs_down(f"10.1.{n // 250}.{n % 250}:80"), NOW)
        per_submit = (time.perf_counter() - began) / submits
        await alerts.close(timeout=0.1)

    attempts = retries + 1
    assert counters.failures >= attempts
    # three attempts of 0.2 s and two short pauses (0.02 s, 0.04 s): not much more
    assert timeout * attempts <= failed_after < timeout * attempts + 0.5
    assert per_submit < 50e-6, f"{per_submit * 1e6:.1f} us per submit"
    assert counters.high_water == 100
    assert counters.dropped["queue_full"] >= submits - 100 - 100  # queued, then one batch
    assert counters.events == submits + 1
    lost = sum(counters.dropped.values())
    assert lost == counters.events  # nothing delivered, every event counted as dropped
    assert "no answer within 0.2 s" in caplog.text
