"""Configuration: one YAML file per director, validated strictly, with line:col in every error.

The names below are loaded on first use (PEP 562): importing one submodule, e.g. the models
for a child process or the size limits for the command line's help, does not build the YAML
reader, the error formatting and every model with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lvsha.config.files import read_config_text
    from lvsha.config.limits import DEFAULT_MAX_SIZE
    from lvsha.config.loader import load_file, load_text
    from lvsha.config.model import LvshaConfig
    from lvsha.config.source import ConfigError, Problem

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ConfigError",
    "LvshaConfig",
    "Problem",
    "load_file",
    "load_text",
    "read_config_text",
]

_HOMES = {
    "DEFAULT_MAX_SIZE": "lvsha.config.limits",
    "ConfigError": "lvsha.config.source",
    "LvshaConfig": "lvsha.config.model",
    "Problem": "lvsha.config.source",
    "load_file": "lvsha.config.loader",
    "load_text": "lvsha.config.loader",
    "read_config_text": "lvsha.config.files",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
