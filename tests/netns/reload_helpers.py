"""Live reconfiguration in namespaces (issue 10): configurations to reload, the random hitless
changes between them, directors driven by `lvsha reload`, and what the tests watch meanwhile
(the event stream, the metrics files, the adverts the client hears)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from lvsha.drill.capture import AdvertSeen, Capture
from lvsha.drill.lab import Host, wait_until
from lvsha.drill.reader import ReaderThread
from tests.netns.director import REPO, Director

VRID = 42
ADVERT_INTERVAL = 0.1
VIP = "192.0.2.100/24"
SECOND_VIP = "192.0.2.101/24"
"""Added and removed by reloads, advertised (`virtual_ipaddresses`) or not
(`virtual_ipaddresses_excluded`). While the two directors' files differ, each advertises a
list the other does not have: lvsha takes such adverts and logs the difference, as keepalived
does, so this is hitless (RFC 5798 7.1 lets a router drop them; then it would not be)."""
ADVERTISED = "advertised"
EXCLUDED = "excluded"
REAL_SERVER_POOL = tuple(f"192.0.2.{number}" for number in range(21, 27))
"""Addresses of the real-server host; a configuration uses a non-empty subset of them."""
REAL_SERVER_PORT = 8080
CHECK_INTERVALS = (0.5, 0.7, 1.0, 1.5, 2.0)
INSTANCE_NAMES = ("VI", "VI_web", "front", "edge_1", "lb")
NOTIFY_HOOKS: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("/bin/true",),
    ("/bin/true", "reloaded"),
    ("/usr/bin/true", "--"),
)
"""Commands that exist and are root-owned, as script security requires."""
GARP_BURSTS = (1, 2, 3, 5)
GARP_REFRESHES = (0.0, 0.5, 2.0)
GARP_REFRESH_BURSTS = (1, 2)
RELOAD_TIMEOUT = 150.0
"""Seconds `lvsha reload` waits for the daemon: longer than the daemon waits for a child
(lvsha.daemon.reload.APPLY_TIMEOUT), so a slow child is reported by the daemon itself."""
STATE_CHANGE = re.compile(r"\b(?:INITIALIZE|BACKUP|MASTER|FAULT|RELEASING) -> [A-Z]+")


def _duration(seconds: float) -> str:
    return f"{seconds:g}"


def _command(argv: Sequence[str]) -> str:
    return "[" + ", ".join(argv) + "]"


@dataclass(frozen=True)
class DirectorSettings:
    """One director's configuration file, as the random changes see it."""

    priority: int
    instance: str = "VI"
    second_vip: str | None = None
    """None, ADVERTISED or EXCLUDED."""
    real_servers: tuple[tuple[str, float], ...] = tuple(
        (address, 1.0) for address in REAL_SERVER_POOL[:3]
    )
    """(address, TCP check interval) of each real server of the one virtual server."""
    notify_master: tuple[str, ...] | None = None
    notify_backup: tuple[str, ...] | None = None
    garp_burst: int = 5
    garp_refresh: float = 0.0
    garp_refresh_burst: int = 1

    def render(self, *, virtual_servers: bool = True) -> str:
        vrrp = [
            "global:",
            "  check_defaults: {timeout: 300ms, retries: 0, rise: 1, fall: 2}",
            "vrrp_instances:",
            f"  {self.instance}:",
            "    interface: eth0",
            f"    virtual_router_id: {VRID}",
            f"    priority: {self.priority}",
            "    version: 3",
            f"    advert_interval: {_duration(ADVERT_INTERVAL)}",
        ]
        if self.second_vip == ADVERTISED:
            vrrp.append(f"    virtual_ipaddresses: ['{VIP}', '{SECOND_VIP}']")
        else:
            vrrp.append(f"    virtual_ipaddresses: ['{VIP}']")
        if self.second_vip == EXCLUDED:
            vrrp.append(f"    virtual_ipaddresses_excluded: ['{SECOND_VIP}']")
        vrrp.append(
            f"    garp: {{delay: 0, burst: {self.garp_burst}, "
            f"refresh: {_duration(self.garp_refresh)}, refresh_burst: {self.garp_refresh_burst}}}"
        )
        hooks = [
            f"{state}: {_command(argv)}"
            for state, argv in (("master", self.notify_master), ("backup", self.notify_backup))
            if argv is not None
        ]
        if hooks:
            vrrp.append(f"    notify: {{{', '.join(hooks)}}}")
        if not virtual_servers:
            return "\n".join(vrrp) + "\n"
        servers = [
            "virtual_servers:",
            "  - name: web",
            f"    address: {VIP.split('/', maxsplit=1)[0]}",
            "    port: 80",
            "    protocol: TCP",
            "    real_servers:",
        ]
        for address, interval in self.real_servers:
            servers.append(
                f"      - {{address: {address}, port: {REAL_SERVER_PORT}, "
                f"checks: [{{type: tcp, interval: {_duration(interval)}}}]}}"
            )
        return "\n".join(vrrp + servers) + "\n"


