"""Size limits of a configuration file, in a module of their own: the command line shows them in
its help without importing the YAML reader or the models."""

from __future__ import annotations

MIB = 1024 * 1024
DEFAULT_MAX_SIZE = 16 * MIB
"""Large enough for tens of thousands of real servers (about 40 bytes of YAML each at the
least); a larger file is far more likely a mistake (a log, a dump) than a configuration."""


def describe_size(size: int) -> str:
    for unit, scale in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"
