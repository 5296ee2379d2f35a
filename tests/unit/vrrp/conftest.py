"""Fixtures of the VRRP unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.vrrp.engine_harness import Harness


@pytest.fixture
async def lab() -> AsyncIterator[Harness]:
    """A harness whose engine is stopped at the end of the test."""
    harness = Harness()
    yield harness
    await harness.stop()
