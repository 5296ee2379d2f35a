"""conf/REFERENCE.md is generated from the model and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from lvsha.config.model import LvshaConfig
from lvsha.config.reference import reference

REFERENCE = Path(__file__).resolve().parents[3] / "conf" / "REFERENCE.md"


def test_reference_matches_the_model() -> None:
    assert REFERENCE.read_text() == reference(), (
        "conf/REFERENCE.md is stale: run `python -m lvsha.config.reference > conf/REFERENCE.md`"
    )


def test_reference_lists_every_key_of_every_section() -> None:
    text = reference()
    for name, info in LvshaConfig.model_fields.items():
        assert f"| `{info.alias or name}` |" in text
    for key in ("virtual_router_id", "persistence_timeout", "dynamic_weight", "tls_verify"):
        assert f"| `{key}` |" in text
