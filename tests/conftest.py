"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from lvsha.drill.lab import Lab
from tests.netns.director import Director


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


@pytest.fixture
def directors() -> Iterator[list[Director]]:
    """Directors a test started (tests.netns.director.start); each is killed at the end,
    whatever happened, and its log printed (pytest shows it when the test failed)."""
    started: list[Director] = []
    yield started
    for director in started:
        if director.running():
            director.crash()
        print(f"--- log of {director.host.name}:\n{director.log()}")
