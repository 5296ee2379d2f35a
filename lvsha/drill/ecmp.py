"""`lvsha drill --topology ecmp`: three directors announce one VIP over BGP to a router doing
ECMP; a client keeps long-lived connections through them while directors leave and return.

The lab, in namespaces with a prefix of its own (it needs real IPVS: run it in the test VM):

    client 203.0.113.2 --[fr]-- 203.0.113.1 router 192.0.2.1 --[sw]-- directors 192.0.2.11-13
                                                                   \\-- real servers 192.0.2.21-24

The router runs FRR (zebra, bgpd, bfdd): eBGP to each director with BFD, ECMP across them
(`maximum-paths`, `bestpath as-path multipath-relax`), and the kernel hashes flows on their
ports (`fib_multipath_hash_policy=1`). Each director runs FRR under its own pathspace and
`lvsha run` (real IPVS) with a `bgp:` section announcing the VIP (on its `lo`) while the
virtual service has quorum; DR forwarding to four real servers (VIP on `lo`, `arp_ignore=1`,
`arp_announce=2`, default route via the router) running an echo server. The client
(lvsha.drill.ecmp_traffic, a process of its own) keeps long-lived connections exchanging a
message every 50 ms and opens short connections continuously.

Scenarios, each from all three directors announcing (a returning director: from the two
others): a director drained with `lvsha handover`, a director killed (link cut, FRR and lvsha
killed), that director returning, a real server failing; under each scheduler asked for (`mh`
with `mh-port`, then `wlc` for contrast). Everything is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsha import client as control
from lvsha.drill.ecmp_report import (
    CONSISTENT,
    ConnEntry,
    EcmpScenario,
    Figures,
    FlowRecord,
    Service,
    ShortRecord,
    figures,
    flow_directors,
    format_table,
    met,
    parse_ip_vs,
    parse_ip_vs_conn,
    report_json,
)
from lvsha.drill.ecmp_traffic import TrafficClient
from lvsha.drill.frr import Frr, FrrPool, missing_frr
from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.drill.main import InterruptGuard, _remove_leftover_namespaces, _say
from lvsha.drill.route_watch import RouteWatcher

VIP = "198.51.100.10"
PORT = 80
ROUTER = "192.0.2.1"
ROUTER_FRONT = "203.0.113.1"
CLIENT = "203.0.113.2"
DIRECTORS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")
REAL_SERVERS = ("192.0.2.21", "192.0.2.22", "192.0.2.23", "192.0.2.24")
ROUTER_AS = 65000
DIRECTOR_AS = 65001
"""The first director's AS; the others count up (multipath-relax makes them equal)."""
FRR_START_TIMEOUT = 120.0
"""Allowance for each FRR daemon to start: four instances at once take long in the VM."""
BGP_POLL_INTERVAL = 10.0
"""lvsha reads the sessions' state back this often: each read is a vtysh run, which costs the
VM seconds of CPU; the routes do not depend on it."""
VTYSH_TIMEOUT = 60.0
"""lvsha's limit for one vtysh call; a loaded VM takes over the default 10 s."""
EXIT_TARGET_MISSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CLIENT_TIMEOUT = 60.0
"""Allowance for one answer of the traffic client (opening hundreds of connections in the VM)."""


