"""Configuration: one YAML file per director, validated strictly, with line:col in every error."""

from lvsha.config.loader import load_file, load_text
from lvsha.config.model import LvshaConfig
from lvsha.config.source import ConfigError, Problem

__all__ = ["ConfigError", "LvshaConfig", "Problem", "load_file", "load_text"]
