"""What every lvsha process does at start: load the configuration (or log why not), and, for a
child, make sure it never outlives its parent.

The parent validates the file once and keeps the result; a child reads the parent's snapshot of
the model it validated (pickled), from a sealed memory file the parent passes down, never the
file on disk. A file edited (or broken) on disk therefore changes nothing until a reload, a
child restarted after a crash runs the configuration its parent runs, and a child starts
without parsing YAML or validating anything (the VRRP child without even building the models'
validators).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import logging
import math
import os
import pickle
import signal
from typing import TYPE_CHECKING

from lvsha.config.model import LvshaConfig
from lvsha.daemon.supervisor import PARENT_PID_ENV

if TYPE_CHECKING:
    from lvsha.config.source import ConfigError

_PR_SET_PDEATHSIG = 1


def load_or_log(path: str, log: logging.Logger, consequence: str) -> LvshaConfig | None:
    """The validated configuration, or None after logging every problem and then
    `consequence` (what a bad file means here, e.g. "not starting")."""
    # YAML and validation only for a file given by hand: a child started by the parent reads
    # the model it validated.
    from lvsha.config.loader import load_file  # noqa: PLC0415
    from lvsha.config.source import ConfigError  # noqa: PLC0415

    try:
        return load_file(path)
    except ConfigError as exc:
        log_problems(exc, log, consequence)
        return None


def log_problems(error: ConfigError, log: logging.Logger, consequence: str) -> None:
    for problem in error.problems:
        log.error("%s", problem)
    log.error("%s: %d configuration error(s)", consequence, len(error.problems))


def config_snapshot(config: LvshaConfig, name: str) -> int:
    """A sealed memory file holding `config`, pickled, for children to inherit
    (`load_snapshot`); `name` is the file it came from."""
    return snapshot_fd(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL), name)


def snapshot_fd(data: bytes, name: str) -> int:
    """A sealed memory file holding `data` (see `read_snapshot`)."""
    fd = os.memfd_create(f"lvsha-config:{os.path.basename(name)}", os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def read_snapshot(fd: int) -> bytes:
    """The bytes of the parent's snapshot; pread, so children sharing it never race on an
    offset."""
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def load_snapshot(fd: int, name: str, log: logging.Logger) -> LvshaConfig | None:
    """The configuration the parent validated (`name` is the file it came from, for messages)."""
    try:
        data = read_snapshot(fd)
    except OSError as exc:
        log.error("cannot read the configuration snapshot from the parent (fd %d): %s", fd, exc)
        return None
    finally:
        os.close(fd)
    try:
        config = pickle.loads(data)  # the parent is trusted: it started us
    except Exception as exc:  # whatever unpickling raises, this is no configuration
        log.error("the configuration snapshot of %s does not unpickle: %s", name, exc)
        return None
    if not isinstance(config, LvshaConfig):
        log.error("the configuration snapshot of %s is a %s", name, type(config).__name__)
        return None
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """A child's configuration options: the parent's snapshot, or a file when run by hand."""
    parser.add_argument("config", nargs="?", help="a configuration file, when run by hand")
    parser.add_argument("--config-fd", type=int, help="the parent's configuration snapshot")
    parser.add_argument("--config-name", default="<snapshot>", help="its file, for messages")


def child_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, log: logging.Logger
) -> LvshaConfig | None:
    """The configuration `add_config_arguments` asked for; None after logging why not."""
    if args.config_fd is not None:
        return load_snapshot(args.config_fd, args.config_name, log)
    if args.config is None:
        parser.error("give a configuration file or --config-fd")
    return load_or_log(args.config, log, "not starting")


def stop_within(seconds: float) -> None:
    """From now on the process has `seconds` to exit, or the kernel ends it (SIGALRM, left at
    its default action). Armed when a stop begins: a child whose parent died has nobody else
    to kill it if its stop hangs (a blocked system call, a wedged script)."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, math.ceil(seconds)))


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
