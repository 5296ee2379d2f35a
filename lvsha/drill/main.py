"""`lvsha drill`: build the failover lab, run the scenarios against two directors, report.

The lab (a client and two directors on one switch) exists only while the drill runs: it is
removed on success, on error and on Ctrl-C, and a second Ctrl-C while it is being removed
does not cut that short.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import yaml

from lvsha.config import ConfigError, load_file
from lvsha.drill.capture import AddressWatcher, Capture
from lvsha.drill.ecmp_report import EcmpScenario
from lvsha.drill.events import EventFollower
from lvsha.drill.keepalived import (
    KEEPALIVED_COMMAND,
    KEEPALIVED_PID_FILES,
    UnsupportedConfigError,
    last_state,
)
from lvsha.drill.keepalived import write_config as write_keepalived_config
from lvsha.drill.lab import Host, Lab
from lvsha.drill.probe import VipProber
from lvsha.drill.report import format_table, measures_for, report_json
from lvsha.drill.scenarios import (
    Director,
    Drill,
    Election,
    Scenario,
    ScenarioResult,
    Timing,
)
from lvsha.drill.vip_removal import VipRemover

_LAB_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "lab"
DEFAULT_CONFIGS = (_LAB_CONFIGS / "director-a.yaml", _LAB_CONFIGS / "director-b.yaml")
DEFAULT_DIRECTOR_COMMAND = (
    sys.executable, "-m", "lvsha", "run", "{config}", "--run-dir", "{run_dir}",
)  # fmt: skip
LAB_INTERFACE = "eth0"
LAB_CLIENT = IPv4Address("192.0.2.1")
LAB_DIRECTORS = (IPv4Address("192.0.2.11"), IPv4Address("192.0.2.12"))
EXIT_SCENARIO_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EVENT_STREAM = "events.sock"
"""Where in its run directory lvsha writes its event stream."""
REALTIME_PRIORITY = 50
"""The real-time priority `realtime=True` gives a config that sets none (the lab configs' own)."""
Daemon = Literal["lvsha", "keepalived"]


@dataclass(frozen=True, slots=True)
class DrillOptions:
    configs: tuple[Path, Path] = DEFAULT_CONFIGS
    advert_interval: float | None = None
    """Seconds; when set, the drill runs adapted copies of the configs."""
    vrrp_version: int | None = None
    repetitions: int = 1
    scenarios: tuple[Scenario, ...] = tuple(Scenario)
    director_command: tuple[str, ...] = DEFAULT_DIRECTOR_COMMAND
    """argv of one director; `{config}` and `{run_dir}` are replaced in each argument."""
    json: bool = False
    client_address: IPv4Address = LAB_CLIENT
    director_addresses: tuple[IPv4Address, IPv4Address] = LAB_DIRECTORS
    """Used where a config sets no mcast_src_ip; the lab configs document these."""
    lab_prefix: str | None = None
    start_timeout: float = 15.0
    probe_interval: float = 0.01
    reply_timeout: float = 0.5
    keep_logs: bool = False
    watch_vip: bool = False
    """Watch each director's kernel for the VIP being added, to measure VIP-added-to-GARP."""
    event_stream: bool | None = None
    """Whether each director writes lvsha's event stream to `{run_dir}/events.sock`, from which
    the drill learns that the backup is in BACKUP before it injects a fault. None: only when
    the director command is the default, `lvsha run`."""
    daemon: Daemon = "lvsha"
    """"keepalived": run keepalived with the configs' election instead (translated to
    keepalived.conf); `director_command` and the event stream are then not used, and the drill
    reads the backup's state from keepalived's log."""
    realtime: bool | None = None
    """lvsha's `global.vrrp.realtime_priority` in adapted copies of the configs: False removes
    it, True keeps the configs' or sets REALTIME_PRIORITY; None leaves the configs as they are.
    keepalived keeps its own default (SCHED_OTHER) whatever this says."""
    vips: int | None = None
    """Run adapted copies whose instance has this many VIPs: the configs' first, then the
    addresses after it."""
    keepalived_rt_priority: int | None = None
    """keepalived's vrrp_rt_priority; None: keepalived's default (no real-time priority)."""
    fault_after_advert: float | None = None
    """Seconds after a master's advert seen by the client to inject each fault (see Timing)."""

    @property
    def follows_event_stream(self) -> bool:
        if self.daemon == "keepalived":
            return False
        if self.event_stream is not None:
            return self.event_stream
        return self.director_command == DEFAULT_DIRECTOR_COMMAND

    @property
    def adapts_configs(self) -> bool:
        return any(
            value is not None
            for value in (self.advert_interval, self.vrrp_version, self.realtime, self.vips)
        )

    @property
    def command(self) -> tuple[str, ...]:
        return KEEPALIVED_COMMAND if self.daemon == "keepalived" else self.director_command


class SetupError(Exception):
    """The options or configs cannot make a lab; the message says what to change."""


def _say(message: str) -> None:
    print(f"drill: {message}", file=sys.stderr, flush=True)


def _say_at_once(message: str) -> None:
    # From a signal handler: sys.stderr may be mid-write, and its buffer is not reentrant.
    os.write(sys.stderr.fileno(), f"drill: {message}\n".encode())


class InterruptGuard:
    """Turns the first SIGINT or SIGTERM into KeyboardInterrupt and ignores the rest.

    The interrupt waits while the lab is being built, so that every namespace is known to the
    lab when it is raised; once raised, or once the lab is being removed, further signals are
    only acknowledged, so a second Ctrl-C cannot cut the removal short.
    """

    def __init__(self) -> None:
        self._shield_depth = 0
        self._pending = False
        self._interrupted = False
        self._closing = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        # Python runs signal handlers in the main thread only; elsewhere the caller's stay.
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self._closing or self._interrupted:
            _say_at_once("still removing the lab; it will be gone in a moment")
            return
        if self._shield_depth:
            self._pending = True
            return
        self._interrupt()

    def _interrupt(self) -> None:
        self._interrupted = True
        _say_at_once("interrupted: stopping the directors and removing the lab")
        raise KeyboardInterrupt

    @contextmanager
    def shielded(self) -> Iterator[None]:
        self._shield_depth += 1
        try:
            yield
        finally:
            self._shield_depth -= 1
            if not self._shield_depth and self._pending and not self._closing:
                self._pending = False
                self._interrupt()

    @contextmanager
    def closing(self) -> Iterator[None]:
        self._closing = True
        yield


@dataclass
class CommandLauncher:
    """Starts a director from an argv template, its output in a log file per start; with
    `follow_events`, follows each start's event stream for the state the director reports."""

    command: Sequence[str]
    work_dir: Path
    guard: InterruptGuard
    follow_events: bool = False
    stale_files: tuple[str, ...] = ()
    """Files in a director's run directory removed before each start: keepalived refuses to
    start while a PID file names a process that still exists, and a SIGKILLed VRRP child can
    exist a moment longer, unreaped."""
    starts: Counter[str] = field(default_factory=Counter)
    followers: dict[str, EventFollower] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __call__(self, host: Host, config: Path) -> subprocess.Popen[bytes]:
        run_dir = self.work_dir / f"run-{host.name}"
        run_dir.mkdir(exist_ok=True)
        for name in self.stale_files:
            (run_dir / name).unlink(missing_ok=True)
        if self.follow_events:
            previous = self.followers.pop(host.name, None)
            if previous is not None:
                previous.close()
            self.followers[host.name] = EventFollower(run_dir / EVENT_STREAM)
        self.starts[host.name] += 1
        log_path = self.work_dir / f"{host.name}-{self.starts[host.name]}.log"
        argv = [
            part.replace("{config}", str(config)).replace("{run_dir}", str(run_dir))
            for part in self.command
        ]
        # Own session: a Ctrl-C at the terminal reaches the drill, which stops the directors.
        with log_path.open("wb") as log, self.guard.shielded():
            process = host.popen(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.processes.append(process)
            return process

    def reported_state(self, host: Host) -> str | None:
        """The state the director last started in `host` reported on its event stream."""
        follower = self.followers.get(host.name)
        return None if follower is None else follower.state()

    def logged_state(self, host: Host) -> str | None:
        """The state keepalived last started in `host` logged entering."""
        starts = self.starts[host.name]
        if not starts:
            return None
        log_path = self.work_dir / f"{host.name}-{starts}.log"
        try:
            return last_state(log_path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Kill every director still running, each with its whole process group (children
        that would only die of their parent's death, later, keepalived's VRRP process among
        them), and stop following their events."""
        for process in self.processes:
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for follower in self.followers.values():
            follower.close()


@dataclass(frozen=True, slots=True)
class DirectorSetup:
    name: str
    config: Path
    address: IPv4Interface
    priority: int


@dataclass(frozen=True, slots=True)
class LabSetup:
    election: Election
    version: int
    client: IPv4Interface
    directors: tuple[DirectorSetup, DirectorSetup]


def adapt_config(
    source: Path,
    target: Path,
    advert_interval: float | None,
    version: int | None,
    *,
    realtime: bool | None = None,
    vips: int | None = None,
) -> None:
    """Copy `source` to `target` with every VRRP instance's interval and version overridden,
    the VRRP process's real-time priority set or removed (`realtime`), and each instance given
    `vips` VIPs: its first one and the addresses that follow it."""
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    instances = document.get("vrrp_instances") if isinstance(document, dict) else None
    if not isinstance(instances, dict):
        raise SetupError(f"{source}: no vrrp_instances mapping to adapt")
    for name, instance in instances.items():
        if advert_interval is not None:
            instance["advert_interval"] = advert_interval
        if version is not None:
            instance["version"] = version
        if vips is not None:
            instance["virtual_ipaddresses"] = _consecutive_vips(
                instance.get("virtual_ipaddresses"), vips, f"{source}: vrrp_instances.{name}"
            )
    if realtime is not None:
        _set_realtime(document, realtime)
    target.write_text(
        f"# {source} adapted by lvsha drill\n" + yaml.safe_dump(document, sort_keys=False),
        encoding="utf-8",
    )


def _consecutive_vips(listed: object, count: int, where: str) -> list[str]:
    first = listed[0] if isinstance(listed, list) and listed else None
    if isinstance(first, dict):
        first = first.get("address")
    try:
        vip = IPv4Interface(str(first))
    except ValueError:
        raise SetupError(f"{where}.virtual_ipaddresses: the first is not an IPv4 VIP") from None
    if count < 1:
        raise SetupError(f"{where}: at least one VIP")
    found = [IPv4Interface((vip.ip + offset, vip.network.prefixlen)) for offset in range(count)]
    if any(address.ip not in vip.network for address in found):
        raise SetupError(f"{where}: {count} VIPs from {vip} leave {vip.network}")
    return [str(address) for address in found]


def _set_realtime(document: dict[str, Any], realtime: bool) -> None:
    settings = document.setdefault("global", {})
    vrrp = settings.setdefault("vrrp", {})
    if realtime:
        vrrp.setdefault("realtime_priority", REALTIME_PRIORITY)
        return
    vrrp.pop("realtime_priority", None)
    if not vrrp:
        del settings["vrrp"]
    if not settings:
        del document["global"]


def prepare(options: DrillOptions, work_dir: Path) -> LabSetup:
    """Load (and adapt) both configs and check that they describe one election the lab can hold."""
    directors = []
    elections = []
    versions = set()
    for index, (name, source) in enumerate(zip(("a", "b"), options.configs, strict=True)):
        path = source
        if options.adapts_configs:
            path = work_dir / f"director-{name}.yaml"
            adapt_config(
                source,
                path,
                options.advert_interval,
                options.vrrp_version,
                realtime=options.realtime,
                vips=options.vips,
            )
        config = load_file(path)
        if len(config.vrrp_instances) != 1:
            raise SetupError(f"{source}: the drill needs exactly one VRRP instance")
        ((instance_name, instance),) = config.vrrp_instances.items()
        where = f"{source}: vrrp_instances.{instance_name}"
        if instance.interface != LAB_INTERFACE:
            raise SetupError(f"{where}.interface: lab hosts have only {LAB_INTERFACE}")
        if instance.unicast_peers:
            raise SetupError(f"{where}.unicast_peers: the drill watches multicast adverts")
        vip = instance.virtual_ipaddresses[0].address
        if not isinstance(vip, IPv4Interface):
            raise SetupError(f"{where}.virtual_ipaddresses: the drill probes an IPv4 VIP")
        address = instance.mcast_src_ip or options.director_addresses[index]
        if not isinstance(address, IPv4Address):
            raise SetupError(f"{where}.mcast_src_ip: the lab is IPv4")
        more_vips = tuple(
            other.address
            for other in instance.virtual_ipaddresses[1:]
            if isinstance(other.address, IPv4Interface)
        )
        elections.append(
            Election(
                instance.virtual_router_id,
                vip,
                instance.interface,
                instance.advert_interval,
                instance.version,
                more_vips,
            )
        )
        if options.daemon == "keepalived":
            path = work_dir / f"director-{name}.keepalived.conf"
            try:
                write_keepalived_config(config, path, options.keepalived_rt_priority)
            except (UnsupportedConfigError, ValueError) as exc:
                raise SetupError(f"{source}: for keepalived: {exc}") from exc
        versions.add(instance.version)
        directors.append(
            DirectorSetup(
                name, path, IPv4Interface(f"{address}/{vip.network.prefixlen}"), instance.priority
            )
        )
    if elections[0] != elections[1] or len(versions) != 1:
        raise SetupError(
            "the two configs must agree on VRID, VIPs, interface, interval and version"
        )
    if directors[0].priority == directors[1].priority:
        raise SetupError("the two directors need different priorities to know who should win")
    first, second = directors
    client = IPv4Interface(f"{options.client_address}/{elections[0].vip.network.prefixlen}")
    return LabSetup(elections[0], versions.pop(), client, (first, second))


def _host_mac(host: Host) -> str:
    links = json.loads(host.ip("-j", "link", "show", "dev", LAB_INTERFACE))
    mac: str = links[0]["address"]
    return mac


def _remove_leftover_namespaces(prefix: str) -> None:
    """Namespaces of this lab that a cut-short build never recorded."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{prefix}-"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _describe(result: ScenarioResult) -> str:
    head = f"{result.scenario.value} run {result.repetition}"
    if result.measures is None:
        return f"{head}: FAILED: {result.error}"
    measures = result.measures
    advert = (
        "no advert" if measures.fault_to_advert is None
        else f"advert after {measures.fault_to_advert * 1000:.1f} ms"
    )  # fmt: skip
    return (
        f"{head}: {result.new_master} took over from {result.old_master}, {advert}, "
        f"outage {measures.outage * 1000:.1f} ms, {measures.lost_probes} probes lost"
    )


def _drill_in_lab(
    options: DrillOptions, setup: LabSetup, prefix: str, work_dir: Path, guard: InterruptGuard
) -> list[ScenarioResult]:
    lab: Lab | None = None
    prober: VipProber | None = None
    capture: Capture | None = None
    address_watchers: dict[str, AddressWatcher] = {}
    vip_removers: dict[str, VipRemover] = {}
    launcher = CommandLauncher(
        options.command,
        work_dir,
        guard,
        follow_events=options.follows_event_stream,
        stale_files=KEEPALIVED_PID_FILES if options.daemon == "keepalived" else (),
    )
    reported_state = None
    if options.daemon == "keepalived":
        reported_state = launcher.logged_state
    elif options.follows_event_stream:
        reported_state = launcher.reported_state
    try:
        with guard.shielded():
            lab = Lab(prefix)
            client = lab.add_host("client", str(setup.client))
            hosts = [lab.add_host(d.name, str(d.address)) for d in setup.directors]
        directors = [
            Director(d.name, host, d.config, d.address.ip, _host_mac(host), d.priority)
            for d, host in zip(setup.directors, hosts, strict=True)
        ]
        master, backup = sorted(directors, key=lambda d: d.priority, reverse=True)
        _say(
            f"lab {prefix}: client {setup.client.ip}, "
            + ", ".join(f"{d.name} {d.address} {d.mac} priority {d.priority}" for d in directors)
            + f", VIP {setup.election.vip}, advert interval {setup.election.advert_interval} s"
            f" (VRRPv{setup.version})"
            + (f", {len(setup.election.vips)} VIPs" if setup.election.more_vips else "")
            + f"; directors: {options.daemon}"
        )
        prober = VipProber(client, setup.election.vip.ip, options.probe_interval, LAB_INTERFACE)
        prober.start()
        capture = Capture(client, LAB_INTERFACE)
        capture.start()
        for director in directors:
            vip_removers[director.name] = VipRemover(
                director.host, LAB_INTERFACE, setup.election.vip, setup.election.more_vips
            )
        if options.watch_vip:
            for director in directors:
                address_watchers[director.name] = AddressWatcher(director.host)
                address_watchers[director.name].start()
        drill = Drill(
            setup.election,
            master=master,
            backup=backup,
            prober=prober,
            capture=capture,
            launcher=launcher,
            timing=Timing(options.start_timeout, options.reply_timeout, options.fault_after_advert),
            log=_say,
            vip_removers=vip_removers,
            address_watchers=address_watchers,
            reported_state=reported_state,
        )
        results = []
        for repetition in range(1, options.repetitions + 1):
            for scenario in options.scenarios:
                _say(f"{scenario.value} run {repetition}/{options.repetitions}")
                result = drill.run(scenario, repetition)
                _say(_describe(result))
                results.append(result)
        if prober.send_errors:
            refused = ", ".join(f"{count} x {error}" for error, count in prober.send_errors.items())
            _say(f"probes the kernel would not send (counted as lost): {refused}")
        return results
    finally:
        with guard.closing():
            launcher.close()
            for watcher in (prober, capture, *address_watchers.values()):
                if watcher is not None:
                    watcher.stop()
            # Their sockets would keep the directors' namespaces alive after deletion.
            for remover in vip_removers.values():
                remover.close()
            try:
                if lab is not None:
                    lab.close()
            finally:
                _remove_leftover_namespaces(prefix)


class DrillAbortedError(Exception):
    """The drill stopped before it had results; it has said why. `status` is the exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class DrillRun:
    setup: LabSetup
    results: list[ScenarioResult]
    seconds: float
    """From the lab being built to it being removed."""
    logs: Path | None
    """The directors' logs, when kept (asked for, or a scenario failed)."""


def drill(options: DrillOptions) -> DrillRun:
    """Build the lab, run the scenarios, remove the lab, and return what was measured.

    Raises DrillAbortedError (with exit status 2 on bad options, 130 when interrupted) after saying
    why. The lab is gone when this returns, whichever way it returns."""
    if options.repetitions < 1:
        _say("repetitions must be at least 1")
        raise DrillAbortedError(EXIT_USAGE)
    if not options.scenarios:
        _say("no scenario to run")
        raise DrillAbortedError(EXIT_USAGE)
    if not any("{config}" in part for part in options.command):
        _say("the director command must contain {config}, where the config path goes")
        raise DrillAbortedError(EXIT_USAGE)
    prefix = options.lab_prefix or f"lv{secrets.token_hex(3)}"
    guard = InterruptGuard()
    guard.install()
    work_dir = Path(tempfile.mkdtemp(prefix=f"lvsha-drill-{prefix}-"))
    results: list[ScenarioResult] | None = None
    try:
        try:
            setup = prepare(options, work_dir)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            raise DrillAbortedError(EXIT_USAGE) from exc
        except (SetupError, OSError, yaml.YAMLError) as exc:
            _say(str(exc))
            raise DrillAbortedError(EXIT_USAGE) from exc
        started = time.monotonic()
        results = _drill_in_lab(options, setup, prefix, work_dir, guard)
    except KeyboardInterrupt:
        _say("interrupted; the lab has been removed")
        raise DrillAbortedError(EXIT_INTERRUPTED) from None
    finally:
        guard.restore()
        failed = results is not None and any(result.error for result in results)
        kept = options.keep_logs or failed
        if kept:
            _say(f"director logs are in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return DrillRun(setup, results, time.monotonic() - started, work_dir if kept else None)


def run_drill(options: DrillOptions) -> int:
    """Run the drill and print its report: 0 when every scenario converged, 1 if one did not,
    2 on bad options, 130 when interrupted. The lab is gone when this returns."""
    try:
        run = drill(options)
    except DrillAbortedError as aborted:
        return aborted.status
    setup, results = run.setup, run.results
    settings = {
        "advert_interval": setup.election.advert_interval,
        "vrrp_version": setup.version,
        "repetitions": options.repetitions,
        "scenarios": [scenario.value for scenario in options.scenarios],
        "daemon": options.daemon,
        "director_command": list(options.command),
        "vips": len(setup.election.vips),
        "realtime": options.realtime,
        "seconds": round(run.seconds, 3),
    }
    measures = measures_for(watched=options.watch_vip, vips=len(setup.election.vips))
    if options.json:
        print(json.dumps(report_json(results, settings, measures), indent=2))
    else:
        title = (
            f"failover drill ({options.daemon}): VRRPv{setup.version}, advert interval "
            f"{setup.election.advert_interval} s, {options.repetitions} run(s) per scenario"
        )
        print(format_table(results, title, measures))
    failed = any(result.error for result in results)
    return EXIT_SCENARIO_FAILED if failed else 0


def _seconds_from_now(text: str) -> float:
    """A delay for argparse: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The drill's options, for `lvsha drill` and for `python -m lvsha.drill.main`."""
    parser.add_argument(
        "--config",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        default=list(DEFAULT_CONFIGS),
        help="the two directors' configs, one VRRP instance each (default: conf/lab/)",
    )
    parser.add_argument(
        "--advert-interval",
        type=float,
        metavar="SECONDS",
        help="run adapted copies of the configs with this advert interval",
    )
    parser.add_argument(
        "--vrrp-version",
        type=int,
        choices=(2, 3),
        help="run adapted copies of the configs with this VRRP version",
    )
    parser.add_argument("--repetitions", type=int, default=1, metavar="N", help="runs per scenario")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[scenario.value for scenario in Scenario],
        help="run only this scenario; repeat for more (default: all, in order)",
    )
    parser.add_argument(
        "--director-command",
        metavar="COMMAND",
        help="command line of one director, {config} and {run_dir} replaced "
        "(default: lvsha run {config} --run-dir {run_dir})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--lab-prefix", metavar="PREFIX", help="namespace name prefix (default: random)"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        metavar="SECONDS",
        help="allowance for a director process to start, on top of the election timers "
        "(default 15); with --topology ecmp, for the whole lab to come up (default 600)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the directors' logs even on success"
    )
    parser.add_argument(
        "--watch-vip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the VIP being added on the new master (seen by a netlink watcher in its "
        "namespace): from the timer's due time, and to the client's first gratuitous ARP",
    )
    parser.add_argument(
        "--daemon",
        choices=("lvsha", "keepalived"),
        default="lvsha",
        help="run keepalived instead, with the configs' election translated to keepalived.conf "
        "(its own defaults otherwise: no real-time priority)",
    )
    parser.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run adapted copies of the configs with lvsha's VRRP real-time priority set "
        f"(theirs, else {REALTIME_PRIORITY}) or removed (default: as the configs say)",
    )
    parser.add_argument(
        "--fault-after-advert",
        type=_seconds_from_now,
        metavar="SECONDS",
        help="inject each fault this long after one of the master's adverts reaches the client "
        "(default: as soon as the lab is ready, anywhere in the advert interval)",
    )
    parser.add_argument(
        "--vips",
        type=int,
        metavar="N",
        help="run adapted copies of the configs with N VIPs: the first and those after it",
    )
    parser.add_argument(
        "--event-stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the directors write lvsha's event stream to {run_dir}/events.sock; the "
        "drill reads it to start each fault only once the backup is in BACKUP "
        "(default: only for the default director command)",
    )
    add_ecmp_arguments(parser)


def add_ecmp_arguments(parser: argparse.ArgumentParser) -> None:
    """`--topology` and the options of the ECMP drill (lvsha.drill.ecmp)."""
    parser.add_argument(
        "--topology",
        choices=("vrrp", "ecmp"),
        default="vrrp",
        help="vrrp (default): two directors electing a master; ecmp: three directors "
        "announcing one VIP over BGP to a router doing ECMP (needs FRR and the kernel's IPVS: "
        "run it in the test VM)",
    )
    ecmp = parser.add_argument_group("the ECMP drill (--topology ecmp)")
    ecmp.add_argument(
        "--scheduler",
        action="append",
        choices=ECMP_SCHEDULERS,
        help="run every scenario under this IPVS scheduler; repeat for more "
        "(default: mh with mh-port, then wlc for contrast)",
    )
    ecmp.add_argument(
        "--ecmp-scenario",
        action="append",
        choices=[scenario.value for scenario in EcmpScenario],
        help="run only this scenario; repeat for more (default: all, in order)",
    )
    ecmp.add_argument(
        "--connections",
        type=int,
        default=300,
        metavar="N",
        help="long-lived connections per scenario (default %(default)s)",
    )
    ecmp.add_argument(
        "--message-interval",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="each long-lived connection's echo interval (default %(default)s)",
    )
    ecmp.add_argument(
        "--new-per-second",
        type=float,
        default=20.0,
        metavar="RATE",
        help="short connections opened per second (default %(default)s)",
    )
    ecmp.add_argument(
        "--show-logs",
        action="store_true",
        help="print the directors' and FRR's logs on stderr at the end (implies --keep-logs; "
        "for the test VM, whose files vanish with it)",
    )
    ecmp.add_argument(
        "--settle",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long to keep watching after each change (default %(default)s)",
    )


ECMP_SCHEDULERS = ("mh", "sh", "wlc", "lc", "rr", "wrr", "sed", "nq")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the drill the parsed arguments ask for, in the topology they name."""
    if getattr(args, "topology", "vrrp") == "ecmp":
        from lvsha.drill import ecmp  # noqa: PLC0415

        return ecmp.run_ecmp_drill(ecmp.options_from_args(args))
    return run_drill(options_from_args(args))


def options_from_args(args: argparse.Namespace) -> DrillOptions:
    command: tuple[str, ...] = DEFAULT_DIRECTOR_COMMAND
    if args.director_command:
        command = tuple(shlex.split(args.director_command))
    scenarios = tuple(Scenario)
    if args.scenario:
        scenarios = tuple(Scenario(name) for name in args.scenario)
    first, second = args.config
    return DrillOptions(
        configs=(first, second),
        advert_interval=args.advert_interval,
        vrrp_version=args.vrrp_version,
        repetitions=args.repetitions,
        scenarios=scenarios,
        director_command=command,
        json=args.json,
        lab_prefix=args.lab_prefix,
        start_timeout=15.0 if args.start_timeout is None else args.start_timeout,
        keep_logs=args.keep_logs,
        watch_vip=args.watch_vip,
        event_stream=args.event_stream,
        daemon=args.daemon,
        realtime=args.realtime,
        vips=args.vips,
        fault_after_advert=args.fault_after_advert,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lvsha drill",
        description="Rehearse failovers between two directors in network namespaces and "
        "measure them from a client: adverts, gratuitous ARPs and VIP outage; or, with "
        "--topology ecmp, directors leaving and joining an ECMP set.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
