"""Run Debian's FRR (zebra, bgpd, bfdd) inside lab hosts: for `lvsha drill --topology ecmp`
and for the BGP announcer's tests (tests/netns/frr.py adds the pytest fixture).

Each `Frr` is one FRR instance in one lab host, kept apart from every other instance on the
machine by an FRR *pathspace* (`-N NAME`): its vty sockets live in /var/run/frr/NAME, its
config, pid and log files in a temporary work directory owned by frr. The daemons daemonize
(`-d`), so they are not children of the test: `stop()` and `kill()` end them by the PIDs in
their pid files, and the `frrs` fixture stops every instance a test started, whatever
happened, after printing the daemons' logs; the drill's `FrrPool` does the same.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lvsha.drill.lab import Host, wait_until

__all__ = ["DAEMONS", "FRR_DIR", "RUN_DIR", "Frr", "FrrError", "FrrPool", "missing_frr"]

FRR_DIR = Path("/usr/lib/frr")
RUN_DIR = Path("/var/run/frr")
VTYSH = "vtysh"
DAEMONS = ("zebra", "bgpd", "bfdd")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class FrrError(RuntimeError):
    """An FRR command failed; the message carries the command and what FRR said."""


def missing_frr() -> str | None:
    """Why FRR instances cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to start FRR daemons"
    for daemon in DAEMONS:
        if not (FRR_DIR / daemon).exists():
            return f"needs FRR: {FRR_DIR / daemon} is absent (Debian package frr)"
    if shutil.which(VTYSH) is None:
        return "needs FRR's vtysh (Debian package frr)"
    return None


