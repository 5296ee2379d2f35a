"""The VRRP states: a contract between the VRRP machine, the messages the processes exchange,
and the IPVS sync daemon that follows the role. Here, below all of them, so no import runs up
the layers."""

from __future__ import annotations

import enum


class VrrpState(enum.Enum):
    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"
    RELEASING = "releasing"
    """Sent priority 0 on shutdown, still holds the VIPs until a new master is heard."""
