"""The pure part of the BGP announcer: which routes, which vtysh commands, FRR's answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from lvsha.alerts.events import FieldValue
from lvsha.bgp.announcer import Announcer
from lvsha.bgp.frr import (
    Phase,
    parse_running,
    peer_states,
    refusal,
    route_commands,
    session_commands,
    wanted_routes,
)
from lvsha.config.bgp import BgpSettings, advice, announced_addresses
from lvsha.config.lvs import VirtualServer

SETTINGS = BgpSettings.model_validate(
    {
        "asn": 65001,
        "router_id": "192.0.2.11",
        "peers": [
            {"address": "192.0.2.1", "asn": 65000},
            {"address": "2001:db8::1", "asn": 65000, "bfd": False},
        ],
        "announce": ["web", "tls", "v6"],
        "graceful_shutdown": 0.05,
    }
)
ROUTES = {"198.51.100.10/32": ("web", "tls"), "2001:db8:1::10/128": ("v6",)}

RUNNING = """\
Building configuration...

Current configuration:
!
frr version 8.4.4
router bgp 65001
 bgp router-id 192.0.2.11
 neighbor 192.0.2.1 remote-as 65000
 neighbor 192.0.2.9 remote-as external
 !
 address-family ipv4 unicast
  network 198.51.100.10/32 route-map LVSHA-GSHUT
  network 203.0.113.0/24
 exit-address-family
exit
!
router bgp 65001 vrf blue
 address-family ipv4 unicast
  network 10.0.0.0/8
 exit-address-family
