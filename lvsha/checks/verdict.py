"""What the checks say about a real server: the contract between the check pool and IPVS.

The pool publishes a `RealServerVerdict` whenever a real server's verdict changes; the IPVS side
(`lvsha.ipvs`) turns verdicts into weights. Both import this module, which imports neither.

A real server is identified by what the kernel identifies its destination by: its virtual
service (protocol, address and port, or firewall mark and family) and its own address and port.
Not by where it stands in the file: a reload that inserts a virtual server before others, or
renames one, changes no real server's identity, so it restarts and re-judges nobody.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Health(enum.Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DISABLED = "disabled"
    """Drained by the operator: kept at weight 0 whatever its checks say."""
    MAINTENANCE = "maintenance"
    """In maintenance (`lvsha maint`): out of the IPVS table, its checks paused."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the checks (or the operator) currently say about one real server."""

    health: Health
    weight: int | None = None
    """A dynamic weight from the checks; None keeps the configured weight."""


@dataclass(frozen=True, slots=True)
class RealServerId:
    """A real server of one virtual service: (virtual service, address, port)."""

    virtual_service: str
    """The virtual service as an operator writes it, e.g. "192.0.2.10:80/tcp" or
    "fwmark 7/ipv4" (see `lvsha.checks.targets.virtual_service_id`)."""
    address: str
    """Canonical text form (`ipaddress`), so "2001:DB8::0:1" and "2001:db8::1" are one server."""
    port: int
    virtual_server_name: str | None = field(default=None, compare=False)
    """The virtual server's `name`, for logs and maintenance files; not part of the identity."""

    def __str__(self) -> str:
        service = self.virtual_server_name or self.virtual_service
        return f"{service} {host_port(self.address, self.port)}"


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class RealServerVerdict:
    """What the checks (or an operator) say about one real server, published when it changes."""

    real_server: RealServerId
    health: Health
    weight: int | None
    """A dynamic weight from a script check; None keeps the configured weight."""
    reason: str
    check: str | None
    """The check whose result changed the verdict, e.g. "tcp 192.0.2.21:80"; None otherwise."""
    at: float
    """Event loop time of the change."""

    @property
    def verdict(self) -> Verdict:
        """As `lvsha.ipvs.desired` takes it."""
        return Verdict(self.health, self.weight)
