"""The VM runner's kernel discovery, command line and process handling (no VM booted)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.vm import run_in_vm


def make_kernel(
    boot: Path, modules: Path, version: str, *, ip_vs: str | None, depmod: bool = True
) -> Path:
    image = boot / f"vmlinuz-{version}"
    image.write_bytes(b"")
    ipvs_dir = modules / version / "kernel/net/netfilter/ipvs"
    ipvs_dir.mkdir(parents=True)
    if ip_vs is not None:
        (ipvs_dir / ip_vs).write_bytes(b"")
    if depmod:
        (modules / version / "modules.dep").write_text("")
    return image


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    modules.mkdir()
    return boot, modules


def test_version_key_orders_numerically() -> None:
    versions = ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.10.0-1-amd64", "5.19.0-2-amd64"]
    assert sorted(versions, key=run_in_vm.version_key) == [
        "5.19.0-2-amd64",
        "6.1.0-9-amd64",
        "6.1.0-56-amd64",
        "6.10.0-1-amd64",
    ]


def test_find_kernel_picks_newest_with_ip_vs(roots: tuple[Path, Path]) -> None:
    boot, modules = roots
    make_kernel(boot, modules, "6.1.0-9-amd64", ip_vs="ip_vs.ko")
    wanted = make_kernel(boot, modules, "6.1.0-56-amd64", ip_vs="ip_vs.ko.xz")
    make_kernel(boot, modules, "6.12.0-1-amd64", ip_vs=None)
    make_kernel(boot, modules, "6.13.0-1-amd64", ip_vs="ip_vs.ko", depmod=False)
    assert run_in_vm.find_kernel(boot, modules) == wanted


def test_find_kernel_without_ip_vs_says_what_to_install(roots: tuple[Path, Path]) -> None:
    boot, modules = roots
    make_kernel(boot, modules, "6.18.44-custom", ip_vs=None)
    with pytest.raises(LookupError, match="apt-get install linux-image-amd64"):
        run_in_vm.find_kernel(boot, modules)


def test_vng_command_has_no_kvm_no_network_and_merges_stderr() -> None:
    command = run_in_vm.vng_command(
        Path("/venv/bin/vng"), Path("/boot/vmlinuz-6.1.0-56-amd64"), ["ipvsadm", "-Ln"], 1, "2G"
    )
    assert command[:4] == [
        "/venv/bin/vng",
        "--disable-kvm",
        "--run",
        "/boot/vmlinuz-6.1.0-56-amd64",
    ]
    assert not any(arg.startswith(("--network", "-n")) for arg in command)
    assert command[command.index("--cwd") + 1] == str(run_in_vm.REPO_ROOT)
    assert command[command.index("--exec") + 1] == "ipvsadm -Ln 2>&1"


def test_default_guest_command_runs_kernel_tests_from_the_venv() -> None:
    command = run_in_vm.default_guest_command()
    assert command[2] == str(run_in_vm.REPO_ROOT / ".venv/bin/python")
    assert command[-3:] == ["-m", "kernel", "tests/kernel"]


def test_run_relays_both_streams_and_exit_code(capfd: pytest.CaptureFixture[str]) -> None:
    code = run_in_vm.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    captured = capfd.readouterr()
    assert (code, captured.out, captured.err) == (3, "out\n", "err\n")


def test_run_gives_the_child_no_stdin(capfd: pytest.CaptureFixture[str]) -> None:
    code = run_in_vm.run(["sh", "-c", "cat; echo done"], timeout=30)
    assert (code, capfd.readouterr().out) == (0, "done\n")


def test_run_kills_on_timeout(capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = run_in_vm.run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert code == run_in_vm.TIMEOUT_EXIT_CODE
    assert time.monotonic() - started < 30
    assert "timed out" in capfd.readouterr().err
