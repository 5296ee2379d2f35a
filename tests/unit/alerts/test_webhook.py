"""The webhook sink against a real HTTP receiver (aiohttp) on 127.0.0.1: the JSON it POSTs,
its signature, retries on refusals, and a receiver that never answers."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest

from lvsha.alerts.delivery import Backoff
from lvsha.alerts.dispatch import Alerts
from tests.unit.alerts.servers import config, http_server, wait_until

NOW = 1_735_732_800.0  # 2025-01-01T12:00:00Z
FAST = Backoff(base=0.02, cap=0.1)


def hook(url: str, **settings: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "gather": 0, "min_interval": 0, **settings}


def rs(real_server: str, new: str = "unhealthy", **fields: Any) -> dict[str, Any]:
    return {
        "virtual_server": "web",
        "service": "TCP 192.0.2.10:80",
        "real_server": real_server,
        "old": "healthy" if new == "unhealthy" else "unhealthy",
        "new": new,
        "reason": "connect: connection refused" if new == "unhealthy" else "HTTP GET /: 200",
        "check": "tcp",
        **fields,
    }


async def test_the_post_is_signed_json(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(b"k3y-with-\xff-bytes\n")
    async with http_server() as receiver:
        alerts = Alerts(config(hook(receiver.url("/hook"), secret_file=str(secret_file))))
        await alerts.start()
        alerts.submit(
            "vrrp_state",
            {"instance": "VI_1", "old": "BACKUP", "new": "MASTER", "reason": "x", "priority": 100},
            NOW,
        )
        await wait_until(lambda: len(receiver.requests) == 1)
        await alerts.close()

    request = receiver.requests[0]
    assert request.headers["Content-Type"] == "application/json"
    expected = hmac.new(b"k3y-with-\xff-bytes", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Lvsha-Signature"] == f"sha256={expected}"
    assert request.json() == {
        "router_id": "lb-nat-1",
        "events": [
            {
                "type": "vrrp_state",
                "severity": "warning",
                "time": "2025-01-01T12:00:00.000Z",
                "summary": "VI_1: BACKUP -> MASTER",
                "instance": "VI_1",
                "old": "BACKUP",
                "new": "MASTER",
                "reason": "x",
                "priority": 100,
                "count": 1,
            }
        ],
    }


async def test_unsigned_without_a_secret_and_a_burst_is_one_post() -> None:
    async with http_server() as receiver:
        alerts = Alerts(config(hook(receiver.url("/hook"), gather=0.2)))
        await alerts.start()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        for n in range(6):  # 10.0.0.3 flaps and ends up
            alerts.submit(
                "real_server", rs("10.0.0.3:80", "unhealthy" if n % 2 else "healthy"), NOW + n
            )
        await wait_until(lambda: len(receiver.requests) == 1)
        await alerts.close()

    request = receiver.requests[0]
    assert "X-Lvsha-Signature" not in request.headers
    events = request.json()["events"]
    assert [(e["real_server"], e["new"], e["count"]) for e in events] == [
        ("10.0.0.2:80", "unhealthy", 1),
        ("10.0.0.3:80", "unhealthy", 6),
    ]
    assert events[1]["time"] == "2025-01-01T12:00:05.000Z"
    assert events[1]["summary"] == (
        "web: real server 10.0.0.3:80 down: connect: connection refused "
        "(6 changes since 2025-01-01T12:00:00.000Z)"
    )


async def test_refusals_are_retried_with_backoff() -> None:
    async with http_server() as receiver:
        receiver.statuses = [500, 503]
        alerts = Alerts(config(hook(receiver.url("/hook"), retries=3)), backoff=FAST)
        await alerts.start()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        await wait_until(lambda: len(receiver.requests) == 1)
        await alerts.close()

    counters = alerts.counters("webhook-1")
    assert (counters.failures, counters.sent, counters.delivered) == (2, 1, 1)
    assert receiver.taken == 3
    assert sum(counters.dropped.values()) == 0


async def test_a_refusal_on_the_last_attempt_drops_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with http_server() as receiver:
        receiver.statuses = [404, 404]
        alerts = Alerts(config(hook(receiver.url("/hook"), retries=1)), backoff=FAST)
        await alerts.start()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        counters = alerts.counters("webhook-1")
        await wait_until(lambda: counters.dropped["delivery_failed"] == 1)
        await alerts.close()

    assert receiver.taken == 2
    assert (
        f"alert sink webhook-1: 1 alerts not delivered after 2 attempts, dropped: POST "
        f"{receiver.url('/hook')}: HTTP 404 Not Found: refused by the test"
    ) in caplog.text


async def test_a_webhook_that_never_answers_fails_in_timeout_times_attempts() -> None:
    timeout, retries = 0.2, 1
    async with http_server() as receiver:
        receiver.hang = True
        sink = hook(receiver.url("/hook"), timeout=timeout, retries=retries, queue_size=50)
        alerts = Alerts(config(sink), backoff=FAST)
        await alerts.start()
        started = time.monotonic()
        alerts.submit("real_server", rs("10.0.0.2:80"), NOW)
        counters = alerts.counters("webhook-1")
        await wait_until(lambda: counters.dropped["delivery_failed"] == 1)
        failed_after = time.monotonic() - started

        began = time.perf_counter()
        for n in range(10_000):
            alerts.submit("real_server", rs(f"10.2.{n // 250}.{n % 250}:80"), NOW)
        per_submit = (time.perf_counter() - began) / 10_000
        closing = time.monotonic()
        await alerts.close(timeout=0.2)
        closed_in = time.monotonic() - closing

    assert receiver.taken >= retries + 1
    assert timeout * (retries + 1) <= failed_after < timeout * (retries + 1) + 0.5
    assert per_submit < 50e-6, f"{per_submit * 1e6:.1f} us per submit"
    assert closed_in < 1.0  # the timeout and a moment to unwind
    assert counters.high_water == 50
    assert counters.sent == 0
    assert sum(counters.dropped.values()) == counters.events == 10_001
