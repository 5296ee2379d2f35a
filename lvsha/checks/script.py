"""The script probe: an operator's program judges a real server by its exit status.

The program runs through lvsha.scripts (shared with VRRP track scripts and notify hooks), with
what it learns about its real server in its environment. Its names are re-exported here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from lvsha.checks.result import ProbeResult
from lvsha.scripts import (
    SCRIPT_PATH,
    ScriptCommand,
    ScriptRefusedError,
    ScriptRun,
    insecure_path_reason,
    judge_exit,
    judge_run,
    locate_script,
    resolve_program,
    run_script,
)

__all__ = [
    "SCRIPT_PATH",
    "ScriptCommand",
    "ScriptRefusedError",
    "ScriptRun",
    "ScriptTarget",
    "insecure_path_reason",
    "judge_exit",
    "judge_run",
    "locate_script",
    "probe_script",
    "resolve_program",
    "run_script",
]


@dataclass(frozen=True, slots=True)
class ScriptTarget:
    """What the script learns about its real server, through its environment."""

    real_server_address: str
    real_server_port: int
    virtual_service: str
    """As the operator knows it, e.g. "192.0.2.10:80/tcp" or "fwmark 7"."""
    check_name: str

    def environment(self, timeout: float) -> dict[str, str]:
        return {
            "PATH": SCRIPT_PATH,
            "LVSHA_RS_ADDRESS": self.real_server_address,
            "LVSHA_RS_PORT": str(self.real_server_port),
            "LVSHA_VS": self.virtual_service,
            "LVSHA_CHECK": self.check_name,
            "LVSHA_TIMEOUT": str(float(timeout)),
        }


async def probe_script(command: ScriptCommand, target: ScriptTarget, timeout: float) -> ProbeResult:
    """Run `command` for `target`; exit 0 passes, 1 fails, 2-255 per `dynamic_weight`."""
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    try:
        run = await run_script(command, target.environment(timeout), timeout)
    except ScriptRefusedError as refusal:
        return ProbeResult(False, str(refusal), loop.time() - started_at, refused=True)
    ok, reason, weight = judge_run(run, command.dynamic_weight)
    return ProbeResult(ok, reason, loop.time() - started_at, weight)
