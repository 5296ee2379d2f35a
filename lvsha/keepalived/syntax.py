"""keepalived.conf's syntax, read into a tree of statements that remember where they came from.

What keepalived's parser does, and this does too (keepalived.conf(5)):

- Comments start with `#` or `!` anywhere on a line, outside quotes, and run to its end.
- `include PATTERN` (and its variants `includer`, `includem`, `includew`, `includeb`, `includef`,
  `includea`) reads the files the pattern names, in sorted order, where it stands. The pattern
  is a glob with csh-style braces (`{a,b}`); a relative one is relative to the directory of the
  file that includes it. Include lines are found before conditions and definitions are applied,
  as keepalived finds them. A pattern that matches nothing is a warning, as with keepalived's
  plain `include`; a file that cannot be read, or an include loop, is an error.
- A line starting with `@NAME` counts only when the configuration id is NAME; `@^NAME` only
  when it is not. The id defaults to the host name up to its first dot (keepalived's `-i`).
- `$NAME=value` defines NAME for the lines after it (a value ending in `\\` goes on on the next
  line); `$NAME` and `${NAME}` in later lines are replaced by it. A name never defined is
  left as written, with a warning (it may be part of a password).
- Words are separated by white space; `"` or `'` quote a part of a word, with keepalived's
  escapes inside (`\\n`, `\\t`, `\\xXX`, `\\nnn`, `\\\\`, ...); `{` and `}` open and close blocks.

Every statement keeps its file and line, so whoever maps it can say `FILE:LINE: keyword: why`.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

INCLUDE_KEYWORDS = frozenset(
    {"include", "includer", "includem", "includew", "includeb", "includef", "includea"}
)
MAX_INCLUDE_DEPTH = 16
MAX_FILES = 1000
MAX_BYTES = 16 * 1024 * 1024
"""What one import reads at most, all files together."""


class KeepalivedSyntaxError(Exception):
    """The configuration cannot be read; `str()` is `FILE:LINE: what is wrong`."""


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Statement:
    """A keyword, its words, and the statements of its block when it opens one."""

    keyword: str
    args: list[str]
    where: Where
    block: list[Statement] | None = None

    def find(self, keyword: str) -> list[Statement]:
        """The statements of this block named `keyword`."""
        return [s for s in self.block or () if s.keyword == keyword]


@dataclass(slots=True)
class Parsed:
    statements: list[Statement]
    files: list[str]
    """Every file read, in the order read."""
    warnings: list[str] = field(default_factory=list)
    """`FILE:LINE: ...` lines for what keepalived also lets pass."""


def default_config_id() -> str:
    return socket.gethostname().split(".", 1)[0]


def expand_braces(pattern: str) -> list[str]:
    """csh-style brace expansion: `a{b,c{d,e}}f` -> abf, acdf, acef. A brace without a comma
    in it stays as it is."""
    depth = 0
    start = -1
    for index, char in enumerate(pattern):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : index]
                parts = _split_top(inner)
                if len(parts) == 1:
                    continue
                head, tail = pattern[:start], pattern[index + 1 :]
                return [
                    expanded for part in parts for expanded in expand_braces(head + part + tail)
                ]
    return [pattern]


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        current.append(char)
    parts.append("".join(current))
    return parts


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


class _Line:
    """One logical line: its text and where it came from."""

    __slots__ = ("text", "where")

    def __init__(self, text: str, where: Where) -> None:
        self.text = text
        self.where = where


def strip_comment(text: str) -> str:
    quote = ""
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quote:
            escaped = True
        elif quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "#!":
            return text[:index]
    return text


def words(text: str, where: Where) -> list[str]:
    """The words of a line, quotes removed and escapes applied; `{` and `}` are words of
    their own."""
    out: list[str] = []
    current: list[str] = []
    started = False
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and index + 1 < len(text):
                consumed, value = _escape(text, index + 1)
                current.append(value)
                index += consumed
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            started = True
        elif char.isspace() or char in "{}":
            if started:
                out.append("".join(current))
                current, started = [], False
            if char in "{}":
                out.append(char)
        else:
            current.append(char)
            started = True
        index += 1
    if quote:
        raise KeepalivedSyntaxError(f"{where}: a {quote} quote is not closed on this line")
    if started:
        out.append("".join(current))
    return out


def _escape(text: str, at: int) -> tuple[int, str]:
    """(characters consumed after the backslash, the character meant)."""
    char = text[at]
    if char in _ESCAPES:
        return 1, _ESCAPES[char]
    if char == "x":
        digits = re.match(r"[0-9a-fA-F]{1,2}", text[at + 1 :])
        if digits:
            return 1 + len(digits.group()), chr(int(digits.group(), 16))
        return 1, "x"
    if char in "01234567":
        digits = re.match(r"[0-7]{1,3}", text[at:])
        assert digits is not None
        return len(digits.group()), chr(int(digits.group(), 8) & 0xFF)
    if char == "c" and at + 1 < len(text):
        return 2, chr(ord(text[at + 1].upper()) ^ 0x40)
    return 1, char


_DEFINITION = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class _Reader:
    def __init__(self, config_id: str) -> None:
        self.config_id = config_id
        self.files: list[str] = []
        self.warnings: list[str] = []
        self.definitions: dict[str, str] = {}
        self.bytes_read = 0

    def lines(self, path: Path, depth: int, stack: tuple[str, ...]) -> Iterator[_Line]:
        """The logical lines of `path` and what it includes, conditions and definitions
        applied, comments removed."""
        name = str(path)
        if name in stack:
            chain = " -> ".join((*stack, name))
            raise KeepalivedSyntaxError(f"{stack[-1]}: include loop: {chain}")
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise KeepalivedSyntaxError(f"{name}: cannot read: {exc.strerror or exc}") from None
        self.bytes_read += len(text)
        if self.bytes_read > MAX_BYTES or len(self.files) >= MAX_FILES:
            raise KeepalivedSyntaxError(
                f"{name}: more than {MAX_BYTES >> 20} MiB or {MAX_FILES} files in all"
            )
        self.files.append(name)
        raw = text.decode("utf-8", errors="replace").splitlines()
        number = 0
        while number < len(raw):
            where = Where(name, number + 1)
            line = raw[number]
            number += 1
            # A definition's value may go on over lines ending in a backslash.
            while line.rstrip().endswith("\\") and _DEFINITION.match(line.strip()):
                if number >= len(raw):
                    break
                line = line.rstrip()[:-1] + "\n" + raw[number]
                number += 1
            stripped = strip_comment(line).strip()
            if not stripped:
                continue
            first = stripped.split(None, 1)
            if first[0] in INCLUDE_KEYWORDS:
                yield from self._include(
                    first[1] if len(first) > 1 else "", path, where, depth, (*stack, name)
                )
                continue
            if stripped.startswith("@"):
                condition, *rest_of_line = stripped.split(None, 1)
                rest = rest_of_line[0] if rest_of_line else ""
                wanted = condition[1:]
                negated = wanted.startswith("^")
                wanted = wanted.removeprefix("^")
                if (wanted == self.config_id) == negated:
                    continue
                stripped = rest.strip()
                if not stripped:
                    continue
            definition = _DEFINITION.fullmatch(stripped)
            if definition is not None:
                value = self._substitute(definition.group(2).strip(), where)
                self.definitions[definition.group(1)] = value
                continue
            if "$" in stripped:
                stripped = self._substitute(stripped, where)
            # A definition may hold several lines.
            for part in stripped.split("\n"):
                if part.strip():
                    yield _Line(part, where)

    def _substitute(self, text: str, where: Where) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.definitions:
                self.warnings.append(
                    f"{where}: ${name} is not defined above: kept as written (a password with "
                    f"a $ in it, or a definition missing)"
                )
                return match.group(0)
            return self.definitions[name]

        return _USE.sub(value, text)

    def _include(
        self, pattern: str, path: Path, where: Where, depth: int, stack: tuple[str, ...]
    ) -> Iterator[_Line]:
        pattern = pattern.strip()
        if len(pattern) >= 2 and pattern[0] == pattern[-1] and pattern[0] in "\"'":
            pattern = pattern[1:-1]
        if not pattern:
            raise KeepalivedSyntaxError(f"{where}: include: no file named")
        if depth >= MAX_INCLUDE_DEPTH:
            raise KeepalivedSyntaxError(
                f"{where}: include: more than {MAX_INCLUDE_DEPTH} levels of includes"
            )
        base = path.parent
        matches: list[str] = []
        for expanded in expand_braces(pattern):
            full = expanded if os.path.isabs(expanded) else str(base / expanded)
            matches += sorted(glob.glob(full))
        if not matches:
            self.warnings.append(f"{where}: include {pattern}: no file matches (ignored)")
            return
        for match in matches:
            if os.path.isdir(match):
                continue
            yield from self.lines(Path(match), depth + 1, stack)


def parse_text(lines: Iterator[_Line]) -> list[Statement]:
    """The statement tree of `lines`; errors for braces that do not match. A `{` alone at
    the start of a line opens the block of the statement just before it."""
    root: list[Statement] = []
    open_blocks: list[Statement] = []

    def statements() -> list[Statement]:
        if not open_blocks:
            return root
        block = open_blocks[-1].block
        assert block is not None
        return block

    for line in lines:
        current: list[str] = []
        for token in words(line.text, line.where):
            if token not in "{}" or len(token) != 1:
                current.append(token)
                continue
            if current:
                statements().append(Statement(current[0], current[1:], line.where))
                current = []
            if token == "{":
                siblings = statements()
                if not siblings or siblings[-1].block is not None:
                    raise KeepalivedSyntaxError(f"{line.where}: '{{' with no keyword before it")
                siblings[-1].block = []
                open_blocks.append(siblings[-1])
            else:
                if not open_blocks:
                    raise KeepalivedSyntaxError(f"{line.where}: '}}' closes no block")
                open_blocks.pop()
        if current:
            statements().append(Statement(current[0], current[1:], line.where))
    if open_blocks:
        owner = open_blocks[-1]
        raise KeepalivedSyntaxError(
            f"{owner.where}: {owner.keyword}: its block is not closed (a '}}' is missing)"
        )
    return root


def parse_file(path: str | Path, config_id: str | None = None) -> Parsed:
    """Read `path` and what it includes as keepalived would with `-i config_id`."""
    reader = _Reader(config_id if config_id is not None else default_config_id())
    statements = parse_text(reader.lines(Path(path), 0, ()))
    return Parsed(statements, reader.files, reader.warnings)
