"""Chaos bench: random faults against two lvsha directors in namespaces, invariants after each.

Run as root: `.venv/bin/python -m bench.chaos [--faults 200] [--seed N] [--json]`; `--kind`
(repeatable) and `--master-share` narrow the draw to reproduce one kind of fault.

The lab is a client, two directors (A priority 150, B 100; VRRPv3, advert interval 0.1 s, two
VIPs, a track script that is running a good part of the time) and a host with two real servers
for the directors' TCP checks, on one switch. Both directors run `lvsha run --dry-run` (IPVS in
memory). The client probes the first VIP every 10 ms.

Faults are drawn at random (seeded), with equal weight, and hit the director that is master (3
in 4) or backup: SIGKILL of the VRRP child, of the checker child or of the parent (which is
then started again once its old children are gone, as systemd's Restart= would); SIGSTOP of the
VRRP child for 2 s; the config file changed on disk (a third VIP) or broken (invalid YAML), then
a SIGKILL of the VRRP child (the file is restored once the fault has been judged); a link flap
(the director's cable cut for 1 s).

After each fault has settled (both directors' children running and ready, one MASTER and one
BACKUP reported on their event streams, for a second), it checks: each VIP on exactly one
director; no address from lvsha's configuration on the backup; no process of this director's
lvsha or of its track script outside the current children's trees; descriptors (parent and
children) at most the baseline + 20 and their RSS at most 1.5 x the baseline; the third VIP
never added anywhere (watched on netlink the whole time). A failed check is looked at again a
second later and counts only if it still fails. Then it waits (up to 10 s) for the client's
probes to be answered again, and counts the probes lost since the fault (informational, as is a
VIP still unanswered after 10 s; a fault on the backup that costs any probe is noted). It prints
a table per fault kind (violations, lost probes, settle time) and `HOLDS` or `FAILS`; it exits 0
once it has printed, non-zero only when the lab failed.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from types import FrameType
from typing import Any

from lvsha.drill.capture import AddressEvent, open_address_socket, parse_address_messages
from lvsha.drill.events import EventFollower
from lvsha.drill.lab import Host, Lab, LabError
from lvsha.drill.probe import VipProber, answered_in_time, measure_outage
from lvsha.drill.reader import ReaderThread

REPO = Path(__file__).resolve().parents[1]
VRRP_MODULE = "lvsha.daemon.vrrp_process"
CHECKER_MODULE = "lvsha.daemon.checker_process"
INTERFACE = "eth0"
CLIENT = IPv4Interface("192.0.2.1/24")
DIRECTOR_ADDRESSES = {"a": IPv4Interface("192.0.2.11/24"), "b": IPv4Interface("192.0.2.12/24")}
PRIORITIES = {"a": 150, "b": 100}
REAL_SERVERS = (IPv4Interface("192.0.2.21/24"), IPv4Interface("192.0.2.22/24"))
REAL_SERVER_PORT = 80
VIPS = (IPv4Interface("192.0.2.100/24"), IPv4Interface("192.0.2.101/24"))
THIRD_VIP = IPv4Interface("192.0.2.102/24")
"""Only ever in the changed file on disk: the running directors must never add it."""
OWNED = frozenset(v.ip for v in (*VIPS, THIRD_VIP))
ADVERT_INTERVAL = 0.1
PROBE_INTERVAL = 0.01
REPLY_TIMEOUT = 0.5
MASTER_SHARE = 0.75
"""Share of faults that hit the master; the rest hit the backup."""
SETTLE_TIMEOUT = 45.0
"""Seconds: covers the parent's longest restart backoff of a crash-looping child (30 s)."""
SETTLE_HOLD = 1.0
"""Seconds the settled picture must hold before the checks run."""
CONFIRM_AFTER = 1.0
"""Seconds after which a failed check is looked at again; it counts only if it fails again."""
RECOVERY_TIMEOUT = 10.0
"""Seconds after the checks that the bench waits for the client's probes to be answered."""
OLD_CHILDREN_TIMEOUT = 20.0
"""Seconds a killed parent's children get to release and exit (PDEATHSIG: SIGTERM)."""
STOP_SECONDS = 2.0
LINK_DOWN_SECONDS = 1.0
FD_ALLOWANCE = 20
RSS_FACTOR = 1.5
LOG_EXCERPT_LINES = 14
EXIT_LAB_ERROR = 2
BROKEN_CONFIG = "vrrp_instances: {VI_CHAOS: [this is not\n"
TRACK_SCRIPT = """#!/bin/sh
# lvsha chaos bench: a short track script with a grandchild in its own process group, so that
# a crash in the middle of a run shows whether anything the run started is left behind.
sleep 30 &
sleep 0.05
kill $! 2>/dev/null
exit 0
"""