class Frr:
    """One FRR instance (`daemons`, zebra first) in `host`, under pathspace `name`.

    A context manager: `with Frr(host, "r") as frr:` starts it and always stops it.
    """

    def __init__(
        self,
        host: Host,
        name: str | None = None,
        daemons: Sequence[str] = DAEMONS,
        start_timeout: float = START_TIMEOUT,
    ):
        if "zebra" not in daemons:
            raise ValueError("FRR's other daemons need zebra")
        self.start_timeout = start_timeout
        self.host = host
        # The namespace name carries the lab's unique prefix: no clash with other labs.
        self.name = name or host.namespace
        self.daemons = ("zebra", *(d for d in daemons if d != "zebra"))
        self.run_dir = RUN_DIR / self.name
        self.workdir: Path | None = None
        self.pids: dict[str, int] = {}
        self._created_run_dir = False

    # -- life cycle --------------------------------------------------------------------

    @property
    def vtysh_argv(self) -> list[str]:
        """The argv prefix that reaches this instance (lvsha's `bgp.vtysh`)."""
        return [VTYSH, "-N", self.name]

    def start(self) -> None:
        """Start the daemons and wait until vtysh gets answers from every one of them."""
        if self.workdir is not None:
            raise FrrError(f"FRR {self.name} already started")
        if self.run_dir.exists():
            raise FrrError(
                f"{self.run_dir} exists: another FRR instance uses pathspace {self.name}"
            )
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lvsha-frr-{self.name}-"))
        try:
            self.run_dir.mkdir(parents=True)
            self._created_run_dir = True
            (self.workdir / "empty.conf").write_text("")
            for path in (self.run_dir, self.workdir, self.workdir / "empty.conf"):
                shutil.chown(path, "frr", "frr")
            for daemon in self.daemons:
                self._start_daemon(daemon)
            wait_until(self._answers, self.start_timeout, interval=0.05, what=f"FRR {self.name} up")
        except BaseException:
            self.stop()
            raise

    def _start_daemon(self, daemon: str) -> None:
        assert self.workdir is not None
        pidfile = self.workdir / f"{daemon}.pid"
        argv = self.host.argv([
            str(FRR_DIR / daemon), "-N", self.name, "-d",
            "-f", str(self.workdir / "empty.conf"), "-i", str(pidfile),
            "-u", "frr", "-g", "frr", "-P", "0",
            "--log", f"file:{self.workdir / daemon}.log",
        ])  # fmt: skip
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.start_timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise FrrError(f"{daemon} -N {self.name} did not daemonize") from exc
        if done.returncode != 0:
            raise FrrError(
                f"{daemon} -N {self.name} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        wait_until(pidfile.exists, self.start_timeout, what=f"{pidfile}")
        wait_until(
            lambda: pidfile.read_text().strip().isdigit(), self.start_timeout, what=f"{pidfile}"
        )
        self.pids[daemon] = int(pidfile.read_text())

    def _answers(self) -> bool:
        if not all((self.run_dir / f"{daemon}.vty").exists() for daemon in self.daemons):
            return False
        done = self._run_vtysh(("show version",))
        return done.returncode == 0 and "FRRouting" in done.stdout

    def _alive(self) -> list[int]:
        """Our daemons' PIDs that still run (a PID now used by another program is not ours)."""
        alive = []
        for pid in self.pids.values():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if state != "Z" and self._names_us(cmdline):
                alive.append(pid)
        return alive

    def _strays(self) -> list[int]:
        """FRR daemons of this pathspace in our namespace that we have no PID file for."""
        done = subprocess.run(
            ["ip", "netns", "pids", self.host.namespace],
            capture_output=True,
            text=True,
            check=False,
        )
        strays = []
        for word in done.stdout.split():
            try:
                cmdline = Path(f"/proc/{word}/cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if cmdline[0].startswith(str(FRR_DIR).encode()) and self._names_us(cmdline):
                strays.append(int(word))
        return strays

    def _names_us(self, cmdline: list[bytes]) -> bool:
        return any(
            flag == b"-N" and value == self.name.encode()
            for flag, value in itertools.pairwise(cmdline)
        )

    def _signal(self, pids: Sequence[int], signum: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL every daemon at once, as a crash would: nothing is withdrawn politely."""
        self._signal(self._alive(), signal.SIGKILL)
        try:
            wait_until(lambda: not self._alive(), STOP_TIMEOUT, what=f"FRR {self.name} killed")
        except TimeoutError as exc:
            raise FrrError(f"FRR {self.name}: {self._alive()} survived SIGKILL") from exc

    def stop(self) -> None:
        """SIGTERM the daemons, SIGKILL what is left after a deadline, remove the directories.

        Safe to call again, and after `kill()`.
        """
        # Safety net: a daemon whose PID file we never read (start-up failed half-way).
        self.pids.update({f"stray-{pid}": pid for pid in self._strays()})
        try:
            self._signal(self._alive(), signal.SIGTERM)
            try:
                wait_until(lambda: not self._alive(), STOP_TIMEOUT, what=f"{self.name} stopped")
            except TimeoutError:
                self.kill()
            self.pids.clear()
        finally:
            if self._created_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self._created_run_dir = False
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def running(self) -> bool:
        return bool(self._alive())

    def logs(self) -> str:
        """Every daemon's log file, each under a header line."""
        if self.workdir is None:
            return ""
        parts = []
        for daemon in self.daemons:
            path = self.workdir / f"{daemon}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)\n"
            parts.append(f"--- {self.name} {daemon}.log\n{text}")
        return "".join(parts)

    def __enter__(self) -> Frr:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- vtysh -------------------------------------------------------------------------

    def _run_vtysh(self, commands: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = [*self.vtysh_argv]
        for command in commands:
            argv += ["-c", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def vtysh(self, *commands: str, check: bool = True) -> str:
        """Run `commands` in one vtysh session; return what it printed on stdout.

        vtysh stops at the first command FRR refuses and exits 1 with FRR's message on
        stdout (stderr only complains that /etc/frr/NAME/vtysh.conf is absent).
        """
        done = self._run_vtysh(commands)
        if check and done.returncode != 0:
            said = (
                done.stdout.strip()
                or "\n".join(
                    line for line in done.stderr.splitlines() if "vtysh.conf" not in line
                ).strip()
            )
            raise FrrError(
                f"vtysh -N {self.name} {list(commands)} exited {done.returncode}: "
                f"{said or 'no answer (is the daemon for this command running?)'}"
            )
        return done.stdout

    def configure(self, *lines: str) -> str:
        """Apply config `lines` (nested modes as vtysh takes them) in `configure terminal`."""
        return self.vtysh("configure terminal", *lines)

    def json(self, command: str) -> Any:
        """The parsed output of `command`, a `show ...`; ` json` is appended when missing."""
        if not command.rstrip().endswith(" json"):
            command = f"{command} json"
        text = self.vtysh(command)
        try:
            return json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise FrrError(f"vtysh -N {self.name} {command!r}: not JSON: {text[:200]}") from exc

    # -- state read back ---------------------------------------------------------------

    def routes(self, prefix: str) -> list[dict[str, Any]]:
        """zebra's entries for exactly `prefix` (every protocol), [] when it has none."""
        found = self.json(f"show ip route {prefix}")
        entries = found.get(prefix, []) if isinstance(found, dict) else []
        return [entry for entry in entries if entry.get("prefix") == prefix]

    def nexthops(self, prefix: str) -> set[str]:
        """The ECMP set: active nexthop addresses of the selected route to `prefix`."""
        return {
            nexthop["ip"]
            for entry in self.routes(prefix)
            if entry.get("selected")
            for nexthop in entry.get("nexthops", [])
            if nexthop.get("active") and "ip" in nexthop
        }

    def kernel_nexthops(self, prefix: str) -> set[str]:
        """The gateways of the host's kernel route to exactly `prefix` (what it forwards by)."""
        text = self.host.ip("-j", "route", "show", "exact", prefix)
        found = set()
        for route in json.loads(text) if text.strip() else []:
            hops = route.get("nexthops", [route])
            found |= {hop["gateway"] for hop in hops if "gateway" in hop}
        return found

    def bgp_paths(self, prefix: str) -> list[dict[str, Any]]:
        """bgpd's paths to `prefix` (`show bgp ipv4 unicast PREFIX json`), [] when none."""
        found = self.json(f"show bgp ipv4 unicast {prefix}")
        paths = found.get("paths", []) if isinstance(found, dict) else []
        return list(paths)

    def communities(self, prefix: str) -> list[list[str]]:
        """Per BGP path to `prefix`, its communities as FRR names them ("gracefulShutdown")."""
        return [list(path.get("community", {}).get("list", [])) for path in self.bgp_paths(prefix)]

    def bgp_state(self, peer: str) -> str:
        """The BGP session's state with `peer` ("Established", "Active", ...), "" if unknown."""
        found = self.json(f"show bgp neighbors {peer}")
        state = found.get(peer, {}).get("bgpState", "") if isinstance(found, dict) else ""
        return str(state)

    def bgp_established(self, peer: str) -> bool:
        return self.bgp_state(peer) == "Established"

    def bfd_up(self, peer: str) -> bool:
        found = self.json("show bfd peers")
        sessions = found if isinstance(found, list) else []
        return any(s.get("peer") == peer and s.get("status") == "up" for s in sessions)

    # -- canned configurations ---------------------------------------------------------

    def router(
        self,
        asn: int,
        router_id: str,
        neighbours: Mapping[str, int],
        bfd: bool,
        *,
        bfd_interval_ms: int = 100,
        multiplier: int = 3,
    ) -> None:
        """Configure the router side: eBGP to each neighbour (address -> AS), ECMP across
        them whatever their AS (multipath-relax), 1 s keepalive / 3 s hold and 1 s connect
        retry for fast tests, and BFD (profile `fast`) on every session when `bfd`. The
        host forwards IPv4 (FRR's `ip forwarding`), as a router must."""
        if bfd:
            self.configure(
                "bfd", "profile fast",
                f"transmit-interval {bfd_interval_ms}", f"receive-interval {bfd_interval_ms}",
                f"detect-multiplier {multiplier}",
            )  # fmt: skip
        self.configure("ip forwarding")
        lines = [
            f"router bgp {asn}",
            f"bgp router-id {router_id}",
            "no bgp ebgp-requires-policy",
            "bgp bestpath as-path multipath-relax",
            "timers bgp 1 3",
        ]
        for address, remote_as in neighbours.items():
            lines += [
                f"neighbor {address} remote-as {remote_as}",
                f"neighbor {address} timers connect 1",
            ]
            if bfd:
                lines.append(f"neighbor {address} bfd profile fast")
        lines += ["address-family ipv4 unicast", "maximum-paths 8"]
        self.configure(*lines)


class FrrPool:
    """The FRR instances one test started; `close()` stops them all, printing their logs."""

    def __init__(self, start_timeout: float = START_TIMEOUT) -> None:
        self.start_timeout = start_timeout
        """Allowance for each daemon to start (a slow VM needs more than the default)."""
        self.started: list[Frr] = []

    def start(self, host: Host, name: str | None = None, daemons: Sequence[str] = DAEMONS) -> Frr:
        frr = Frr(host, name, daemons, self.start_timeout)
        self.started.append(frr)
        frr.start()
        return frr

    def close(self, show_logs: bool = True) -> None:
        """Stop every instance (their logs printed first when `show_logs`); raise FrrError
        naming those that would not stop, after trying them all."""
        failures = []
        for frr in self.started:
            if show_logs:
                print(frr.logs())
            try:
                frr.stop()
            except Exception as exc:  # stop the others, then report
                failures.append(f"{frr.name}: {exc}")
        self.started.clear()
        if failures:
            raise FrrError(f"could not stop FRR: {failures}")
