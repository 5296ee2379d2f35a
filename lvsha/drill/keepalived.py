"""keepalived as the drill's other director: its configuration, its command line, its state.

`KeepalivedInstance` describes one vrrp_instance and renders a keepalived.conf for it (the
interop tests use it too); `instance_from_config` makes one from an lvsha configuration, so a
drill can run keepalived with the same election, VIPs and announcements as lvsha. keepalived
runs with its own scheduling defaults: 2.2.7 leaves its VRRP process at SCHED_OTHER unless
`vrrp_rt_priority` (or `max_auto_priority`) is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import ip_interface
from pathlib import Path
from typing import Literal

from lvsha.config import LvshaConfig

KEEPALIVED = "keepalived"
KEEPALIVED_PID_FILES = ("keepalived.pid", "vrrp.pid", "checkers.pid")
KEEPALIVED_COMMAND = (
    KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
    "--dont-respawn", "--use-file", "{config}",
    "--pid", "{run_dir}/keepalived.pid",
    "--vrrp_pid", "{run_dir}/vrrp.pid",
    "--checkers_pid", "{run_dir}/checkers.pid",
)  # fmt: skip
"""argv of one keepalived director for the drill's launcher: the VRRP subsystem in the
foreground, logging each line to stdout, with its PID files in the director's run directory
(the default /run/keepalived.pid would make a second keepalived on the machine refuse to start)."""
STATE_LINE = re.compile(r"\((?P<instance>[^)]+)\) Entering (?P<state>[A-Z]+) STATE")


@dataclass(frozen=True)
class KeepalivedInstance:
    """One keepalived vrrp_instance; the family follows the virtual addresses, as in keepalived."""

    vrid: int
    priority: int
    virtual_addresses: tuple[str, ...]
    """With prefix length, e.g. "192.0.2.100/24"."""
    advert_interval: float = 1.0
    """Seconds; VRRPv2 takes whole seconds only."""
    version: Literal[2, 3] = 2
    interface: str = "eth0"
    state: Literal["MASTER", "BACKUP"] = "BACKUP"
    nopreempt: bool = False
    auth_pass: str | None = None
    """VRRPv2 simple password (auth_type PASS); keepalived keeps the first 8 characters."""
    unicast_source: str | None = None
    unicast_peers: tuple[str, ...] = ()
    name: str = "lvsha_peer"
    garp_master_repeat: int | None = None
    """Gratuitous ARPs per VIP sent on becoming master; None: keepalived's default (5)."""
    garp_master_delay: float | None = None
    """Seconds before the second set; 0 sends none; None: keepalived's default (5)."""
    garp_interval: float | None = None
    """Seconds between gratuitous ARPs (global vrrp_garp_interval); None: its default (0)."""
    rt_priority: int | None = None
    """vrrp_rt_priority: SCHED_FIFO for the VRRP process; None: keepalived's default (none)."""

    def __post_init__(self) -> None:
        if not self.virtual_addresses:
            raise ValueError("keepalived needs at least one virtual address")
        families = {ip_interface(address).version for address in self.virtual_addresses}
        if len(families) != 1:
            raise ValueError(f"virtual addresses mix families: {self.virtual_addresses}")
        if self.version == 2 and (families != {4} or self.advert_interval % 1):
            raise ValueError("VRRPv2 runs over IPv4 with whole-second intervals")
        if self.auth_pass is not None and self.version != 2:
            raise ValueError("only VRRPv2 has authentication")
        if self.nopreempt and self.state != "BACKUP":
            raise ValueError("keepalived takes nopreempt only with state BACKUP")
        if self.unicast_source is not None and not self.unicast_peers:
            raise ValueError("unicast_source without unicast_peers")
        if self.garp_master_delay is not None and self.garp_master_delay % 1:
            raise ValueError("keepalived's garp_master_delay is whole seconds")

    @property
    def family(self) -> Literal[4, 6]:
        return 4 if ip_interface(self.virtual_addresses[0]).version == 4 else 6

    @property
    def skew_time(self) -> float:
        """RFC 3768 6.1 (v2, seconds) and RFC 5798 6.1 (v3, scaled by the interval)."""
        if self.version == 2:
            return (256 - self.priority) / 256
        return (256 - self.priority) * self.advert_interval / 256

    @property
    def master_down_interval(self) -> float:
        return 3 * self.advert_interval + self.skew_time

    def config_text(self) -> str:
        lines = [
            "global_defs {",
            f"    router_id {self.name}",
            "    log_unknown_vrids",
        ]
        if self.garp_interval is not None:
            lines.append(f"    vrrp_garp_interval {self.garp_interval:g}")
        if self.rt_priority is not None:
            lines.append(f"    vrrp_rt_priority {self.rt_priority}")
        lines += [
            "}",
            "",
            f"vrrp_instance {self.name} {{",
            f"    interface {self.interface}",
            f"    state {self.state}",
            f"    virtual_router_id {self.vrid}",
            f"    priority {self.priority}",
            f"    advert_int {self.advert_interval:g}",
            f"    version {self.version}",
        ]
        if self.nopreempt:
            lines.append("    nopreempt")
        if self.garp_master_repeat is not None:
            lines.append(f"    garp_master_repeat {self.garp_master_repeat}")
        if self.garp_master_delay is not None:
            lines.append(f"    garp_master_delay {self.garp_master_delay:g}")
        if self.auth_pass is not None:
            lines += [
                "    authentication {",
                "        auth_type PASS",
                f"        auth_pass {self.auth_pass}",
                "    }",
            ]
        if self.unicast_source is not None:
            lines.append(f"    unicast_src_ip {self.unicast_source}")
        if self.unicast_peers:
            lines += ["    unicast_peer {", *(f"        {p}" for p in self.unicast_peers), "    }"]
        lines += [
            "    virtual_ipaddress {",
            *(f"        {address}" for address in self.virtual_addresses),
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"


class UnsupportedConfigError(ValueError):
    """The lvsha configuration uses something the drill does not translate for keepalived."""


def instance_from_config(config: LvshaConfig, rt_priority: int | None = None) -> KeepalivedInstance:
    """keepalived's equivalent of the one VRRP instance in `config`: election, VIPs and
    gratuitous ARPs alike. lvsha's real-time priority is not carried over (keepalived keeps
    its own default unless `rt_priority` is given)."""
    if len(config.vrrp_instances) != 1:
        raise UnsupportedConfigError("exactly one VRRP instance is translated")
    ((name, instance),) = config.vrrp_instances.items()
    where = f"vrrp_instances.{name}"
    if (
        instance.virtual_ipaddresses_excluded
        or instance.track_interfaces
        or instance.track_scripts
        or instance.track_files
    ):
        raise UnsupportedConfigError(f"{where}: excluded VIPs and tracking are not translated")
    if instance.unicast_peers or instance.authentication is not None:
        raise UnsupportedConfigError(f"{where}: unicast and authentication are not translated")
    if instance.garp.refresh:
        raise UnsupportedConfigError(f"{where}.garp.refresh is not translated")
    if any(
        vip.device is not None
        or vip.label is not None
        or vip.broadcast is not None
        or vip.scope is not None
        for vip in instance.virtual_ipaddresses
    ):
        raise UnsupportedConfigError(
            f"{where}.virtual_ipaddresses: device, label, broadcast and scope are not translated"
        )
    return KeepalivedInstance(
        vrid=instance.virtual_router_id,
        priority=instance.priority,
        virtual_addresses=tuple(str(vip.address) for vip in instance.virtual_ipaddresses),
        advert_interval=instance.advert_interval,
        version=instance.version,
        interface=instance.interface,
        state=instance.state,
        nopreempt=not instance.preempt,
        name=name,
        garp_master_repeat=instance.garp.burst,
        garp_master_delay=instance.garp.delay,
        garp_interval=instance.garp.interval or None,
        rt_priority=rt_priority,
    )


def write_config(config: LvshaConfig, target: Path, rt_priority: int | None = None) -> None:
    target.write_text(instance_from_config(config, rt_priority).config_text(), encoding="utf-8")


def last_state(log_text: str) -> str | None:
    """The state keepalived last logged entering ("BACKUP", "MASTER", "FAULT"), None before the
    first. Only whole lines count: a line still being written is not read."""
    complete, _, _ = log_text.rpartition("\n")
    found = None
    for match in STATE_LINE.finditer(complete):
        found = match["state"]
    return found
