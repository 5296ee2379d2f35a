"""Read a YAML document into plain data plus a map from each key path to its line and column.

PyYAML's own constructors follow YAML 1.1: `yes`/`no`/`on`/`off` become booleans, `1:30` becomes
90 and a repeated key silently keeps the last value. Configuration mistakes hide behind all three,
so we build the data ourselves with YAML 1.2 core-schema scalars and refuse duplicate keys.

We build it straight from the parser's event stream, in one loop with an explicit stack, rather
than from PyYAML's composed node graph: the composer recurses (a deep file raises RecursionError,
a self-referencing alias loops) and expands nothing lazily (an alias bomb exhausts memory). The
loop counts every node as aliases will expand it and the nesting depth as they will nest it, and
stops at the first node over a limit, with its line and column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DEPTH = 64
"""Nesting limit, counting collections (mappings and sequences) inside one another, aliases
expanded. lvsha's deepest setting (a check's status list) sits 8 collections deep."""

MAX_NODES = 500_000
"""Limit on YAML nodes (keys, values, items), each alias counted as a full copy of what it
names. A director with 10,000 real servers, each with a health check, is about 150,000 nodes;
validating the full budget takes about a second here (bench/config_input.py)."""

MAX_NUMBER_LENGTH = 40
"""Longest plain number accepted: every number lvsha takes fits in 10 digits (2^32 - 1), and
Python refuses to convert decimal integers past 4,300 digits."""

# libyaml's parser when PyYAML was built with it: about 30x faster than the pure-Python one
# (which takes tens of seconds on a 16 MiB file).
_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BYTE_OFFSETS = _PARSER is not yaml.SafeLoader  # libyaml reports reader errors in bytes


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
    """Where each key and value of a loaded document stands in its file.

    A path below an alias is looked up below the anchored node the alias names, so a mistake in
    shared content points at the one place to fix it.
    """

    file: str
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)
    aliases: dict[Path, Path] = field(default_factory=dict)

    def _through_aliases(self, path: Path) -> Path:
        # Anchors precede their aliases, so each rewrite moves to earlier text: this ends.
        rewritten = True
        while rewritten and self.aliases:
            rewritten = False
            for end in range(len(path) - 1, 0, -1):
                target = self.aliases.get(path[:end])
                if target is not None:
                    path = target + path[end:]
                    rewritten = True
                    break
        return path

    def value(self, path: Path) -> Location:
        """The location of the value at `path`, or of its nearest enclosing node."""
        path = self._through_aliases(path)
        for end in range(len(path), -1, -1):
            loc = self.values.get(path[:end])
            if loc is not None:
                return loc
        return Location(self.file, 1, 1)

    def key(self, path: Path) -> Location:
        """The location of the key that names `path` (the value's own for list items)."""
        return self.keys.get(self._through_aliases(path)) or self.value(path)


# YAML 1.2 core schema, minus the exotic spellings nobody writes in a config file.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class OversizedNumber:
    """Stands in the data for a number too long to convert; already reported as a problem, so
    validation errors about it are dropped."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __repr__(self) -> str:
        return f"<a number of {self.length} characters>"


def _scalar(text: str, plain: bool) -> object:
    if not plain:
        return text  # quoted, block or explicitly tagged: always a string
    if _NULL.match(text):
        return None
    if _TRUE.match(text):
        return True
    if _FALSE.match(text):
        return False
    if _INT.match(text):
        if len(text) > MAX_NUMBER_LENGTH:
            return OversizedNumber(len(text))
        return int(text, 0) if text.lstrip("+-")[:2] in ("0x", "0o") else int(text)
    if _FLOAT.match(text):
        if len(text) > MAX_NUMBER_LENGTH:
            return OversizedNumber(len(text))
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


_NO_KEY = object()
"""A mapping's pending key when the value that follows must be read but not kept."""


@dataclass(frozen=True, slots=True)
class _Anchor:
    value: object
    path: Path | None  # None when the anchored node was read but not kept (e.g. a duplicate key)
    nodes: int
    height: int


@dataclass(slots=True)
class _Frame:
    """A mapping or sequence being filled."""

    container: dict[str, object] | list[object]
    path: Path
    kept: bool  # its entries go into the data and the source map
    is_key: bool  # a collection used as a mapping key: read, reported, dropped
    anchor: str | None
    nodes_before: int
    key: object = None  # mappings: the key waiting for its value (None: expecting a key)
    height: int = 0


class _Composer:
    def __init__(self, file: str) -> None:
        self.map = SourceMap(file)
        self.problems: list[Problem] = []
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.anchor_lines: dict[str, int] = {}
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.root: object = None

    def loc(self, event: yaml.Event) -> Location:
        mark = event.start_mark
        if mark is None:  # the parsers always set it; the stubs allow None
            return Location(self.map.file, 1, 1)
        return Location(self.map.file, mark.line + 1, mark.column + 1)

    def fail(self, event: yaml.Event, message: str, path: Path = ()) -> ConfigError:
        return ConfigError([Problem(self.loc(event), path, message)])

    def count(self, event: yaml.Event, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise self.fail(
                event,
                f"the document has more than {MAX_NODES:,} YAML nodes (keys, values and list "
                "items, each alias counted as a copy of what it names): a director with "
                "10,000 real servers has about 150,000; if aliases multiply here, write the "
                "content out, or split the configuration",
            )

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.ScalarEvent):
            self.scalar(event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self.start(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self.end()
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)

    def place(self, event: yaml.NodeEvent) -> tuple[Path | None, bool]:
        """Where the node that `event` starts goes: its path (None for a mapping key), and
        whether it is kept."""
        if not self.stack:
            return (), True
        parent = self.stack[-1]
        if isinstance(parent.container, list):
            return (*parent.path, len(parent.container)), parent.kept
        if parent.key is None:
            return None, parent.kept
        if parent.key is _NO_KEY:
            return (*parent.path, "?"), False
        assert isinstance(parent.key, str)
        return (*parent.path, parent.key), parent.kept

    def attach(self, path: Path, kept: bool, value: object, event: yaml.Event) -> None:
        if kept:
            self.map.values[path] = self.loc(event)
        if not self.stack:
            self.root = value
            return
        parent = self.stack[-1]
        if isinstance(parent.container, list):
            parent.container.append(value)
        else:
            # Built even where not kept: an anchor there may still be named by an alias.
            if isinstance(parent.key, str):
                parent.container[parent.key] = value
            parent.key = None

    def child_height(self, height: int) -> None:
        if self.stack:
            frame = self.stack[-1]
            frame.height = max(frame.height, height)

    def remember(self, anchor: str | None, event: yaml.Event) -> None:
        if anchor is None:
            return
        if anchor in self.anchor_lines:
            raise self.fail(
                event,
                f"YAML: anchor '&{anchor}' is defined twice (first at line "
                f"{self.anchor_lines[anchor]}): give each anchor its own name",
            )
        self.anchor_lines[anchor] = self.loc(event).line

    def key(self, event: yaml.ScalarEvent, parent: _Frame) -> None:
        text: str = event.value
        path = (*parent.path, text)
        if text == "<<" and not event.style:
            self.problems.append(
                Problem(
                    self.loc(event),
                    parent.path,
                    "YAML merge keys (<<) are not supported: write the keys out",
                )
            )
            parent.key = _NO_KEY
        elif isinstance(parent.container, dict) and text in parent.container:
            first = self.map.keys.get(path)
            where = f" (first set at line {first.line})" if first else ""
            self.problems.append(
                Problem(
                    self.loc(event),
                    path,
                    f"duplicate key '{text}'{where}: remove one of them",
                )
            )
            parent.key = _NO_KEY
        else:
            # keys are names: never read them as numbers or booleans
            if parent.kept:
                self.map.keys[path] = self.loc(event)
            parent.key = text

    def bad_key(self, event: yaml.Event, parent: _Frame, what: str) -> None:
        self.problems.append(Problem(self.loc(event), parent.path, what))
        parent.key = _NO_KEY

    def scalar(self, event: yaml.ScalarEvent) -> None:
        self.count(event, 1)
        self.remember(event.anchor, event)
        path, kept = self.place(event)
        value: object = event.value
        if path is None:
            self.key(event, self.stack[-1])
        else:
            explicit = event.tag not in (None, "!")
            value = _scalar(event.value, not event.style and not explicit)
            if isinstance(value, OversizedNumber):
                self.problems.append(
                    Problem(
                        self.loc(event),
                        path,
                        f"a number written with {value.length} characters: no setting takes "
                        f"one of more than {MAX_NUMBER_LENGTH} (the largest, 4294967295, "
                        "has 10 digits)",
                    )
                )
            self.attach(path, kept, value, event)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, path if kept else None, 1, 0)

    def alias(self, event: yaml.AliasEvent) -> None:
        name = event.anchor or ""
        if name in self.open_anchors:
            raise self.fail(
                event,
                f"YAML: alias '*{name}' is inside the node it names: the document would be "
                "infinite; write the content out",
            )
        anchor = self.anchors.get(name)
        if anchor is None:
            raise self.fail(event, f"YAML: found undefined alias '*{name}'")
        if len(self.stack) + anchor.height > MAX_DEPTH:
            raise self._too_deep(event)
        self.count(event, anchor.nodes)
        path, kept = self.place(event)
        if path is None:
            self.bad_key(event, self.stack[-1], "a key must be a plain string, not an alias")
            return
        if kept and anchor.path is not None:
            self.map.aliases[path] = anchor.path
        self.attach(path, kept, anchor.value, event)
        self.child_height(anchor.height)

    def _too_deep(self, event: yaml.Event) -> ConfigError:
        return self.fail(
            event,
            f"YAML nesting deeper than {MAX_DEPTH} levels (mappings and lists inside one "
            "another, aliases expanded): lvsha's settings nest at most 8 deep; flatten the file",
        )

    def start(self, event: yaml.CollectionStartEvent) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise self._too_deep(event)
        self.count(event, 1)
        self.remember(event.anchor, event)
        path, kept = self.place(event)
        container: dict[str, object] | list[object] = (
            {} if isinstance(event, yaml.MappingStartEvent) else []
        )
        is_key = path is None
        if path is None:
            self.bad_key(event, self.stack[-1], "a key must be a plain string")
            path, kept = (*self.stack[-1].path, "?"), False
        else:
            self.attach(path, kept, container, event)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(container, path, kept, is_key, event.anchor, self.nodes - 1))

    def end(self) -> None:
        frame = self.stack.pop()
        height = frame.height + 1
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = _Anchor(
                frame.container,
                frame.path if frame.kept and not frame.is_key else None,
                self.nodes - frame.nodes_before,
                height,
            )
        self.child_height(height)


