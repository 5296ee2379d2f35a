"""Write the configuration reference (conf/REFERENCE.md) from the model itself.

A test compares the committed file with this output, so the reference cannot drift from the
code. Regenerate with `python -m lvsha.config.reference > conf/REFERENCE.md`.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lvsha.config.base import TypeDoc
from lvsha.config.checks import CHECK_TYPES
from lvsha.config.model import LvshaConfig


def _type_name(annotation: Any) -> str:
    metadata = getattr(annotation, "__metadata__", None)
    if metadata is not None:
        for item in metadata:
            if isinstance(item, TypeDoc):
                return item.text
        return _type_name(annotation.__origin__)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        optional = " (optional)" if type(None) in args else ""
        return " \\| ".join(names) + optional
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of name to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _field_type(info: FieldInfo) -> str:
    for item in info.metadata:
        if isinstance(item, TypeDoc):
            return item.text
    return _type_name(info.annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "see section"
    if value is None:
        return "none"
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return ", ".join(f"{lo}-{hi}" for lo, hi in value)
    return f"`{json.dumps(value)}`"


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, text in (("ge", ">= "), ("gt", "> "), ("le", "<= "), ("lt", "< ")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{text}{value}")
        for attr, text in (("min_length", "length >= "), ("max_length", "length <= ")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{text}{value}")
    return f" ({', '.join(parts)})" if parts else ""


def _nested(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    if getattr(annotation, "__metadata__", None) is not None:
        found += _nested(annotation.__origin__)
    for arg in typing.get_args(annotation):
        found += _nested(arg)
    return found


def _section(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    lines = [f"## {model.__name__}", ""]
    if doc:
        lines += [" ".join(doc.split()), ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        key = info.alias or name
        meaning = (info.description or "").replace("|", "\\|")
        lines.append(
            f"| `{key}` | {_field_type(info)}{_bounds(info)} | {_default(info)} | {meaning} |"
        )
    return "\n".join(lines) + "\n"


def reference() -> str:
    order: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [LvshaConfig]
    while pending:
        model = pending.pop(0)
        if model in order:
            continue
        order.append(model)
        for info in model.model_fields.values():
            pending += [m for m in _nested(info.annotation) if m not in order]
    head = [
        "# lvsha configuration reference",
        "",
        "Generated from the configuration model by `python -m lvsha.config.reference`; a test",
        "keeps it equal to the code. One YAML file describes one director; its top level is",
        "[LvshaConfig](#lvshaconfig). `lvsha check-config` validates a file against it and",
        "`lvsha run` acts on it. Durations are seconds, written as a number",
        "(`1.5`) or with a unit (`100ms`, `1.5s`, `2m`, `1h`). Check types: "
        + ", ".join(
            f"`{t}` ([{c.__name__}](#{c.__name__.lower()}))" for t, c in CHECK_TYPES.items()
        )
        + ".",
        "",
        "",
    ]
    return "\n".join(head) + "\n".join(_section(m) for m in order) + "\n" + _alerts()


def _alerts() -> str:
    """What the sinks send, rendered by their own code (lvsha.alerts.examples)."""
    from lvsha.alerts import examples  # noqa: PLC0415 - only the reference needs them

    events = examples.sample_events()
    lines = [
        "## Alerts",
        "",
        "Each sink takes the events its `events` names (all by default) at or above its",
        "`min_severity`. The events, with their severity and the line that sums one up:",
        "",
        "| event | severity | example |",
        "| --- | --- | --- |",
        *(f"| `{kind}` | {level} | {line} |" for kind, level, line in examples.summaries()),
        "",
        "`vrrp_state` is critical for FAULT; `real_server` and `quorum` are info when they",
        "recover. Categories: `vrrp` (vrrp_state), `checker` (real_server, quorum), `config`,",
        "`process` (child_restarted), `script` (script_refused), `bgp` (bgp_route,",
        "bgp_peer); keepalived's",
        "`smtp_alert_vrrp` and `smtp_alert_checker` are `events: [vrrp]` and `[checker]`.",
        "",
        "A sink waits `gather` seconds after the first event of a burst and sends what came",
        "meanwhile as one message, never more than one per `min_interval`; events about one",
        "thing (a flapping server) fold into one entry with a count. At most `queue_size`",
        "events wait; beyond that, and after `retries` failed attempts of `timeout` each",
        "(1 s, 2 s, 4 s ... apart), events are dropped, counted in",
        "`lvsha_alerts_dropped_total{sink,reason}` and logged. `tls: auto` takes STARTTLS",
        "when the relay offers it without checking the certificate (as a relay's",
        "opportunistic TLS does); `starttls` and `tls` check it.",
        "",
        "A failover and a real server failing two seconds later, as each sink sends them:",
        "",
        "An `smtp` sink (headers From, To, Date, Message-ID, Auto-Submitted besides):",
        "",
        "```",
        examples.mail(events).rstrip(),
        "```",
        "",
        "A `webhook` sink POSTs, with `X-Lvsha-Signature: sha256=<HMAC-SHA256 of the body>`",
        "when `secret_file` is set:",
        "",
        "```json",
        examples.webhook(events),
        "```",
        "",
        "An `alertmanager` sink (here with `labels: {team: lb}`) keeps one alert per",
        "condition: `LvshaRealServerDown`, `LvshaQuorumLost` and `LvshaVrrpNotPreferred` (an",
        "instance in another state than it prefers: MASTER when its `state` is MASTER or its",
        "priority 255, else BACKUP). It POSTs changes to `/api/v2/alerts`, re-sends what fires",
        "every `resend_interval` with `endsAt` three intervals ahead (so the alerts of a",
        "director that died expire), and sends `endsAt` = the time it ended once a condition",
        "ends:",
        "",
        "```json",
        examples.alertmanager(events),
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")
