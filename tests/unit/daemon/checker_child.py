"""`python -m lvsha.daemon.checker_process --dry-run` on a channel, as its parent runs it, for
the tests of the process's wiring."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lvsha.daemon.supervisor import CHANNEL_FD_ENV, PARENT_PID_ENV


@dataclass
class CheckerChild:
    process: subprocess.Popen[bytes]
    channel: socket.socket
    """The parent's end: `sendall(encode(message))`."""
    lines: BinaryIO
    """What the child sends, a message per line: `decode(lines.readline())`."""
    log: str = ""
    """Its stderr, once stopped."""

    def stop(self) -> int:
        """SIGTERM, wait, close the channel; returns the exit status, the log in `log`."""
        self.process.send_signal(signal.SIGTERM)
        _, errors = self.process.communicate(timeout=30)
        self.channel.close()
        self.log = errors.decode()
        return self.process.returncode


def start_checker(config: Path, run_dir: Path) -> CheckerChild:
    parent_end, child_end = socket.socketpair()
    env = {**os.environ, CHANNEL_FD_ENV: str(child_end.fileno()), PARENT_PID_ENV: str(os.getpid())}
    command = [sys.executable, "-m", "lvsha.daemon.checker_process", str(config), "--dry-run"]
    process = subprocess.Popen(
        [*command, "--run-dir", str(run_dir)],
        env=env,
        pass_fds=[child_end.fileno()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    child_end.close()
    parent_end.settimeout(60)
    return CheckerChild(process, parent_end, parent_end.makefile("rb"))
