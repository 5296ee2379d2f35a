"""`lvsha run`: validate, then supervise the VRRP child until told to stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from lvsha.config import ConfigError, load_file
from lvsha.daemon.logs import setup_logging
from lvsha.daemon.supervisor import ChildSpec, Supervisor, child_argv

log = logging.getLogger("lvsha")


def run(config_path: str, run_dir: str) -> int:
    setup_logging("main")
    try:
        config = load_file(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("not starting: %d configuration error(s)", len(exc.problems))
        return 1
    if not config.vrrp_instances:
        log.error(
            "not starting: %s has no vrrp_instances (virtual servers alone are not run yet)",
            config_path,
        )
        return 1
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    vrrp = ChildSpec(
        "vrrp",
        child_argv("lvsha.daemon.vrrp_process", config_path, "--run-dir", run_dir),
        # A leaving master may hold its VIPs for one Master_Down_Interval (make-before-break).
        stop_timeout=max(
            [10.0, *(4 * i.advert_interval + 2 for i in config.vrrp_instances.values())]
        ),
    )

    def on_message(child: str, message: dict[str, object]) -> None:
        if message.get("type") == "vrrp_state":
            log.debug("%s reports %s", child, message)

    def on_reload() -> None:
        try:
            load_file(config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("SIGHUP: %s has errors; the running configuration stays", config_path)
            return
        log.warning(
            "SIGHUP: %s is valid, but this version applies a changed configuration only on "
            "restart; nothing was changed",
            config_path,
        )

    return asyncio.run(Supervisor([vrrp], on_message=on_message, on_reload=on_reload).run())
