"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from lvsha.drill.lab import Lab


def _can_build_labs() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh namespace lab with a per-test prefix, always torn down."""
    reason = _can_build_labs()
    if reason is not None:
        pytest.skip(reason)
    built = Lab()
    try:
        yield built
    finally:
        built.close()
