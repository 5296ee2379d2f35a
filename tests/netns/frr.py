"""The `frrs` fixture: FRR instances (lvsha.drill.frr) in a test's lab hosts.

The FRR runner itself lives in lvsha/drill/frr.py, where `lvsha drill --topology ecmp` uses it
too; its names are re-exported here for the tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lvsha.drill.frr import DAEMONS, FRR_DIR, RUN_DIR, Frr, FrrError, FrrPool, missing_frr
from lvsha.drill.lab import Lab

__all__ = ["DAEMONS", "FRR_DIR", "RUN_DIR", "Frr", "FrrError", "FrrPool", "frrs", "missing_frr"]


@pytest.fixture
def frrs(lab: Lab) -> Iterator[FrrPool]:
    """Start FRR instances with `frrs.start(host)`; all are stopped before the lab goes.

    Depends on `lab` so that its namespaces outlive the daemons in them. Skips when FRR
    is not installed.
    """
    reason = missing_frr()
    if reason is not None:
        pytest.skip(reason)
    pool = FrrPool()
    try:
        yield pool
    finally:
        pool.close()
