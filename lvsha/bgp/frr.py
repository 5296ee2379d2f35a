"""What lvsha wants FRR to announce, and the vtysh commands that get it there. Pure: no
process is run here (lvsha.bgp.announcer runs them).

What lvsha writes into FRR, and nothing else:
- route-maps `LVSHA-GSHUT` (adds the GRACEFUL_SHUTDOWN community, RFC 8326), `LVSHA-IN`
  (accepts nothing: lvsha's sessions only announce) and `LVSHA-OUT` (sends what bgpd has);
- the BFD profile `lvsha` (bgp.bfd's timers);
- in `router bgp ASN` (made if FRR has none): the router id, `no bgp network import-check` (a
  VIP is announced whether or not the director's routing table has a route to it), each
  configured peer (`remote-as`, BFD, the two route-maps, activated in its own address family
  only), and one `network VIP/32` (or /128) statement per announced address, with
  `route-map LVSHA-GSHUT` while it is drained.

Which `network` statements exist is read from FRR's running configuration before each change
(`parse_running`), so a statement is never removed twice nor added over an operator's.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from lvsha.config.bgp import BgpSettings

GSHUT_MAP = "LVSHA-GSHUT"
IN_MAP = "LVSHA-IN"
OUT_MAP = "LVSHA-OUT"
BFD_PROFILE = "lvsha"


class Phase(enum.Enum):
    """Where the director stands in a planned drain (`lvsha handover`, a stop)."""

    SERVING = "serving"
    DRAINING = "draining"
    """Announced routes carry GRACEFUL_SHUTDOWN until bgp.graceful_shutdown has passed."""
    DRAINED = "drained"
    """Nothing announced."""


def wanted_routes(
    routes: Mapping[str, tuple[str, ...]],
    held: Set[str] | None,
    phase: Phase,
    announced: Set[str],
) -> dict[str, bool]:
    """route -> whether it carries GRACEFUL_SHUTDOWN, for each route to announce now.

    `routes`: announced routes and the virtual servers each stands for; `held`: the virtual
    servers whose quorum the checker reports held (None: no checker reports: nothing is
    served); `announced`: the routes FRR announces now (a drain only marks those, it never
    adds one). A route is served while every one of its virtual servers holds quorum."""
    if held is None or phase is Phase.DRAINED:
        return {}
    served = [route for route, names in routes.items() if all(n in held for n in names)]
    if phase is Phase.SERVING:
        return {route: False for route in served}
    return {route: True for route in served if route in announced}


def family(route: str) -> int:
    return ipaddress.ip_network(route).version


@dataclass(frozen=True, slots=True)
class Present:
    """What FRR's running configuration holds of lvsha's concern."""

    router: int | None = None
    """The AS of the default instance's `router bgp` (None: no BGP instance)."""
    routes: dict[str, str | None] = field(default_factory=dict)
    """`network` statements of that instance: route -> its route-map (None: none)."""
    neighbors: dict[str, str] = field(default_factory=dict)
    """Neighbours of that instance -> their `remote-as` value."""


def parse_running(text: str) -> Present:
    """The default BGP instance's AS, `network` statements and neighbours, from the output of
    `show running-config bgpd` (other instances, `router bgp N vrf X`, are not lvsha's)."""
    router: int | None = None
    routes: dict[str, str | None] = {}
    neighbors: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        words = line.split()
        if not line.startswith(" "):
            inside = False
            if len(words) == 3 and words[:2] == ["router", "bgp"] and words[2].isdigit():
                router, inside = int(words[2]), True
            continue
        if not inside or not words:
            continue
        if words[0] == "network" and len(words) >= 2:
            route_map = words[3] if len(words) >= 4 and words[2] == "route-map" else None
            routes[_normal(words[1])] = route_map
        elif words[0] == "neighbor" and len(words) >= 4 and words[2] == "remote-as":
            neighbors[words[1]] = words[3]
    return Present(router, routes, neighbors)


def _normal(route: str) -> str:
    try:
        return str(ipaddress.ip_network(route, strict=False))
    except ValueError:
        return route


def _ms(seconds: float) -> int:
    return max(10, round(seconds * 1000))


