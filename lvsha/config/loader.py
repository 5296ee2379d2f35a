"""Load a configuration file: YAML, then the model, then defaults, then the cross-key rules."""

from __future__ import annotations

from pathlib import Path as FsPath

from pydantic import ValidationError

from lvsha.config.errors import problems_from_validation
from lvsha.config.model import LvshaConfig
from lvsha.config.normalize import normalize
from lvsha.config.semantics import check_semantics
from lvsha.config.source import ConfigError, Location, Problem, load_yaml


def load_text(text: str, file: str = "<string>") -> LvshaConfig:
    """Validate a configuration given as text; raise ConfigError listing every problem.

    Structural problems (unknown keys, types, ranges) are all reported together; the rules that
    relate keys to each other need a well-formed model, so they run, all together, once the
    structure is sound.
    """
    data, source, problems = load_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(source.value(()), (), "the file must be a mapping of sections (global, ...)")]
        )
    try:
        parsed = LvshaConfig.model_validate(data)
    except ValidationError as exc:
        problems += problems_from_validation(exc, data, source)
    if problems:
        raise ConfigError(problems)
    explicit_family = ["family" in vs.model_fields_set for vs in parsed.virtual_servers]
    config = normalize(parsed)
    findings = check_semantics(config, explicit_family)
    if findings:
        raise ConfigError(
            [
                Problem(
                    source.key(f.path) if f.at == "key" else source.value(f.path),
                    f.path,
                    f.message,
                )
                for f in findings
            ]
        )
    return config


def load_file(path: str | FsPath) -> LvshaConfig:
    name = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [Problem(Location(name, 1, 1), (), f"cannot read the file: {reason}")]
        ) from None
    return load_text(text, name)
