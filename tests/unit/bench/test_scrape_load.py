"""The scrape load bench's layout, readings, verdict and scraping client."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scrape_load import (
    ADDRESSES,
    METRICS_PORT,
    FileWatcher,
    Reading,
    Scrapes,
    adds_no_lateness,
    director_document,
    inside,
    lateness_window,
    layout,
    parsed,
    reading,
    scrape_loop,
    summarise,
)
from lvsha.config.model import LvshaConfig


def test_layout_spreads_the_checks_over_the_addresses() -> None:
    five_thousand = layout(5000)
    assert [address for address, _ in five_thousand] == list(ADDRESSES)
    assert {len(ports) for _, ports in five_thousand} == {500}
    few = layout(23)
    assert [len(ports) for _, ports in few] == [3] * 7 + [2]
    assert layout(1) == [(ADDRESSES[0], [20000])]
    with pytest.raises(ValueError, match="at least 1"):
        layout(0)


def test_the_director_document_is_a_valid_config_with_every_check() -> None:
    config = LvshaConfig.model_validate(director_document(5000))
    assert config.global_.metrics.listen == f"127.0.0.1:{METRICS_PORT}"
    targets = {
        (str(real.address), real.port)
        for server in config.virtual_servers
        for real in server.real_servers
    }
    assert len(targets) == 5000
    assert len(config.virtual_servers) == len(ADDRESSES)


def test_the_lateness_window_is_10000_starts() -> None:
    assert lateness_window(5000) == 2.0
    assert lateness_window(500) == 20.0


TEXT = """\
# HELP lvsha_check_lateness_seconds How late checks start after they are due, by quantile.
# TYPE lvsha_check_lateness_seconds gauge
lvsha_check_lateness_seconds{quantile="0.5"} 0.0004
lvsha_check_lateness_seconds{quantile="0.99"} 0.072
"""


def test_a_reading_needs_both_quantiles() -> None:
    assert reading(TEXT, 100.0) == Reading(100.0, 0.0004, 0.072)
    assert reading(TEXT.replace('"0.99"', '"0.9"'), 100.0) is None
    assert reading("", 100.0) is None


def test_only_readings_whose_window_lies_inside_the_phase_count() -> None:
    readings = [Reading(t, 0.001, t / 1000) for t in (10.0, 11.9, 12.0, 15.0, 20.0, 20.1)]
    kept = inside(readings, began=10.0, ended=20.0, window=2.0)
    assert [r.written for r in kept] == [12.0, 15.0, 20.0]
    summary = summarise(kept)
    assert summary is not None
    assert summary.readings == 3
    assert summary.p99 == pytest.approx(0.015)
    assert summary.worst_p99 == pytest.approx(0.020)
    assert summarise([]) is None


def test_a_scrape_may_add_10_percent_or_5_ms() -> None:
    assert adds_no_lateness(0.100, 0.110)
    assert not adds_no_lateness(0.100, 0.111)
    assert adds_no_lateness(0.002, 0.007)
    assert not adds_no_lateness(0.002, 0.0071)
    assert adds_no_lateness(0.010, 0.001)


def test_the_file_watcher_reads_each_rewrite_once(tmp_path: Path) -> None:
    path = tmp_path / "metrics-checker.prom"
    watcher = FileWatcher(path)
    watcher.poll()  # not written yet
    assert watcher.readings == []
    path.write_text(TEXT)
    os.utime(path, (1000.0, 1000.0))
    watcher.poll()
    watcher.poll()
    assert watcher.readings == [Reading(1000.0, 0.0004, 0.072)]
    path.write_text(TEXT.replace("0.072", "0.003"))
    os.utime(path, (1005.0, 1005.0))
    watcher.poll()
    assert [r.p99 for r in watcher.readings] == [0.072, 0.003]
    assert "0.003" in watcher.last_text


def test_parsed_says_what_the_parser_made_of_a_scrape() -> None:
    assert parsed(TEXT) == "1 families, 2 samples, parsed without error"
    assert parsed("lvsha_x{quantile=0.5} 1\n").startswith("the parser refused it")


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = TEXT.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_scrape_loop_keeps_the_rate_and_records_each_scrape(metrics_url: str) -> None:
    scrapes = Scrapes()
    scrape_loop(metrics_url, 0.5, 10.0, scrapes)
    assert 1 <= len(scrapes.latencies) <= 6  # 5 due in 0.5 s; fewer only on a slow machine
    assert set(scrapes.sizes) == {len(TEXT)}
    assert scrapes.first == TEXT
    assert not scrapes.errors
    assert "0 errors" in scrapes.summary(0.5)


def test_scrape_loop_counts_failures() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    scrapes = Scrapes()
    scrape_loop(f"http://127.0.0.1:{port}/metrics", 0.1, 0.0, scrapes)
    assert not scrapes.latencies
    assert sum(scrapes.errors.values()) >= 1
    assert "0 scrapes" in scrapes.summary(0.1)
