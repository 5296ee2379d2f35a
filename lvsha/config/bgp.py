"""`bgp:`: announce virtual services' addresses over BGP through the local FRR.

lvsha speaks no BGP itself: it keeps FRR's bgpd (and bfdd) announcing a host route for each
announced VIP while this director can serve it (lvsha.bgp).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import BeforeValidator, Field

from lvsha.config.base import IPAddress, Model, Name, Seconds

if TYPE_CHECKING:
    from lvsha.config.lvs import VirtualServer


def _router_id(value: object) -> object:
    if isinstance(value, str):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"'{value}' is not a router id (an IPv4 address)") from None
    return value


ASN = Annotated[int, Field(ge=1, le=4294967295)]


class BgpPeer(Model):
    """A BGP neighbour (usually the router in front of the directors)."""

    address: IPAddress = Field(description="The neighbour's address.")
    asn: ASN = Field(description="The neighbour's AS number.")
    bfd: bool = Field(
        True,
        description="Follow the session with BFD (bgp.bfd's timers): a dead link is "
        "found in transmit_interval x multiplier instead of the BGP hold time.",
    )


class BfdTimers(Model):
    """The BFD profile lvsha writes for its neighbours."""

    transmit_interval: Seconds = Field(
        0.3, ge=0.01, le=60, description="Interval between BFD control packets sent."
    )
    receive_interval: Seconds = Field(
        0.3, ge=0.01, le=60, description="Interval between BFD control packets expected."
    )
    multiplier: int = Field(3, ge=2, le=255, description="Packets missed before the peer is down.")


class BgpSettings(Model):
    """Announce the VIPs of the named virtual servers through FRR while this director can
    serve them (the service has quorum, the checker runs, the director is not handed over)."""

    asn: ASN = Field(description="This director's AS number (FRR's `router bgp`).")
    router_id: Annotated[str, BeforeValidator(_router_id)] | None = Field(
        None, description="BGP router id (an IPv4 address); default: FRR's choice."
    )
    peers: list[BgpPeer] = Field(min_length=1, description="The neighbours to announce to.")
    announce: list[Name] = Field(
        min_length=1,
        description="Names of the virtual servers whose address is announced (a /32 or /128 "
        "route). An address several announced virtual servers share is announced while every "
        "one of them has quorum.",
    )
    bfd: BfdTimers = Field(default_factory=BfdTimers)
    graceful_shutdown: Seconds = Field(
        5.0,
        ge=0,
        le=600,
        description="On a handover or a stop, announce the routes this long with the "
        "GRACEFUL_SHUTDOWN community (RFC 8326) before withdrawing them, so routers move new "
        "flows away first; 0: withdraw at once.",
    )
    vtysh: list[str] = Field(
        default_factory=lambda: ["vtysh"],
        min_length=1,
        description="The command that reaches FRR, as a list (e.g. [vtysh, -N, lb1] for an "
        "FRR started with a pathspace).",
    )
    timeout: Seconds = Field(10.0, gt=0, le=120, description="Limit of one vtysh call.")
    poll_interval: Seconds = Field(
        2.0, ge=0.1, le=60, description="How often the sessions' state is read back from FRR."
    )


CONSISTENT_SCHEDULERS = frozenset({"mh", "sh"})
"""Schedulers that send a flow to the same real server on every director (the same real
servers, added in the same order): a flow the routers move to another director keeps going."""


def announced_addresses(
    settings: BgpSettings, virtual_servers: Sequence[VirtualServer]
) -> dict[str, tuple[str, ...]]:
    """Each announced host route ("192.0.2.100/32") -> the announced virtual servers (names)
    whose address it is, in the order `announce` names them. Names that name no virtual server
    with an address are left out (check-config refuses them)."""
    by_name = {vs.name: vs for vs in virtual_servers if vs.name is not None}
    routes: dict[str, list[str]] = {}
    for name in settings.announce:
        vs = by_name.get(name)
        if vs is None or vs.address is None or vs.group is not None:
            continue
        route = str(ipaddress.ip_network(vs.address))
        if name not in routes.setdefault(route, []):
            routes[route].append(name)
    return {route: tuple(names) for route, names in routes.items()}


def advice(
    settings: BgpSettings, virtual_servers: Sequence[VirtualServer]
) -> list[tuple[str, str]]:
    """(key path, warning) for announced virtual servers that will work but break flows when
    a director joins or leaves: check-config prints them, `lvsha run` logs them."""
    by_name = {vs.name: (n, vs) for n, vs in enumerate(virtual_servers) if vs.name is not None}
    found: list[tuple[str, str]] = []
    for name in dict.fromkeys(settings.announce):
        if name not in by_name:
            continue
        n, vs = by_name[name]
        if vs.scheduler not in CONSISTENT_SCHEDULERS:
            found.append(
                (
                    f"virtual_servers[{n}].scheduler",
                    f"'{name}' is announced over BGP with scheduler {vs.scheduler}: each "
                    "director picks its own real server for a flow, so flows the routers move "
                    "to another director (one leaves or joins) break; scheduler mh (with "
                    "scheduler_flags [mh-port]) sends a flow to the same real server on every "
                    "director",
                )
            )
        elif vs.scheduler == "mh" and "mh-port" not in vs.scheduler_flags:
            found.append(
                (
                    f"virtual_servers[{n}].scheduler_flags",
                    f"'{name}' is announced over BGP with mh without mh-port: every flow of "
                    "one client address goes to one real server (add mh-port to spread them)",
                )
            )
        kinds = {vs.forwarding, *(rs.forwarding for rs in vs.real_servers if rs.forwarding)}
        if "NAT" in kinds:
            found.append(
                (
                    f"virtual_servers[{n}].forwarding",
                    f"'{name}' is announced over BGP with NAT forwarding: a real server's "
                    "replies must return through the director that took the flow, which "
                    "ECMP routers do not ensure; use DR or TUN",
                )
            )
    return found
