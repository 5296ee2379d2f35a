"""The control API's JSON Schemas (lvsha/api/schemas), for tests to check answers against."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "lvsha" / "api" / "schemas"
NAMES = ("status", "overrides", "reload", "events", "error")


@cache
def _registry() -> tuple[Registry, dict[str, dict[str, Any]]]:
    schemas = {name: json.loads((SCHEMAS / f"{name}.json").read_text()) for name in NAMES}
    registry: Registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return registry, schemas


def check(name: str, answer: object) -> None:
    """Raise jsonschema.ValidationError unless `answer` follows schema `name`."""
    registry, schemas = _registry()
    schema = schemas[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, registry=registry).validate(answer)


def check_def(name: str, definition: str, value: object) -> None:
    """Raise unless `value` follows `$defs/definition` of schema `name`."""
    registry, schemas = _registry()
    wrapper = {"$ref": f"{schemas[name]['$id']}#/$defs/{definition}"}
    jsonschema.Draft202012Validator(wrapper, registry=registry).validate(value)
