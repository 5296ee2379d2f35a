"""systemd/lvsha.service is valid for systemd and asks only for what lvsha needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "lvsha.service"
INSTALLED = "/usr/local/bin/lvsha"

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze verify on `text` with the binary path pointed at this venv.

    verify insists that every Exec*= binary exists; the unit names the installed path, so
    the copy differs from the file only in that path.
    """
    lvsha = Path(sys.executable).with_name("lvsha")
    assert lvsha.exists(), "the package is not installed in this environment"
    unit = tmp_path / "lvsha.service"
    unit.write_text(text.replace(INSTALLED, str(lvsha)))
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )


@needs_systemd
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    done = verify(UNIT.read_text(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@needs_systemd
def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy")
    done = verify(broken, tmp_path)
    assert "Failed to parse service type" in done.stderr or done.returncode != 0


def service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return dict(parser["Service"])


def test_lifecycle() -> None:
    service = service_section()
    assert service["Type"] == "notify"
    assert service["ExecStartPre"] == f"{INSTALLED} check-config ${{LVSHA_CONFIG}}"
    # Synchronous: `systemctl reload` fails when the reload was refused (issue 10).
    assert service["ExecReload"] == f"{INSTALLED} reload"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    # The address ledger in the run directory must outlive a killed lvsha (issue 9).
    assert service["RuntimeDirectoryPreserve"] == "yes"
    # The operators' overrides survive restarts (issue 12), in the state directory systemd
    # makes writable under ProtectSystem=strict, and the control socket is reachable by its
    # group through the run directory.
    assert service["StateDirectory"] == "lvsha"
    assert service["ExecStart"].endswith("--state-dir ${STATE_DIRECTORY}")
    assert int(service["RuntimeDirectoryMode"], 8) & 0o001


def test_capabilities_are_only_what_lvsha_uses() -> None:
    caps = set(service_section()["CapabilityBoundingSet"].split())
    assert caps == {
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_KILL",
        "CAP_SYS_NICE",
    }


def test_hardening() -> None:
    service = service_section()
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelModules": "yes",
        "RestrictNamespaces": "yes",
    }.items():
        assert service.get(key) == value, key
    # Tunables are read-only but for the per-interface IPv4 settings (accept_local).
    assert service["ProtectKernelTunables"] == "yes"
    assert service["ReadWritePaths"] == "/proc/sys/net/ipv4/conf"
    families = set(service["RestrictAddressFamilies"].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}