def many_real_servers(
    settings: DirectorSettings, services: int, per_service: int, weight_bump: int = 0
) -> str:
    """`settings`' VRRP part with `services` virtual servers on the VIP (ports 8000, 8001, ...)
    of `per_service` real servers each (10.S.x.y), without checks: always in service.
    `weight_bump` changes the first real server's weight."""
    lines = [settings.render(virtual_servers=False) + "virtual_servers:"]
    for service in range(services):
        lines += [
            f"  - name: big{service}",
            f"    address: {VIP.split('/', maxsplit=1)[0]}",
            f"    port: {8000 + service}",
            "    protocol: TCP",
            "    real_servers:",
        ]
        for index in range(per_service):
            weight = 1 + (weight_bump if (service, index) == (0, 0) else 0)
            lines.append(
                f"      - {{address: 10.{service}.{index // 250}.{index % 250 + 1}, "
                f"port: 8080, weight: {weight}}}"
            )
    return "\n".join(lines) + "\n"


def _other(rng: random.Random, choices: Sequence[Any], current: Any) -> Any:
    return rng.choice([choice for choice in choices if choice != current])


@dataclass(frozen=True)
class Change:
    kind: str
    """One of CHANGE_KINDS."""
    what: str
    settings: DirectorSettings
    """The settings after the change."""


CHANGE_KINDS = ("second VIP", "check interval", "real servers", "rename", "notify", "garp")


def random_hitless_change(rng: random.Random, settings: DirectorSettings) -> Change:
    """One change that moves nothing on the wire, drawn at random."""
    replace = dataclasses.replace
    kind = rng.choice(CHANGE_KINDS)
    if kind == "second VIP":
        # Absent: add it, advertised or not; present: remove it, or move it to the other list.
        now = settings.second_vip
        new_place = _other(rng, (None, ADVERTISED, EXCLUDED), now)
        if new_place is None:
            what = f"remove VIP {SECOND_VIP} ({now})"
        elif now is None:
            what = f"add VIP {SECOND_VIP} ({new_place})"
        else:
            what = f"VIP {SECOND_VIP}: {now} -> {new_place}"
        return Change(kind, what, replace(settings, second_vip=new_place))
    if kind == "check interval":
        index = rng.randrange(len(settings.real_servers))
        address, interval = settings.real_servers[index]
        new = _other(rng, CHECK_INTERVALS, interval)
        servers = list(settings.real_servers)
        servers[index] = (address, new)
        changed = replace(settings, real_servers=tuple(servers))
        return Change(kind, f"check of {address} every {interval:g} -> {new:g} s", changed)
    if kind == "real servers":
        present = [address for address, _ in settings.real_servers]
        absent = [address for address in REAL_SERVER_POOL if address not in present]
        if absent and (len(present) == 1 or rng.random() < 0.5):
            added = rng.choice(absent)
            servers_added = (*settings.real_servers, (added, rng.choice(CHECK_INTERVALS)))
            changed = replace(settings, real_servers=servers_added)
            return Change(kind, f"add real server {added}", changed)
        removed = rng.choice(present)
        kept = tuple(server for server in settings.real_servers if server[0] != removed)
        return Change(kind, f"remove real server {removed}", replace(settings, real_servers=kept))
    if kind == "rename":
        name = _other(rng, INSTANCE_NAMES, settings.instance)
        changed = replace(settings, instance=name)
        return Change(kind, f"rename instance {settings.instance} -> {name}", changed)
    if kind == "notify":
        state = rng.choice(("master", "backup"))
        field = f"notify_{state}"
        hook = _other(rng, NOTIFY_HOOKS, getattr(settings, field))
        shown = "none" if hook is None else " ".join(hook)
        return Change(kind, f"notify.{state}: {shown}", replace(settings, **{field: hook}))
    key = rng.choice(("burst", "refresh", "refresh_burst"))
    field = f"garp_{key}"
    choices = {"burst": GARP_BURSTS, "refresh": GARP_REFRESHES}.get(key, GARP_REFRESH_BURSTS)
    value = _other(rng, choices, getattr(settings, field))
    return Change(kind, f"garp.{key}: {value:g}", replace(settings, **{field: value}))


