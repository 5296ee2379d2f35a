"""Reading a Prometheus text exposition in tests, as Prometheus' own tools read it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def parsed(text: str) -> dict[str, Metric]:
    """The families prometheus_client's parser reads from `text` (it raises on a malformed
    line), by name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(family: Metric) -> dict[tuple[tuple[str, str], ...], float]:
    """A family's samples as {sorted labels: value}, sample names aside."""
    return {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}


def promtool_accepts(text: str) -> None:
    """Assert that `promtool check metrics` finds nothing wrong (lint included) in `text`.
    Without promtool (Debian's prometheus package; `make test` installs it) the check is
    skipped, except in CI, where it must run."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed (Debian: apt install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, f"promtool: {checked.stdout}{checked.stderr}"
