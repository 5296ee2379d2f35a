"""The control API's JSON Schemas are valid schemas, and reject what they should."""

from __future__ import annotations

import json

import jsonschema
import pytest

from lvsha.daemon import overrides as ov
from tests.tools import api_schema


@pytest.mark.parametrize("name", api_schema.NAMES)
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = json.loads((api_schema.SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/{name}.json")


def test_an_override_as_the_state_file_writes_it_follows_the_schema() -> None:
    override = ov.Override(ov.Mode.DRAIN, ov.Selector("10.0.0.21", 80, "web"), "disk", "root", 1.5)
    api_schema.check_def("overrides", "override", override.to_json())
    with pytest.raises(jsonschema.ValidationError):
        api_schema.check_def("overrides", "override", {**override.to_json(), "mode": "off"})


def test_an_answer_with_a_field_the_schema_does_not_know_is_refused() -> None:
    answer = {"ok": False, "error": "no", "generation": 1}
    api_schema.check("error", answer)
    with pytest.raises(jsonschema.ValidationError):
        api_schema.check("error", {**answer, "extra": 1})