@dataclass(frozen=True)
class ReloadResult:
    """One `lvsha reload` command: its exit status, output, and (with --json) its answer."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    answer: dict[str, Any] | None

    def describe(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class ReloadDirector(Director):
    """A Director run with `--dry-run` (the in-memory IPVS port) and reloaded in place."""

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def start(self, dry_run: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self.process = self.host.popen(
                sys.executable, "-m", "lvsha", "run", str(self.config_path),
                "--run-dir", str(self.run_dir), *(["--dry-run"] if dry_run else []),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=REPO,
            )  # fmt: skip

    def edit(self, text: str) -> None:
        """Replace the configuration file at once, as an editor that renames would."""
        staging = self.config_path.with_name(self.config_path.name + ".new")
        staging.write_text(text)
        os.replace(staging, self.config_path)

    def lvsha(
        self, *args: str, timeout: float = RELOAD_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """`lvsha ARGS` in this director's host."""
        return subprocess.run(
            self.host.argv([sys.executable, "-m", "lvsha", *args]),
            capture_output=True, text=True, check=False, timeout=timeout, cwd=REPO,
        )  # fmt: skip

    def reload(
        self, *args: str, json_output: bool = True, timeout: float = RELOAD_TIMEOUT
    ) -> ReloadResult:
        """`lvsha reload --run-dir RUN [--json] ARGS`, timed from the caller's side."""
        extra = ["--json"] if json_output else []
        started = time.monotonic()
        try:
            done = self.lvsha(
                "reload", "--run-dir", str(self.run_dir), "--timeout", str(timeout),
                *extra, *args, timeout=timeout + 15,
            )  # fmt: skip
        except subprocess.TimeoutExpired as expired:
            return ReloadResult(
                -1,
                str(expired.stdout or ""),
                f"lvsha reload did not return within {expired.timeout:g} s\n"
                f"--- {self.host.name} log tail ---\n{self.log()[-3000:]}",
                time.monotonic() - started,
                None,
            )
        seconds = time.monotonic() - started
        answer = None
        if json_output and done.stdout.strip():
            try:
                answer = json.loads(done.stdout)
            except ValueError:
                answer = None
        return ReloadResult(done.returncode, done.stdout, done.stderr, seconds, answer)

    def metric(self, name: str, process: str = "main") -> float | None:
        """A sample of `RUN/metrics-<process>.prom` (exact name with labels), or None."""
        return metric_in(self.run_dir / f"metrics-{process}.prom", name)

    def wait_for_metric(
        self, name: str, value: float, process: str = "main", timeout: float = 10
    ) -> None:
        wait_until(
            lambda: self.metric(name, process) == value,
            timeout,
            what=f"{self.host.name}'s metrics-{process}.prom: {name} {value:g}",
        )

    def wait_for_address(self, address: str, held: bool, timeout: float, why: str) -> None:
        """Until `address` is on eth0 (`held`) or not."""
        wait_until(
            lambda: self.holds(address) == held,
            timeout,
            what=f"{address} {'on' if held else 'off'} {self.host.name} {why}",
        )

    def state_changes_in_log(self) -> list[str]:
        return STATE_CHANGE.findall(self.log())

    def mac(self) -> str:
        line = self.host.ip("-o", "link", "show", "dev", "eth0")
        return line.split("link/ether ", 1)[1].split()[0]


_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) ")


