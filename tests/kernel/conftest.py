"""Real-IPVS tests: they run for real only inside the throwaway test VM.

Tests marked ``kernel`` skip when ``ip_vs`` cannot be loaded (this machine's kernel has no
such module), and also on a machine that has it but is not the VM, because every test
flushes the whole IPVS table before and after itself.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import AsyncIPVS

from tests.kernel.ipvsadm import ipvsadm

VM_COMMAND = "python3 tests/vm/run_in_vm.py"
PROC_IP_VS = Path("/proc/net/ip_vs")


@functools.cache
def ip_vs_loaded() -> bool:
    if not PROC_IP_VS.exists() and os.geteuid() == 0:
        subprocess.run(["modprobe", "-q", "ip_vs"], check=False, capture_output=True, timeout=60)
    return PROC_IP_VS.exists()


def inside_test_vm() -> bool:
    # virtme-ng puts its virtme_* parameters on the guest kernel's command line.
    return "virtme_" in Path("/proc/cmdline").read_text()


def skip_reason() -> str | None:
    if not ip_vs_loaded():
        return (
            f"ip_vs not available on this kernel ({platform.release()}); "
            f"run them inside the VM: {VM_COMMAND}"
        )
    if not inside_test_vm():
        return f"not inside the throwaway test VM (these tests flush IPVS); run: {VM_COMMAND}"
    return None


@pytest.fixture(autouse=True)
def _real_ipvs(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("kernel") is None:
        yield
        return
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    ipvsadm("-C")
    yield
    ipvsadm("-C")


@pytest.fixture
async def ipvs() -> AsyncIterator[Any]:
    socket = AsyncIPVS()
    # AsyncIPVS's "async with" does not bind; requests before this raise RuntimeError.
    await socket.setup_endpoint()
    try:
        yield socket
    finally:
        socket.close()
