"""Operator overrides of real servers (`lvsha drain`, `lvsha maint`) and of VRRP instances
(`lvsha handover`), and the state file that keeps them across restarts.

An override names real servers the way an operator does, not the way one configuration
numbers them: a virtual server (its `name`, its service as `lvsha status` writes it,
"192.0.2.10:80/tcp", the same without the protocol, or "fwmark 7/ipv4"), or none for every
virtual server; an address; a port, or none for every port. It is matched against the running
configuration's real servers whenever that changes, so it survives reloads: a real server a
reload adds that an override selects enters drained.

- drain: weight 0 (no new connections; established ones go on), checks keep running;
- maint: out of the IPVS table, its checks paused.

Maint wins over drain where both select a real server. `lvsha ready` removes the overrides
that select it.

The state file (`/var/lib/lvsha/overrides.json`, StateDirectory= in the unit) holds every
override and the handed-over instances; it is written whole to a temporary file, fsync'd and
renamed over the old one, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

STATE_FILE = "overrides.json"
FORMAT = 1


class Mode(enum.Enum):
    DRAIN = "drain"
    MAINT = "maint"


class OverrideError(ValueError):
    """An override, a selector or a state file that is not well formed; the message says why."""


class RealServerLike(Protocol):
    """What matching needs of a real server (lvsha.checks.verdict.RealServerId has it)."""

    @property
    def virtual_service(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def virtual_server_name(self) -> str | None: ...


R = TypeVar("R", bound=RealServerLike)


@dataclass(frozen=True, slots=True)
class Selector:
    """Which real servers an override is about."""

    address: str
    """Canonical text form (`ipaddress`)."""
    port: int | None = None
    virtual_server: str | None = None
    """A virtual server's name, its service ("192.0.2.10:80/tcp", "[2001:db8::1]:80/tcp",
    "fwmark 7/ipv4"), or the service without its protocol; None: every virtual server."""

    def matches(self, real_server: RealServerLike) -> bool:
        return (
            real_server.address == self.address
            and (self.port is None or real_server.port == self.port)
            and (self.virtual_server is None or names_service(self.virtual_server, real_server))
        )

    def describe(self) -> str:
        where = "every virtual server" if self.virtual_server is None else self.virtual_server
        host = f"[{self.address}]" if ":" in self.address else self.address
        what = host if self.port is None else f"{host}:{self.port}"
        return f"{what} in {where}"


def names_service(name: str, real_server: RealServerLike) -> bool:
    """Whether `name` is how an operator may name `real_server`'s virtual server."""
    service = real_server.virtual_service
    return name in (real_server.virtual_server_name, service, service.rpartition("/")[0])


def parse_real_server(text: str) -> tuple[str, int | None]:
    """(canonical address, port or None) of "192.0.2.21", "192.0.2.21:80", "2001:db8::21",
    "[2001:db8::21]:80"; OverrideError when it is none of these."""
    text = text.strip()
    port: int | None = None
    host = text
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise OverrideError(f"'{text}' is not a real server: write [2001:db8::21]:80")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise OverrideError(
            f"'{text}' is not a real server: write its address, optionally with a port "
            "(192.0.2.21, 192.0.2.21:80, [2001:db8::21]:80)"
        ) from None
    return address, port


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise OverrideError(f"'{whole}': port '{text}' is not a number from 0 to 65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class Override:
    """One operator's drain or maint of the real servers a selector names."""

    mode: Mode
    selector: Selector
    reason: str = ""
    by: str = ""
    """Who asked: "root (uid 0)", "alice (uid 1000)"."""
    at: float = 0.0
    """When, wall-clock seconds."""

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "virtual_server": self.selector.virtual_server,
            "address": self.selector.address,
            "port": self.selector.port,
            "reason": self.reason,
            "by": self.by,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, value: object) -> Override:
        if not isinstance(value, dict):
            raise OverrideError("an override is not a JSON object")
        try:
            mode = Mode(value.get("mode"))
        except ValueError:
            raise OverrideError(f"override mode {value.get('mode')!r}: drain or maint") from None
        address, port = value.get("address"), value.get("port")
        vs = value.get("virtual_server")
        reason, by, at = value.get("reason", ""), value.get("by", ""), value.get("at", 0.0)
        if not isinstance(address, str):
            raise OverrideError("override address is not a string")
        canonical, _ = parse_real_server(address if ":" not in address else f"[{address}]")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535
        ):
            raise OverrideError(f"override port {port!r} is not a number from 0 to 65535")
        if vs is not None and (not isinstance(vs, str) or not vs):
            raise OverrideError(f"override virtual_server {vs!r} is not a name")
        if not isinstance(reason, str) or not isinstance(by, str):
            raise OverrideError("override reason and by must be strings")
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise OverrideError("override at must be a number")
        return cls(mode, Selector(canonical, port, vs), reason, by, float(at))


