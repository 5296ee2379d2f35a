"""Failover scenarios: reset the lab, inject one fault, wait for the new master, measure.

Each scenario starts from the same known state (the higher-priority director master and
answering for the VIP, the other running as backup and, when the director can say so, in state
BACKUP and hearing the master), injects its fault, waits with a deadline until the other
director serves the VIP, and then measures from the probe and capture records. The directors
are processes started by a launcher, so any daemon that speaks VRRP can be drilled.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Literal

from lvsha.drill.capture import (
    AddressEvent,
    AddressWatcher,
    AdvertSeen,
    Capture,
    GarpSeen,
    first_address_added,
    first_advert,
    first_garp,
    last_advert,
    last_first_address_added,
    last_first_garp,
)
from lvsha.drill.events import EventStreamError
from lvsha.drill.lab import Host, LabError, wait_until
from lvsha.drill.probe import Probe, VipProber, measure_outage
from lvsha.drill.vip_removal import VipRemover
from lvsha.vrrp.machine import master_down_interval, skew_time

DirectorLauncher = Callable[[Host, Path], "subprocess.Popen[bytes]"]
"""Starts a director process in a host, given its configuration file."""
ReportedState = Callable[[Host], "str | None"]
"""The VRRP state the director in a host last reported itself ("BACKUP"), None while unknown."""
BACKUP = "BACKUP"

STEADY_PROBES = 5
"""Answered probes in a row, all from the master's MAC, that count as the VIP being served."""
REPLY_GRACE = 0.05
"""Probes younger than this are not yet expected to be answered when judging steadiness."""


class Scenario(enum.Enum):
    KILL = "kill"
    LINK_CUT = "link-cut"
    GRACEFUL_STOP = "graceful-stop"
    MASTER_RETURNS = "master-returns"


class DrillError(RuntimeError):
    """The lab cannot reach the state a scenario needs; the message says why."""


@dataclass(frozen=True, slots=True)
class Election:
    """What the two directors' configurations agree on."""

    vrid: int
    vip: IPv4Interface
    interface: str
    advert_interval: float
    version: Literal[2, 3] = 3
    more_vips: tuple[IPv4Interface, ...] = ()
    """The instance's other IPv4 VIPs, announced with `vip` (which alone is probed)."""

    @property
    def vips(self) -> tuple[IPv4Interface, ...]:
        return (self.vip, *self.more_vips)

    def master_down_interval(self, priority: int) -> float:
        """A backup's Master_Down_Interval at `priority`, by the VRRP machine's own rule
        (Skew_Time differs between v2 and v3)."""
        return master_down_interval(self.version, priority, self.advert_interval)

    def skew_time(self, priority: int) -> float:
        """A backup's Skew_Time at `priority`: its timer after a priority-0 advert."""
        return skew_time(self.version, priority, self.advert_interval)


@dataclass(frozen=True, slots=True)
class Timing:
    start_timeout: float = 15.0
    """Allowance for a director process to start up, on top of the election's own timers."""
    reply_timeout: float = 0.5
    """A probe answered later than this counts as lost."""
    fault_after_advert: float | None = None
    """Seconds after one of the master's adverts (as the client receives it) to inject a fault;
    None: whenever the lab is ready. A fixed phase takes out of the figures the part of an
    outage that is only where in the advert interval the fault fell (up to one interval of it,
    and the probes lost in it), so that daemons compared fault for fault lose comparable time."""