def _reader_location(file: str, text: str, position: int) -> Location:
    if _BYTE_OFFSETS:
        position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
    line_start = text.rfind("\n", 0, position) + 1
    return Location(file, text.count("\n", 0, position) + 1, position - line_start + 1)


def load_yaml(text: str, file: str) -> tuple[object, SourceMap, list[Problem]]:
    """Parse one YAML document.

    A syntax error, a second document, or a limit passed (`MAX_DEPTH`, `MAX_NODES`, a
    recursive alias) raises ConfigError. Duplicate keys, merge keys and numbers too long to
    read are returned as problems beside the data (which keeps the first value), so they are
    reported with everything else.
    """
    composer = _Composer(file)
    documents = 0
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise composer.fail(
                        event,
                        "YAML: a second document ('---'): the file must hold one document",
                    )
            else:
                composer.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "syntax error"
        raise ConfigError([Problem(Location(file, line, col), (), f"YAML: {what}")]) from None
    except yaml.reader.ReaderError as exc:
        location = _reader_location(file, text, exc.position)
        char = exc.character
        code = f"U+{char:04X}" if isinstance(char, int) else f"U+{ord(char[:1] or '?'):04X}"
        what = f"character {code} is not allowed here: {exc.reason}"
        raise ConfigError([Problem(location, (), f"YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(Location(file, 1, 1), (), f"YAML: {exc}")]) from None
    if documents == 0:
        return {}, composer.map, composer.problems
    return composer.root, composer.map, composer.problems
