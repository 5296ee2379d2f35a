"""Configuration of IPVS virtual services and their real servers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from lvsha.config.base import Command, IPAddress, Model, Name
from lvsha.config.checks import Check, CheckTiming
from lvsha.config.vrrp import Family

U32_MAX = 4294967295
"""IPVS carries thresholds and fwmarks as unsigned 32-bit netlink attributes."""


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


Forwarding = Annotated[Literal["NAT", "DR", "TUN"], BeforeValidator(_upper)]
Protocol = Annotated[Literal["TCP", "UDP", "SCTP"], BeforeValidator(_upper)]
Scheduler = Literal[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"
]
SchedulerFlag = Literal["sh-fallback", "sh-port", "mh-fallback", "mh-port"]


class SorryServer(Model):
    """Where traffic goes while the healthy real servers are below quorum."""

    address: IPAddress
    port: int | None = Field(
        None, ge=0, le=65535, description="Default: the virtual server's port."
    )
    weight: int = Field(1, ge=1, le=65535)
    forwarding: Forwarding | None = Field(
        None, description="Default: the virtual server's forwarding."
    )


class RealServer(Model):
    """A backend behind the virtual server."""

    address: IPAddress
    port: int | None = Field(
        None, ge=0, le=65535, description="Default: the virtual server's port."
    )
    weight: int = Field(1, ge=0, le=65535, description="IPVS weight while healthy.")
    forwarding: Forwarding | None = Field(
        None, description="Overrides the virtual server's forwarding for this server."
    )
    upper_threshold: int = Field(
        0, ge=0, le=U32_MAX, description="Connection limit above which IPVS sends no more; 0: none."
    )
    lower_threshold: int = Field(
        0,
        ge=0,
        le=U32_MAX,
        description="Connections below which a throttled server is used again.",
    )
    inhibit_on_failure: bool | None = Field(
        None, description="Default: the virtual server's inhibit_on_failure."
    )
    checks: list[Check] = Field(
        default_factory=list, description="All must pass for the server to be in service."
    )
    notify_up: Command | None = Field(
        None, description="Run when its checks find the server up again (keepalived's notify_up)."
    )
    notify_down: Command | None = Field(
        None, description="Run when its checks find the server down (keepalived's notify_down)."
    )
    smtp_alert: bool | None = Field(
        None,
        description="Mail this server's changes to the SMTP sinks; default: "
        "global.notification.smtp_alert_checker, else smtp_alert, else true (as keepalived).",
    )


class VirtualServer(Model):
    """An IPVS virtual service: address, port and protocol, or a firewall mark."""

    name: Name | None = Field(None, description="Label for logs and metrics.")
    address: IPAddress | None = Field(None, description="Virtual IP (or use fwmark).")
    port: int | None = Field(
        None, ge=0, le=65535, description="With address; 0 (all ports) only with persistence."
    )
    protocol: Protocol | None = Field(None, description="TCP, UDP or SCTP; required with address.")
    fwmark: int | None = Field(
        None, ge=1, le=U32_MAX, description="Firewall mark instead of address/port/protocol."
    )
    family: Family = Field("ipv4", description="Default: the address's family; for fwmark ipv4.")
    scheduler: Scheduler = Field("wlc", description="IPVS scheduler (lvs_sched).")
    scheduler_flags: list[SchedulerFlag] = Field(
        default_factory=list, description="sh-* flags with sh, mh-* flags with mh."
    )
    forwarding: Forwarding = Field("NAT", description="NAT, DR or TUN (lb_kind).")
    persistence_timeout: int = Field(
        0, ge=0, le=31536000, description="Seconds a client sticks to its server; 0: off."
    )
    persistence_granularity: int | None = Field(
        None,
        ge=0,
        le=128,
        description="Prefix length grouping clients for persistence; default 32 / 128.",
    )
    ops: bool = Field(False, description="One-packet scheduling (UDP only).")
    # keepalived keeps quorum and hysteresis as unsigned 32-bit numbers; so do we.
    quorum: int = Field(
        1, ge=1, le=U32_MAX, description="Healthy weight below which the sorry server takes over."
    )
    hysteresis: int = Field(
        0, ge=0, le=U32_MAX, description="Band around quorum that avoids flapping."
    )
    sorry_server: SorryServer | None = None
    inhibit_on_failure: bool = Field(
        False, description="Failed servers stay at weight 0 instead of being removed."
    )
    virtualhost: str | None = Field(None, description="Default Host header of http checks.")
    check_defaults: CheckTiming = Field(
        default_factory=CheckTiming,
        description="Check defaults for this server's checks (keys set here win over global).",
    )
    real_servers: list[RealServer] = Field(default_factory=list)
    quorum_up: Command | None = Field(None, description="Run when the service gains quorum.")
    quorum_down: Command | None = Field(None, description="Run when the service loses quorum.")
    omega: bool = Field(
        False,
        description="When lvsha stops, run notify_down of the servers up and quorum_down "
        "(keepalived's omega).",
    )
    group: Name | None = Field(
        None,
        description="A virtual_server_groups entry whose members are this virtual server's "
        "services (then no address, port or fwmark here; protocol applies to every member).",
    )
    smtp_alert: bool | None = Field(
        None,
        description="Mail this service's quorum changes to the SMTP sinks; default: "
        "global.notification.smtp_alert_checker, else smtp_alert, else false (as keepalived).",
    )
