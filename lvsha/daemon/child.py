"""What every lvsha process does at start: load the file (or log why not), and, for a child,
make sure it never outlives its parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal

from lvsha.config import ConfigError, LvshaConfig, load_file
from lvsha.daemon.supervisor import PARENT_PID_ENV

_PR_SET_PDEATHSIG = 1


def load_or_log(path: str, log: logging.Logger, consequence: str) -> LvshaConfig | None:
    """The validated configuration, or None after logging every problem and then
    `consequence` (what a bad file means here, e.g. "not starting")."""
    try:
        return load_file(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("%s: %d configuration error(s)", consequence, len(exc.problems))
        return None


def die_with_parent(log: logging.Logger) -> None:
    """Ask for SIGTERM when the parent dies, so an orphaned child releases what it holds
    (VIPs, the IPVS table) and exits instead of competing with the one a restarted parent
    starts."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    parent = os.environ.get(PARENT_PID_ENV)
    if parent is not None and os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before we asked
