"""The import of the project's own keepalived corpus (tests/data/keepalived), pinned by golden
files: the YAML written, the report and the exit status. Each output also passes
check-config. After an intended change, regenerate with LVSHA_UPDATE_GOLDEN=1 and review the
diff."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from lvsha.config import load_text
from lvsha.keepalived.importer import import_keepalived

CORPUS = Path(__file__).resolve().parents[2] / "data" / "keepalived"
GOLDEN = CORPUS / "golden"
CASES = [
    (source, config_id)
    for source in sorted(CORPUS.glob("*.conf"))
    for config_id in (("lb1", "lb2") if source.name == "pair_defs.conf" else ("lb1",))
]


@pytest.mark.parametrize(("source", "config_id"), CASES, ids=[f"{s.stem}-{i}" for s, i in CASES])
def test_the_corpus_imports_as_pinned(source: Path, config_id: str, tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    err = io.StringIO()
    status = import_keepalived(str(source), str(out), config_id, err=err)
    written = out.read_text().replace(str(CORPUS), "<corpus>")
    report = err.getvalue().replace(str(CORPUS), "<corpus>") + f"exit status {status}\n"
    load_text(out.read_text(), str(out))  # passes check-config
    stem = f"{source.stem}-{config_id}"
    golden_yaml, golden_report = GOLDEN / f"{stem}.yaml", GOLDEN / f"{stem}.report"
    if os.environ.get("LVSHA_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        golden_yaml.write_text(written)
        golden_report.write_text(report)
    assert written == golden_yaml.read_text()
    assert report == golden_report.read_text()
