"""End to end on real IPVS: a client reaches three real servers through an lvsha NAT director.

One lab switch carries two subnets: the client and the VIP on 192.0.2.0/24, the real servers on
10.0.0.0/24 with their default route via the director, so their replies come back through it to
be NATed (one-armed NAT). The director runs `lvsha run` (no --dry-run): VRRP holds the VIP, the
checker's HTTP checks drive the director namespace's own IPVS table, read back with ipvsadm.
A client loops requests to the VIP while one real server's HTTP service is stopped and started.
A second test SIGKILLs the checker child while a real server is down (issue 9, finding 10) and
watches the kernel table over netlink while the parent restarts it.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.ipvs.model import AddressKey, TransportProtocol
from lvsha.ipvs.netlink import NetlinkIpvsTable
from tests.kernel.nat_lab import CLIENT, DIRECTOR_BACK, build_nat_lab
from tests.netns.director import Director

pytestmark = pytest.mark.kernel

VIP = "192.0.2.100"
VIP_PORT = 80
REAL_SERVERS = {"rs1": "10.0.0.21", "rs2": "10.0.0.22", "rs3": "10.0.0.23"}
SERVER_PORT = 8080
CHECK_INTERVAL = 0.5
RISE = 2
FALL = 2
REQUEST_TIMEOUT = 1.0
REQUEST_PACE = 0.02
"""Pause between client requests, so the client does not starve the one-vCPU VM."""
MARGIN = 0.25
"""Seconds after the removal was seen before a failed request counts against lvsha."""
SETTLE = 240.0
"""Deadline for start-up waits: in the one-vCPU TCG VM, with a cold page cache, importing
lvsha's checker child alone takes about 25 s, and three web servers start alongside."""


RESTART_WARMUP = 2.0
"""The restart test's warm-up: a check's first round falls anywhere within it, so a checker
that put a failed real server back until its first round would almost always leave it in the
table for many WATCH_INTERVALs (about 0.15 s in the run against the code before the fix)."""
RESTART_ROUNDS = 6
"""Check rounds of each healthy real server the restarted checker must have run (seen in their
access logs) before the watch of the table ends."""
WATCH_INTERVAL = 0.02
"""Pause between two netlink reads of the table while the checker restarts."""
CHECKER = "lvsha.daemon.checker_process"
CHECKER_RUNNING = "checker running"


def real_server_entry(address: str, *, alpha: bool = True, warmup: float | None = None) -> str:
    # alpha: a real server enters the table only once its web server has passed RISE checks,
    # so the client never meets one that is still starting.
    warmup_key = "" if warmup is None else f"warmup: {warmup}s, "
    check = (
        f"{{type: http, path: /, interval: {CHECK_INTERVAL}s, {warmup_key}timeout: 1s, "
        f"retries: 0, rise: {RISE}, fall: {FALL}, alpha: {'true' if alpha else 'false'}}}"
    )
    return f"      - {{address: {address}, port: {SERVER_PORT}, checks: [{check}]}}"


def director_config(*, alpha: bool = True, warmup: float | None = None) -> str:
    return "\n".join(
        [
            "vrrp_instances:",
            "  VI:",
            "    interface: eth0",
            "    virtual_router_id: 51",
            "    priority: 150",
            "    version: 3",
            "    advert_interval: 100ms",
            f"    virtual_ipaddresses: ['{VIP}/24']",
            "    garp: {delay: 0}",
            "virtual_servers:",
            "  - name: web",
            f"    address: {VIP}",
            f"    port: {VIP_PORT}",
            "    protocol: TCP",
            "    scheduler: rr",
            "    forwarding: NAT",
            "    real_servers:",
            *(
                real_server_entry(address, alpha=alpha, warmup=warmup)
                for address in REAL_SERVERS.values()
            ),
        ]
    )


CONFIG = director_config()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One client request: when it started, and which real server answered or what went wrong."""

    started: float
    server: str | None
    error: str | None


Record = TypeVar("Record")


class Recorder(Generic[Record]):
    """A loop in a thread inside `host`'s namespace that appends records until stopped;
    `records()` reads them meanwhile, `stop()` ends the loop and raises what it raised."""

    def __init__(self, host: Host, name: str) -> None:
        self._host = host
        self._stop = threading.Event()
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[Record]:
        """Stop the loop (if it was started) and return every record taken."""
        self._stop.set()
        if self._thread.ident is None:
            return []
        self._thread.join(timeout=30)
        if self._failure:
            raise self._failure[0]
        return self.records()

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def _record(self, record: Record) -> None:
        with self._lock:
            self._records.append(record)

    def _run(self) -> None:
        try:
            self._host.call(self._body)
        except BaseException as error:
            self._failure.append(error)

    def _body(self) -> None:
        raise NotImplementedError


class Client(Recorder[Attempt]):
    """Requests to the VIP in a loop, from a thread inside the client's namespace."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "client")

    def _body(self) -> None:
        while not self._stop.is_set():
            self._record(request_once())
            self._stop.wait(REQUEST_PACE)


