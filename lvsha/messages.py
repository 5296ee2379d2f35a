"""The messages lvsha's processes exchange on their channels: one frozen dataclass each.

Both ends import this module; on the wire each message is one JSON object per line, with its
kind in `"message"`. A line that does not decode to a known message with fields of the right
types raises `MessageError`: the receiver logs it and carries on.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, get_type_hints

from lvsha.config.model import LvshaConfig

MAX_LINE = 256 * 1024 * 1024
"""The longest channel line a reader accepts: an `ApplyConfig` carries a whole configuration
(a file of 10,000 real servers is a few MiB; the configuration size limit is what bounds it)."""


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


@dataclass(frozen=True, slots=True)
class ApplyConfig:
    """Parent -> child: run this configuration from now on, changing only what differs from
    the one running. The parent has validated it; the child never parses or validates a file,
    so applying costs it no more than unpickling a finished model. The VRRP child gets the
    configuration without its virtual servers (`for_vrrp`): its size does not grow with the
    real servers. The child answers with `ConfigApplied` for the same generation."""

    kind: ClassVar[str] = "apply_config"
    generation: int
    digest: str
    """SHA-256 of the file's text, in hex: what the logs, events and metrics name."""
    snapshot: str
    """The validated `LvshaConfig`, pickled, in base64 (the parent is trusted: it started us)."""

    @classmethod
    def of(cls, generation: int, digest: str, config: LvshaConfig) -> ApplyConfig:
        data = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        return cls(generation, digest, base64.b64encode(data).decode("ascii"))

    def config(self) -> LvshaConfig:
        """The configuration; raises MessageError when the snapshot is not one."""
        try:
            config = pickle.loads(base64.b64decode(self.snapshot, validate=True))
        except Exception as exc:  # whatever unpickling raises, this is no configuration
            raise MessageError(f"{self.kind}: the snapshot does not unpickle: {exc}") from None
        if not isinstance(config, LvshaConfig):
            raise MessageError(f"{self.kind}: the snapshot is a {type(config).__name__}")
        return config


def for_vrrp(config: LvshaConfig) -> LvshaConfig:
    """What the VRRP child needs of a configuration: everything but the virtual servers."""
    return config.model_copy(update={"virtual_servers": []})


@dataclass(frozen=True, slots=True)
class ConfigApplied:
    """Child -> parent: the outcome of `ApplyConfig` of this generation.

    `ok`: the child now runs it. Otherwise `errors` says what failed, and the child has gone
    back to the configuration it ran before, entirely; where it could not, `left` says exactly
    what state it left (empty when the rollback was complete)."""

    kind: ClassVar[str] = "config_applied"
    generation: int
    ok: bool
    errors: tuple[str, ...] = ()
    left: str = ""


STATUS_INTERVAL = 1.0
"""Seconds between two `VrrpStatus` snapshots the VRRP child sends unasked (it also sends one
at once after a state, priority, master or handover change)."""


@dataclass(frozen=True, slots=True)
class VrrpStatus:
    """VRRP child -> parent: every instance as `lvsha status` shows it, a JSON object
    `{"instances": [...]}` whose items follow the `vrrp_instance` definition of
    lvsha/api/schemas/status.json. Sent every `STATUS_INTERVAL` and at once after a change;
    the parent answers clients from the last one, so no client ever makes VRRP wait."""

    kind: ClassVar[str] = "vrrp_status"
    body: str


@dataclass(frozen=True, slots=True)
class SetHandover:
    """Parent -> VRRP child: the instances handed over to the peer (`lvsha handover`), all of
    them: an instance not named is not (or no longer) handed over. A handed-over master sends
    priority 0 and lets its VIPs go once the new master is heard (make-before-break); a
    handed-over instance stays backup and takes no mastership until the set no longer names
    it. The child answers with a `VrrpStatus` once it has fed the change to its instances."""

    kind: ClassVar[str] = "set_handover"
    instances: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Parent -> checker: send a `CheckerStatus` with this serial."""

    kind: ClassVar[str] = "status_request"
    serial: int


@dataclass(frozen=True, slots=True)
class CheckerStatus:
    """Checker -> parent: the answer to `StatusRequest`: a JSON object
    `{"virtual_servers": [...]}` whose items follow the `virtual_server` definition of
    lvsha/api/schemas/status.json."""

    kind: ClassVar[str] = "checker_status"
    serial: int
    body: str


@dataclass(frozen=True, slots=True)
class SetOverrides:
    """Parent -> checker: every operator override in force (drain, maint), all of them, as
    `lvsha.daemon.overrides.encode` writes them: a real server no override selects is back to
    what its checks (and the maintenance files) decide. Answered with `OverridesApplied`."""

    kind: ClassVar[str] = "set_overrides"
    serial: int
    body: str


@dataclass(frozen=True, slots=True)
class OverridesApplied:
    """Checker -> parent: `SetOverrides` with this serial is applied to the check pool and
    the IPVS table (one pass of the syncer has run). `errors`: what could not be done."""

    kind: ClassVar[str] = "overrides_applied"
    serial: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChildEvent:
    """Child -> parent: something an operator should hear about (lvsha.alerts.events lists
    the types and their fields). The parent publishes it on the event stream and hands it to
    the alert sinks; the child never waits for either.

    `fields` is a JSON object: the event's fields (strings, numbers, booleans or null)."""

    kind: ClassVar[str] = "child_event"
    type: str
    fields: str


@dataclass(frozen=True, slots=True)
class ServiceQuorum:
    """Checker -> parent, when the configuration announces over BGP: the virtual servers
    (names) whose quorum is held, all of them; sent once the first IPVS pass has run, then at
    each change. The parent's BGP announcer (lvsha.bgp.announcer) follows it."""

    kind: ClassVar[str] = "service_quorum"
    held: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """Parent -> child: answer with `Pong` carrying this serial, from the event loop (the
    systemd watchdog is fed only while the children's loops answer)."""

    kind: ClassVar[str] = "ping"
    serial: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Child -> parent: the answer to `Ping`."""

    kind: ClassVar[str] = "pong"
    serial: int


Message: TypeAlias = (
    ChildReady
    | VrrpStateChanged
    | VrrpRoles
    | ApplyConfig
    | ConfigApplied
    | VrrpStatus
    | SetHandover
    | StatusRequest
    | CheckerStatus
    | SetOverrides
    | OverridesApplied
    | ServiceQuorum
    | ChildEvent
    | Ping
    | Pong
)

_KINDS: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        ChildReady,
        VrrpStateChanged,
        VrrpRoles,
        ApplyConfig,
        ConfigApplied,
        VrrpStatus,
        SetHandover,
        StatusRequest,
        CheckerStatus,
        SetOverrides,
        OverridesApplied,
        ServiceQuorum,
        ChildEvent,
        Ping,
        Pong,
    )
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
    if hint is bool and isinstance(value, bool):
        return value
    if hint == tuple[str, ...] and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise MessageError(f"{kind}.{name}: expected a list of strings")
        return tuple(value)
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