@dataclass(frozen=True, slots=True)
class EcmpOptions:
    schedulers: tuple[str, ...] = ("mh", "wlc")
    scenarios: tuple[EcmpScenario, ...] = tuple(EcmpScenario)
    connections: int = 300
    """Long-lived connections opened for each scenario."""
    message_interval: float = 0.05
    stall: float = 1.0
    """An echo awaited longer than this breaks the connection (as the figures count it)."""
    new_per_second: float = 20.0
    check_interval: float = 1.0
    check_fall: int = 2
    graceful_shutdown: float = 2.0
    bfd_interval: float = 0.1
    bfd_multiplier: int = 3
    warmup: float = 2.0
    """Seconds of traffic on fresh connections before the fault."""
    settle: float = 3.0
    """Seconds the drill keeps watching after the change it waited for."""
    change_timeout: float = 30.0
    start_timeout: float = 600.0
    """Allowance for the lab to come up: FRR, three lvsha, BGP and BFD sessions, the route."""
    lab_prefix: str | None = None
    keep_logs: bool = False
    show_logs: bool = False
    """Print the kept logs on stderr at the end (the test VM's files vanish with it)."""
    json: bool = False

    def problems(self) -> list[str]:
        found = []
        if not self.schedulers:
            found.append("no scheduler to run")
        if not self.scenarios:
            found.append("no scenario to run")
        if self.connections < 1:
            found.append("at least one long-lived connection")
        if self.stall <= self.message_interval:
            found.append("the stall limit must exceed the message interval")
        if self.settle <= self.stall:
            found.append("--settle must exceed the stall limit, or stalls go unseen")
        return found


def options_from_args(args: argparse.Namespace) -> EcmpOptions:
    """The options `lvsha drill --topology ecmp` was given (lvsha.drill.main parses them)."""
    scenarios = tuple(EcmpScenario)
    if args.ecmp_scenario:
        scenarios = tuple(EcmpScenario(name) for name in args.ecmp_scenario)
    return EcmpOptions(
        schedulers=tuple(args.scheduler) if args.scheduler else ("mh", "wlc"),
        scenarios=scenarios,
        connections=args.connections,
        message_interval=args.message_interval,
        new_per_second=args.new_per_second,
        settle=args.settle,
        start_timeout=600.0 if args.start_timeout is None else args.start_timeout,
        lab_prefix=args.lab_prefix,
        keep_logs=args.keep_logs or args.show_logs,
        show_logs=args.show_logs,
        json=args.json,
    )


def director_config(options: EcmpOptions, scheduler: str, index: int, vtysh: Sequence[str]) -> str:
    """One director's lvsha configuration (the three differ only in their BGP identity)."""
    flags = "\n    scheduler_flags: [mh-port]" if scheduler == "mh" else ""
    real_servers = "\n".join(
        f"      - {{address: {address}, port: {PORT}, checks: [{{type: tcp}}]}}"
        for address in REAL_SERVERS
    )
    interval, fall = options.check_interval, options.check_fall
    bfd = options.bfd_interval
    return f"""\
# lvsha drill --topology ecmp: director d{index + 1}
global:
  check_defaults: {{interval: {interval}, timeout: {interval}, retries: 0, rise: 1, fall: {fall}}}
virtual_servers:
  - name: web
    address: {VIP}
    port: {PORT}
    protocol: TCP
    scheduler: {scheduler}{flags}
    forwarding: DR
    real_servers:
{real_servers}
bgp:
  asn: {DIRECTOR_AS + index}
  router_id: {DIRECTORS[index]}
  peers: [{{address: {ROUTER}, asn: {ROUTER_AS}}}]
  announce: [web]
  bfd: {{transmit_interval: {bfd}, receive_interval: {bfd}, multiplier: {options.bfd_multiplier}}}
  graceful_shutdown: {options.graceful_shutdown}
  poll_interval: {BGP_POLL_INTERVAL}
  timeout: {VTYSH_TIMEOUT}
  vtysh: {json.dumps(list(vtysh))}
"""


def set_sysctls(host: Host, values: dict[str, str]) -> None:
    """Write `values` (dotted names) through /proc/sys from a thread in `host`'s namespace."""

    def write() -> None:
        for name, value in values.items():
            Path("/proc/sys", *name.split(".")).write_text(value)

    host.call(write)


def read_proc_net(host: Host, name: str) -> str:
    """/proc/net/NAME as `host`'s namespace shows it ("" when absent)."""

    def read() -> str:
        try:
            return Path("/proc/thread-self/net", name).read_text()
        except FileNotFoundError:
            return ""

    return host.call(read)