class FaultKind(enum.Enum):
    KILL_VRRP = "kill vrrp child"
    KILL_CHECKER = "kill checker child"
    KILL_PARENT = "kill parent"
    STOP_VRRP = "stop vrrp child 2 s"
    CHANGED_FILE = "changed file + kill vrrp"
    BROKEN_FILE = "broken file + kill vrrp"
    LINK_FLAP = "link flap 1 s"


class Check(enum.Enum):
    VIP_HOLDERS = "each VIP on exactly one director"
    BACKUP_HOLDS = "no lvsha address on the backup"
    LEFTOVER = "no process left over from an earlier child"
    FDS = "descriptors within baseline + 20"
    RSS = "RSS within 1.5 x baseline"
    THIRD_VIP = "the file's third VIP never added"
    SETTLED = "settled within the deadline"
    OLD_CHILDREN = "a killed parent's children exit"
    PARENT_EXITED = "the parent keeps running"


@dataclass(frozen=True, slots=True)
class Fault:
    index: int
    kind: FaultKind
    on_master: bool


def draw_faults(
    count: int,
    seed: int,
    master_share: float = MASTER_SHARE,
    kinds: Sequence[FaultKind] = tuple(FaultKind),
) -> list[Fault]:
    """`count` faults, each of `kinds` with equal weight, on the master with `master_share`."""
    rng = random.Random(seed)
    kinds = list(kinds)
    return [
        Fault(index, rng.choice(kinds), rng.random() < master_share)
        for index in range(1, count + 1)
    ]


@dataclass(frozen=True, slots=True)
class Violation:
    fault: int
    kind: FaultKind
    check: Check
    detail: str
    log_excerpt: str = ""


def vip_problems(
    holdings: Mapping[str, frozenset[IPv4Address]],
    vips: Iterable[IPv4Address],
    backup: str | None,
    owned: frozenset[IPv4Address] = OWNED,
) -> list[tuple[Check, str]]:
    """Which VIP invariants the directors' addresses (`holdings`, director -> addresses on its
    interface) break; `backup` is the director that reports BACKUP."""
    problems = []
    for vip in vips:
        holders = sorted(name for name, held in holdings.items() if vip in held)
        if len(holders) != 1:
            who = " and ".join(holders) if holders else "no director"
            problems.append((Check.VIP_HOLDERS, f"{vip} held by {who}"))
    if backup is not None:
        stale = sorted(holdings.get(backup, frozenset()) & owned)
        if stale:
            listed = ", ".join(map(str, stale))
            problems.append((Check.BACKUP_HOLDS, f"backup {backup} holds {listed}"))
    return problems


def resource_problems(
    director: str, fds: int, rss_kib: int, baseline_fds: int, baseline_rss_kib: int
) -> list[tuple[Check, str]]:
    problems = []
    if fds > baseline_fds + FD_ALLOWANCE:
        problems.append((Check.FDS, f"{director}: {fds} fds, baseline {baseline_fds}"))
    if rss_kib > baseline_rss_kib * RSS_FACTOR:
        problems.append(
            (Check.RSS, f"{director}: RSS {rss_kib} KiB, baseline {baseline_rss_kib} KiB")
        )
    return problems


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    ppid: int
    state: str
    argv: tuple[str, ...]
    environment: frozenset[str]
    """Its environment's NAME=VALUE entries (only read for the bench's own checks)."""