def request_once() -> Attempt:
    started = time.monotonic()
    connection = http.client.HTTPConnection(VIP, VIP_PORT, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as error:
        return Attempt(started, None, f"{type(error).__name__}: {error}")
    finally:
        connection.close()
    if response.status != 200:
        return Attempt(started, None, f"HTTP {response.status}")
    return Attempt(started, body, None)


def start_web_server(host: Host, root: Path, log: Path) -> subprocess.Popen[bytes]:
    """Python's http.server serving a page that names the host; its access log goes to `log`."""
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text(f"{host.name}\n")
    with log.open("ab") as stream:
        return host.popen(
            sys.executable, "-u", "-m", "http.server", str(SERVER_PORT),
            "--bind", "0.0.0.0", "--directory", str(root),
            stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT,
        )  # fmt: skip


def table(director: Host) -> dict[str, tuple[str, int]]:
    """The VIP service's destinations in the director's IPVS table, per ipvsadm -Ln:
    address -> (forwarding, weight); empty while the service does not exist."""
    done = director.run("ipvsadm", "-Ln", "-t", f"{VIP}:{VIP_PORT}", check=False)
    if done.returncode != 0:
        return {}
    found = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if words[:1] == ["->"] and words[1] != "RemoteAddress:Port":
            address, _, _port = words[1].rpartition(":")
            found[address] = (words[2], int(words[3]))
    return found


def request_sources(log: Path) -> list[str]:
    """Client addresses of the requests in an http.server access log, in order."""
    return [line.split()[0] for line in log.read_text().splitlines() if '"GET ' in line]


@dataclass(frozen=True, slots=True)
class Sample:
    """One read of the VIP service's destinations: when it returned, and address -> weight
    (None while the service does not exist)."""

    at: float
    weights: Mapping[str, int] | None


class TableWatch(Recorder[Sample]):
    """Reads the director's IPVS table over netlink every WATCH_INTERVAL s, from a thread
    inside its namespace, until stopped; far finer than ipvsadm runs in the one-vCPU VM."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "table-watch")
        self._key = AddressKey(TransportProtocol.TCP, ip_address(VIP), VIP_PORT)

    def _body(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        async with NetlinkIpvsTable() as port:
            while not self._stop.is_set():
                service = (await port.list_services()).get(self._key)
                weights = (
                    None
                    if service is None
                    else {str(d.address): d.weight for d in service.destinations}
                )
                self._record(Sample(time.monotonic(), weights))
                await asyncio.sleep(WATCH_INTERVAL)


def checker_starts(director: Director) -> int:
    """How many times a checker child has said it runs, per the director's log."""
    return director.log().count(CHECKER_RUNNING)


@pytest.fixture
def director_lab(lab: Lab) -> Iterator[Lab]:
    yield build_nat_lab(lab, REAL_SERVERS)


def test_a_stopped_real_server_leaves_after_fall_and_returns_after_rise(
    director_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = director_lab
    hosts = lab.hosts
    servers = {
        name: start_web_server(hosts[name], tmp_path / name, tmp_path / f"{name}.log")
        for name in REAL_SERVERS
    }
    director = Director(hosts["dir"], CONFIG, f"{VIP}/24")
    director.start()
    client = Client(hosts["client"])
    rs1 = REAL_SERVERS["rs1"]
    try:
        everyone = {address: ("Masq", 1) for address in REAL_SERVERS.values()}
        wait_until(
            lambda: director.holds_vip() and table(hosts["dir"]) == everyone,
            SETTLE,
            interval=0.1,
            what="the director holds the VIP and has all three real servers in IPVS",
        )
        client.start()
        wait_until(
            lambda: {a.server for a in client.records()} >= set(REAL_SERVERS),
            SETTLE,
            interval=0.05,
            what="responses from all three real servers",
        )
        before_stop = client.records()
        assert {a.server for a in before_stop if a.server} == set(REAL_SERVERS)
        assert [a for a in before_stop if a.error] == []

        stopped_at = time.monotonic()
        servers["rs1"].kill()
        servers["rs1"].wait(timeout=10)
        wait_until(
            lambda: rs1 not in table(hosts["dir"]),
            20,
            interval=0.02,
            what="rs1 removed from IPVS",
        )
        removed_seen = time.monotonic()
        assert table(hosts["dir"]) == {
            REAL_SERVERS["rs2"]: ("Masq", 1),
            REAL_SERVERS["rs3"]: ("Masq", 1),
        }
        # Enough traffic after the removal for "no failure from then on" to mean something.
        wait_until(
            lambda: sum(1 for a in client.records() if a.started > removed_seen + MARGIN) >= 30,
            30,
            interval=0.05,
            what="30 requests after the removal",
        )

        restarted_at = time.monotonic()
        restart_log = tmp_path / "rs1-restarted.log"
        start_web_server(hosts["rs1"], tmp_path / "rs1", restart_log)
        wait_until(
            lambda: table(hosts["dir"]).get(rs1) == ("Masq", 1),
            30,
            interval=0.02,
            what="rs1 back in IPVS",
        )
        back_seen = time.monotonic()
        wait_until(
            lambda: any(a.server == "rs1" and a.started > restarted_at for a in client.records()),
            20,
            interval=0.05,
            what="the client served by rs1 again",
        )
    except BaseException:
        print(f"director holds the VIP: {director.holds_vip()}; IPVS: {table(hosts['dir'])}")
        print(f"director log:\n{director.log()[-6000:]}")
        raise
    finally:
        attempts = client.stop()
        if director.running():
            director.crash()

    late_failures = [a for a in attempts if a.error and a.started > removed_seen + MARGIN]
    assert late_failures == [], (
        f"{len(late_failures)} requests failed after rs1 left the table "
        f"(seen {removed_seen - stopped_at:.2f} s after the stop): {late_failures[:5]}"
    )
    # A stopped server leaves after FALL failed rounds, each started CHECK_INTERVAL after the
    # previous one, so not before (FALL - 1) intervals, less the first round's probe time.
    assert removed_seen - stopped_at > (FALL - 1) * CHECK_INTERVAL * 0.6
    # rise: the restarted server answered RISE checks from the director before lvsha put it
    # back and the first client request (NATed, so from the client's address) reached it.
    sources = request_sources(restart_log)
    assert CLIENT in sources, sources
    first_client_request = sources.index(CLIENT)
    assert sources[:first_client_request].count(DIRECTOR_BACK) >= RISE, sources
    assert set(sources[:first_client_request]) == {DIRECTOR_BACK}, sources

    failed_while_down = [a for a in attempts if a.error and stopped_at <= a.started]
    with capsys.disabled():
        print(
            f"\nend to end: {len(attempts)} requests; rs1 stopped -> gone from IPVS in "
            f"{removed_seen - stopped_at:.2f} s ({len(failed_while_down)} requests failed "
            f"meanwhile); restarted -> back in IPVS in {back_seen - restarted_at:.2f} s after "
            f"{first_client_request} checks; 0 failures after removal + {MARGIN} s"
        )


def test_a_restarted_checker_keeps_a_failed_real_server_out(
    director_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9, finding 10: with alpha: false, a checker that restarts while a real server is
    down must not put it back in the kernel table before a probe passes (the old checker did,
    at its weight, until its first failed round), nor take the healthy ones out."""
    lab = director_lab
    hosts = lab.hosts
    logs = {name: tmp_path / f"{name}.log" for name in REAL_SERVERS}
    servers = {
        name: start_web_server(hosts[name], tmp_path / name, logs[name]) for name in REAL_SERVERS
    }
    config = director_config(alpha=False, warmup=RESTART_WARMUP)
    director = Director(hosts["dir"], config, f"{VIP}/24")
    director.start()
    watch = TableWatch(hosts["dir"])
    rs1 = REAL_SERVERS["rs1"]
    healthy = {REAL_SERVERS["rs2"], REAL_SERVERS["rs3"]}
    try:
        everyone = {address: ("Masq", 1) for address in REAL_SERVERS.values()}
        wait_until(
            lambda: director.holds_vip() and table(hosts["dir"]) == everyone,
            SETTLE,
            interval=0.1,
            what="the director holds the VIP and has all three real servers in IPVS",
        )
        wait_until(
            lambda: checker_starts(director) == 1,
            SETTLE,
            interval=0.1,
            what=f"the checker's {CHECKER_RUNNING!r} line",
        )
        servers["rs1"].kill()
        servers["rs1"].wait(timeout=10)
        # inhibit_on_failure is off (the default): a failed real server leaves the table.
        wait_until(
            lambda: rs1 not in table(hosts["dir"]),
            30,
            interval=0.02,
            what="rs1 removed from IPVS",
        )
        assert table(hosts["dir"]) == {address: ("Masq", 1) for address in healthy}

        old_checker = director.child_pid(CHECKER)
        assert old_checker is not None
        watch.start()
        wait_until(lambda: len(watch.records()) >= 5, 30, what="the table watch reading")
        killed_at = time.monotonic()
        os.kill(old_checker, signal.SIGKILL)
        wait_until(
            lambda: director.child_pid(CHECKER) not in (None, old_checker),
            SETTLE,
            interval=0.05,
            what="a new checker child",
        )
        new_checker = director.child_pid(CHECKER)
        # The old checker is gone: every check the healthy servers see from now on is the new one's.
        checks_before = {
            name: request_sources(logs[name]).count(DIRECTOR_BACK) for name in ("rs2", "rs3")
        }
        wait_until(
            lambda: checker_starts(director) == 2,
            SETTLE,
            interval=0.05,
            what=f"the restarted checker's {CHECKER_RUNNING!r} line",
        )
        running_seen = time.monotonic()
        wait_until(
            lambda: all(
                request_sources(logs[name]).count(DIRECTOR_BACK) - checks_before[name]
                >= RESTART_ROUNDS
                for name in ("rs2", "rs3")
            ),
            RESTART_WARMUP + RESTART_ROUNDS * CHECK_INTERVAL + 60,
            interval=0.1,
            what=f"{RESTART_ROUNDS} check rounds of rs2 and rs3 by the restarted checker",
        )
        samples = watch.stop()

        restarted_at = time.monotonic()
        restart_log = tmp_path / "rs1-restarted.log"
        start_web_server(hosts["rs1"], tmp_path / "rs1", restart_log)
        wait_until(
            lambda: table(hosts["dir"]).get(rs1) == ("Masq", 1),
            60,
            interval=0.02,
            what="rs1 back in IPVS",
        )
        # http.server logs a request before it answers, so every check that passed has its
        # line by now; a pass or two more at most (one every CHECK_INTERVAL) since rs1 came back.
        checks_when_back = request_sources(restart_log).count(DIRECTOR_BACK)
        back_seen = time.monotonic()
    except BaseException:
        print(f"IPVS: {table(hosts['dir'])}")
        print(f"director log:\n{director.log()[-6000:]}")
        raise
    finally:
        watch.stop()
        if director.running():
            director.crash()

    after_kill = [sample for sample in samples if sample.at >= killed_at]
    wrong = [
        (round(sample.at - killed_at, 3), sample.weights)
        for sample in after_kill
        if sample.weights is None
        or rs1 in sample.weights
        or any(sample.weights.get(address, 0) <= 0 for address in healthy)
    ]
    assert wrong == [], (
        f"{len(wrong)} of {len(after_kill)} reads after the SIGKILL showed rs1 in the table or a "
        f"healthy server out (seconds after the kill, weights); the restarted checker said "
        f"{CHECKER_RUNNING!r} {running_seen - killed_at:.2f} s after it: {wrong[:10]}; "
        f"its IPVS log lines: {[line for line in director.log().splitlines() if 'IPVS' in line]}"
    )
    # The watch saw the whole window: from before the kill to after the checks above, densely.
    assert samples[0].at < killed_at and samples[-1].at > running_seen
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(samples)]
    assert max(gaps) < 0.5, f"the table watch paused {max(gaps):.2f} s"
    # rise: rs1 came back once RISE checks had reached the restarted web server.
    assert checks_when_back >= RISE, request_sources(restart_log)

    with capsys.disabled():
        print(
            f"\nchecker restart: pid {old_checker} killed -> pid {new_checker} running after "
            f"{running_seen - killed_at:.1f} s; {len(after_kill)} netlink reads over "
            f"{samples[-1].at - killed_at:.1f} s (largest gap {max(gaps) * 1000:.0f} ms): rs1 "
            f"never back, rs2 and rs3 never out; rs1 restarted -> back in "
            f"{back_seen - restarted_at:.2f} s, after {checks_when_back} checks"
        )
