"""Run Debian's keepalived as a VRRP peer inside a lab host, for interop tests.

`KeepalivedInstance` (the drill's, which runs keepalived too) describes one vrrp_instance and
renders keepalived's config for it; `Keepalived` runs the VRRP subsystem in the foreground in
a lab host with only temporary files, timestamps every log line as it arrives (monotonic
clock) so tests can read state transitions and their times, and stops the processes it
started by their PIDs.
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
from pathlib import Path

from lvsha.drill.keepalived import KEEPALIVED, STATE_LINE, KeepalivedInstance
from lvsha.drill.lab import Host

__all__ = ["Keepalived", "KeepalivedInstance", "LogLine", "StateEntry"]

_PIDFILES = (("--pid", "keepalived"), ("--vrrp_pid", "vrrp"), ("--checkers_pid", "checkers"))


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

    def __init__(
        self,
        host: Host,
        instance: KeepalivedInstance | None = None,
        *,
        text: str | None = None,
        config_id: str | None = None,
    ) -> None:
        """Runs `instance`, or a whole keepalived.conf `text` as it is (with `config_id`:
        keepalived's -i, which @ID lines count)."""
        self.config_id = config_id
        if (instance is None) == (text is None):
            raise ValueError("give an instance or a configuration text")
        self.host = host
        self.instance = instance
        self.text = text
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
        text = self.text if self.instance is None else self.instance.config_text()
        assert text is not None
        self.config_path.write_text(text)
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
        if self.config_id is not None:
            command += ["--config-id", self.config_id]
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
            match = STATE_LINE.search(line.text)
            if match and (self.instance is None or match["instance"] == self.instance.name):
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
