"""Every configuration shipped in conf/ is valid, and check-config says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lvsha.cli import main
from lvsha.config import load_file

CONF = Path(__file__).resolve().parents[3] / "conf"
EXAMPLES = sorted(CONF.rglob("*.yaml"))


def test_the_examples_exist() -> None:
    names = {p.relative_to(CONF).as_posix() for p in EXAMPLES}
    for pair in ("nat", "dr", "tun"):
        assert {f"{pair}-master.yaml", f"{pair}-backup.yaml"} <= names
    assert {"lab/director-a.yaml", "lab/director-b.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_example_loads(path: Path) -> None:
    config = load_file(path)
    assert config.vrrp_instances


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_check_config_accepts_example(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK: ") and out.count("\n") == 1


def test_pairs_differ_only_where_a_pair_should() -> None:
    for pair in ("nat", "dr", "tun"):
        master = load_file(CONF / f"{pair}-master.yaml")
        backup = load_file(CONF / f"{pair}-backup.yaml")
        assert master.virtual_servers == backup.virtual_servers
        assert master.vrrp_instances.keys() == backup.vrrp_instances.keys()
        for name, inst in master.vrrp_instances.items():
            other = backup.vrrp_instances[name]
            assert inst.virtual_router_id == other.virtual_router_id
            assert inst.priority > other.priority
            assert inst.virtual_ipaddresses == other.virtual_ipaddresses


def test_module_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lvsha", "check-config", str(CONF / "lab" / "director-a.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 VRRP instance (VI_LAB on eth0 vrid 42)" in done.stdout