def log_lines_around(log: str, moment: float, before: float, after: float) -> list[str]:
    """The log's lines stamped within [moment - before, moment + after], `moment` on this
    process's monotonic clock (the log stamps local time of day, to the millisecond)."""
    wall = moment + (time.time() - time.monotonic())
    local = time.localtime(wall)
    midnight = wall - (local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + wall % 1)
    found = []
    for line in log.splitlines():
        stamp = _LOG_TIME.match(line)
        if stamp is None:
            continue
        hours, minutes, seconds, millis = (int(part) for part in stamp.groups())
        at = midnight + hours * 3600 + minutes * 60 + seconds + millis / 1000
        if wall - before <= at <= wall + after:
            found.append(line)
    return found


def metric_in(path: Path, name: str) -> float | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def _connect(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except BaseException:
        client.close()
        raise
    return client


@dataclass(frozen=True)
class Event:
    at: float
    """When this process read it (monotonic)."""
    fields: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.fields.get("type"))


class EventRecorder(ReaderThread):
    """Every line of a director's event stream, from its replay on, read by a thread."""

    what = "event recorder"

    def __init__(self, path: Path) -> None:
        self._client = _connect(path)
        super().__init__(f"events-{path.parent.parent.name}", self._client)
        self._events: list[Event] = []

    def events(self, kind: str | None = None) -> list[Event]:
        self._raise_if_failed()
        with self._lock:
            return [event for event in self._events if kind is None or event.type == kind]

    def quiet_for(self, seconds: float) -> bool:
        """Whether nothing arrived in the last `seconds` (the replay is complete)."""
        events = self.events()
        return not events or events[-1].at < time.monotonic() - seconds

    def last_seq(self) -> int:
        events = self.events()
        return int(events[-1].fields["seq"]) if events else 0

    def _run(self) -> None:
        pending = b""
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._client], [], [], 0.05)
            if not readable:
                continue
            data = self._client.recv(65536)
            if not data:
                raise ConnectionError("the daemon closed the event stream")
            at = time.monotonic()
            pending += data
            *lines, pending = pending.split(b"\n")
            decoded = [Event(at, json.loads(line)) for line in lines if line.strip()]
            with self._lock:
                self._events.extend(decoded)


def state_events_after(recorder: EventRecorder, seq: int) -> list[dict[str, Any]]:
    return [e.fields for e in recorder.events("vrrp_state") if int(e.fields["seq"]) > seq]


def largest_advert_gap(
    adverts: Sequence[AdvertSeen], source: IPv4Address, start: float, end: float
) -> AdvertGap:
    """The largest gap between `source`'s adverts for VRID from `start` to `end` (the window's
    edges count: silence at either end is a gap)."""
    times = [
        advert.at
        for advert in adverts
        if advert.source == source and advert.vrid == VRID and start <= advert.at <= end
    ]
    edges = [start, *times, end]
    after, before = max(itertools.pairwise(edges), key=lambda pair: pair[1] - pair[0])
    return AdvertGap(before - after, after, len(times))


@dataclass(frozen=True)
class AdvertGap:
    seconds: float
    after: float
    """When the gap began: the advert before it, or the window's start."""
    adverts: int
    """Adverts in the window."""


_SO_RCVBUFFORCE = 33  # asm-generic/socket.h: SO_RCVBUF beyond rmem_max, for root
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_TPACKET_STATS = struct.Struct("=II")
CAPTURE_BUFFER = 8 << 20
"""Bytes a capture socket may queue: seconds of this lab's traffic, so a test process busy
for a moment (parsing a large answer) loses no frame; drops are counted all the same."""


class CountedCapture(Capture):
    """A Capture with a large socket buffer that counts the frames the kernel dropped for it
    (a full buffer): a gap it reports is only the wire's if it dropped nothing."""

    def __init__(self, host: Host, interface: str = "eth0") -> None:
        super().__init__(host, interface)
        self._sniffer.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, CAPTURE_BUFFER)
        self._drops = 0

    def drops(self) -> int:
        """Frames dropped since the capture started."""
        data = self._sniffer.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, _TPACKET_STATS.size)
        _packets, dropped = _TPACKET_STATS.unpack(data)  # reading resets the kernel's count
        self._drops += dropped
        return self._drops


class SentAdverts(CountedCapture):
    """The adverts `host`'s kernel sends, stamped as they leave: beside what the client hears,
    this tells a late sender from a frame lost on the way or by the client's capture."""

    what = "sent-advert capture"
    outgoing = True
