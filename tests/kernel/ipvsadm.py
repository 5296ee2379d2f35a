"""ipvsadm as the independent reader of the kernel's IPVS table (inside the test VM only)."""

from __future__ import annotations

import subprocess


def ipvsadm(*args: str) -> str:
    return subprocess.run(
        ["ipvsadm", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def ipvsadm_rules() -> list[str]:
    """The table as ``ipvsadm -S -n`` rules, one per line."""
    return ipvsadm("-S", "-n").splitlines()