@dataclass
class EcmpDirector:
    name: str
    address: str
    host: Host
    frr: Frr
    work_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.work_dir / f"{self.name}.yaml"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / f"run-{self.name}"

    def start(self) -> None:
        self.starts += 1
        log_path = self.work_dir / f"{self.name}-lvsha-{self.starts}.log"
        with log_path.open("wb") as log:
            self.process = self.host.popen(
                sys.executable, "-m", "lvsha", "run", str(self.config_path),
                "--run-dir", str(self.run_dir),
                "--state-dir", str(self.work_dir / f"state-{self.name}"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL lvsha's whole process group, as a crash would (its children follow it)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def ask(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        """One request on lvsha's control socket, as `lvsha handover`/`reload` send it."""
        status, answer = control.request(
            str(self.run_dir / "control.sock"), method, path, body, timeout
        )
        if status >= 400:
            raise RuntimeError(f"{self.name}: {method} {path}: HTTP {status}: {answer}")
        return answer

    def conn_entries(self) -> list[ConnEntry]:
        return parse_ip_vs_conn(read_proc_net(self.host, "ip_vs_conn"), CLIENT, VIP, PORT)

    def service(self) -> Service | None:
        return parse_ip_vs(read_proc_net(self.host, "ip_vs"), VIP, PORT)


@dataclass
class RealServer:
    name: str
    address: str
    host: Host
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = self.host.popen(
            sys.executable, "-m", "lvsha.drill.ecmp_traffic", "server", self.name, str(PORT),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )  # fmt: skip

    def wait_ready(self, timeout: float) -> None:
        assert self.process is not None and self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else b""
        if line != b"ready\n":
            raise RuntimeError(f"{self.name}'s echo server did not start ({line!r})")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class EcmpLab:
    options: EcmpOptions
    prefix: str
    work_dir: Path
    guard: InterruptGuard
    lab: Lab | None = None
    frrs: FrrPool = field(default_factory=lambda: FrrPool(FRR_START_TIMEOUT))
    router: Frr | None = None
    directors: list[EcmpDirector] = field(default_factory=list)
    real_servers: list[RealServer] = field(default_factory=list)
    client: TrafficClient | None = None
    routes: RouteWatcher | None = None
    scheduler: str = ""

    # -- building ------------------------------------------------------------------------

    def build(self, scheduler: str) -> None:
        options = self.options
        with self.guard.shielded():
            self.lab = lab = Lab(self.prefix)
            front = lab.add_switch("fr")
            router = lab.add_host("router", f"{ROUTER}/24")
            router.attach(front, "eth1", f"{ROUTER_FRONT}/24")
            client = lab.add_host("client", f"{CLIENT}/24", switch=front)
            directors = [lab.add_host(f"d{n + 1}", f"{a}/24") for n, a in enumerate(DIRECTORS)]
            servers = [lab.add_host(f"rs{n + 1}", f"{a}/24") for n, a in enumerate(REAL_SERVERS)]
        client.ip("route", "add", "default", "via", ROUTER_FRONT)
        no_rp_filter = {
            f"net.ipv4.conf.{conf}.rp_filter": "0" for conf in ("all", "default", "eth0")
        }
        set_sysctls(
            router,
            {
                "net.ipv4.fib_multipath_hash_policy": "1",
                "net.ipv4.conf.eth1.rp_filter": "0",
                **no_rp_filter,
            },
        )
        for host in (*directors, *servers):
            host.ip("addr", "add", f"{VIP}/32", "dev", "lo")
            host.ip("route", "add", "default", "via", ROUTER)
            set_sysctls(host, no_rp_filter)
        for host in servers:
            # DR: the VIP on lo, never answered for nor announced on the segment.
            set_sysctls(
                host,
                {
                    "net.ipv4.conf.all.arp_ignore": "1",
                    "net.ipv4.conf.eth0.arp_ignore": "1",
                    "net.ipv4.conf.all.arp_announce": "2",
                    "net.ipv4.conf.eth0.arp_announce": "2",
                },
            )
        self.real_servers = [
            RealServer(f"rs{n + 1}", address, host)
            for n, (address, host) in enumerate(zip(REAL_SERVERS, servers, strict=True))
        ]
        for server in self.real_servers:
            server.start()
        _say("starting FRR on the router and the directors")
        began = time.monotonic()
        # In parallel: each start waits on its daemons, which the VM is slow to bring up.
        with ThreadPoolExecutor(len(directors) + 1) as pool:
            started = list(pool.map(self.frrs.start, [router, *directors]))
        self.router, director_frrs = started[0], started[1:]
        _say(f"FRR up in the four hosts after {time.monotonic() - began:.1f} s")
        self.router.router(
            ROUTER_AS,
            ROUTER,
            {address: DIRECTOR_AS + n for n, address in enumerate(DIRECTORS)},
            bfd=True,
            bfd_interval_ms=round(options.bfd_interval * 1000),
            multiplier=options.bfd_multiplier,
        )
        self.routes = RouteWatcher(router, f"{VIP}/32")
        for n, (address, host, frr) in enumerate(
            zip(DIRECTORS, directors, director_frrs, strict=True)
        ):
            self.directors.append(EcmpDirector(f"d{n + 1}", address, host, frr, self.work_dir))
        for server in self.real_servers:
            server.wait_ready(options.start_timeout)
        self.write_configs(scheduler)
        _say("starting lvsha on the three directors")
        began = time.monotonic()
        for director in self.directors:
            director.start()
        self.wait_route(set(DIRECTORS), options.start_timeout, "the three directors announcing")
        _say(f"all three directors announce {VIP}/32 after {time.monotonic() - began:.1f} s")
        process = client.popen(
            sys.executable, "-m", "lvsha.drill.ecmp_traffic", "client", VIP, str(PORT),
            str(options.message_interval),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.client = TrafficClient(process, options.start_timeout)
        self.client.ask(CLIENT_TIMEOUT, cmd="churn", rate=options.new_per_second)

    def write_configs(self, scheduler: str) -> None:
        for n, director in enumerate(self.directors):
            director.config_path.write_text(
                director_config(self.options, scheduler, n, director.frr.vtysh_argv)
            )
        self.scheduler = scheduler

    def switch_scheduler(self, scheduler: str) -> None:
        """Reload every director with `scheduler`, as `lvsha reload` does."""
        self.write_configs(scheduler)
        for director in self.directors:
            if not director.running():
                continue
            answer = director.ask("POST", "/v1/reload", {"plan": False, "file": None}, 120)
            if answer.get("outcome") != "applied":
                raise RuntimeError(f"{director.name}: reload {answer.get('outcome')}: {answer}")
        wait_until(
            lambda: all(
                (service := d.service()) is not None and service.scheduler == scheduler
                for d in self.directors
                if d.running()
            ),
            60,
            interval=0.1,
            what=f"every director's IPVS service on {scheduler}",
        )

    # -- state -----------------------------------------------------------------------------

    def wait_route(self, wanted: set[str], timeout: float, what: str) -> None:
        assert self.routes is not None
        if not self.routes.wait_current(lambda hops: hops == wanted, timeout):
            raise TimeoutError(
                f"not within {timeout:g} s: {what} (the router forwards to "
                f"{sorted(self.routes.current()) or 'nobody'})"
            )

    def flow_map(self) -> dict[int, str]:
        tables = {director.name: director.conn_entries() for director in self.directors}
        return flow_directors(tables)

    def in_service(self, server: RealServer, wanted: bool) -> bool:
        """Whether `server` is in (weight > 0) every running director's table, or in none."""
        for director in self.directors:
            if not director.running():
                continue
            service = director.service()
            weight = 0 if service is None else service.weights.get(server.address, 0)
            if (weight > 0) != wanted:
                return False
        return True

    def revive(self, director: EcmpDirector) -> None:
        """Start a killed director again: its cable, its FRR (a fresh one), its lvsha."""
        director.host.link_up(True)
        director.frr.stop()
        director.frr.start()
        director.start()

    def kill(self, director: EcmpDirector) -> None:
        director.host.link_up(False)
        director.frr.kill()
        director.kill()

    def ensure(self, alive: Sequence[EcmpDirector]) -> None:
        """Bring the lab to `alive` directors announcing and every real server in service."""
        for director in self.directors:
            if director in alive and not director.running():
                _say(f"starting {director.name} again")
                self.revive(director)
            elif director not in alive and director.running():
                _say(f"killing {director.name} first")
                self.kill(director)
        for server in self.real_servers:
            if server.process is None or server.process.poll() is not None:
                server.start()
                server.wait_ready(self.options.start_timeout)
        self.wait_route({d.address for d in alive}, self.options.start_timeout, "the start state")
        wait_until(
            lambda: all(self.in_service(server, True) for server in self.real_servers),
            self.options.start_timeout,
            interval=0.1,
            what="every real server in every director's table",
        )

    # -- one scenario ----------------------------------------------------------------------

    def run(self, scenario: EcmpScenario) -> Figures:
        options = self.options
        assert self.client is not None and self.routes is not None
        d1, d2, _ = self.directors
        subject = {
            EcmpScenario.DRAIN: d1.name,
            EcmpScenario.KILL: d2.name,
            EcmpScenario.RETURN: d2.name,
            EcmpScenario.REAL_SERVER: self.real_servers[0].name,
        }[scenario]
        alive = [d for d in self.directors if scenario is not EcmpScenario.RETURN or d is not d2]
        self.ensure(alive)
        opened = self.client.ask(CLIENT_TIMEOUT, cmd="open", count=options.connections)
        _say(
            f"{self.scheduler} {scenario.value} {subject}: {opened['opened']} connections open "
            f"in {opened['seconds']:.1f} s ({opened['failed']} failed)"
        )
        try:
            time.sleep(options.warmup)
            before = self.flow_map()
            fault_at, change_at, done = self._inject(scenario, subject)
            if change_at is not None:
                _say(
                    f"{self.scheduler} {scenario.value} {subject}: changed after "
                    f"{(change_at - fault_at) * 1000:.0f} ms"
                )
            done()
            time.sleep(options.settle)
            after = self.flow_map()
            report = self.client.ask(CLIENT_TIMEOUT, cmd="report", since=fault_at)
        finally:
            self.client.ask(CLIENT_TIMEOUT, cmd="close")
        result = figures(
            scheduler=self.scheduler,
            scenario=scenario,
            subject=subject,
            fault_at=fault_at,
            change_at=change_at,
            route_changes=len(self.routes.changes_since(fault_at)),
            report_at=float(report["now"]),
            flows=[FlowRecord.from_report(row) for row in report["flows"]],
            shorts=[ShortRecord(*row) for row in report["short"]],
            before=before,
            after=after,
            stall=options.stall,
        )
        self._restore(scenario, subject)
        return result

    def _inject(
        self, scenario: EcmpScenario, subject: str
    ) -> tuple[float, float | None, Callable[[], None]]:
        """Inject the fault: (its time, when the router's set (or the tables) changed, what
        to wait for before settling)."""
        options = self.options
        assert self.routes is not None
        by_name = {d.name: d for d in self.directors}
        timeout = options.change_timeout
        if scenario is EcmpScenario.REAL_SERVER:
            server = next(s for s in self.real_servers if s.name == subject)
            fault_at = time.monotonic()
            server.kill()
            try:
                wait_until(lambda: self.in_service(server, False), timeout, 0.02, f"{subject} out")
                change_at: float | None = time.monotonic()
            except TimeoutError:
                change_at = None
            return fault_at, change_at, lambda: None
        director = by_name[subject]
        if scenario is EcmpScenario.DRAIN:
            answers: list[BaseException | Any] = []

            def handover() -> None:
                try:
                    answers.append(
                        director.ask("POST", "/v1/handover", {"instance": None, "cancel": False},
                                     options.graceful_shutdown + 60)
                    )  # fmt: skip
                except BaseException as exc:  # reported by done()
                    answers.append(exc)

            thread = threading.Thread(target=handover, name="handover")
            fault_at = time.monotonic()
            thread.start()

            def done() -> None:
                thread.join(options.graceful_shutdown + 60)
                if not answers or isinstance(answers[0], BaseException):
                    raise RuntimeError(f"{subject}: handover failed: {answers}")
                # The withdrawal follows the graceful-shutdown wait; BGP has it then.
                assert self.router is not None
                router = self.router
                wait_until(
                    lambda: all(
                        path.get("nexthops", [{}])[0].get("ip") != director.address
                        for path in router.bgp_paths(f"{VIP}/32")
                    ),
                    options.graceful_shutdown + timeout,
                    0.1,
                    f"{subject}'s route withdrawn",
                )

            change = self.routes.wait_for(
                lambda hops: director.address not in hops and bool(hops), fault_at, timeout
            )
            return fault_at, None if change is None else change.at, done
        if scenario is EcmpScenario.KILL:
            fault_at = time.monotonic()
            self.kill(director)
            change = self.routes.wait_for(
                lambda hops: director.address not in hops and bool(hops), fault_at, timeout
            )
            return fault_at, None if change is None else change.at, lambda: None
        fault_at = time.monotonic()
        self.revive(director)
        change = self.routes.wait_for(
            lambda hops: director.address in hops, fault_at, options.start_timeout
        )
        return fault_at, None if change is None else change.at, lambda: None

    def _restore(self, scenario: EcmpScenario, subject: str) -> None:
        if scenario is EcmpScenario.DRAIN:
            director = next(d for d in self.directors if d.name == subject)
            director.ask("POST", "/v1/handover", {"instance": None, "cancel": True}, 60)
        elif scenario is EcmpScenario.REAL_SERVER:
            server = next(s for s in self.real_servers if s.name == subject)
            server.start()
            server.wait_ready(self.options.start_timeout)

    # -- removal ---------------------------------------------------------------------------

    def keep_frr_logs(self) -> None:
        for frr in self.frrs.started:
            with contextlib.suppress(OSError):
                (self.work_dir / f"frr-{frr.host.name}.log").write_text(frr.logs())

    def close(self, keep_logs: bool) -> None:
        with self.guard.closing():
            try:
                if self.client is not None:
                    self.client.stop()
                for director in self.directors:
                    director.kill()
                for server in self.real_servers:
                    server.kill()
                if self.routes is not None:
                    self.routes.stop()
                if keep_logs:
                    self.keep_frr_logs()
                try:
                    self.frrs.close(show_logs=False)
                finally:
                    if self.lab is not None:
                        self.lab.close()
            finally:
                _remove_leftover_namespaces(self.prefix)


@dataclass(frozen=True, slots=True)
class EcmpRun:
    results: list[Figures]
    seconds: float
    logs: Path | None


class EcmpAbortedError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def missing() -> str | None:
    """Why the ECMP drill cannot run here, or None."""
    reason = missing_frr()
    if reason is not None:
        return reason
    if not Path("/proc/net/ip_vs").exists():
        subprocess.run(["modprobe", "-q", "ip_vs"], check=False, capture_output=True, timeout=60)
    if not Path("/proc/net/ip_vs").exists():
        return (
            "needs the kernel's IPVS (ip_vs), which this kernel lacks; run it in the test VM: "
            "python3 tests/vm/run_in_vm.py --cpus 2 -- .venv/bin/python -m lvsha drill "
            "--topology ecmp"
        )
    return None


def ecmp_drill(options: EcmpOptions) -> EcmpRun:
    """Build the lab, run every scenario under every scheduler, remove the lab."""
    for problem in options.problems():
        _say(problem)
    if options.problems():
        raise EcmpAbortedError(EXIT_USAGE)
    reason = missing()
    if reason is not None:
        _say(reason)
        raise EcmpAbortedError(EXIT_USAGE)
    prefix = options.lab_prefix or f"lv{secrets.token_hex(3)}"
    guard = InterruptGuard()
    guard.install()
    work_dir = Path(tempfile.mkdtemp(prefix=f"lvsha-drill-{prefix}-"))
    results: list[Figures] = []
    started = time.monotonic()
    lab = EcmpLab(options, prefix, work_dir, guard)
    failed = False
    try:
        try:
            lab.build(options.schedulers[0])
            for scheduler in options.schedulers:
                if scheduler != lab.scheduler:
                    _say(f"reloading the directors with scheduler {scheduler}")
                    lab.switch_scheduler(scheduler)
                for scenario in options.scenarios:
                    result = lab.run(scenario)
                    results.append(result)
                    _say(_describe(result))
        except KeyboardInterrupt:
            _say("interrupted; removing the lab")
            raise EcmpAbortedError(EXIT_INTERRUPTED) from None
        except Exception as exc:
            failed = True
            _say(f"the drill failed: {type(exc).__name__}: {exc}")
            raise EcmpAbortedError(EXIT_TARGET_MISSED) from exc
        finally:
            failed = failed or any(met(result) is False for result in results)
            lab.close(keep_logs=options.keep_logs or failed)
    finally:
        guard.restore()
        kept = options.keep_logs or failed
        if kept:
            _say(f"logs are in {work_dir}")
            if options.show_logs:
                show_logs(work_dir)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return EcmpRun(results, time.monotonic() - started, work_dir if kept else None)


def show_logs(work_dir: Path) -> None:
    for path in sorted(work_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        print(f"--- {path.name}\n{text}", file=sys.stderr, flush=True)


def _describe(result: Figures) -> str:
    change = "no change" if result.change is None else f"change {result.change * 1000:.0f} ms"
    return (
        f"{result.scheduler} {result.scenario.value} {result.subject}: {change}, "
        f"{result.broken} of {result.connections} broken ({result.reset} reset, "
        f"{result.stalled} stalled), {result.affected_continued}/{result.affected} affected "
        f"continued, {result.moved_broken}/{result.moved} moved broken, "
        f"{result.new_failed}/{result.new_tried} new failed"
    )


def settings(options: EcmpOptions, seconds: float) -> dict[str, Any]:
    return {
        "directors": len(DIRECTORS),
        "real_servers": len(REAL_SERVERS),
        "connections": options.connections,
        "message_interval": options.message_interval,
        "stall": options.stall,
        "new_per_second": options.new_per_second,
        "bfd": f"{options.bfd_interval * 1000:g} ms x {options.bfd_multiplier}",
        "checks": f"every {options.check_interval:g} s, fall {options.check_fall}",
        "graceful_shutdown": options.graceful_shutdown,
        "schedulers": list(options.schedulers),
        "scenarios": [scenario.value for scenario in options.scenarios],
        "seconds": round(seconds, 1),
    }


def run_ecmp_drill(options: EcmpOptions) -> int:
    """Run the ECMP drill and print its table: 0 when every consistent-hashing row met its
    target, 1 if one did not (or the drill failed), 2 on bad options, 130 when interrupted."""
    try:
        run = ecmp_drill(options)
    except EcmpAbortedError as aborted:
        return aborted.status
    if options.json:
        print(json.dumps(report_json(run.results, settings(options, run.seconds)), indent=2))
    else:
        title = (
            f"ECMP drill: {len(DIRECTORS)} directors behind one router (BFD "
            f"{options.bfd_interval * 1000:g} ms x {options.bfd_multiplier}), "
            f"{len(REAL_SERVERS)} real servers (DR, checks every {options.check_interval:g} s, "
            f"fall {options.check_fall}), {options.connections} long-lived connections "
            f"(an echo every {options.message_interval * 1000:g} ms; broken: reset, or an echo "
            f"awaited over {options.stall:g} s), {options.new_per_second:g} new connections/s; "
            f"{run.seconds:.0f} s"
        )
        print(format_table(run.results, title))
    consistent = [r for r in run.results if r.scheduler in CONSISTENT]
    return 0 if all(met(r) for r in consistent) else EXIT_TARGET_MISSED
