"""The import of the project's own keepalived corpus (tests/data/keepalived), pinned by golden
files: the YAML written, the report and the exit status. Each output also passes
check-config. After an intended change, regenerate with LVSHA_UPDATE_GOLDEN=1 and review the
diff."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from lvsha.config import load_text
from lvsha.keepalived.importer import import_keepalived

CORPUS = Path(__file__).resolve().parents[2] / "data" / "keepalived"
GOLDEN = CORPUS / "golden"
SOURCES = sorted(
    [*CORPUS.glob("*.conf"), *CORPUS.glob("samples/*.conf"), *CORPUS.glob("keywords/*.conf")]
)


def config_ids(source: Path) -> tuple[str, ...]:
    """The ids a file's @id lines name (each is imported once per id), else one run as lb1."""
    found = re.findall(r"^\s*@\^?([A-Za-z0-9_.-]+)", source.read_text(), flags=re.MULTILINE)
    return tuple(sorted(set(found))) or ("lb1",)


CASES = [(source, config_id) for source in SOURCES for config_id in config_ids(source)]


def stem(source: Path, config_id: str) -> str:
    folder = source.parent.relative_to(CORPUS)
    return str(folder / f"{source.stem}-{config_id}")


@pytest.mark.parametrize(("source", "config_id"), CASES, ids=[stem(s, i) for s, i in CASES])
def test_the_corpus_imports_as_pinned(source: Path, config_id: str, tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    err = io.StringIO()
    status = import_keepalived(str(source), str(out), config_id, err=err)
    written = out.read_text().replace(str(CORPUS), "<corpus>")
    report = err.getvalue().replace(str(CORPUS), "<corpus>") + f"exit status {status}\n"
    load_text(out.read_text(), str(out))  # passes check-config
    name = stem(source, config_id)
    golden_yaml, golden_report = GOLDEN / f"{name}.yaml", GOLDEN / f"{name}.report"
    if os.environ.get("LVSHA_UPDATE_GOLDEN"):
        golden_yaml.parent.mkdir(parents=True, exist_ok=True)
        golden_yaml.write_text(written)
        golden_report.write_text(report)
    assert written == golden_yaml.read_text()
    assert report == golden_report.read_text()
