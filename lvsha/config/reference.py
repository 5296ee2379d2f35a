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
    return "\n".join(head) + "\n".join(_section(m) for m in order)


if __name__ == "__main__":
    print(reference(), end="")
