"""Configuration: one YAML file per director, validated strictly, with line:col in every error."""

from lvsha.config.files import DEFAULT_MAX_SIZE, read_config_text
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
