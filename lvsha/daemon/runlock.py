"""One VRRP process per run directory at a time.

A VRRP process that is still leaving (a master sending priority 0 and holding its VIPs until a
new master is heard) after its parent died must finish before its successor reconciles the
address ledger; otherwise each could take off the other's addresses. An exclusive lock on a
file in the run directory, held for the process's life and released by the kernel when it
dies, orders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class RunLockError(OSError):
    """The lock could not be had in time, or at all."""


async def acquire(path: Path, timeout: float, poll: float = 0.05) -> int:
    """Hold an exclusive lock on `path`; returns its fd (keep it open for as long as the lock
    is needed). Waits up to `timeout` seconds for a previous holder to exit."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RunLockError(exc.errno, f"cannot open {path}: {exc.strerror}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting_logged = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RunLockError(exc.errno, f"cannot lock {path}: {exc.strerror}") from None
        holder = _holder(fd)
        if loop.time() >= deadline:
            os.close(fd)
            raise RunLockError(
                errno.EBUSY,
                f"{path} is still held by {holder} after {timeout:.0f} s: another lvsha uses "
                "this run directory; stop it or choose another --run-dir",
            )
        if not waiting_logged:
            log.info("waiting for %s, an earlier VRRP process, to finish", holder)
            waiting_logged = True
        await asyncio.sleep(poll)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(os.pread(fd, 32, 0).decode().strip())}"
    return "another process"