@dataclass(frozen=True, slots=True)
class FailoverMeasures:
    """Seconds, or None when the event was not seen (no GARP, no advert from the old master)."""

    fault_to_advert: float | None
    last_advert_to_advert: float | None
    fault_to_garp: float | None
    outage: float
    lost_probes: int
    recovered: bool
    vip_added_to_garp: float | None = None
    """The VIP appearing on the new master (its kernel's address event) to the client's first
    GARP for it; negative if the GARP came first. None when either was not seen or not watched."""
    due_to_advert: float | None = None
    """From when the new master's timer was due (see `timer_due`) to its first advert seen by
    the client: what the takeover took beyond the VRRP timers. None where no timer applies (a
    preempting master) or the old master's last advert was not seen."""
    due_to_vip_added: float | None = None
    """From the timer's due time to the new master's kernel adding the VIP; needs the watch."""
    due_to_garp: float | None = None
    """From the timer's due time to the client's first GARP for the VIP."""
    advert_to_last_garp: float | None = None
    """From the new master's first advert to the last of its VIPs' first GARPs at the client:
    when every VIP of the instance had been announced. None when one was not announced."""
    advert_to_last_vip_added: float | None = None
    """From the new master's first advert to its kernel holding every VIP; needs the watch."""


def timer_due(
    adverts: Sequence[AdvertSeen],
    old_master: IPv4Address,
    vrid: int,
    *,
    before: float,
    master_down_interval: float,
    skew_time: float,
) -> float | None:
    """When the new master's Master_Down_Timer was due, by the client's clock: the old master's
    last advert seen at or before `before` (the new master's first advert) plus the new master's
    Master_Down_Interval, or plus its Skew_Time when that advert had priority 0 (RFC 5798 6.4.2).
    Director and client hear the same frame from one switch, so the client's receipt stands for
    the backup's. None when no advert of the old master was seen."""
    stepping_down = last_advert(adverts, old_master, vrid, before)
    if stepping_down is None:
        return None
    if stepping_down.priority == 0:
        return stepping_down.at + skew_time
    return stepping_down.at + master_down_interval


def measure_failover(
    adverts: Sequence[AdvertSeen],
    garps: Sequence[GarpSeen],
    probes: Sequence[Probe],
    *,
    fault_at: float,
    window_end: float,
    vrid: int,
    vip: IPv4Address,
    old_master: IPv4Address,
    new_master: IPv4Address,
    new_master_mac: str,
    reply_timeout: float,
    new_master_addresses: Sequence[AddressEvent] = (),
    timers: tuple[float, float] | None = None,
    vips: Sequence[IPv4Address] = (),
) -> FailoverMeasures:
    """The measures of one failover from what the client recorded, all in send/receipt order,
    and from the address events of the new master's kernel when they were watched.

    `timers`, the new master's (Master_Down_Interval, Skew_Time), when its takeover was timed
    by them (not a preemption): they give the measures from the timer's due time. `vips`, all
    of the instance's (default: `vip`), give the measures to the last of them announced; those
    two look past `window_end` (which closes once `vip` alone is served) up to the capture's end.
    """
    taking_over = first_advert(adverts, new_master, vrid, fault_at)
    if taking_over is not None and taking_over.at > window_end:
        taking_over = None
    fault_to_advert = last_advert_to_advert = None
    if taking_over is not None:
        fault_to_advert = taking_over.at - fault_at
        stepping_down = last_advert(adverts, old_master, vrid, taking_over.at)
        if stepping_down is not None:
            last_advert_to_advert = taking_over.at - stepping_down.at
    announced = first_garp(garps, vip, new_master_mac, fault_at)
    if announced is not None and announced.at > window_end:
        announced = None
    fault_to_garp = None if announced is None else announced.at - fault_at
    added = first_address_added(new_master_addresses, vip, fault_at)
    if added is not None and added.at > window_end:
        added = None
    vip_added_to_garp = None
    if added is not None and announced is not None:
        vip_added_to_garp = announced.at - added.at
    due = None
    if timers is not None and taking_over is not None:
        interval, skew = timers
        due = timer_due(
            adverts,
            old_master,
            vrid,
            before=taking_over.at,
            master_down_interval=interval,
            skew_time=skew,
        )
    every_vip = list(vips) or [vip]
    last_garp = last_first_garp(garps, every_vip, new_master_mac, fault_at)
    last_added = last_first_address_added(new_master_addresses, every_vip, fault_at)
    outage = measure_outage(probes, fault_at, window_end, reply_timeout)
    return FailoverMeasures(
        fault_to_advert,
        last_advert_to_advert,
        fault_to_garp,
        outage.outage,
        outage.lost,
        outage.recovered,
        vip_added_to_garp,
        due_to_advert=_since(due, taking_over),
        due_to_vip_added=_since(due, added),
        due_to_garp=_since(due, announced),
        advert_to_last_garp=_since(_at_or_none(taking_over), last_garp),
        advert_to_last_vip_added=_since(_at_or_none(taking_over), last_added),
    )