def encode(overrides: Iterable[Override]) -> str:
    return json.dumps([o.to_json() for o in overrides], separators=(",", ":"))


def decode(text: str) -> list[Override]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise OverrideError(f"overrides are not JSON: {exc}") from None
    if not isinstance(value, list):
        raise OverrideError("overrides are not a JSON list")
    return [Override.from_json(item) for item in value]


def effective(overrides: Iterable[Override], real_servers: Iterable[R]) -> dict[R, Override]:
    """Each real server an override selects -> the override in force for it: maint over
    drain, and the latest of one mode."""
    chosen: dict[R, Override] = {}
    ordered = list(overrides)
    by_address: dict[str, list[R]] = {}
    for real_server in real_servers:
        by_address.setdefault(real_server.address, []).append(real_server)
    for override in ordered:
        for real_server in by_address.get(override.selector.address, []):
            if not override.selector.matches(real_server):
                continue
            held = chosen.get(real_server)
            if held is None or _outranks(override, held):
                chosen[real_server] = override
    return chosen


def _outranks(new: Override, held: Override) -> bool:
    if new.mode is not held.mode:
        return new.mode is Mode.MAINT
    return new.at >= held.at


@dataclass(slots=True)
class State:
    """What the state file holds."""

    overrides: list[Override] = field(default_factory=list)
    handover: dict[str, str] = field(default_factory=dict)
    """Handed-over instance name -> who asked, and when (text)."""
    bgp_handover: str | None = None
    """Who drained the BGP announcements (`lvsha handover` of the whole director), and when;
    None: they are not drained."""

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "format": FORMAT,
            "overrides": [o.to_json() for o in self.overrides],
            "handover": dict(sorted(self.handover.items())),
        }
        if self.bgp_handover is not None:
            value["bgp_handover"] = self.bgp_handover
        return value

    @classmethod
    def from_json(cls, value: object) -> State:
        if not isinstance(value, dict):
            raise OverrideError("not a JSON object")
        if value.get("format") != FORMAT:
            raise OverrideError(f"format {value.get('format')!r}, expected {FORMAT}")
        overrides = value.get("overrides", [])
        handover = value.get("handover", {})
        if not isinstance(overrides, list):
            raise OverrideError("'overrides' is not a list")
        if not isinstance(handover, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in handover.items()
        ):
            raise OverrideError("'handover' is not an object of instance names")
        bgp_handover = value.get("bgp_handover")
        if bgp_handover is not None and not isinstance(bgp_handover, str):
            raise OverrideError("'bgp_handover' is not a text")
        return cls([Override.from_json(o) for o in overrides], dict(handover), bgp_handover)


def load(path: Path) -> State:
    """The state in `path`; an empty state when there is no file. OverrideError (naming the
    file) when it cannot be read or is not a state file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State()
    except (OSError, UnicodeDecodeError) as exc:
        raise OverrideError(f"{path}: {exc}") from None
    try:
        return State.from_json(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise OverrideError(f"{path}: {exc}") from None


def save(path: Path, state: State) -> None:
    """Write `state` to `path` atomically (temporary file, fsync, rename, fsync of the
    directory). Raises OSError."""
    data = (json.dumps(state.to_json(), indent=2) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a crash of an earlier process with this pid
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
