"""Run Debian's keepalived as a VRRP peer inside a lab host, for interop tests.

`KeepalivedInstance` describes one vrrp_instance and renders keepalived's config for it;
`Keepalived` runs the VRRP subsystem in the foreground in a lab host with only temporary
files, timestamps every log line as it arrives (monotonic clock) so tests can read state
transitions and their times, and stops the processes it started by their PIDs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from ipaddress import ip_interface
from pathlib import Path
from typing import Literal

from lvsha.drill.lab import Host

KEEPALIVED = "keepalived"
_PIDFILES = (("--pid", "keepalived"), ("--vrrp_pid", "vrrp"), ("--checkers_pid", "checkers"))
_STATE_LINE = re.compile(r"\((?P<instance>[^)]+)\) Entering (?P<state>[A-Z]+) STATE")


@dataclass(frozen=True)
class KeepalivedInstance:
    """One keepalived vrrp_instance; the family follows the virtual addresses, as in keepalived."""

    vrid: int
    priority: int
    virtual_addresses: tuple[str, ...]
    """With prefix length, e.g. "192.0.2.100/24"."""
    advert_interval: float = 1.0
    """Seconds; VRRPv2 takes whole seconds only."""
    version: Literal[2, 3] = 2
    interface: str = "eth0"
    state: Literal["MASTER", "BACKUP"] = "BACKUP"
    nopreempt: bool = False
    auth_pass: str | None = None
    """VRRPv2 simple password (auth_type PASS); keepalived keeps the first 8 characters."""
    unicast_source: str | None = None
    unicast_peers: tuple[str, ...] = ()
    name: str = "lvsha_peer"

    def __post_init__(self) -> None:
        if not self.virtual_addresses:
            raise ValueError("keepalived needs at least one virtual address")
        families = {ip_interface(address).version for address in self.virtual_addresses}
        if len(families) != 1:
            raise ValueError(f"virtual addresses mix families: {self.virtual_addresses}")
        if self.version == 2 and (families != {4} or self.advert_interval % 1):
            raise ValueError("VRRPv2 runs over IPv4 with whole-second intervals")
        if self.auth_pass is not None and self.version != 2:
            raise ValueError("only VRRPv2 has authentication")
        if self.nopreempt and self.state != "BACKUP":
            raise ValueError("keepalived takes nopreempt only with state BACKUP")
        if self.unicast_source is not None and not self.unicast_peers:
            raise ValueError("unicast_source without unicast_peers")

    @property
    def family(self) -> Literal[4, 6]:
        return 4 if ip_interface(self.virtual_addresses[0]).version == 4 else 6

    @property
    def skew_time(self) -> float:
        """RFC 3768 6.1 (v2, seconds) and RFC 5798 6.1 (v3, scaled by the interval)."""
        if self.version == 2:
            return (256 - self.priority) / 256
        return (256 - self.priority) * self.advert_interval / 256

    @property
    def master_down_interval(self) -> float:
        return 3 * self.advert_interval + self.skew_time

    def config_text(self) -> str:
        lines = [
            "global_defs {",
            f"    router_id {self.name}",
            "    log_unknown_vrids",
            "}",
            "",
            f"vrrp_instance {self.name} {{",
            f"    interface {self.interface}",
            f"    state {self.state}",
            f"    virtual_router_id {self.vrid}",
            f"    priority {self.priority}",
            f"    advert_int {self.advert_interval:g}",
            f"    version {self.version}",
        ]
        if self.nopreempt:
            lines.append("    nopreempt")
        if self.auth_pass is not None:
            lines += [
                "    authentication {",
                "        auth_type PASS",
                f"        auth_pass {self.auth_pass}",
                "    }",
            ]
        if self.unicast_source is not None:
            lines.append(f"    unicast_src_ip {self.unicast_source}")
        if self.unicast_peers:
            lines += ["    unicast_peer {", *(f"        {p}" for p in self.unicast_peers), "    }"]
        lines += [
            "    virtual_ipaddress {",
            *(f"        {address}" for address in self.virtual_addresses),
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LogLine:
    at: float
    """time.monotonic() when the line was read."""
    text: str


@dataclass(frozen=True)
class StateEntry:
    at: float
    state: str
    """MASTER, BACKUP or FAULT, as keepalived logs "Entering ... STATE"."""


class Keepalived:
    """keepalived's VRRP subsystem running in `host` for `instance`; a context manager."""

    def __init__(self, host: Host, instance: KeepalivedInstance) -> None:
        self.host = host
        self.instance = instance
        self._workdir = Path(tempfile.mkdtemp(prefix="lvsha-keepalived-"))
        self.config_path = self._workdir / "keepalived.conf"
        self._pidfiles = {flag: self._workdir / f"{name}.pid" for flag, name in _PIDFILES}
        self._lines: list[LogLine] = []
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("keepalived already started")
        self.config_path.write_text(self.instance.config_text())
        command = [
            KEEPALIVED,
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--dont-respawn",
            "--use-file",
            str(self.config_path),
        ]
        for flag, path in self._pidfiles.items():
            command += [flag, str(path)]
        # keepalived logs to stderr unbuffered, so each line's arrival time is when it was said.
        self._process = self.host.popen(
            *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._reader = threading.Thread(
            target=self._read_log, name=f"keepalived-log-{self.host.name}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("keepalived not started")
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> list[LogLine]:
        with self._lock:
            return list(self._lines)

    def log_text(self) -> str:
        return "\n".join(line.text for line in self.log())

    def transitions(self) -> list[StateEntry]:
        entries = []
        for line in self.log():
            match = _STATE_LINE.search(line.text)
            if match and match["instance"] == self.instance.name:
                entries.append(StateEntry(line.at, match["state"]))
        return entries

    def state(self) -> str | None:
        """The state keepalived last logged entering, None before the first."""
        entries = self.transitions()
        return entries[-1].state if entries else None

    def find_line(self, pattern: str, since: float = 0.0) -> LogLine | None:
        """The first line at or after `since` matching the regular expression `pattern`."""
        compiled = re.compile(pattern)
        for line in self.log():
            if line.at >= since and compiled.search(line.text):
                return line
        return None

    def entered(self, state: str, since: float = 0.0) -> StateEntry | None:
        """The first entry into `state` at or after `since`."""
        for entry in self.transitions():
            if entry.at >= since and entry.state == state:
                return entry
        return None

    def stop(self) -> None:
        """SIGTERM keepalived (SIGKILL after 10 s), then its VRRP child by the PID it wrote."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._kill_vrrp_child()
        if self._reader is not None:
            self._reader.join(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def crash(self) -> None:
        """Die at once, as a crashed host: SIGKILL the VRRP child and the parent, no priority 0
        advert. The VIPs stay on the interface, as they would on a hung host."""
        self._kill_vrrp_child()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Keepalived:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            line = LogLine(time.monotonic(), raw.decode(errors="replace").rstrip("\n"))
            with self._lock:
                self._lines.append(line)

    def _kill_vrrp_child(self) -> None:
        # The child has PR_SET_PDEATHSIG, but this closes the window where it outlives a
        # parent that was killed before the child set it.
        try:
            pid = int(self._pidfiles["--vrrp_pid"].read_text().strip())
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        # Only a process running our own config file is ours.
        if str(self.config_path).encode() in command_line.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
