"""Read a YAML document into plain data plus a map from each key path to its line and column.

PyYAML's own constructors follow YAML 1.1: `yes`/`no`/`on`/`off` become booleans, `1:30` becomes
90 and a repeated key silently keeps the last value. Configuration mistakes hide behind all three,
so we walk the composed node graph ourselves with YAML 1.2 core-schema scalars and refuse
duplicate keys.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Location:
    """A 1-based line and column in one file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration, where it is, and how to fix it."""

    location: Location
    path: Path
    message: str

    def __str__(self) -> str:
        where = format_path(self.path) or "(top level)"
        return f"{self.location}: {where}: {self.message}"


class ConfigError(Exception):
    """A configuration with one or more problems; `problems` lists all of them in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(
            problems, key=lambda p: (p.location.file, p.location.line, p.location.column)
        )
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class SourceMap:
    """Where each key and value of a loaded document stands in its file."""

    file: str
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)

    def value(self, path: Path) -> Location:
        """The location of the value at `path`, or of its nearest enclosing node."""
        for end in range(len(path), -1, -1):
            loc = self.values.get(path[:end])
            if loc is not None:
                return loc
        return Location(self.file, 1, 1)

    def key(self, path: Path) -> Location:
        """The location of the key that names `path` (the value's own for list items)."""
        return self.keys.get(path) or self.value(path)


# YAML 1.2 core schema, minus the exotic spellings nobody writes in a config file.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class _Loader(yaml.SafeLoader):
    """Composes nodes only: every plain scalar is left for `_scalar` to read, and a scalar
    with an explicit tag (`!!str 5`) is marked so it stays as written."""

    yaml_implicit_resolvers = {}  # noqa: RUF012 (PyYAML's own class-level table)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        explicit = self.peek_event().tag not in (None, "!")  # type: ignore[no-untyped-call]
        node = super().compose_scalar_node(anchor)
        node.explicit_tag = explicit  # type: ignore[attr-defined]
        return node


def _scalar(node: yaml.ScalarNode) -> object:
    text: str = node.value
    if node.style is not None or getattr(node, "explicit_tag", False):
        return text  # quoted, block or explicitly tagged: always a string
    if _NULL.match(text):
        return None
    if _TRUE.match(text):
        return True
    if _FALSE.match(text):
        return False
    if _INT.match(text):
        return int(text, 0) if text.lstrip("+-")[:2] in ("0x", "0o") else int(text)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


class _Walker:
    def __init__(self, file: str) -> None:
        self.map = SourceMap(file)
        self.problems: list[Problem] = []

    def loc(self, node: yaml.Node) -> Location:
        return Location(self.map.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def walk(self, node: yaml.Node, path: Path) -> object:
        self.map.values[path] = self.loc(node)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return _scalar(node)

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.value == "<<"
                and not key_node.style
            ):
                self.problems.append(
                    Problem(
                        self.loc(key_node),
                        path,
                        "YAML merge keys (<<) are not supported: write the keys out",
                    )
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Problem(self.loc(key_node), path, "a key must be a plain string")
                )
                continue
            key = key_node.value  # keys are names: never read them as numbers or booleans
            child = (*path, key)
            if key in out:
                first = self.map.keys[child]
                self.problems.append(
                    Problem(
                        self.loc(key_node),
                        child,
                        f"duplicate key '{key}' (first set at line {first.line}): "
                        "remove one of them",
                    )
                )
                continue
            self.map.keys[child] = self.loc(key_node)
            out[key] = self.walk(value_node, child)
        return out


def load_yaml(text: str, file: str) -> tuple[object, SourceMap, list[Problem]]:
    """Parse one YAML document.

    A syntax error raises ConfigError. Duplicate keys and merge keys are returned as problems
    beside the data (which keeps the first value), so they are reported with everything else.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "syntax error"
        raise ConfigError([Problem(Location(file, line, col), (), f"YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(Location(file, 1, 1), (), f"YAML: {exc}")]) from None
    walker = _Walker(file)
    if root is None:
        return {}, walker.map, []
    data = walker.walk(root, ())
    return data, walker.map, walker.problems
