"""The few kernel settings lvsha changes itself, in the current network namespace.

`accept_local`: when an address owner (priority 255) returns while a backup holds the owner's
address as its VIP, the owner's adverts arrive at the backup from an address that is local
there, and Linux drops such packets unless `net.ipv4.conf.IF.accept_local` is 1. The backup
would then never hear the owner, never step down, and the address would be on two hosts.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("lvsha.net")

IPV4_CONF = Path("/proc/sys/net/ipv4/conf")

_warned: set[tuple[Path, str]] = set()


def ensure_accept_local(interface: str, *, conf: Path = IPV4_CONF) -> bool:
    """Set `accept_local` to 1 on `interface` if it is 0; True when this call changed it.

    Never raises: a read-only /proc (a container) or a missing interface is logged once as a
    warning naming the setting to make by hand, and the caller carries on.
    """
    if not interface or "/" in interface or interface in (".", ".."):
        raise ValueError(f"{interface!r} is not an interface name")
    path = conf / interface / "accept_local"
    setting = f"net.ipv4.conf.{interface}.accept_local"
    try:
        if path.read_text().strip() != "0":
            return False
        path.write_text("1\n")
    except OSError as exc:
        if (conf, interface) not in _warned:
            _warned.add((conf, interface))
            log.warning(
                "cannot set %s=1 (%s): a returning address owner's adverts will be dropped "
                "by the kernel here; set it by hand",
                setting,
                exc.strerror or exc,
            )
        return False
    log.info(
        "set %s=1 (was 0): a returning address owner's adverts come from an address this "
        "host may hold as a VIP, and the kernel drops them otherwise",
        setting,
    )
    return True
