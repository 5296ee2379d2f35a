"""Load a configuration file: YAML, then the model, then defaults, then the cross-key rules."""

from __future__ import annotations

from os import PathLike

from pydantic import ValidationError

from lvsha.config.errors import problems_from_validation
from lvsha.config.files import DEFAULT_MAX_SIZE, read_config_text, too_large
from lvsha.config.model import LvshaConfig
from lvsha.config.normalize import normalize
from lvsha.config.semantics import check_semantics
from lvsha.config.source import MAX_PROBLEMS, ConfigError, Location, Problem, load_yaml
from lvsha.gcpause import collector_paused


def _check_text(text: str, file: str, max_size: int) -> None:
    """Refuse text over `max_size` UTF-8 bytes, or text that cannot be written as UTF-8."""
    # the size the file would have (surrogatepass: a lone surrogate is refused below)
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise too_large(file, size, max_size)
    if size != len(text):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            line_start = text.rfind("\n", 0, exc.start) + 1
            line = text.count("\n", 0, exc.start) + 1
            where = Location(file, line, exc.start - line_start + 1)
            raise ConfigError(
                [Problem(where, (), "the text has a lone surrogate character: not valid Unicode")]
            ) from None


def load_text(text: str, file: str = "<string>", max_size: int = DEFAULT_MAX_SIZE) -> LvshaConfig:
    """Validate a configuration given as text; raise ConfigError listing every problem.

    Structural problems (unknown keys, types, ranges) are all reported together; the rules that
    relate keys to each other need a well-formed model, so they run, all together, once the
    structure is sound. Text over `max_size` bytes (as UTF-8) is refused unread.
    """
    _check_text(text, file, max_size)
    # Millions of objects and no cycles (a recursive alias is refused).
    with collector_paused():
        return _load(text, file)


def _load(text: str, file: str) -> LvshaConfig:
    data, source, problems = load_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(source.value(()), (), "the file must be a mapping of sections (global, ...)")]
        )
    parsed: LvshaConfig | None = None
    omitted = 0
    try:
        parsed = LvshaConfig.model_validate(data)
    except ValidationError as exc:
        more, omitted = problems_from_validation(exc, data, source, MAX_PROBLEMS)
        problems += more
    if problems or parsed is None:
        # Errors about a value already reported (a number too long to read) are dropped, so
        # the list cannot be empty here; the fallback keeps a bug from passing as valid.
        fallback = [Problem(source.value(()), (), "invalid configuration")]
        raise ConfigError(problems or fallback, omitted)
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
                for f in findings[:MAX_PROBLEMS]
            ],
            len(findings[MAX_PROBLEMS:]),
        )
    return config


def load_file(path: str | PathLike[str], max_size: int = DEFAULT_MAX_SIZE) -> LvshaConfig:
    """Validate the configuration file at `path`: a regular file of at most `max_size` bytes."""
    return load_text(read_config_text(path, max_size), str(path), max_size)
