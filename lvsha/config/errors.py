"""Turn pydantic's validation errors into problems that point at a line, a column and a key."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from lvsha.config.checks import CHECK_TYPES
from lvsha.config.model import LvshaConfig
from lvsha.config.source import OversizedNumber, Path, Problem, SourceMap

MAX_MESSAGE = 400
"""Messages quote the values they refuse; a megabyte-long value is quoted by its two ends."""

# keepalived keywords people will type out of habit, and what they are called here.
KEEPALIVED_SPELLINGS = {
    "nopreempt": "write preempt: false",
    "virtual_ipaddress": "the key is virtual_ipaddresses",
    "virtual_ipaddress_excluded": "the key is virtual_ipaddresses_excluded",
    "unicast_peer": "the key is unicast_peers (a list)",
    "track_interface": "the key is track_interfaces (a list)",
    "track_script": "the key is track_scripts (a list)",
    "advert_int": "the key is advert_interval",
    "lb_kind": "the key is forwarding (NAT, DR or TUN)",
    "lb_algo": "the key is scheduler",
    "lvs_sched": "the key is scheduler",
    "lvs_method": "the key is forwarding (NAT, DR or TUN)",
    "delay_loop": "write check_defaults: {interval: ...}",
    "connect_timeout": "the key is timeout",
    "connect_port": "the key is port",
    "connect_ip": "the key is address",
    "bindto": "the key is bind_address",
    "nb_get_retry": "the key is retries",
    "retry": "the key is retries",
    "misc_path": "use a check with type: script and command",
    "misc_dynamic": "the key is dynamic_weight",
    "status_code": "the key is status (a list of codes and ranges)",
    "url": "write one http check per path, with path, status, digest",
    "persistence": "the key is persistence_timeout",
    "notify_master": "write notify: {master: ...}",
    "notify_backup": "write notify: {backup: ...}",
    "notify_fault": "write notify: {fault: ...}",
    "notify_stop": "write notify: {stop: ...}",
    "auth_type": "write authentication: {type: PASS, password: ...}",
    "auth_pass": "write authentication: {type: PASS, password: ...}",
    "weight_reverse": "negate the weight instead",
    "group": "the key is instances",
}


def _model_at(path: Path, data: object) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path`, following the data for unions."""
    annotation: Any = LvshaConfig
    node = data
    for part in path:
        model = _unwrap(annotation, node)
        if model is None:
            return None
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return None
            annotation = field.annotation
        else:
            origin, args = typing.get_origin(model), typing.get_args(model)
            annotation = args[-1] if origin in (list, dict, tuple) and args else None
        node = (
            node.get(part)
            if isinstance(node, dict)
            else (node[part] if isinstance(node, list) and isinstance(part, int) else None)
        )
    model = _unwrap(annotation, node)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any, node: object) -> Any:
    """Strip Annotated and Optional; pick a check type by the data's `type`."""
    while True:
        if getattr(annotation, "__metadata__", None) is not None:
            annotation = annotation.__origin__
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            tag = node.get("type") if isinstance(node, dict) else None
            if len(members) > 1 and isinstance(tag, str) and tag in CHECK_TYPES:
                return CHECK_TYPES[tag]
            if len(members) != 1:
                return None
            annotation = members[0]
            continue
        return annotation


def _unknown_key_message(key: str, path: Path, data: object, data_at_parent: object) -> str:
    message = f"unknown key '{key}'"
    check_type = data_at_parent.get("type") if isinstance(data_at_parent, dict) else None
    if isinstance(check_type, str) and check_type in CHECK_TYPES:
        owners = sorted(t for t, cls in CHECK_TYPES.items() if key in cls.model_fields)
        if owners:
            return (
                f"{message}: {check_type} checks have no '{key}' (it is a key of "
                f"{', '.join(owners)} checks)"
            )
    if key in KEEPALIVED_SPELLINGS:
        return f"{message}: {KEEPALIVED_SPELLINGS[key]}"
    model = _model_at(path[:-1], data)
    known = [f.alias or n for n, f in model.model_fields.items()] if model else []
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if close:
        return f"{message}: did you mean '{close[0]}'?"
    return f"{message}: remove it, or see conf/REFERENCE.md for the keys this section takes"