def _at_or_none(seen: AdvertSeen | None) -> float | None:
    return None if seen is None else seen.at


def _since(start: float | None, seen: AdvertSeen | GarpSeen | AddressEvent | None) -> float | None:
    if start is None or seen is None:
        return None
    return seen.at - start


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    repetition: int
    old_master: str
    new_master: str
    measures: FailoverMeasures | None
    error: str | None = None


@dataclass
class Director:
    name: str
    host: Host
    config: Path
    address: IPv4Address
    mac: str
    priority: int
    process: subprocess.Popen[bytes] | None = None
    cable_cut: bool = False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Drill:
    """Runs scenarios against two directors in a built lab, watched by one prober and capture."""

    def __init__(
        self,
        election: Election,
        *,
        master: Director,
        backup: Director,
        prober: VipProber,
        capture: Capture,
        launcher: DirectorLauncher,
        timing: Timing,
        log: Callable[[str], None],
        vip_removers: Mapping[str, VipRemover],
        address_watchers: Mapping[str, AddressWatcher] | None = None,
        reported_state: ReportedState | None = None,
    ) -> None:
        """`vip_removers`, by director name, take a killed director's VIP away as its crash
        would. `address_watchers`, by director name, add the VIP-added-to-GARP measure.
        `reported_state`, when the directors can tell their state, makes every scenario wait
        for the backup to be in BACKUP before its fault."""
        self.election = election
        self.master = master
        self.backup = backup
        self.prober = prober
        self.capture = capture
        self.launcher = launcher
        self.timing = timing
        self.log = log
        self.vip_removers = dict(vip_removers)
        self.address_watchers = dict(address_watchers or {})
        self.reported_state = reported_state

    @property
    def convergence_timeout(self) -> float:
        """Deadline for one election: a process start, then a backup's Master_Down_Interval."""
        lowest = min(self.master.priority, self.backup.priority)
        return self.timing.start_timeout + 2 * self.election.master_down_interval(lowest) + 1.0

    def run(self, scenario: Scenario, repetition: int) -> ScenarioResult:
        old, new = self.master, self.backup
        if scenario is Scenario.MASTER_RETURNS:
            old, new = new, old
        try:
            self.reset()
            fault_at = self._inject(scenario)
            window_end = self._await_new_master(scenario, old, new, fault_at)
            measures = self._measure(scenario, old, new, fault_at, window_end)
        except (TimeoutError, LabError, DrillError, EventStreamError) as failure:
            return ScenarioResult(scenario, repetition, old.name, new.name, None, str(failure))
        return ScenarioResult(scenario, repetition, old.name, new.name, measures)

    def reset(self) -> None:
        """Bring the lab to: master serving the VIP, backup listening, both cables in."""
        settled = 3 * self.election.advert_interval + 0.5
        if self._may_keep_running():
            try:
                since = time.monotonic() - settled
                self._await_serving(self.master, since, settled, "master", self.backup)
                self._await_backup_listening(settled)
                return
            except (TimeoutError, DrillError):
                pass
        self.log("reset: restarting both directors")
        for director in (self.master, self.backup):
            self._stop_hard(director)
            if director.cable_cut:
                director.host.link_up(True)
                director.cable_cut = False
        started_at = time.monotonic()
        for director in (self.master, self.backup):
            self._start(director)
        self._await_serving(
            self.master,
            started_at,
            self.convergence_timeout,
            f"{self.master.name} master and answering for the VIP after a restart",
            self.backup,
        )
        self._await_backup_listening(self.convergence_timeout)

    def _await_backup_listening(self, timeout: float) -> None:
        """Wait until the backup reports BACKUP and an advert of the master came after that.

        A backup's process can be running while its VRRP engine is still starting: a fault
        then would count that start-up as failover time. Once in BACKUP, its Master_Down timer
        runs from the last advert it heard, so one more advert anchors it to the master's.
        Without `reported_state` the drill cannot tell, and a running process must do.
        """
        if self.reported_state is None:
            return
        backup, reported = self.backup, self.reported_state

        def in_backup() -> bool:
            self._require_running(backup)
            return reported(backup.host) == BACKUP

        wait_until(in_backup, timeout, what=f"{backup.name} reporting state {BACKUP}")
        listening_at = time.monotonic()

        def advert_heard() -> bool:
            self._require_running(self.master, backup)
            adverts = self.capture.adverts_since(listening_at)
            return (
                first_advert(adverts, self.master.address, self.election.vrid, listening_at)
                is not None
            )

        wait_until(
            advert_heard,
            timeout,
            what=f"an advert of {self.master.name} after {backup.name} reported {BACKUP}",
        )

    def _may_keep_running(self) -> bool:
        directors = (self.master, self.backup)
        return all(d.running() and not d.cable_cut for d in directors)

    def _await_fault_phase(self) -> None:
        """Wait for the master's next advert, then until `fault_after_advert` after it."""
        phase = self.timing.fault_after_advert
        if phase is None:
            return
        since = time.monotonic()
        seen: list[AdvertSeen] = []

        def advert_heard() -> bool:
            self._require_running(self.master)
            adverts = self.capture.adverts_since(since)
            advert = first_advert(adverts, self.master.address, self.election.vrid, since)
            if advert is not None:
                seen.append(advert)
            return advert is not None

        wait_until(
            advert_heard,
            3 * self.election.advert_interval + 1.0,
            interval=0.0005,
            what=f"an advert of {self.master.name} to time the fault from",
        )
        # A point in time, not a condition: the fault's place in the advert interval.
        remaining = seen[0].at + phase - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def _inject(self, scenario: Scenario) -> float:
        master = self.master
        if scenario is not Scenario.MASTER_RETURNS:
            self._await_fault_phase()
        if scenario is Scenario.KILL:
            return self.crash(master)
        if scenario is Scenario.LINK_CUT:
            fault_at = time.monotonic()
            master.host.link_up(False)
            master.cable_cut = True
            return fault_at
        if scenario is Scenario.GRACEFUL_STOP:
            fault_at = time.monotonic()
            self._process(master).send_signal(signal.SIGTERM)
            return fault_at
        # MASTER_RETURNS: first a crash (not measured), then the master comes back.
        crashed_at = self.crash(master)
        self._await_serving(
            self.backup,
            crashed_at,
            self.convergence_timeout,
            f"{self.backup.name} serving the VIP after {master.name} was killed",
        )
        fault_at = time.monotonic()
        self._start(master)
        return fault_at

    def crash(self, director: Director) -> float:
        """Kill `director` as its host would die: every process at once, VIP gone with them.

        Returns the time of the fault."""
        process = self._process(director)
        remover = self.vip_removers[director.name]
        fault_at = time.monotonic()
        # The whole director dies at once, VRRP child included, as when its host crashes.
        os.killpg(process.pid, signal.SIGKILL)
        # A crashed host's addresses vanish with it; a killed daemon's VIP stays on the
        # interface and would go on answering, so the drill removes it as the crash would,
        # at once: before reaping, so the kernel answers for the VIP no longer than a crash.
        remover.remove()
        process.wait(timeout=10)
        return fault_at

    def _await_new_master(
        self, scenario: Scenario, old: Director, new: Director, fault_at: float
    ) -> float:
        def old_gone() -> bool:
            if scenario is Scenario.GRACEFUL_STOP:
                return not old.running()
            return True

        what = f"{new.name} serving the VIP after {scenario.value} of {old.name}"
        if scenario is Scenario.GRACEFUL_STOP:
            what += f", and {old.name} exited"
        wait_until(
            lambda: self._serves(new, fault_at) and old_gone(),
            self.convergence_timeout,
            what=what,
        )
        return time.monotonic()

    def _measure(
        self, scenario: Scenario, old: Director, new: Director, fault_at: float, window_end: float
    ) -> FailoverMeasures:
        # Let the last probes of the window come back or time out before they are judged.
        remaining = window_end + self.timing.reply_timeout - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        # Reach back far enough for the old master's last advert and the last answered probe.
        lookback = fault_at - 3 * self.election.advert_interval - 1.0
        watcher = self.address_watchers.get(new.name)
        # A returning master preempts: no timer of the new master times that takeover.
        timers = None
        if scenario is not Scenario.MASTER_RETURNS:
            election = self.election
            timers = (election.master_down_interval(new.priority), election.skew_time(new.priority))
        return measure_failover(
            self.capture.adverts_since(lookback),
            self.capture.garps_since(fault_at),
            self.prober.probes_since(lookback),
            fault_at=fault_at,
            window_end=window_end,
            vrid=self.election.vrid,
            vip=self.election.vip.ip,
            old_master=old.address,
            new_master=new.address,
            new_master_mac=new.mac,
            reply_timeout=self.timing.reply_timeout,
            new_master_addresses=() if watcher is None else watcher.events_since(fault_at),
            timers=timers,
            vips=[vip.ip for vip in self.election.vips],
        )

    def _await_serving(
        self, director: Director, since: float, timeout: float, what: str, *alive: Director
    ) -> None:
        wait_until(lambda: self._serves(director, since, *alive), timeout, what=what)

    def _serves(self, director: Director, since: float, *alive: Director) -> bool:
        """`director` advertised since `since`, answers the probes, and alone holds the VIP.

        Raises DrillError at once if `director` or any of `alive` has exited: waiting for the
        deadline would only hide the reason.
        """
        self._require_running(director, *alive)
        adverts = self.capture.adverts_since(since)
        if first_advert(adverts, director.address, self.election.vrid, since) is None:
            return False
        judged_until = time.monotonic() - REPLY_GRACE
        answered_by = [
            probe.answered_by
            for probe in self.prober.probes_since(since)
            if probe.sent_at <= judged_until
        ][-STEADY_PROBES:]
        if len(answered_by) < STEADY_PROBES or set(answered_by) != {director.mac}:
            return False
        if not self._holds_vip(director):
            return False
        others = [d for d in (self.master, self.backup) if d is not director]
        return not any(self._holds_vip(other) for other in others if not other.cable_cut)

    @staticmethod
    def _require_running(*directors: Director) -> None:
        for expected in directors:
            if expected.process is None or expected.process.poll() is not None:
                status = None if expected.process is None else expected.process.returncode
                raise DrillError(f"director {expected.name} is not running (exit status {status})")

    def _holds_vip(self, director: Director) -> bool:
        shown = director.host.ip("-4", "-o", "addr", "show", "dev", self.election.interface)
        return f" {self.election.vip.ip}/" in shown

    def _start(self, director: Director) -> None:
        director.process = self.launcher(director.host, director.config)

    def _stop_hard(self, director: Director) -> None:
        if director.running():
            process = self._process(director)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        director.process = None
        self.vip_removers[director.name].remove()

    def _process(self, director: Director) -> subprocess.Popen[bytes]:
        if director.process is None or director.process.poll() is not None:
            raise DrillError(f"director {director.name} is not running")
        return director.process
