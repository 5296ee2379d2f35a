"""The parent's side of alerts and metrics (lvsha.daemon.run, lvsha.daemon.prometheus): child
events reach the stream and the sinks, malformed ones are refused, and /metrics serves the
parent's figures merged with the children's files."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsha.config import load_text
from lvsha.daemon import overrides, reload, run
from lvsha.daemon.metrics import LOOP_FAMILIES, catalog, render
from lvsha.daemon.prometheus import MetricsEndpoint, bind
from lvsha.daemon.supervisor import Supervisor
from lvsha.messages import ChildEvent, Message, VrrpStateChanged

TEXT = """\
vrrp_instances:
  VI_1: {interface: eth0, virtual_router_id: 51, priority: 150, virtual_ipaddresses: [10.0.0.1]}
"""


class FakeAlerts:
    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, object]]] = []

    def submit(self, event_type: str, fields: Mapping[str, object], wall_time: float) -> None:
        self.submitted.append((event_type, dict(fields)))


class AliveSupervisor(Supervisor):
    def __init__(self, alive: set[str]) -> None:
        super().__init__([])
        self._alive = alive

    def alive(self, name: str) -> bool:
        return name in self._alive

    def send(self, child_name: str, message: Message) -> bool:
        return True


def parent(tmp_path: Path) -> run._Parent:
    path = str(tmp_path / "lvsha.yaml")
    running = reload.Running.start(path, TEXT, load_text(TEXT, path), 1, reload.digest_of(TEXT))
    return run._Parent(
        running,
        tmp_path,
        1 << 20,
        dry_run=True,
        state_path=tmp_path / "overrides.json",
        state=overrides.State(),
    )


def test_events_before_the_sinks_exist_are_kept_for_them(tmp_path: Path) -> None:
    state = parent(tmp_path)
    state.on_message("vrrp", VrrpStateChanged("VI_1", "BACKUP", "MASTER", "timer", 150))
    alerts = FakeAlerts()
    state.start_alerts(alerts)  # type: ignore[arg-type]
    state.on_message(
        "checker",
        ChildEvent(
            "real_server",
            '{"virtual_server": "web", "real_server": "10.0.0.2:80", "old": "healthy", '
            '"new": "unhealthy", "reason": "connection refused", "check": "tcp"}',
        ),
    )
    assert [event for event, _ in alerts.submitted] == ["vrrp_state", "real_server"]
    assert alerts.submitted[0][1]["new"] == "MASTER"
    assert alerts.submitted[1][1]["reason"] == "connection refused"
    assert state.events.seq == 2  # both on the event stream too


@pytest.mark.parametrize(
    "fields",
    ['["not", "an", "object"]', "{not json", '{"nested": {"a": 1}}', '{"list": [1]}'],
)
def test_a_malformed_child_event_is_refused_and_logged(
    tmp_path: Path, fields: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = parent(tmp_path)
    alerts = FakeAlerts()
    state.start_alerts(alerts)  # type: ignore[arg-type]
    state.on_message("checker", ChildEvent("real_server", fields))
    assert alerts.submitted == []
    assert state.events.seq == 0
    assert "checker child sent a malformed real_server event" in caplog.text


def test_a_restarted_child_is_an_event(tmp_path: Path) -> None:
    state = parent(tmp_path)
    alerts = FakeAlerts()
    state.start_alerts(alerts)  # type: ignore[arg-type]
    state.on_restart("vrrp", "signal SIGKILL", 1)
    assert alerts.submitted == [
        ("child_restarted", {"child": "vrrp", "status": "signal SIGKILL", "restarts": 1})
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_merge_the_parent_and_the_running_children(tmp_path: Path) -> None:
    state = parent(tmp_path)
    state.supervisor = AliveSupervisor({"vrrp"})
    vrrp_text = render(
        [("lvsha_event_loop_lag_seconds", {"process": "vrrp", "quantile": "0.5"}, 0.001)],
        catalog(*LOOP_FAMILIES),
    )
    (tmp_path / "metrics-vrrp.prom").write_text(vrrp_text)
    # A checker that is not running: its last file is not served.
    (tmp_path / "metrics-checker.prom").write_text("# HELP stale_metric x\nstale_metric 1\n")
    listen = f"127.0.0.1:{free_port()}"
    endpoint = MetricsEndpoint(listen, bind(listen), state.scrape)
    await endpoint.serve()
    try:

        def get() -> tuple[str, str]:
            with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as answer:
                return answer.headers["Content-Type"], answer.read().decode()

        content_type, text = await asyncio.to_thread(get)
    finally:
        await endpoint.close()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    lag = ("lvsha_event_loop_lag_seconds", (("process", "vrrp"), ("quantile", "0.5")))
    assert samples[lag] == 0.001
    assert ("lvsha_config_generation", ()) in samples
    assert "stale_metric" not in text
    # One HELP/TYPE per family, whichever process wrote its samples.
    assert text.count("# TYPE lvsha_event_loop_lag_seconds ") == 1
    assert any(name == "lvsha_metrics_snapshot_age_seconds" for name, _ in samples)


def test_a_taken_port_is_an_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError, match=f"metrics.listen {listen}: Address already in use"):
            bind(listen)


async def test_a_reload_moves_the_endpoint_and_keeps_it_when_the_new_port_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = parent(tmp_path)
    state.supervisor = AliveSupervisor(set())

    def answers(listen: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    first = f"127.0.0.1:{free_port()}"
    await state.move_metrics(first)
    assert await asyncio.to_thread(answers, first)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        await state.move_metrics(busy)
        assert "metrics endpoint not moved, still as before" in caplog.text
        assert await asyncio.to_thread(answers, first)
    second = f"127.0.0.1:{free_port()}"
    await state.move_metrics(second)
    assert await asyncio.to_thread(answers, second)
    assert not await asyncio.to_thread(answers, first)
    await state.move_metrics(None)
    assert not await asyncio.to_thread(answers, second)