exit
!
end
"""


def test_a_route_is_served_while_every_virtual_server_on_it_holds_quorum() -> None:
    both = frozenset({"web", "tls", "v6"})
    assert wanted_routes(ROUTES, both, Phase.SERVING, set()) == {
        "198.51.100.10/32": False,
        "2001:db8:1::10/128": False,
    }
    assert wanted_routes(ROUTES, frozenset({"web", "v6"}), Phase.SERVING, set()) == {
        "2001:db8:1::10/128": False
    }
    assert wanted_routes(ROUTES, None, Phase.SERVING, set(ROUTES)) == {}


def test_a_drain_marks_only_what_is_announced_then_withdraws_everything() -> None:
    held = frozenset({"web", "tls", "v6"})
    announced = {"198.51.100.10/32"}
    assert wanted_routes(ROUTES, held, Phase.DRAINING, announced) == {"198.51.100.10/32": True}
    assert wanted_routes(ROUTES, held, Phase.DRAINED, announced) == {}


def test_the_running_configuration_gives_the_default_instance_and_its_statements() -> None:
    present = parse_running(RUNNING)
    assert present.router == 65001
    assert present.routes == {"198.51.100.10/32": "LVSHA-GSHUT", "203.0.113.0/24": None}
    assert present.neighbors == {"192.0.2.1": "65000", "192.0.2.9": "external"}
    assert parse_running("Current configuration:\n!\nend\n").router is None


def test_route_commands_change_only_what_differs_and_remove_only_what_lvsha_owns() -> None:
    present = parse_running(RUNNING).routes
    wanted = {"198.51.100.10/32": False, "2001:db8:1::10/128": True}
    assert route_commands(65001, present, wanted, owned={"198.51.100.10/32"}) == [
        "router bgp 65001",
        "address-family ipv4 unicast",
        "network 198.51.100.10/32",
        "exit-address-family",
        "address-family ipv6 unicast",
        "network 2001:db8:1::10/128 route-map LVSHA-GSHUT",
        "exit-address-family",
        "exit",
    ]
    # The operator's 203.0.113.0/24 is never removed; lvsha's withdrawn route is.
    assert route_commands(65001, present, {}, owned={"198.51.100.10/32"}) == [
        "router bgp 65001",
        "address-family ipv4 unicast",
        "no network 198.51.100.10/32",
        "exit-address-family",
        "exit",
    ]
    same = {"198.51.100.10/32": True}
    assert route_commands(65001, present, same, owned=set(same)) == []


def test_session_commands_activate_each_peer_in_its_own_family_and_drop_stale_ones() -> None:
    lines = session_commands(SETTINGS, stale_peers={"192.0.2.7", "192.0.2.1"})
    assert lines.index("no neighbor 192.0.2.7") < lines.index("neighbor 192.0.2.1 remote-as 65000")
    assert "no neighbor 192.0.2.1" not in lines
    assert "neighbor 192.0.2.1 bfd profile lvsha" in lines
    assert "no neighbor 2001:db8::1 bfd" in lines
    v4 = lines[lines.index("address-family ipv4 unicast") :]
    v4 = v4[: v4.index("exit-address-family")]
    assert "neighbor 192.0.2.1 route-map LVSHA-IN in" in v4
    assert "no neighbor 2001:db8::1 activate" in v4
    assert lines[lines.index("profile lvsha") + 1 : lines.index("profile lvsha") + 4] == [
        "transmit-interval 300",
        "receive-interval 300",
        "detect-multiplier 3",
    ]


def test_peer_states_read_frrs_json_and_take_anything_else_as_unknown() -> None:
    summary = {
        "ipv4Unicast": {
            "peers": {"192.0.2.1": {"state": "Established", "pfxSnt": 1, "peerUptimeMsec": 2500}}
        }
    }
    bfd = [{"peer": "192.0.2.1", "status": "up"}, {"peer": 7}]
    first, second = peer_states(SETTINGS, summary, bfd)
    assert first.to_json() == {
        "address": "192.0.2.1",
        "state": "Established",
        "prefixes_sent": 1,
        "uptime": 2.5,
        "bfd": "up",
    }
    assert (second.address, second.state, second.bfd) == ("2001:db8::1", "absent", None)
    assert [p.state for p in peer_states(SETTINGS, "junk", {"x": 1})] == ["absent", "absent"]


def test_a_refusal_keeps_frrs_words_and_drops_vtyshs_warning() -> None:
    output = "% Can't open configuration file /etc/frr/x/vtysh.conf due to 'No such file'.\n"
    assert refusal(output + "BGP is already running; AS is 65002\n") == (
        "BGP is already running; AS is 65002"
    )


def _vs(name: str, address: str, **extra: object) -> VirtualServer:
    return VirtualServer.model_validate(
        {"name": name, "address": address, "port": 80, "protocol": "TCP", **extra}
    )


def test_shared_addresses_make_one_route_and_unsafe_schedulers_are_advised_against() -> None:
    servers = [
        _vs("web", "198.51.100.10", scheduler="mh", scheduler_flags=["mh-port"], forwarding="DR"),
        _vs("tls", "198.51.100.10", scheduler="wlc", forwarding="DR").model_copy(
            update={"port": 443}
        ),
        _vs("v6", "2001:db8:1::10", scheduler="mh", forwarding="NAT"),
    ]
    assert announced_addresses(SETTINGS, servers) == ROUTES
    said = advice(SETTINGS, servers)
    assert [key for key, _ in said] == [
        "virtual_servers[1].scheduler",
        "virtual_servers[2].scheduler_flags",
        "virtual_servers[2].forwarding",
    ]
    assert "flows the routers move" in said[0][1]


class FakeFrr:
    """vtysh against a dictionary of `network` statements, recording each call."""

    def __init__(self) -> None:
        self.routes: dict[str, str | None] = {}
        self.calls: list[list[str]] = []
        self.refuse: str | None = None

    async def run(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        commands = [argv[i + 1] for i, word in enumerate(argv) if word == "-c"]
        self.calls.append(commands)
        if commands == ["show running-config bgpd"]:
            lines = [
                f"  network {r}" + (f" route-map {m}" if m else "") for r, m in self.routes.items()
            ]
            return 0, ("router bgp 65001\n" + "\n".join(lines) + "\nexit\n").encode(), b""
        if commands[0].startswith("show"):
            established = {"ipv4Unicast": {"peers": {"192.0.2.1": {"state": "Established"}}}}
            return 0, json.dumps(established if "summary" in commands[0] else []).encode(), b""
        if self.refuse is not None:
            return 1, self.refuse.encode(), b""
        for command in commands:
            words = command.split()
            if words[0] == "network":
                self.routes[words[1]] = words[3] if len(words) > 3 else None
            elif words[:2] == ["no", "network"]:
                del self.routes[words[2]]
        return 0, b"", b""


async def _until(predicate: object, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_the_announcer_follows_quorum_drains_and_remembers_what_it_wrote(
    tmp_path: Path,
) -> None:
    frr = FakeFrr()
    events: list[tuple[str, dict[str, FieldValue]]] = []
    announcer = Announcer(
        SETTINGS, ROUTES, tmp_path, run=frr.run, publish=lambda t, f: events.append((t, f))
    )
    announcer.start()
    try:
        announcer.set_held(frozenset({"web", "tls", "v6"}))
        await _until(lambda: len(frr.routes) == 2)
        announcer.set_held(frozenset({"web", "v6"}))
        await _until(lambda: list(frr.routes) == ["2001:db8:1::10/128"])
        assert announcer.status()["routes"][0]["reason"] == "no quorum: tls"
        assert events[-1] == (
            "bgp_route",
            {
                "route": "198.51.100.10/32",
                "virtual_servers": "web, tls",
                "announced": False,
                "graceful_shutdown": False,
                "reason": "no quorum: tls",
            },
        )
        await _until(lambda: announcer.peers and announcer.peers[0].state == "Established")
        await announcer.drain()
        assert frr.routes == {}
        assert any("network 2001:db8:1::10/128 route-map LVSHA-GSHUT" in c for c in frr.calls)
        announcer.undrain()
        await _until(lambda: list(frr.routes) == ["2001:db8:1::10/128"])
        ledger = json.loads((tmp_path / "bgp.json").read_text())
        assert ledger["routes"] == ["2001:db8:1::10/128"]
    finally:
        for task in announcer._tasks:
            task.cancel()
    # A successor that gets no quorum report withdraws what the ledger says lvsha wrote, and
    # never the operator's statements.
    frr.routes["203.0.113.0/24"] = None
    successor = Announcer(SETTINGS, ROUTES, tmp_path, run=frr.run)
    successor.start()
    try:
        await _until(lambda: frr.routes == {"203.0.113.0/24": None})
        frr.refuse = "% Unknown command: bogus"
        successor.set_held(frozenset({"v6"}))
        await _until(lambda: successor.error is not None)
        assert successor.error == "FRR refused 5 commands: % Unknown command: bogus"
        frr.refuse = None
        await _until(lambda: successor.error is None and "2001:db8:1::10/128" in frr.routes)
    finally:
        await successor.stop()
    assert frr.routes == {"203.0.113.0/24": None}


@pytest.mark.parametrize("argv", [["/nonexistent/vtysh"]])
async def test_a_missing_vtysh_is_an_error_that_names_it(tmp_path: Path, argv: list[str]) -> None:
    settings = SETTINGS.model_copy(update={"vtysh": argv})
    announcer = Announcer(settings, ROUTES, tmp_path)
    announcer.start()
    try:
        await _until(lambda: announcer.error is not None)
        assert announcer.error == "cannot run /nonexistent/vtysh: No such file or directory"
    finally:
        for task in announcer._tasks:
            task.cancel()