def session_commands(settings: BgpSettings, stale_peers: Iterable[str] = ()) -> list[str]:
    """Configuration-mode commands (after `configure terminal`) that set up lvsha's route-maps,
    BFD profile and sessions; each may be given again without harm. `stale_peers`: neighbours
    lvsha configured before that the settings no longer name: removed."""
    bfd = settings.bfd
    lines = [
        f"route-map {GSHUT_MAP} permit 10",
        "set community graceful-shutdown additive",
        "exit",
        f"route-map {IN_MAP} deny 10",
        "exit",
        f"route-map {OUT_MAP} permit 10",
        "exit",
        "bfd",
        f"profile {BFD_PROFILE}",
        f"transmit-interval {_ms(bfd.transmit_interval)}",
        f"receive-interval {_ms(bfd.receive_interval)}",
        f"detect-multiplier {bfd.multiplier}",
        "exit",
        "exit",
        f"router bgp {settings.asn}",
    ]
    if settings.router_id is not None:
        lines.append(f"bgp router-id {settings.router_id}")
    lines.append("no bgp network import-check")
    configured = {str(peer.address) for peer in settings.peers}
    lines += [f"no neighbor {peer}" for peer in sorted(set(stale_peers) - configured)]
    for peer in settings.peers:
        lines.append(f"neighbor {peer.address} remote-as {peer.asn}")
        if peer.bfd:
            lines.append(f"neighbor {peer.address} bfd profile {BFD_PROFILE}")
        else:
            lines.append(f"no neighbor {peer.address} bfd")
    for version in (4, 6):
        lines.append(f"address-family ipv{version} unicast")
        for peer in settings.peers:
            if peer.address.version == version:
                lines += [
                    f"neighbor {peer.address} activate",
                    f"neighbor {peer.address} route-map {IN_MAP} in",
                    f"neighbor {peer.address} route-map {OUT_MAP} out",
                ]
            else:
                lines.append(f"no neighbor {peer.address} activate")
        lines.append("exit-address-family")
    lines.append("exit")
    return lines


def route_commands(
    asn: int,
    present: Mapping[str, str | None],
    wanted: Mapping[str, bool],
    owned: Set[str],
) -> list[str]:
    """Configuration-mode commands that make the `network` statements lvsha owns what `wanted`
    says (route -> with GRACEFUL_SHUTDOWN): a statement is added or its route-map changed
    where it differs, and removed where lvsha owns it (`owned`) and no longer wants it. Empty
    when FRR already holds it all."""
    by_family: dict[int, list[str]] = {4: [], 6: []}
    for route, gshut in sorted(wanted.items()):
        want = GSHUT_MAP if gshut else None
        if route not in present or present[route] != want:
            suffix = f" route-map {GSHUT_MAP}" if gshut else ""
            by_family[family(route)].append(f"network {route}{suffix}")
    for route in sorted(present):
        if route in owned and route not in wanted:
            by_family[family(route)].append(f"no network {route}")
    lines: list[str] = []
    for version, statements in by_family.items():
        if statements:
            lines += [f"address-family ipv{version} unicast", *statements, "exit-address-family"]
    return [f"router bgp {asn}", *lines, "exit"] if lines else []


@dataclass(frozen=True, slots=True)
class PeerState:
    """One neighbour as FRR reports it."""

    address: str
    state: str
    """BGP FSM state ("Established", "Active", ...); "absent": FRR does not know the peer."""
    prefixes_sent: int | None = None
    uptime: float | None = None
    """Seconds the session has been established."""
    bfd: str | None = None
    """The BFD session's status ("up", "down", "init", ...); None: no BFD session."""

    @property
    def up(self) -> bool:
        """Established, and its BFD session (if any) up."""
        return self.state == "Established" and self.bfd in (None, "up")

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state,
            "prefixes_sent": self.prefixes_sent,
            "uptime": self.uptime,
            "bfd": self.bfd,
        }


def peer_states(settings: BgpSettings, summary: object, bfd_peers: object) -> list[PeerState]:
    """The configured peers' states from `show bgp summary json` and `show bfd peers json`
    (anything of another shape reads as no information)."""
    sessions: dict[str, dict[str, Any]] = {}
    if isinstance(summary, dict):
        for family_summary in summary.values():
            peers = family_summary.get("peers") if isinstance(family_summary, dict) else None
            if isinstance(peers, dict):
                for address, value in peers.items():
                    if isinstance(value, dict):
                        sessions.setdefault(_normal_address(address), value)
    bfd: dict[str, str] = {}
    if isinstance(bfd_peers, list):
        for value in bfd_peers:
            if isinstance(value, dict) and isinstance(value.get("peer"), str):
                status = value.get("status")
                bfd[_normal_address(value["peer"])] = status if isinstance(status, str) else "?"
    found = []
    for peer in settings.peers:
        address = str(peer.address)
        session = sessions.get(address)
        if session is None:
            found.append(PeerState(address, "absent", bfd=bfd.get(address)))
            continue
        state = session.get("state")
        sent = session.get("pfxSnt")
        uptime = session.get("peerUptimeMsec")
        found.append(
            PeerState(
                address,
                state if isinstance(state, str) else "?",
                sent if isinstance(sent, int) else None,
                uptime / 1000.0 if isinstance(uptime, int) and state == "Established" else None,
                bfd.get(address),
            )
        )
    return found


def _normal_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def refusal(output: str) -> str:
    """FRR's complaint in vtysh's output, on one line (vtysh's own warnings left out)."""
    lines = [
        line.strip() for line in output.splitlines() if line.strip() and "vtysh.conf" not in line
    ]
    return "; ".join(lines) or "no message"
