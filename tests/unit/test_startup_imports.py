"""Each process and command imports only what it uses (issue 11: import cost is start-up cost,
paid by every CLI call and every restarted child). Checked in a fresh interpreter each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

HTTP_DNS_AND_PROBES = (
    "aiohttp",
    "yarl",
    "multidict",
    "dns",
    "asyncio_dgram",
    "lvsha.checks.http",
    "lvsha.checks.dns",
    "lvsha.checks.tcp",
    "lvsha.checks.tcp_fast",
    "lvsha.checks.udp",
    "lvsha.checks.smtp",
    "lvsha.checks.icmp",
    "lvsha.checks.targets",
    "lvsha.checks.pool",
)
DAEMON = ("lvsha.daemon.run", "lvsha.daemon.control", "lvsha.daemon.supervisor", "asyncio")
MODELS = ("pydantic", "yaml", "lvsha.config.model", "lvsha.drill")
NOT_IN_THE_VRRP_PROCESS = ("pyroute2", "lvsha.checks")


def modules_after(code: str) -> set[str]:
    """sys.modules of a fresh interpreter after running `code`."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return set(loaded)


def cli_modules(*argv: str) -> set[str]:
    """sys.modules after `lvsha argv` ran (--version and --help exit through SystemExit)."""
    return modules_after(
        "import contextlib\n"
        "from lvsha.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        f"    main({list(argv)!r})"
    )


def under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules in `modules` that are one of `packages` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_the_vrrp_process_never_imports_http_dns_or_the_probes() -> None:
    assert under(modules_after("import lvsha.daemon.vrrp_process"), HTTP_DNS_AND_PROBES) == []


def test_the_vrrp_process_imports_neither_pyroute2_nor_the_health_checks() -> None:
    # pyroute2's package alone costs the VRRP process 70-125 ms and about 11 MiB at each start;
    # the script runner it shares with the checks lives in lvsha.scripts.
    loaded = modules_after("import lvsha.daemon.vrrp_process")
    assert under(loaded, NOT_IN_THE_VRRP_PROCESS) == []


def test_the_parent_spawns_its_children_before_importing_http_dns_or_the_probes() -> None:
    # What lvsha.daemon.run imports is what the parent loads before it spawns the VRRP child;
    # the control API's aiohttp and the reload planner come after (AFTER_SPAWN_IMPORTS).
    assert under(modules_after("import lvsha.daemon.run"), HTTP_DNS_AND_PROBES) == []


def test_the_after_spawn_imports_are_the_ones_held_back() -> None:
    from lvsha.daemon.run import AFTER_SPAWN_IMPORTS  # noqa: PLC0415

    loaded = modules_after(
        "import importlib\n"
        "from lvsha.daemon.run import AFTER_SPAWN_IMPORTS\n"
        "for module in AFTER_SPAWN_IMPORTS:\n"
        "    importlib.import_module(module)"
    )
    assert set(AFTER_SPAWN_IMPORTS) <= loaded
    assert "lvsha.checks.targets" in loaded  # the planner's, warmed before a first reload


@pytest.mark.parametrize("argv", [("--version",), ("--help",), ("check-config", "--help")])
def test_version_and_help_import_no_model_and_no_daemon(argv: tuple[str, ...]) -> None:
    assert under(cli_modules(*argv), (*MODELS, *DAEMON, *HTTP_DNS_AND_PROBES)) == []


def test_check_config_imports_the_models_but_no_daemon_and_no_drill() -> None:
    loaded = cli_modules("check-config", str(REPO / "conf" / "nat-master.yaml"))
    assert "lvsha.config.model" in loaded
    assert under(loaded, (*DAEMON, *HTTP_DNS_AND_PROBES, "lvsha.drill")) == []


def test_drill_help_still_lists_the_drill_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lvsha", "drill", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "--scenario" in done.stdout


def test_the_vrrp_process_runs_without_openssl_or_yaml() -> None:
    # As the parent starts it (`python -m`): OpenSSL (ssl, and hashlib's _hashlib with
    # libcrypto) is about 7 MiB of its resident memory and it uses neither; the configuration
    # arrives as a finished model, so no YAML either.
    code = (
        "import json, runpy, sys\n"
        "sys.argv = ['vrrp_process', '--help']\n"
        "try:\n"
        "    runpy.run_module('lvsha.daemon.vrrp_process', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "import hashlib\n"
        "hashlib.sha256(b'the built-in one still works').hexdigest()\n"
        "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert under(loaded, ("ssl", "_ssl", "_hashlib", "yaml")) == []
    assert "asyncio" in loaded  # it did import what it runs on
