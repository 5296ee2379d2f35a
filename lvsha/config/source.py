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
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DEPTH = 64
"""Nesting limit, counting collections (mappings and sequences) inside one another, aliases
expanded. lvsha's deepest setting (a check's status list) sits 8 collections deep."""

MAX_NODES = 200_000
"""Limit on YAML nodes (keys, values, items), each alias counted as a full copy of what it
names. A director with 10,000 real servers, each with a health check, is about 140,000 nodes.
The costliest file at the limit (one validation error per real server) takes about 1 s of CPU
to check here (bench/config_input.py), leaving room under the 2 s that issue 9 allows."""

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


MAX_PROBLEMS = 100
"""Problems listed at most: past a hundred, the rest are the same mistake repeated, and
building each message costs time (a generated file can hold a hundred thousand)."""


class ConfigError(Exception):
    """A configuration with one or more problems; `problems` lists them in file order.

    Past `MAX_PROBLEMS`, the first ones are listed, followed by one that counts the rest
    (`omitted`, added to whatever the caller already left out); `total` counts them all.
    """

    def __init__(self, problems: list[Problem], omitted: int = 0) -> None:
        ordered = sorted(
            problems, key=lambda p: (p.location.file, p.location.line, p.location.column)
        )
        listed = ordered[:MAX_PROBLEMS]
        self.omitted = omitted + len(ordered) - len(listed)
        self.total = len(listed) + self.omitted
        if self.omitted and listed:
            last = listed[-1]
            listed.append(
                Problem(
                    last.location,
                    (),
                    f"and {self.omitted} more problems not listed (only the first "
                    f"{MAX_PROBLEMS} are): fix these, then check again",
                )
            )
        self.problems = listed
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class SourceMap:
    """Where each key and value of a loaded document stands in its file.

    Positions are kept beside each mapping and list of the data, and a path is found by walking
    the data itself: a path through an alias walks into the anchored content, so a mistake in
    shared content points at the one place to fix it.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.root: object = None
        self.root_mark: Any = None
        # id(container) -> (container, its positions): the container is held so its id stays
        # unique; positions are (key mark, value mark) per key, or a value mark per item.
        self.tables: dict[int, tuple[object, dict[str, tuple[Any, Any]] | list[Any]]] = {}

    def at_mark(self, mark: Any) -> Location:
        if mark is None:
            return Location(self.file, 1, 1)
        return Location(self.file, mark.line + 1, mark.column + 1)

    def _walk(self, path: Path) -> tuple[bool, Any, Any]:
        """Whether all of `path` was found, and the key and value marks of the deepest part
        found (the key mark is None for list items and the root)."""
        node, key_mark, value_mark = self.root, None, self.root_mark
        for part in path:
            entry = self.tables.get(id(node))
            if entry is None:
                return False, key_mark, value_mark
            marks = entry[1]
            if isinstance(marks, dict) and isinstance(part, str) and part in marks:
                key_mark, value_mark = marks[part]
                node = node[part]  # type: ignore[index]
            elif isinstance(marks, list) and isinstance(part, int) and 0 <= part < len(marks):
                key_mark, value_mark = None, marks[part]
                node = node[part]  # type: ignore[index]
            else:
                return False, key_mark, value_mark
        return True, key_mark, value_mark

    def value(self, path: Path) -> Location:
        """The location of the value at `path`, or of its nearest enclosing node."""
        return self.at_mark(self._walk(path)[2])

    def key(self, path: Path) -> Location:
        """The location of the key that names `path` (the value's own for list items)."""
        found, key_mark, value_mark = self._walk(path)
        return self.at_mark(key_mark if found and key_mark is not None else value_mark)


# YAML 1.2 core schema, minus the exotic spellings nobody writes in a config file.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_NUMBER_START = frozenset("+-.0123456789")
_WORD_START = frozenset(["", "~", "n", "N", "t", "T", "f", "F"])  # null, true, false


class OversizedNumber:
    """Stands in the data for a number too long to convert; already reported as a problem, so
    validation errors about it are dropped."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __repr__(self) -> str:
        return f"<a number of {self.length} characters>"


def _plain_scalar(text: str) -> object:
    first = text[:1]
    if first not in _NUMBER_START:
        # names and addresses are most values: try only the patterns that could match
        if first not in _WORD_START:
            return text
        if _NULL.match(text):
            return None
        if _TRUE.match(text):
            return True
        if _FALSE.match(text):
            return False
        return text
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
    nodes: int  # as expanded, the anchored node included
    height: int  # collections nested in it, itself included


@dataclass(slots=True)
class _Frame:
    """A mapping or sequence being filled."""

    container: dict[str, object] | list[object]
    marks: dict[str, tuple[Any, Any]] | list[Any]
    slot: str | int | None  # its key or index in its parent; None for the root
    anchor: str | None
    nodes_before: int
    key: object = None  # mappings: the key waiting for its value; None: a key comes next
    key_mark: Any = None
    height: int = 0


class _Composer:
    def __init__(self, file: str) -> None:
        self.map = SourceMap(file)
        self.problems: list[Problem] = []
        self.stack: list[_Frame] = []
        self.top: _Frame | None = None
        self.anchors: dict[str, _Anchor] = {}
        self.anchor_lines: dict[str, int] = {}
        self.open_anchors: set[str] = set()
        self.nodes = 0

    def loc(self, event: yaml.Event) -> Location:
        return self.map.at_mark(event.start_mark)

    def problem(self, event: yaml.Event, path: Path, message: str) -> None:
        self.problems.append(Problem(self.loc(event), path, message))

    def fail(self, event: yaml.Event, message: str, path: Path = ()) -> ConfigError:
        return ConfigError([Problem(self.loc(event), path, message)])

    def too_many(self, event: yaml.Event) -> ConfigError:
        return self.fail(
            event,
            f"the document has more than {MAX_NODES:,} YAML nodes (keys, values and list "
            "items, each alias counted as a copy of what it names): a director with 10,000 "
            "real servers has about 140,000; if aliases multiply content here, write it out",
        )

    def too_deep(self, event: yaml.Event) -> ConfigError:
        return self.fail(
            event,
            f"YAML nesting deeper than {MAX_DEPTH} levels (mappings and lists inside one "
            "another, aliases expanded): lvsha's settings nest at most 8 deep; flatten the file",
        )

    def remember(self, anchor: str, event: yaml.Event) -> None:
        if anchor in self.anchor_lines:
            raise self.fail(
                event,
                f"YAML: anchor '&{anchor}' is defined twice (first at line "
                f"{self.anchor_lines[anchor]}): give each anchor its own name",
            )
        self.anchor_lines[anchor] = self.loc(event).line

    def path(self) -> Path:
        """The path of the collection being filled (built only for a problem: it is long)."""
        return tuple(f.slot for f in self.stack if f.slot is not None)

    def next_slot(self, frame: _Frame | None) -> str | int | None:
        """The key or index of the node about to be attached to `frame`."""
        if frame is None:
            return None
        if isinstance(frame.container, list):
            return len(frame.container)
        return frame.key if isinstance(frame.key, str) else "?"

    def next_path(self, frame: _Frame | None) -> Path:
        slot = self.next_slot(frame)
        return self.path() if slot is None else (*self.path(), slot)

    def attach(self, frame: _Frame | None, value: object, mark: Any) -> None:
        if frame is None:
            self.map.root, self.map.root_mark = value, mark
        elif isinstance(frame.container, list):
            frame.container.append(value)
            frame.marks.append(mark)  # type: ignore[union-attr]
        else:
            key = frame.key
            if isinstance(key, str):
                frame.container[key] = value
                frame.marks[key] = (frame.key_mark, mark)  # type: ignore[call-overload]
            frame.key = None

    def key(self, event: yaml.ScalarEvent, frame: _Frame, text: str) -> None:
        if text == "<<" and not event.style:
            self.problem(
                event, self.path(), "YAML merge keys (<<) are not supported: write the keys out"
            )
            frame.key = _NO_KEY
        elif text in frame.container:
            first = self.map.at_mark(frame.marks[text][0])  # type: ignore[call-overload]
            self.problem(
                event,
                (*self.path(), text),
                f"duplicate key '{text}' (first set at line {first.line}): remove one of them",
            )
            frame.key = _NO_KEY
        else:
            # keys are names: never read them as numbers or booleans
            frame.key, frame.key_mark = text, event.start_mark

    def scalar(self, event: yaml.ScalarEvent) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.too_many(event)
        anchor = event.anchor
        if anchor is not None:
            self.remember(anchor, event)
        frame = self.top
        text: str = event.value
        value: object = text
        if frame is not None and frame.key is None and isinstance(frame.container, dict):
            self.key(event, frame, text)
        else:
            tag = event.tag
            if not event.style and (tag is None or tag == "!"):  # plain and untagged
                value = _plain_scalar(text)
                if isinstance(value, OversizedNumber):
                    self.problem(
                        event,
                        self.next_path(frame),
                        f"a number written with {value.length} characters: no setting takes "
                        f"one of more than {MAX_NUMBER_LENGTH} (the largest, 4294967295, has "
                        "10 digits)",
                    )
            self.attach(frame, value, event.start_mark)
        if anchor is not None:
            self.anchors[anchor] = _Anchor(value, 1, 0)

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
            raise self.too_deep(event)
        self.nodes += anchor.nodes
        if self.nodes > MAX_NODES:
            raise self.too_many(event)
        frame = self.top
        if frame is not None and frame.key is None and isinstance(frame.container, dict):
            self.problem(event, self.path(), "a key must be a plain string, not an alias")
            frame.key = _NO_KEY
            return
        self.attach(frame, anchor.value, event.start_mark)
        if frame is not None and anchor.height > frame.height:
            frame.height = anchor.height

    def start(self, event: yaml.CollectionStartEvent) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise self.too_deep(event)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.too_many(event)
        anchor = event.anchor
        if anchor is not None:
            self.remember(anchor, event)
            self.open_anchors.add(anchor)
        container: dict[str, object] | list[object]
        marks: dict[str, tuple[Any, Any]] | list[Any]
        if isinstance(event, yaml.MappingStartEvent):
            container, marks = {}, {}
        else:
            container, marks = [], []
        frame = self.top
        if frame is not None and frame.key is None and isinstance(frame.container, dict):
            self.problem(event, self.path(), "a key must be a plain string")
            frame.key = _NO_KEY
            slot: str | int | None = "?"  # read to its end, then dropped with its value
        else:
            slot = self.next_slot(frame)
            self.attach(frame, container, event.start_mark)
            self.map.tables[id(container)] = (container, marks)
        self.top = _Frame(container, marks, slot, anchor, self.nodes - 1)
        self.stack.append(self.top)

    def end(self, event: yaml.Event) -> None:
        frame = self.stack.pop()
        self.top = self.stack[-1] if self.stack else None
        height = frame.height + 1
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            nodes = self.nodes - frame.nodes_before
            self.anchors[frame.anchor] = _Anchor(frame.container, nodes, height)
        if self.top is not None and height > self.top.height:
            self.top.height = height


def _reader_location(file: str, text: str, position: int) -> Location:
    if _BYTE_OFFSETS:
        position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
    line_start = text.rfind("\n", 0, position) + 1
    return Location(file, text.count("\n", 0, position) + 1, position - line_start + 1)


def _compose(text: str, composer: _Composer) -> int:
    """Feed every event of `text` to `composer`; the number of documents."""
    handlers: dict[type[yaml.Event], Any] = {
        yaml.ScalarEvent: composer.scalar,
        yaml.MappingStartEvent: composer.start,
        yaml.SequenceStartEvent: composer.start,
        yaml.MappingEndEvent: composer.end,
        yaml.SequenceEndEvent: composer.end,
        yaml.AliasEvent: composer.alias,
    }
    documents = 0
    parser = _PARSER(text)
    try:
        while True:
            event = parser.get_event()
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise composer.fail(
                        event, "YAML: a second document ('---'): the file must hold one document"
                    )
            elif isinstance(event, yaml.StreamEndEvent) or event is None:
                return documents
    finally:
        parser.dispose()


def load_yaml(text: str, file: str) -> tuple[object, SourceMap, list[Problem]]:
    """Parse one YAML document.

    A syntax error, a second document, or a limit passed (`MAX_DEPTH`, `MAX_NODES`, a
    recursive alias) raises ConfigError. Duplicate keys, merge keys and numbers too long to
    read are returned as problems beside the data (which keeps the first value), so they are
    reported with everything else.
    """
    composer = _Composer(file)
    try:
        documents = _compose(text, composer)
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
    return composer.map.root, composer.map, composer.problems
