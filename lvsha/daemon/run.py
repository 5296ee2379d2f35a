"""`lvsha run`: validate, then supervise the VRRP and checker children until told to stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from lvsha.daemon.child import load_or_log
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.supervisor import ChildSpec, Supervisor, child_argv

log = logging.getLogger("lvsha")


def run(config_path: str, run_dir: str, dry_run: bool = False) -> int:
    setup_logging("main")
    config = load_or_log(config_path, log, "not starting")
    if config is None:
        return 1
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    children = []
    if config.vrrp_instances:
        intervals = [i.advert_interval for i in config.vrrp_instances.values()]
        children.append(
            ChildSpec(
                "vrrp",
                child_argv("lvsha.daemon.vrrp_process", config_path, "--run-dir", run_dir),
                # A leaving master may hold its VIPs for a Master_Down_Interval.
                stop_timeout=max([10.0, *(4 * i + 2 for i in intervals)]),
            )
        )
    if config.virtual_servers:
        argv = child_argv("lvsha.daemon.checker_process", config_path, "--run-dir", run_dir)
        children.append(ChildSpec("checker", [*argv, "--dry-run"] if dry_run else argv))

    def on_reload() -> None:
        if load_or_log(config_path, log, "SIGHUP: keeping the running configuration") is None:
            return
        log.warning(
            "SIGHUP: %s is valid, but this version applies a changed configuration only on "
            "restart; nothing was changed",
            config_path,
        )

    supervisor = Supervisor(children, on_reload=on_reload)

    def relay(child: str, message: dict[str, object]) -> None:
        # The checker follows the VRRP role (the kernel's connection sync daemon).
        if child == "vrrp" and message.get("type") == "vrrp_state":
            supervisor.send("checker", message)

    supervisor.on_message = relay
    return asyncio.run(supervisor.run())
