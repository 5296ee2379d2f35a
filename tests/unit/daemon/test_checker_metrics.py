"""The checker's metrics textfile: every family it writes, read back by prometheus_client's
parser and `promtool check metrics`; and the checker process itself (dry run) on its channel:
an event for a real server failing at start, a Pong for a Ping, the textfile at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from lvsha.checks.metrics import FAMILIES
from lvsha.checks.verdict import Health
from lvsha.daemon.checker_process import Checker, metric_samples
from lvsha.daemon.metrics import LoopLag, export_periodically, render_sliced
from lvsha.ipvs.model import AddressKey, DestinationKey, TransportProtocol
from lvsha.messages import (
    ChildEvent,
    ChildReady,
    Message,
    Ping,
    Pong,
    StatusRequest,
    decode,
    encode,
)
from tests.tools.exposition import parsed, promtool_accepts, values
from tests.unit.daemon.checker_child import start_checker
from tests.unit.daemon.test_checker_events import WEB_A, Setup, config_text, wait_for

WEB = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 80)
WEB_A_KEY = DestinationKey(ip_address("10.0.0.1"), 80)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    setup = Setup(tmp_path)
    yield setup
    for checker in setup.checkers:
        await checker.stop()
    await setup.listener.close()


async def running(setup: Setup) -> Checker:
    """A checker whose web real server is up and has been probed a few times."""
    await setup.listener.open()
    checker = await setup.checker(config_text(setup.listener.port))

    def probed() -> bool:
        tcp = checker.pool.durations.by_type().get("tcp")
        return tcp is not None and tcp.count >= 3

    await wait_for(probed, "probes")
    # The counters of a re-read after the first pass (the one at start found no services).
    syncer = checker.syncer
    read_at = syncer.counters_read_at
    syncer.request_resync()
    await wait_for(lambda: syncer.counters_read_at != read_at, "a re-read of the table")
    return checker


async def exposition(checker: Checker) -> str:
    return await render_sliced(metric_samples(checker, LoopLag()), FAMILIES)


async def test_the_textfile_has_every_family_prometheus_reads_it(setup: Setup) -> None:
    checker = await running(setup)
    families = parsed(await exposition(checker))
    # prometheus_client names a counter family without its _total.
    assert set(families) >= {
        "lvsha_event_loop_lag_seconds",
        "lvsha_check_lateness_seconds",
        "lvsha_check_duration_seconds",
        "lvsha_ipvs_detection_to_kernel_seconds",
        "lvsha_checks_distinct",
        "lvsha_real_servers",
        "lvsha_real_server_up",
        "lvsha_real_server_weight",
        "lvsha_real_server_connections",
        "lvsha_ipvs_counters_age_seconds",
        "lvsha_virtual_server_quorum",
        "lvsha_virtual_server_live_weight",
        "lvsha_ipvs_operations",
        "lvsha_ipvs_errors",
        "lvsha_ipvs_drift_repairs",
        "lvsha_ipvs_order_repairs",
    }
    lateness = families["lvsha_check_lateness_seconds"]
    assert lateness.type == "summary"
    started = {s.name: s.value for s in lateness.samples if "quantile" not in s.labels}
    # Since the start: probes go on starting meanwhile.
    assert 3 <= started["lvsha_check_lateness_seconds_count"] <= checker.pool.lateness.starts
    up = values(families["lvsha_real_server_up"])
    assert up == {
        (("real_server", "10.0.0.1:80"), ("virtual_server", "web")): 1.0,
        (("real_server", "10.0.0.2:443"), ("virtual_server", "api")): 1.0,
    }
    weight = values(families["lvsha_real_server_weight"])
    assert weight[(("real_server", "10.0.0.1:80"), ("virtual_server", "web"))] == 3.0
    quorum = values(families["lvsha_virtual_server_quorum"])
    assert quorum == {(("virtual_server", "web"),): 1.0, (("virtual_server", "api"),): 1.0}


async def test_check_durations_are_a_histogram_by_check_type(setup: Setup) -> None:
    checker = await running(setup)
    histogram = parsed(await exposition(checker))["lvsha_check_duration_seconds"]
    assert histogram.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s for s in histogram.samples}
    count = samples["lvsha_check_duration_seconds_count", None]
    assert count.labels == {"type": "tcp"}
    assert 3 <= count.value <= checker.pool.durations.by_type()["tcp"].count  # probes go on
    assert samples["lvsha_check_duration_seconds_bucket", "+Inf"].value == count.value
    # A loopback connect takes well under a second.
    assert samples["lvsha_check_duration_seconds_bucket", "1"].value == count.value
    assert 0 < samples["lvsha_check_duration_seconds_sum", None].value < count.value


async def test_connections_come_from_the_latest_read_of_the_counters(setup: Setup) -> None:
    checker = await running(setup)
    connections = values(parsed(await exposition(checker))["lvsha_real_server_connections"])
    web_a = (("real_server", "10.0.0.1:80"), ("state", "active"), ("virtual_server", "web"))
    assert connections[web_a] == 0.0  # as the syncer's read at start counted them
    # A status request reads them afresh: the metrics take that read, being newer.
    setup.table.set_connections(WEB, WEB_A_KEY, 5, 9)
    await checker.on_message(StatusRequest(1))
    families = parsed(await exposition(checker))
    connections = values(families["lvsha_real_server_connections"])
    assert connections[web_a] == 5.0
    web_a_inactive = (("real_server", "10.0.0.1:80"), ("state", "inactive"))
    assert connections[(*web_a_inactive, ("virtual_server", "web"))] == 9.0
    (age,) = values(families["lvsha_ipvs_counters_age_seconds"]).values()
    assert 0.0 <= age < 5.0


async def test_a_real_server_down_is_up_0_and_out_of_the_table(setup: Setup) -> None:
    checker = await running(setup)
    await setup.listener.close()
    await wait_for(lambda: checker.pool.verdicts()[WEB_A].health is Health.UNHEALTHY, "down")
    await checker.syncer.sync_now()
    families = parsed(await exposition(checker))
    web_a = (("real_server", "10.0.0.1:80"), ("virtual_server", "web"))
    assert values(families["lvsha_real_server_up"])[web_a] == 0.0
    assert web_a not in values(families["lvsha_real_server_weight"])
    assert values(families["lvsha_virtual_server_quorum"])[(("virtual_server", "web"),)] == 0.0


async def test_the_textfile_passes_promtool(setup: Setup) -> None:
    checker = await running(setup)
    promtool_accepts(await exposition(checker))


async def test_the_textfile_is_written_periodically_and_at_the_end(
    setup: Setup, tmp_path: Path
) -> None:
    checker = await running(setup)
    path = tmp_path / "metrics-checker.prom"
    lag = LoopLag()
    writer = asyncio.create_task(
        export_periodically(path, lambda: metric_samples(checker, lag), FAMILIES, 0.02)
    )
    try:
        await wait_for(path.exists, "the first write")
        first = path.stat().st_mtime_ns
        await wait_for(lambda: path.stat().st_mtime_ns != first, "a second write")
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
    assert "lvsha_real_server_up" in parsed(path.read_text())


def test_the_checker_process_reports_events_answers_pings_and_leaves_its_textfile(
    tmp_path: Path,
) -> None:
    """The wiring: `python -m lvsha.daemon.checker_process --dry-run` on a channel."""
    port = Setup(tmp_path).listener.port  # nobody listens: 10.0.0.1 fails at start
    config = tmp_path / "lvsha.yaml"
    config.write_text(config_text(port))
    child = start_checker(config, tmp_path)
    parent_end, lines = child.channel, child.lines
    try:
        # Asked at once, answered at once: start-up does not hold the answer.
        parent_end.sendall(encode(Ping(41)))
        seen: list[Message] = []
        while Pong(41) not in seen or not any(isinstance(m, ChildEvent) for m in seen):
            seen.append(decode(lines.readline()))
        (event,) = [m for m in seen if isinstance(m, ChildEvent)]
        # An event found while the checks start waits for ChildReady.
        assert seen.index(ChildReady()) < seen.index(event)
        assert event.type == "real_server"
        assert '"new":"unhealthy"' in event.fields
        assert '"reason":"tcp connect refused"' in event.fields
    finally:
        child.stop()
    assert child.process.returncode == 0, child.log
    text = (tmp_path / "metrics-checker.prom").read_text()
    families = parsed(text)
    up = values(families["lvsha_real_server_up"])
    assert up[(("real_server", "10.0.0.1:80"), ("virtual_server", "web"))] == 0.0
    promtool_accepts(text)
