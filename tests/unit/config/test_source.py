"""YAML reading: 1.2 scalars, duplicate keys, and where every node stands."""

from __future__ import annotations

import math

import pytest

from lvsha.config.source import ConfigError, Location, load_yaml


def scalars(text: str) -> object:
    data, _, problems = load_yaml(f"v: {text}\n", "t.yaml")
    assert problems == []
    assert isinstance(data, dict)
    return data["v"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("1:30", "1:30"),  # YAML 1.1 reads this as 90
        ("010", 10),  # not octal
        ("0o10", 8),
        ("0x1f", 31),
        ("-3", -3),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("~", None),
        ("null", None),
        ("'true'", "true"),
        ('"5"', "5"),
        ("2001-01-01", "2001-01-01"),  # no timestamps
        ("100ms", "100ms"),
    ],
)
def test_scalars_follow_yaml_1_2(text: str, value: object) -> None:
    assert scalars(text) == value


def test_special_floats() -> None:
    assert scalars(".inf") == math.inf
    value = scalars(".nan")
    assert isinstance(value, float) and math.isnan(value)


def test_keys_stay_strings() -> None:
    data, _, _ = load_yaml("1: a\ntrue: b\nnull: c\n", "t.yaml")
    assert data == {"1": "a", "true": "b", "null": "c"}


def test_locations_of_keys_and_values() -> None:
    text = "global:\n  router_id: lb1\nlist:\n  - a\n  -   b\n"
    _, source, _ = load_yaml(text, "t.yaml")
    assert source.key(("global", "router_id")) == Location("t.yaml", 2, 3)
    assert source.value(("global", "router_id")) == Location("t.yaml", 2, 14)
    assert source.value(("list", 1)) == Location("t.yaml", 5, 7)
    # an unknown path falls back to its nearest known ancestor
    assert source.value(("global", "missing", 3)) == Location("t.yaml", 2, 3)


def test_duplicate_keys_are_all_reported_and_the_first_value_kept() -> None:
    text = "a: 1\nb: 2\na: 3\nb: 4\n"
    data, _, problems = load_yaml(text, "t.yaml")
    assert data == {"a": 1, "b": 2}
    assert [(p.location.line, p.path) for p in problems] == [(3, ("a",)), (4, ("b",))]


def test_syntax_error_has_a_location() -> None:
    with pytest.raises(ConfigError) as raised:
        load_yaml("a:\n  - b\n c: d\n", "t.yaml")
    (problem,) = raised.value.problems
    assert problem.location.line == 3
    assert str(problem).startswith("t.yaml:3:")


def test_empty_document_is_an_empty_mapping() -> None:
    assert load_yaml("", "t.yaml")[0] == {}