def _clean_path(loc: tuple[int | str, ...], data: object) -> tuple[Path, object, bool]:
    """Keep the parts of pydantic's `loc` that name real keys and indexes in the data.

    pydantic adds the tag of a discriminated union ("tcp") and "[key]" for dictionary keys;
    neither stands in the file. Returns the path, the data at the parent and whether the error
    is about a dictionary key rather than its value.
    """
    path: list[str | int] = []
    node = data
    parent: object = None
    about_key = False
    for i, part in enumerate(loc):
        if part == "[key]":
            about_key = True
            continue
        if isinstance(node, dict) and isinstance(part, str):
            if part in node:
                parent, node = node, node[part]
                path.append(part)
            elif i == len(loc) - 1:
                parent, node = node, None
                path.append(part)
            continue  # a union tag
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, node = node, node[part]
            path.append(part)
    return tuple(path), parent, about_key


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"the string '{value}'"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{value!r}"


def _message(error: ErrorDetails, path: Path, data: object, parent: object) -> str:
    key = path[-1] if path else None
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key_message(str(key), path, data, parent)
    if kind == "missing":
        if key == "interface" and path[:1] == ("vrrp_instances",) and len(path) == 3:
            return (
                f"missing required key 'interface': instance '{path[1]}' names none; set it, "
                "or global.vrrp.default_interface"
            )
        return f"missing required key '{key}'"
    if kind == "bool_type":
        if isinstance(value, str):
            return f"expected true or false, got the string '{value}': write true or false"
        return f"expected true or false, got {_describe(value)}"
    if kind == "finite_number":
        return f"expected a finite number, got {_describe(value)}"
    if kind in ("int_type", "int_from_float", "float_type"):
        what = "a whole number" if kind != "float_type" else "a number"
        if isinstance(value, str):
            return f"expected {what}, got the string '{value}': remove the quotes"
        return f"expected {what}, got {_describe(value)}"
    if kind == "string_type":
        hint = f": quote it ('{value}')" if isinstance(value, int | float) else ""
        return f"expected a string, got {_describe(value)}{hint}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {_describe(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_describe(value)}"
    if kind == "literal_error":
        return f"{_describe(value)} is not allowed: use one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"unknown check type '{ctx.get('tag')}': use one of {', '.join(CHECK_TYPES)}"
    if kind == "union_tag_not_found":
        return f"missing required key 'type': one of {', '.join(CHECK_TYPES)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {
            "greater_than": f"more than {ctx.get('gt')}",
            "greater_than_equal": f"at least {ctx.get('ge')}",
            "less_than": f"less than {ctx.get('lt')}",
            "less_than_equal": f"at most {ctx.get('le')}",
        }[kind]
        return f"must be {bound}, got {value!r}"
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return error["msg"][0].lower() + error["msg"][1:]
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']}, got {_describe(value)}"


def _clip(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    half = MAX_MESSAGE // 2
    return f"{message[:half]} [... {len(message) - 2 * half} characters ...] {message[-half:]}"


def problems_from_validation(
    error: ValidationError, data: object, source: SourceMap, limit: int
) -> tuple[list[Problem], int]:
    """Problems for the first `limit` errors, and how many more there were."""
    problems: list[Problem] = []
    details = error.errors(include_url=False)
    for count, detail in enumerate(details):
        if len(problems) >= limit:
            return problems, len(details) - count
        if isinstance(detail.get("input"), OversizedNumber) and detail["type"] != "extra_forbidden":
            continue  # the loader reported this number where it stands
        path, parent, about_key = _clean_path(detail["loc"], data)
        if detail["type"] == "missing":
            location = source.value(path[:-1])
        elif detail["type"] == "extra_forbidden" or about_key:
            location = source.key(path)
        else:
            location = source.value(path)
        message = _message(detail, path, data, parent)
        if about_key:
            message = f"bad name: {message}"
        problems.append(Problem(location, path, _clip(message)))
    return problems, 0
