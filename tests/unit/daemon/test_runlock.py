"""One VRRP process per run directory: a successor waits for its predecessor to exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvsha.daemon.runlock import RunLockError, acquire

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
sys.stdin.read()
"""


async def test_a_successor_waits_for_the_holder_to_exit(tmp_path: Path) -> None:
    path = tmp_path / "vrrp.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(RunLockError, match=f"still held by pid {holder.pid}"):
            await acquire(path, timeout=0.2)
        waiting = asyncio.create_task(acquire(path, timeout=10))
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits; the kernel releases its lock
        fd = await asyncio.wait_for(waiting, 10)
        assert path.read_text() == f"{os.getpid()}\n"
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()


async def test_an_unusable_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(RunLockError, match="cannot open"):
        await acquire(tmp_path / "missing" / "vrrp.lock", timeout=0.1)
