"""Pausing the cyclic garbage collector around work that builds many objects and no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """No cyclic collection inside: loading a configuration, planning or applying a reload
    allocates up to millions of objects and makes no reference cycles, and the collector's
    passes over them took a third to a half of the time, freeing nothing. With `freeze`, what
    was built is moved out of the collector's way afterwards (it lives as long as the
    process, or until reference counting frees it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()
