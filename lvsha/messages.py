"""The messages lvsha's processes exchange on their channels: one frozen dataclass each.

Both ends import this module; on the wire each message is one JSON object per line, with its
kind in `"message"`. A line that does not decode to a known message with fields of the right
types raises `MessageError`: the receiver logs it and carries on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, get_type_hints


class MessageError(ValueError):
    """A channel line that is not a well-formed message."""


@dataclass(frozen=True, slots=True)
class ChildReady:
    """A child is up: the parent reports READY to systemd once every child said so."""

    kind: ClassVar[str] = "child_ready"


@dataclass(frozen=True, slots=True)
class VrrpStateChanged:
    """VRRP child -> parent -> checker: an instance changed state (names of `VrrpState`)."""

    kind: ClassVar[str] = "vrrp_state_changed"
    instance: str
    old: str
    new: str
    reason: str
    priority: int


@dataclass(frozen=True, slots=True)
class VrrpRoles:
    """Parent -> a checker that just started: the last state the parent heard for each
    instance, before any other message. Empty when the parent has heard none yet."""

    kind: ClassVar[str] = "vrrp_roles"
    states: tuple[tuple[str, str], ...]
    """(instance, state name) pairs."""

    def state_of(self, instance: str) -> str | None:
        return dict(self.states).get(instance)


Message: TypeAlias = ChildReady | VrrpStateChanged | VrrpRoles

_KINDS: dict[str, type[Message]] = {
    cls.kind: cls for cls in (ChildReady, VrrpStateChanged, VrrpRoles)
}


def encode(message: Message) -> bytes:
    body: dict[str, Any] = {"message": message.kind}
    body.update(dataclasses.asdict(message))
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """The message on one channel line; MessageError when it is not one."""
    try:
        body = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    kind = body.pop("message", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message kind {kind!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if set(body) != names:
        raise MessageError(f"{kind}: fields {sorted(body)}, expected {sorted(names)}")
    values: dict[str, Any] = {}
    for name in names:
        values[name] = _typed(kind, name, hints[name], body[name])
    return cls(**values)


def _typed(kind: str, name: str, hint: Any, value: Any) -> Any:
    if hint is str and isinstance(value, str):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint == tuple[tuple[str, str], ...] and isinstance(value, list):
        pairs = []
        for item in value:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(v, str) for v in item)
            ):
                raise MessageError(f"{kind}.{name}: expected [name, state] pairs")
            pairs.append((item[0], item[1]))
        return tuple(pairs)
    raise MessageError(f"{kind}.{name}: unexpected value {value!r}")