def descendants(processes: Mapping[int, ProcessInfo], roots: Iterable[int]) -> set[int]:
    """`roots` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, info in processes.items():
        children.setdefault(info.ppid, []).append(pid)
    found = set()
    pending = [r for r in roots if r in processes]
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found.add(pid)
        pending.extend(children.get(pid, ()))
    return found


def leftover_processes(
    processes: Mapping[int, ProcessInfo],
    belongs: Callable[[ProcessInfo], bool],
    parent: int | None,
    children: Iterable[int],
) -> list[int]:
    """Live processes that `belongs` to a director but are neither its parent nor in the tree
    of one of its current children: left over from an earlier child (or parent)."""
    current = descendants(processes, children)
    if parent is not None:
        current.add(parent)
    return sorted(
        pid
        for pid, info in processes.items()
        if info.state not in ("Z", "X") and pid not in current and belongs(info)
    )


@dataclass(frozen=True, slots=True)
class FaultResult:
    fault: Fault
    target: str
    settle_seconds: float | None
    lost_probes: int
    outage: float
    violations: tuple[Violation, ...] = ()
    reachable: bool = True
    """Whether the client had an answer from the first VIP within RECOVERY_TIMEOUT s of the
    checks (informational: the must-show's invariants do not include it)."""
    transients: tuple[str, ...] = ()


def _spread(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def _row(label: str, runs: Sequence[FaultResult]) -> list[str]:
    def lost(on_master: bool) -> str:
        return _spread(
            [float(r.lost_probes) for r in runs if r.fault.on_master is on_master], ".0f"
        )

    return [
        label,
        str(len(runs)),
        str(sum(r.fault.on_master for r in runs)),
        str(sum(len(r.violations) for r in runs)),
        str(sum(len(r.transients) for r in runs)),
        str(sum(not r.reachable for r in runs)),
        lost(True),
        lost(False),
        _spread([r.settle_seconds for r in runs if r.settle_seconds is not None], ".1f"),
    ]


def summary_table(results: Sequence[FaultResult]) -> list[str]:
    headings = [
        "fault", "count", "on master", "violations", "transient", "VIP unanswered",
        "lost probes on master", "lost probes on backup", "settle s",
    ]  # fmt: skip
    rows = [headings]
    for kind in FaultKind:
        runs = [r for r in results if r.fault.kind is kind]
        if runs:
            rows.append(_row(kind.value, runs))
    rows.append(_row("all", results))
    widths = [max(len(row[i]) for row in rows) for i in range(len(headings))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def violations_by_check(results: Sequence[FaultResult]) -> Counter[Check]:
    return Counter(v.check for r in results for v in r.violations)


def verdict_line(results: Sequence[FaultResult]) -> str:
    violations = [v for r in results for v in r.violations]
    if not violations:
        return f"HOLDS  0 violations in {len(results)} faults"
    counts = violations_by_check(results)
    listed = ", ".join(f"{count} x {check.value}" for check, count in counts.most_common())
    faults = sorted({v.fault for v in violations})
    return (
        f"FAILS  {len(violations)} violations in {len(faults)} of {len(results)} faults "
        f"({listed}); faults {', '.join(map(str, faults))}"
    )


# The lab.


class LabFailedError(Exception):
    """The lab itself failed (not lvsha): the bench cannot go on."""


def read_processes(with_environment: bool = True) -> dict[int, ProcessInfo]:
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = tuple(a.decode(errors="replace") for a in handle.read().split(b"\0") if a)
            environment: frozenset[str] = frozenset()
            if with_environment:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    environment = frozenset(
                        e.decode(errors="replace") for e in handle.read().split(b"\0") if e
                    )
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2:
            continue
        found[int(entry)] = ProcessInfo(int(fields[1]), fields[0], argv, environment)
    return found


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise LabFailedError("no btime in /proc/stat")


def _started_at(pid: int) -> float | None:
    """When `pid` started, in wall-clock seconds (to a clock tick), or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return None
    ticks = int(stat[stat.rfind(")") + 2 :].split()[19])
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def child_ready(pid: int, metrics: Path) -> bool:
    """Whether a child has said it is ready: each writes its metrics file first right then."""
    started = _started_at(pid)
    try:
        written = metrics.stat().st_mtime
    except OSError:
        return False
    return started is not None and written >= started - 0.02


def director_config(name: str, script_name: str, script: Path, third_vip: bool = False) -> str:
    vips = [*VIPS, THIRD_VIP] if third_vip else list(VIPS)
    real_servers = "".join(
        f"      - address: {rs.ip}\n        checks: [{{type: tcp, interval: 1s, timeout: 1s}}]\n"
        for rs in REAL_SERVERS
    )
    return (
        f"# lvsha chaos bench: director {name}\n"
        "global:\n"
        "  vrrp:\n"
        "    realtime_priority: 50\n"
        f"  router_id: chaos-{name}\n"
        "vrrp_scripts:\n"
        f"  {script_name}:\n"
        f"    command: {script}\n"
        "    interval: 200ms\n"
        "    timeout: 200ms\n"
        "    weight: 10\n"
        "vrrp_instances:\n"
        "  VI_CHAOS:\n"
        f"    interface: {INTERFACE}\n"
        "    virtual_router_id: 51\n"
        f"    priority: {PRIORITIES[name]}\n"
        "    version: 3\n"
        "    advert_interval: 100ms\n"
        f"    virtual_ipaddresses: [{', '.join(map(str, vips))}]\n"
        f"    track_scripts: [{script_name}]\n"
        "virtual_servers:\n"
        "  - name: web\n"
        f"    address: {VIPS[0].ip}\n"
        f"    port: {REAL_SERVER_PORT}\n"
        "    protocol: TCP\n"
        "    real_servers:\n" + real_servers
    )


class TcpTarget(ReaderThread):
    """The real servers' port: accepts and closes every connection, in the host's namespace."""

    what = "TCP target"

    def __init__(self, host: Host, port: int) -> None:
        self._listener = host.call(lambda: socket.create_server(("0.0.0.0", port), backlog=128))
        super().__init__(f"tcp-target-{host.name}", self._listener)

    def _run(self) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.2)
            if readable:
                connection, _ = self._listener.accept()
                connection.close()


class AddressLog(ReaderThread):
    """Every IPv4 address the directors' kernels add, by director, from netlink."""

    what = "address log"

    def __init__(self, hosts: Mapping[str, Host]) -> None:
        self._by_socket = {name: host.call(open_address_socket) for name, host in hosts.items()}
        super().__init__("address-log", *self._by_socket.values())
        self._added: list[tuple[str, AddressEvent]] = []

    def added_since(self, since: float) -> list[tuple[str, AddressEvent]]:
        self._raise_if_failed()
        with self._lock:
            return [(n, e) for n, e in self._added if e.at >= since]

    def _run(self) -> None:
        names = {sock: name for name, sock in self._by_socket.items()}
        while not self._stopping.is_set():
            readable, _, _ = select.select(list(names), [], [], 0.2)
            for sock in readable:
                data = sock.recv(65536)
                events = parse_address_messages(data, time.monotonic())
                with self._lock:
                    self._added.extend((names[sock], e) for e in events if e.added)


@dataclass
class Director:
    name: str
    host: Host
    work_dir: Path
    script_name: str
    process: subprocess.Popen[bytes] | None = None
    follower: EventFollower | None = None
    starts: int = 0
    baseline_fds: int = 0
    baseline_rss_kib: int = 0
    max_fds: int = 0
    max_rss_kib: int = 0

    @property
    def config_path(self) -> Path:
        return self.work_dir / "lvsha.yaml"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "lvsha.log"

    @property
    def script_path(self) -> Path:
        return self.work_dir / "track.sh"

    def write_config(self, third_vip: bool = False) -> None:
        text = director_config(self.name, self.script_name, self.script_path, third_vip)
        self.config_path.write_text(text, encoding="utf-8")

    def start(self) -> None:
        self.starts += 1
        self.mark(f"start {self.starts}")
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        with self.log_path.open("ab") as log:
            self.process = self.host.popen(
                sys.executable, "-m", "lvsha", "run", str(self.config_path),
                "--run-dir", str(self.run_dir), "--dry-run",
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=REPO, env=env,
            )  # fmt: skip
        if self.follower is not None:
            self.follower.close()
        self.follower = EventFollower(self.run_dir / "events.sock")

    def mark(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"{stamp} ---- chaos bench: {text}\n")

    @property
    def parent_pid(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def state(self) -> str | None:
        return None if self.follower is None else self.follower.state()

    def children(self, processes: Mapping[int, ProcessInfo]) -> dict[str, list[int]]:
        """The parent's children by module (vrrp, checker); several while one is replaced."""
        found: dict[str, list[int]] = {"vrrp": [], "checker": []}
        parent = self.parent_pid
        for pid, info in processes.items():
            if info.ppid != parent or info.state in ("Z", "X"):
                continue
            if VRRP_MODULE in info.argv:
                found["vrrp"].append(pid)
            elif CHECKER_MODULE in info.argv:
                found["checker"].append(pid)
        return found

    def belongs(self, info: ProcessInfo) -> bool:
        """Whether a process is this director's lvsha or one of its track script's runs."""
        mine = str(self.work_dir)
        return any(mine in arg for arg in info.argv) or (
            f"LVSHA_VRRP_SCRIPT={self.script_name}" in info.environment
        )

    def addresses(self) -> frozenset[IPv4Address]:
        output = self.host.ip("-o", "-4", "addr", "show", "dev", INTERFACE)
        found = set()
        for line in output.splitlines():
            words = line.split()
            if "inet" in words:
                found.add(IPv4Interface(words[words.index("inet") + 1]).ip)
        return frozenset(found)

    def resources(self, processes: Mapping[int, ProcessInfo]) -> tuple[int, int]:
        parent = self.parent_pid
        pids = [p for pids in self.children(processes).values() for p in pids]
        if parent is not None:
            pids.append(parent)
        return sum(map(_fd_count, pids)), sum(map(_rss_kib, pids))

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int, lines: int = LOG_EXCERPT_LINES) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, lab: Lab, work_dir: Path) -> None:
        self.lab = lab
        self.work_dir = work_dir
        self.client = lab.add_host("client", str(CLIENT))
        self.real_servers = lab.add_host("rs", *map(str, REAL_SERVERS))
        self.directors: dict[str, Director] = {}
        for name, address in DIRECTOR_ADDRESSES.items():
            host = lab.add_host(name, str(address))
            directory = work_dir / name
            directory.mkdir(mode=0o755)
            director = Director(name, host, directory, f"chaos_{lab.prefix}_{name}")
            director.script_path.write_text(TRACK_SCRIPT, encoding="ascii")
            director.script_path.chmod(0o755)
            director.write_config()
            self.directors[name] = director
        self.target: TcpTarget | None = None
        self.prober: VipProber | None = None
        self.address_log: AddressLog | None = None
        self.third_vip_seen = 0.0
        """monotonic time up to which third-VIP additions have been counted."""

    def check_configs(self) -> None:
        for director in self.directors.values():
            done = subprocess.run(
                [sys.executable, "-m", "lvsha", "check-config", str(director.config_path)],
                capture_output=True, text=True, check=False, cwd=REPO,
            )  # fmt: skip
            if done.returncode != 0:
                raise LabFailedError(
                    f"check-config refused {director.config_path}:\n{done.stdout}{done.stderr}"
                )

    def start(self) -> None:
        self.target = TcpTarget(self.real_servers, REAL_SERVER_PORT)
        self.target.start()
        self.address_log = AddressLog({n: d.host for n, d in self.directors.items()})
        self.address_log.start()
        self.third_vip_seen = time.monotonic()
        for director in self.directors.values():
            director.start()
        roles, _ = self.settle(time.monotonic() + 30.0)
        if roles is None:
            raise LabFailedError("the directors did not settle at start:\n" + self.logs_tail())
        self.prober = VipProber(self.client, VIPS[0].ip, PROBE_INTERVAL, INTERFACE)
        self.prober.start()
        time.sleep(2.0)  # the track script and the checks reach their steady state
        processes = read_processes(with_environment=False)
        for director in self.directors.values():
            director.baseline_fds, director.baseline_rss_kib = director.resources(processes)
            director.max_fds, director.max_rss_kib = (
                director.baseline_fds,
                director.baseline_rss_kib,
            )

    def logs_tail(self) -> str:
        return "\n".join(
            f"--- director {d.name}:\n{d.log_since(max(0, d.log_size() - 4000))}"
            for d in self.directors.values()
        )

    def roles(self) -> dict[str, str | None]:
        return {name: d.state() for name, d in self.directors.items()}

    def settle(
        self, deadline: float, on_parent_exit: Callable[[Director, int], None] | None = None
    ) -> tuple[dict[str, str] | None, str]:
        """Wait until each director runs one VRRP and one checker child and one reports
        MASTER, the other BACKUP, unchanged for SETTLE_HOLD s. Returns {"master": name,
        "backup": name}, or None and what was last seen once `deadline` passes."""
        stable_since: float | None = None
        last_picture: object = None
        seen = ""
        while True:
            now = time.monotonic()
            processes = read_processes(with_environment=False)
            states = self.roles()
            picture: list[object] = [tuple(states.items())]
            for director in self.directors.values():
                if director.process is not None and director.process.poll() is not None:
                    code = director.process.returncode
                    if on_parent_exit is None:
                        raise LabFailedError(
                            f"director {director.name} exited with {code}:\n"
                            + director.log_since(max(0, director.log_size() - 4000))
                        )
                    on_parent_exit(director, code)
                children = director.children(processes)
                picture.append((director.parent_pid, tuple(map(tuple, children.values()))))
            by_state = {s: n for n, s in states.items() if s is not None}
            complete = all(
                len(pids) == 1 and child_ready(pids[0], director.run_dir / f"metrics-{kind}.prom")
                for director in self.directors.values()
                for kind, pids in director.children(processes).items()
            )
            seen = f"states {states}, children " + ", ".join(
                f"{d.name} {d.children(processes)}" for d in self.directors.values()
            )
            ok = complete and sorted(states.values(), key=str) == ["BACKUP", "MASTER"]
            if ok and picture == last_picture and stable_since is not None:
                if now - stable_since >= SETTLE_HOLD:
                    return {"master": by_state["MASTER"], "backup": by_state["BACKUP"]}, seen
            elif ok:
                stable_since = now
            else:
                stable_since = None
            last_picture = picture
            if now >= deadline:
                return None, seen
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the directors gracefully (bounded), then everything else the bench started."""
        for director in self.directors.values():
            if director.process is not None and director.process.poll() is None:
                director.process.send_signal(signal.SIGTERM)
        for director in self.directors.values():
            if director.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    director.process.wait(timeout=15)
            if director.follower is not None:
                director.follower.close()
        for reader in (self.prober, self.address_log, self.target):
            if reader is not None:
                reader.stop()
        # Whatever of the directors survived them (a bug this bench counts) is the lab's.
        processes = read_processes()
        for director in self.directors.values():
            for pid, info in processes.items():
                if info.state not in ("Z", "X") and director.belongs(info):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


class FaultRunner:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.violations: list[Violation] = []
        self.transients: list[str] = []
        """Failed checks that passed when looked at again: not counted, but shown."""
        self.fault: Fault | None = None
        self.offsets: dict[str, int] = {}

    def _violate(self, check: Check, detail: str, director: str | None = None) -> None:
        assert self.fault is not None
        names = [director] if director else list(self.bench.directors)
        excerpt = "\n".join(
            f"--- director {name} log since the fault:\n"
            + self.bench.directors[name].log_since(self.offsets.get(name, 0))
            for name in names
        )
        self.violations.append(Violation(self.fault.index, self.fault.kind, check, detail, excerpt))
        _say(
            f"fault {self.fault.index} ({self.fault.kind.value}): VIOLATION {check.value}: {detail}"
        )

    def _parent_exited(self, director: Director, code: int) -> None:
        self._violate(
            Check.PARENT_EXITED, f"{director.name}'s parent exited with {code}", director.name
        )
        self._restart_parent(director, old_children=[])

    def _restart_parent(self, director: Director, old_children: Sequence[int]) -> None:
        """Start `lvsha run` again once the old children are gone, as systemd would."""
        deadline = time.monotonic() + OLD_CHILDREN_TIMEOUT
        alive = list(old_children)
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.02)
        if alive:
            self._violate(
                Check.OLD_CHILDREN,
                f"{director.name}: children {alive} still running {OLD_CHILDREN_TIMEOUT:.0f} s "
                "after their parent was killed (now killed by the bench)",
                director.name,
            )
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        director.start()

    def run(self, fault: Fault) -> FaultResult:
        bench = self.bench
        self.fault = fault
        self.violations = []
        self.transients = []
        roles = {s: n for n, s in bench.roles().items() if s is not None}
        role = "MASTER" if fault.on_master else "BACKUP"
        target_name = roles.get(role) or ("a" if fault.on_master else "b")
        target = bench.directors[target_name]
        self.offsets = {n: d.log_size() for n, d in bench.directors.items()}
        for director in bench.directors.values():
            director.mark(f"fault {fault.index}: {fault.kind.value} on {target_name}")
        fault_at = time.monotonic()
        restore_file = self._inject(fault.kind, target)
        roles_after, seen = bench.settle(fault_at + SETTLE_TIMEOUT, self._parent_exited)
        settled_at = time.monotonic()
        if roles_after is None:
            self._violate(Check.SETTLED, f"not within {SETTLE_TIMEOUT:.0f} s: {seen}")
        self._check(roles_after.get("backup") if roles_after else None)
        self._check_third_vip()
        if restore_file:
            target.write_config()
        assert bench.prober is not None
        answered = self._await_answer(bench.prober, time.monotonic())
        window_end = time.monotonic() - REPLY_TIMEOUT if answered is None else answered
        probes = bench.prober.probes_since(fault_at - 1.0)
        outage = measure_outage(probes, fault_at, window_end, REPLY_TIMEOUT)
        return FaultResult(
            fault,
            target_name,
            settled_at - fault_at if roles_after is not None else None,
            outage.lost,
            outage.outage,
            tuple(self.violations),
            reachable=answered is not None,
            transients=tuple(self.transients),
        )

    def _await_answer(self, prober: VipProber, since: float) -> float | None:
        """The send time of the first probe sent after `since` that the VIP answered, waiting
        up to RECOVERY_TIMEOUT s for one; None when none was. Counting lost probes up to it
        gives this fault the whole of its outage and the next one a clean start."""
        deadline = since + RECOVERY_TIMEOUT
        while time.monotonic() < deadline + REPLY_TIMEOUT:
            for probe in prober.probes_since(since):
                if answered_in_time(probe, REPLY_TIMEOUT):
                    return probe.sent_at
            time.sleep(0.02)
        assert self.fault is not None
        _say(
            f"fault {self.fault.index} ({self.fault.kind.value}): the client had no answer from "
            f"{VIPS[0].ip} for {RECOVERY_TIMEOUT:.0f} s after the checks"
        )
        return None

    def _inject(self, kind: FaultKind, target: Director) -> bool:
        """Do the fault; True when the config file must be restored afterwards."""
        processes = read_processes(with_environment=False)
        children = target.children(processes)
        vrrp = children["vrrp"][0] if children["vrrp"] else None
        if kind is FaultKind.KILL_VRRP:
            _kill(vrrp, signal.SIGKILL)
        elif kind is FaultKind.KILL_CHECKER:
            _kill(children["checker"][0] if children["checker"] else None, signal.SIGKILL)
        elif kind is FaultKind.KILL_PARENT:
            assert target.process is not None
            old = [p for pids in children.values() for p in pids]
            target.process.kill()
            target.process.wait(timeout=10)
            self._restart_parent(target, old)
        elif kind is FaultKind.STOP_VRRP:
            _kill(vrrp, signal.SIGSTOP)
            try:
                time.sleep(STOP_SECONDS)
            finally:
                _kill(vrrp, signal.SIGCONT)
        elif kind is FaultKind.CHANGED_FILE:
            target.write_config(third_vip=True)
            _kill(vrrp, signal.SIGKILL)
            return True
        elif kind is FaultKind.BROKEN_FILE:
            target.config_path.write_text(BROKEN_CONFIG, encoding="utf-8")
            _kill(vrrp, signal.SIGKILL)
            return True
        elif kind is FaultKind.LINK_FLAP:
            target.host.link_up(False)
            try:
                time.sleep(LINK_DOWN_SECONDS)
            finally:
                target.host.link_up(True)
        return False

    def _check(self, backup: str | None) -> None:
        bench = self.bench
        problems = self._first_problems(backup)
        if problems:
            time.sleep(CONFIRM_AFTER)
            again = self._first_problems(backup)
            confirmed = {(check, who) for check, who, _ in again}
            for check, who, detail in problems:
                if (check, who) in confirmed:
                    current = next(d for c, w, d in again if (c, w) == (check, who))
                    self._violate(check, f"{detail}; {CONFIRM_AFTER:.0f} s later: {current}", who)
                else:
                    self.transients.append(f"{check.value}: {detail}")
                    _say(
                        f"fault {self.fault.index if self.fault else 0}: transient, gone "
                        f"{CONFIRM_AFTER:.0f} s later: {detail}"
                    )
        processes = read_processes(with_environment=False)
        for director in bench.directors.values():
            fds, rss = director.resources(processes)
            director.max_fds = max(director.max_fds, fds)
            director.max_rss_kib = max(director.max_rss_kib, rss)

    def _first_problems(self, backup: str | None) -> list[tuple[Check, str | None, str]]:
        """(check, director or None, detail) of every invariant that fails now."""
        bench = self.bench
        found: list[tuple[Check, str | None, str]] = []
        holdings = {n: d.addresses() for n, d in bench.directors.items()}
        for check, detail in vip_problems(holdings, (v.ip for v in VIPS), backup):
            found.append((check, None, detail))
        processes = read_processes()
        for director in bench.directors.values():
            children = [p for pids in director.children(processes).values() for p in pids]
            left = leftover_processes(processes, director.belongs, director.parent_pid, children)
            if left:
                listed = "; ".join(
                    f"{pid} (ppid {processes[pid].ppid}): {' '.join(processes[pid].argv)[:120]}"
                    for pid in left
                )
                found.append((Check.LEFTOVER, director.name, f"{director.name}: {listed}"))
            fds, rss = director.resources(processes)
            for check, detail in resource_problems(
                director.name, fds, rss, director.baseline_fds, director.baseline_rss_kib
            ):
                found.append((check, director.name, detail))
        return found

    def _check_third_vip(self) -> None:
        bench = self.bench
        assert bench.address_log is not None
        added = [
            (name, event)
            for name, event in bench.address_log.added_since(bench.third_vip_seen)
            if event.address.ip == THIRD_VIP.ip
        ]
        bench.third_vip_seen = time.monotonic()
        for name, event in added:
            self._violate(Check.THIRD_VIP, f"{name} added {event.address}", name)
        for name, director in bench.directors.items():
            if THIRD_VIP.ip in director.addresses() and not any(n == name for n, _ in added):
                self._violate(Check.THIRD_VIP, f"{name} holds {THIRD_VIP}", name)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _kill(pid: int | None, sig: signal.Signals) -> None:
    if pid is None:
        _say(f"no process to send {sig.name} to (not running)")
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _remove_leftover_namespaces(prefix: str) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{prefix}-"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@dataclass
class BenchRun:
    seed: int
    results: list[FaultResult] = field(default_factory=list)
    seconds: float = 0.0
    resources: dict[str, dict[str, int]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)


def backup_fault_note(results: Sequence[FaultResult]) -> str | None:
    """A fault on the backup should cost the client nothing; say which ones did."""
    costly = [r for r in results if not r.fault.on_master and r.lost_probes]
    if not costly:
        return None
    kinds = Counter(r.fault.kind.value for r in costly)
    return (
        f"NOTE   {len(costly)} of {sum(not r.fault.on_master for r in results)} faults on the "
        f"backup cost the client probes (max {max(r.lost_probes for r in costly)} lost): "
        + ", ".join(f"{n} x {kind}" for kind, n in kinds.most_common())
    )


def report_lines(run: BenchRun) -> list[str]:
    results = run.results
    lines = [
        f"chaos bench: {len(results)} faults, seed {run.seed}, {run.seconds:.0f} s; "
        f"VRRPv3 at {ADVERT_INTERVAL} s, probes every {PROBE_INTERVAL * 1000:.0f} ms "
        f"(lost = unanswered within {REPLY_TIMEOUT} s)",
        "(on master: faults that hit the master; transient: a failed check that passed 1 s "
        f"later; VIP unanswered: no answer to the client {RECOVERY_TIMEOUT:.0f} s after the "
        "checks; lost probes and settle s: min / median / max)",
        *summary_table(results),
        "violations by check:",
    ]
    counts = violations_by_check(results)
    lines.extend(f"  {counts.get(check, 0):4d}  {check.value}" for check in Check)
    lines.append("resources (parent + children): baseline -> max after a fault")
    for name, figures in run.resources.items():
        lines.append(
            f"  director {name}: fds {figures['baseline_fds']} -> {figures['max_fds']}, "
            f"RSS {figures['baseline_rss_kib']} -> {figures['max_rss_kib']} KiB; "
            f"lvsha run started {run.starts.get(name, 0)} times"
        )
    for r in results:
        where = f"fault {r.fault.index} ({r.fault.kind.value} on {r.target})"
        if not r.reachable:
            lines.append(
                f"{where}: the client had no answer from {VIPS[0].ip} {RECOVERY_TIMEOUT:.0f} s "
                f"after the checks ({r.lost_probes} probes lost)"
            )
        lines.extend(f"{where}: transient: {t}" for t in r.transients)
    violations = [v for r in results for v in r.violations]
    for violation in violations:
        lines.append(
            f"fault {violation.fault} ({violation.kind.value}): {violation.check.value}: "
            f"{violation.detail}"
        )
        lines.extend(f"    {line}" for line in violation.log_excerpt.splitlines())
    note = backup_fault_note(results)
    if note is not None:
        lines.append(note)
    lines.append(verdict_line(results))
    return lines


def report_json(run: BenchRun) -> dict[str, Any]:
    def violation(v: Violation) -> dict[str, Any]:
        data = asdict(v)
        data["kind"] = v.kind.value
        data["check"] = v.check.value
        return data

    return {
        "seed": run.seed,
        "faults": len(run.results),
        "seconds": round(run.seconds, 1),
        "holds": not any(r.violations for r in run.results),
        "note": backup_fault_note(run.results),
        "violations_by_check": {c.value: n for c, n in violations_by_check(run.results).items()},
        "resources": run.resources,
        "starts": run.starts,
        "results": [
            {
                "index": r.fault.index,
                "kind": r.fault.kind.value,
                "on_master": r.fault.on_master,
                "target": r.target,
                "settle_seconds": r.settle_seconds,
                "lost_probes": r.lost_probes,
                "outage_seconds": round(r.outage, 4),
                "vip_answered_after": r.reachable,
                "transients": list(r.transients),
                "violations": [violation(v) for v in r.violations],
            }
            for r in run.results
        ],
    }


def _interrupt(number: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    previous = {n: signal.signal(n, _interrupt) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_bench(faults: Sequence[Fault], seed: int, keep_logs: bool = False) -> BenchRun:
    prefix = f"lvc{os.urandom(2).hex()}"
    work_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-chaos-", dir="/run"))
    lab: Lab | None = None
    bench: Bench | None = None
    run = BenchRun(seed)
    started = time.monotonic()
    try:
        lab = Lab(prefix)
        bench = Bench(lab, work_dir)
        bench.check_configs()
        _say(f"lab {prefix} in {work_dir}: starting the directors")
        bench.start()
        _say(
            "settled; baseline "
            + ", ".join(
                f"{d.name} {d.baseline_fds} fds {d.baseline_rss_kib} KiB"
                for d in bench.directors.values()
            )
        )
        runner = FaultRunner(bench)
        for fault in faults:
            result = runner.run(fault)
            run.results.append(result)
            settle = "-" if result.settle_seconds is None else f"{result.settle_seconds:.1f} s"
            _say(
                f"{fault.index}/{len(faults)} {fault.kind.value} on {result.target}: settled "
                f"{settle}, lost {result.lost_probes}, violations {len(result.violations)}"
            )
        for director in bench.directors.values():
            run.resources[director.name] = {
                "baseline_fds": director.baseline_fds,
                "max_fds": director.max_fds,
                "baseline_rss_kib": director.baseline_rss_kib,
                "max_rss_kib": director.max_rss_kib,
            }
            run.starts[director.name] = director.starts
        return run
    finally:
        run.seconds = time.monotonic() - started
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if bench is not None:
                bench.stop()
            if lab is not None:
                lab.close()
        finally:
            _remove_leftover_namespaces(prefix)
            if keep_logs:
                _say(f"logs kept in {work_dir}")
            else:
                shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--faults", type=int, default=200, metavar="N")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--kind",
        action="append",
        choices=[k.name.lower().replace("_", "-") for k in FaultKind],
        help="draw only this kind of fault (repeatable), to reproduce one",
    )
    parser.add_argument(
        "--master-share",
        type=float,
        default=MASTER_SHARE,
        metavar="P",
        help="share of faults that hit the master (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the directors' configs and logs"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.chaos needs root (network namespaces)", file=sys.stderr)
        return EXIT_LAB_ERROR
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    kinds = (
        [FaultKind[k.upper().replace("-", "_")] for k in args.kind]
        if args.kind
        else list(FaultKind)
    )
    faults = draw_faults(args.faults, seed, args.master_share, kinds)
    try:
        with _interruptible():
            run = run_bench(faults, seed, args.keep_logs)
    except KeyboardInterrupt:
        _say("interrupted; the lab is removed")
        return 130
    except (LabFailedError, LabError, TimeoutError, RuntimeError, OSError) as exc:
        _say(f"the lab failed: {exc}")
        return EXIT_LAB_ERROR
    if args.json:
        print(json.dumps(report_json(run), indent=2))
    else:
        print("\n".join(report_lines(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
