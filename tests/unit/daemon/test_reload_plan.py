"""The reload plan on pairs of hand-written configurations: what changes, and at what cost."""

from __future__ import annotations

import pytest

from lvsha.config import load_text
from lvsha.config.lvs import RealServer, VirtualServer
from lvsha.config.model import GlobalConfig
from lvsha.config.vrrp import VrrpInstance
from lvsha.daemon.reload_plan import (
    GLOBAL_FOLDED,
    GLOBAL_RULES,
    INSTANCE_ELSEWHERE,
    INSTANCE_RULES,
    REAL_SERVER_ELSEWHERE,
    REAL_SERVER_RULES,
    SERVICE_KEYS,
    SERVICE_NOT_COMPARED,
    Change,
    Cost,
    ReloadPlan,
    reload_plan,
)

BASE = """
global:
  router_id: lb-1
  check_defaults: {interval: 2s, timeout: 1s}
vrrp_scripts:
  haproxy:
    command: /usr/bin/pgrep haproxy
    weight: -30
  spare:
    command: /usr/bin/true
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    priority: 150
    virtual_ipaddresses: [10.0.0.10/24, 10.0.0.11/24]
    track_scripts: [haproxy]
  VI_2:
    interface: eth0
    virtual_router_id: 52
    priority: 100
    virtual_ipaddresses: [10.0.0.20/24]
sync_groups:
  PAIR:
    instances: [VI_1, VI_2]
virtual_servers:
  - name: web
    address: 10.0.0.10
    port: 80
    protocol: TCP
    scheduler: wlc
    real_servers:
      - address: 192.168.1.2
        checks: [{type: tcp}]
      - address: 192.168.1.3
        weight: 2
        checks: [{type: tcp}, {type: http, path: /health}]
  - address: 10.0.0.10
    port: 53
    protocol: UDP
    scheduler: sh
    real_servers:
      - address: 192.168.1.2
      - address: 192.168.1.3
"""


def edit(text: str, *replacements: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced once; the old text must be there exactly once."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def plan(old: str, new: str) -> ReloadPlan:
    return reload_plan(load_text(old), load_text(new))


def only(result: ReloadPlan) -> Change:
    assert len(result.changes) == 1, result.text()
    return result.changes[0]


# --- nothing changes ---


def test_identical_files_plan_nothing() -> None:
    result = plan(BASE, BASE)
    assert result.changes == ()
    assert result.cost() is Cost.HITLESS
    assert result.text() == "no changes"
    assert result.to_json() == {
        "changes": [],
        "cost": "hitless",
        "counts": {
            "hitless": 0,
            "election": 0,
            "VIP move": 0,
            "drain": 0,
            "connection reset": 0,
        },
    }


def test_reordered_services_real_servers_and_checks_plan_nothing() -> None:
    reordered = """
global:
  router_id: lb-1
  check_defaults: {interval: 2s, timeout: 1s}
vrrp_instances:
  VI_2:
    interface: eth0
    virtual_router_id: 52
    priority: 100
    virtual_ipaddresses: [10.0.0.20/24]
  VI_1:
    interface: eth0
    virtual_router_id: 51
    priority: 150
    virtual_ipaddresses: [10.0.0.11/24, 10.0.0.10/24]
    track_scripts: [haproxy]
vrrp_scripts:
  spare:
    command: /usr/bin/true
  haproxy:
    command: [/usr/bin/pgrep, haproxy]
    weight: -30
sync_groups:
  PAIR:
    instances: [VI_2, VI_1]
virtual_servers:
  - address: 10.0.0.10
    port: 53
    protocol: UDP
    scheduler: sh
    real_servers:
      - address: 192.168.1.3
      - address: 192.168.1.2
        port: 53
  - name: web
    protocol: TCP
    address: 10.0.0.10
    port: 80
    real_servers:
      - address: 192.168.1.3
        weight: 2
        checks: [{type: http, path: /health}, {type: tcp, interval: 2}]
      - address: 192.168.1.2
        checks: [{type: tcp}]
"""
    assert plan(BASE, reordered).changes == ()


def test_defaults_written_out_are_no_change() -> None:
    explicit = edit(
        BASE,
        ("    priority: 100\n", "    priority: 100\n    preempt: true\n    version: 2\n"),
        ("    scheduler: wlc\n", "    scheduler: wlc\n    forwarding: NAT\n    quorum: 1\n"),
    )
    assert plan(BASE, explicit).changes == ()


# --- one case per cost label ---

COST_CASES: dict[Cost, list[tuple[str, str]]] = {
    Cost.HITLESS: [("        weight: 2\n", "        weight: 5\n")],
    Cost.ELECTION: [("    priority: 150\n", "    priority: 200\n")],
    Cost.VIP_MOVE: [
        ("[10.0.0.10/24, 10.0.0.11/24]", "[10.0.0.10/24]"),
        ("[10.0.0.20/24]", "[10.0.0.20/24, 10.0.0.11/24]"),
    ],
    Cost.DRAIN: [("      - address: 192.168.1.2\n        checks: [{type: tcp}]\n", "")],
    Cost.CONNECTION_RESET: [("    scheduler: sh\n", "    scheduler: sh\n    ops: true\n")],
}
"""For each cost, edits of BASE that make one change of that cost."""


@pytest.mark.parametrize("cost", list(Cost), ids=[cost.value for cost in Cost])
def test_one_case_per_cost(cost: Cost) -> None:
    result = plan(BASE, edit(BASE, *COST_CASES[cost]))
    assert only(result).cost is cost
    assert result.cost() is cost


def test_hitless_real_server_weight() -> None:
    new = edit(BASE, *COST_CASES[Cost.HITLESS])
    assert only(plan(BASE, new)) == Change(
        "real_server", "change", "TCP 10.0.0.10:80 -> 192.168.1.3:80", "weight 2 -> 5", Cost.HITLESS
    )


def test_removed_real_server_drains() -> None:
    new = edit(BASE, *COST_CASES[Cost.DRAIN])
    assert only(plan(BASE, new)) == Change(
        "real_server",
        "remove",
        "TCP 10.0.0.10:80 -> 192.168.1.2:80",
        "weight 0, then removed",
        Cost.DRAIN,
    )


def test_removed_service_resets_connections() -> None:
    new = BASE[: BASE.index("  - address: 10.0.0.10\n    port: 53")]
    change = only(plan(BASE, new))
    assert (change.area, change.action, change.subject, change.cost) == (
        "virtual_service",
        "remove",
        "UDP 10.0.0.10:53",
        Cost.CONNECTION_RESET,
    )


# --- identity, not names ---


def test_renamed_instance_is_one_hitless_rename() -> None:
    new = edit(
        BASE,
        ("  VI_1:\n", "  web:\n"),
        ("instances: [VI_1, VI_2]", "instances: [web, VI_2]"),
    )
    assert only(plan(BASE, new)) == Change(
        "vrrp_instance",
        "rename",
        "web (eth0 vrid 51 ipv4)",
        "renamed VI_1 -> web",
        Cost.HITLESS,
    )


def test_renamed_instance_followed_by_the_sync_daemon_changes_nothing_else() -> None:
    old = edit(
        BASE,
        (
            "  router_id: lb-1\n",
            "  router_id: lb-1\n  lvs_sync_daemon: {interface: eth1, vrrp_instance: VI_1}\n",
        ),
    )
    new = edit(
        old,
        ("  VI_1:\n", "  web:\n"),
        ("instances: [VI_1, VI_2]", "instances: [web, VI_2]"),
        ("vrrp_instance: VI_1}", "vrrp_instance: web}"),
    )
    assert only(plan(old, new)).action == "rename"


def test_changed_vrid_is_another_instance() -> None:
    new = edit(BASE, ("virtual_router_id: 52", "virtual_router_id: 53"))
    result = plan(BASE, new)
    assert [(c.area, c.action, c.subject, c.cost) for c in result.changes] == [
        ("vrrp_instance", "add", "VI_2 (eth0 vrid 53 ipv4)", Cost.ELECTION),
        ("vip", "move", "10.0.0.20", Cost.VIP_MOVE),
        ("vrrp_instance", "remove", "VI_2 (eth0 vrid 52 ipv4)", Cost.ELECTION),
        ("sync_group", "change", "PAIR", Cost.ELECTION),
    ]
    assert (
        result.changes[2].detail == "stops: 0 VIPs leave this director, 1 moves to another instance"
    )
    assert result.changes[1].detail == "VI_2 (eth0 vrid 52 ipv4) -> VI_2 (eth0 vrid 53 ipv4)"
    # the group still names VI_2, but that is another instance now
    assert result.changes[3].detail == (
        "VI_2 (eth0 vrid 53 ipv4) joins; VI_2 (eth0 vrid 52 ipv4) leaves"
    )


def test_sync_group_membership_by_identity() -> None:
    renamed_group = edit(BASE, ("  PAIR:\n", "  BOTH:\n"))
    assert only(plan(BASE, renamed_group)) == Change(
        "sync_group", "rename", "BOTH", "renamed PAIR -> BOTH", Cost.HITLESS
    )
    smaller = edit(BASE, ("instances: [VI_1, VI_2]", "instances: [VI_1]"))
    assert only(plan(BASE, smaller)) == Change(
        "sync_group", "change", "PAIR", "VI_2 (eth0 vrid 52 ipv4) leaves", Cost.ELECTION
    )


# --- VIPs ---


def test_vip_moved_between_instances_is_one_vip_move() -> None:
    new = edit(
        BASE,
        ("[10.0.0.10/24, 10.0.0.11/24]", "[10.0.0.10/24]"),
        ("[10.0.0.20/24]", "[10.0.0.20/24, 10.0.0.11/24]"),
    )
    assert only(plan(BASE, new)) == Change(
        "vip",
        "move",
        "10.0.0.11",
        "VI_1 (eth0 vrid 51 ipv4) -> VI_2 (eth0 vrid 52 ipv4)",
        Cost.VIP_MOVE,
    )


def test_vip_moved_with_a_new_prefix_says_so() -> None:
    new = edit(
        BASE,
        ("[10.0.0.10/24, 10.0.0.11/24]", "[10.0.0.10/24]"),
        ("[10.0.0.20/24]", "[10.0.0.20/24, 10.0.0.11/32]"),
    )
    assert only(plan(BASE, new)).detail == (
        "VI_1 (eth0 vrid 51 ipv4) -> VI_2 (eth0 vrid 52 ipv4) (prefix /24 -> /32)"
    )


def test_advertised_vip_added_is_hitless() -> None:
    # A peer whose address list differs takes our adverts and logs it until reloaded too.
    new = edit(BASE, ("[10.0.0.20/24]", "[10.0.0.20/24, 10.0.0.21/24]"))
    change = only(plan(BASE, new))
    assert (change.area, change.action, change.subject, change.cost) == (
        "vip",
        "add",
        "10.0.0.21",
        Cost.HITLESS,
    )
    assert change.detail == (
        "10.0.0.21/24 on eth0 joins VI_2 (eth0 vrid 52 ipv4); the peer logs that our address "
        "lists differ until it is reloaded too"
    )


def test_excluded_vip_added_or_removed_is_hitless() -> None:
    new = edit(
        BASE,
        (
            "    virtual_ipaddresses: [10.0.0.20/24]\n",
            "    virtual_ipaddresses: [10.0.0.20/24]\n"
            "    virtual_ipaddresses_excluded: [10.0.1.20/24]\n",
        ),
    )
    added = only(plan(BASE, new))
    assert (added.action, added.cost) == ("add", Cost.HITLESS)
    assert (
        added.detail == "10.0.1.20/24 on eth0 joins VI_2 (eth0 vrid 52 ipv4), excluded from adverts"
    )
    removed = only(plan(new, BASE))
    assert (removed.action, removed.cost) == ("remove", Cost.HITLESS)


def test_address_owner_vip_list_change_is_hitless() -> None:
    owner = edit(
        BASE,
        ("    priority: 100\n", "    priority: 255\n    mcast_src_ip: 10.0.0.20\n"),
    )
    more = edit(owner, ("[10.0.0.20/24]", "[10.0.0.20/24, 10.0.0.21/24]"))
    assert only(plan(owner, more)).cost is Cost.HITLESS


def test_vip_label_change_re_adds_it() -> None:
    new = edit(BASE, ("[10.0.0.20/24]", "[{address: 10.0.0.20/24, label: 'eth0:vip'}]"))
    assert only(plan(BASE, new)) == Change(
        "vip",
        "change",
        "10.0.0.20",
        "re-added in VI_2 (eth0 vrid 52 ipv4): label none -> eth0:vip",
        Cost.VIP_MOVE,
    )


# --- VRRP keys, tracking and scripts ---


@pytest.mark.parametrize(
    ("old", "new", "cost", "detail"),
    [
        (
            "    priority: 100\n",
            "    priority: 100\n    advert_interval: 2\n",
            Cost.ELECTION,
            "advert_interval 1 -> 2",
        ),
        (
            "    priority: 100\n",
            "    priority: 100\n    state: MASTER\n",
            Cost.HITLESS,
            "state BACKUP -> MASTER (the initial state, for the next start)",
        ),
        (
            "    priority: 100\n",
            "    priority: 100\n    garp: {delay: 0}\n",
            Cost.HITLESS,
            "garp.delay 5 -> 0",
        ),
        (
            "    priority: 100\n",
            "    priority: 100\n    notify: {master: /bin/true}\n",
            Cost.HITLESS,
            "notify.master none -> [/bin/true]",
        ),
        (
            "    priority: 100\n",
            "    priority: 100\n    preempt: false\n",
            Cost.ELECTION,
            "preempt true -> false",
        ),
        (
            "    priority: 100\n",
            "    priority: 100\n    unicast_peers: [10.0.0.3]\n",
            Cost.ELECTION,
            "unicast_peers [] -> [10.0.0.3]",
        ),
    ],
)
def test_instance_keys(old: str, new: str, cost: Cost, detail: str) -> None:
    change = only(plan(BASE, edit(BASE, (old, new))))
    assert (change.area, change.subject, change.cost, change.detail) == (
        "vrrp_instance",
        "VI_2 (eth0 vrid 52 ipv4)",
        cost,
        detail,
    )


def test_global_garp_default_is_reported_on_the_instances_only() -> None:
    new = edit(BASE, ("  router_id: lb-1\n", "  router_id: lb-1\n  vrrp: {garp: {burst: 2}}\n"))
    result = plan(BASE, new)
    assert [(c.area, c.subject, c.detail) for c in result.changes] == [
        ("vrrp_instance", "VI_1 (eth0 vrid 51 ipv4)", "garp.burst 5 -> 2"),
        ("vrrp_instance", "VI_2 (eth0 vrid 52 ipv4)", "garp.burst 5 -> 2"),
    ]
    assert result.cost() is Cost.HITLESS


def test_password_never_shown() -> None:
    old = edit(
        BASE,
        (
            "    priority: 100\n",
            "    priority: 100\n    authentication: {type: PASS, password: s3cret}\n",
        ),
    )
    new = edit(old, ("s3cret", "n3wpass"))
    result = plan(old, new)
    assert only(result).detail == "authentication.password changed"
    assert only(result).cost is Cost.ELECTION
    assert "s3cret" not in result.text()
    assert "s3cret" not in plan(BASE, old).text()


def test_tracking_changes_are_elections() -> None:
    new = edit(
        BASE,
        (
            "    track_scripts: [haproxy]\n",
            "    track_scripts: [{script: haproxy, weight: -60}]\n    track_interfaces: [eth1]\n",
        ),
    )
    result = plan(BASE, new)
    assert [(c.area, c.action, c.detail, c.cost) for c in result.changes] == [
        ("track", "add", "tracks interface eth1 (weight 0)", Cost.ELECTION),
        ("track", "change", "script haproxy weight -30 -> -60", Cost.ELECTION),
    ]


def test_tracked_script_restart_is_an_election_untracked_is_hitless() -> None:
    tracked = edit(BASE, ("command: /usr/bin/pgrep haproxy", "command: /usr/bin/pgrep -x haproxy"))
    assert only(plan(BASE, tracked)) == Change(
        "vrrp_script",
        "change",
        "haproxy",
        "restarts in INIT (tracked by VI_1): command [/usr/bin/pgrep, haproxy] -> "
        "[/usr/bin/pgrep, -x, haproxy]",
        Cost.ELECTION,
    )
    untracked = edit(BASE, ("command: /usr/bin/true", "command: /bin/true"))
    assert only(plan(BASE, untracked)).cost is Cost.HITLESS


def test_script_weight_is_reported_where_it_applies() -> None:
    new = edit(BASE, ("weight: -30", "weight: -40"))
    assert only(plan(BASE, new)) == Change(
        "track",
        "change",
        "VI_1 (eth0 vrid 51 ipv4)",
        "script haproxy weight -30 -> -40",
        Cost.ELECTION,
    )


def test_renamed_script_with_its_references_is_a_hitless_rename() -> None:
    new = edit(
        BASE,
        ("  haproxy:\n", "  lb_proxy:\n"),
        ("track_scripts: [haproxy]", "track_scripts: [lb_proxy]"),
    )
    assert only(plan(BASE, new)) == Change(
        "vrrp_script",
        "rename",
        "lb_proxy",
        "renamed haproxy -> lb_proxy: keeps running, with its health",
        Cost.HITLESS,
    )


# --- virtual services ---


def test_scheduler_flag_change_resets_connections() -> None:
    new = edit(BASE, ("    scheduler: sh\n", "    scheduler: sh\n    scheduler_flags: [sh-port]\n"))
    assert only(plan(BASE, new)) == Change(
        "virtual_service",
        "change",
        "UDP 10.0.0.10:53",
        "scheduler_flags [] -> [sh-port]",
        Cost.CONNECTION_RESET,
    )


@pytest.mark.parametrize(
    ("old", "new", "cost"),
    [
        ("scheduler: wlc", "scheduler: rr", Cost.HITLESS),
        ("scheduler: wlc", "scheduler: mh", Cost.CONNECTION_RESET),
        ("scheduler: sh", "scheduler: rr", Cost.CONNECTION_RESET),
    ],
)
def test_scheduler_change_costs_by_hashing(old: str, new: str, cost: Cost) -> None:
    assert only(plan(BASE, edit(BASE, (old, new)))).cost is cost


def test_persistence_on_resets_its_timeout_does_not() -> None:
    on = edit(BASE, ("    scheduler: wlc\n", "    scheduler: wlc\n    persistence_timeout: 300\n"))
    turned_on = only(plan(BASE, on))
    assert (turned_on.cost, turned_on.detail) == (
        Cost.CONNECTION_RESET,
        "persistence_timeout 0 -> 300: client affinity on",
    )
    longer = edit(on, ("persistence_timeout: 300", "persistence_timeout: 600"))
    assert only(plan(on, longer)).cost is Cost.HITLESS


def test_service_forwarding_reported_once_for_its_followers() -> None:
    new = edit(BASE, ("    scheduler: wlc\n", "    scheduler: wlc\n    forwarding: DR\n"))
    assert only(plan(BASE, new)) == Change(
        "virtual_service",
        "change",
        "TCP 10.0.0.10:80",
        "forwarding NAT -> DR (2 destinations follow)",
        Cost.CONNECTION_RESET,
    )


def test_real_server_forwarding_resets_connections() -> None:
    new = edit(BASE, ("        weight: 2\n", "        weight: 2\n        forwarding: TUN\n"))
    change = only(plan(BASE, new))
    assert (change.subject, change.detail, change.cost) == (
        "TCP 10.0.0.10:80 -> 192.168.1.3:80",
        "forwarding NAT -> TUN",
        Cost.CONNECTION_RESET,
    )


def test_quorum_drains_only_with_a_sorry_server() -> None:
    assert (
        only(plan(BASE, edit(BASE, ("scheduler: wlc", "scheduler: wlc\n    quorum: 3")))).cost
        is Cost.HITLESS
    )
    sorry = edit(
        BASE, ("scheduler: wlc", "scheduler: wlc\n    sorry_server: {address: 192.168.9.9}")
    )
    added = only(plan(BASE, sorry))
    assert (added.area, added.action, added.subject, added.cost) == (
        "sorry_server",
        "add",
        "TCP 10.0.0.10:80 sorry 192.168.9.9:80",
        Cost.DRAIN,
    )
    more = edit(sorry, ("scheduler: wlc", "scheduler: wlc\n    quorum: 3"))
    assert only(plan(sorry, more)).cost is Cost.DRAIN


def test_real_server_hooks_are_hitless() -> None:
    hooked = edit(
        BASE, ("        weight: 2\n", "        weight: 2\n        notify_down: /bin/rs-down\n")
    )
    assert only(plan(BASE, hooked)) == Change(
        "real_server",
        "change",
        "TCP 10.0.0.10:80 -> 192.168.1.3:80",
        "notify_down none -> [/bin/rs-down]",
        Cost.HITLESS,
    )
    both = edit(hooked, ("/bin/rs-down\n", "/bin/rs-down\n        notify_up: /bin/rs-up x\n"))
    assert only(plan(hooked, both)).detail == "notify_up none -> [/bin/rs-up, x]"


def test_quorum_hooks_and_omega_are_hitless() -> None:
    hooked = edit(
        BASE,
        (
            "scheduler: wlc",
            "scheduler: wlc\n    quorum_up: /bin/q-up\n    quorum_down: /bin/q-down\n"
            "    omega: true",
        ),
    )
    change = only(plan(BASE, hooked))
    assert (change.area, change.subject, change.cost) == (
        "virtual_service",
        "TCP 10.0.0.10:80",
        Cost.HITLESS,
    )
    assert change.detail == (
        "quorum_up none -> [/bin/q-up]; quorum_down none -> [/bin/q-down]; omega false -> true"
    )


def test_added_service_and_real_server_are_hitless() -> None:
    new = (
        BASE
        + "      - address: 192.168.1.4\n"
        + "  - {address: 10.0.0.10, port: 443, protocol: TCP,\n"
        + "     real_servers: [{address: 192.168.1.2}]}\n"
    )
    result = plan(BASE, new)
    assert [(c.area, c.action, c.subject, c.detail, c.cost) for c in result.changes] == [
        (
            "real_server",
            "add",
            "UDP 10.0.0.10:53 -> 192.168.1.4:53",
            "enters per alpha/rise, 0 checks",
            Cost.HITLESS,
        ),
        (
            "virtual_service",
            "add",
            "TCP 10.0.0.10:443",
            "1 real server, 0 checks: real servers enter per alpha/rise",
            Cost.HITLESS,
        ),
    ]


def test_real_server_port_is_identity() -> None:
    new = edit(
        BASE,
        (
            "      - address: 192.168.1.2\n      - address",
            "      - address: 192.168.1.2\n        port: 5353\n      - address",
        ),
    )
    result = plan(BASE, new)
    assert [(c.action, c.subject, c.cost) for c in result.changes] == [
        ("add", "UDP 10.0.0.10:53 -> 192.168.1.2:5353", Cost.HITLESS),
        ("remove", "UDP 10.0.0.10:53 -> 192.168.1.2:53", Cost.DRAIN),
    ]


# --- checks ---


def test_check_with_changed_timing_restarts_alone() -> None:
    new = edit(
        BASE,
        (
            "      - address: 192.168.1.2\n        checks: [{type: tcp}]",
            "      - address: 192.168.1.2\n        checks: [{type: tcp, interval: 3}]",
        ),
    )
    assert only(plan(BASE, new)) == Change(
        "check",
        "change",
        "tcp 192.168.1.2:80 check of TCP 10.0.0.10:80 -> 192.168.1.2:80",
        "restarts: interval 2 -> 3; warmup 2 -> 3",
        Cost.HITLESS,
    )


def test_check_defaults_are_reported_on_the_checks_only() -> None:
    new = edit(
        BASE,
        (
            "check_defaults: {interval: 2s, timeout: 1s}",
            "check_defaults: {interval: 2s, timeout: 1500ms}",
        ),
    )
    result = plan(BASE, new)
    assert {c.area for c in result.changes} == {"check"}
    assert [c.subject for c in result.changes] == [
        "tcp 192.168.1.2:80 check of TCP 10.0.0.10:80 -> 192.168.1.2:80",
        "tcp 192.168.1.3:80 check of TCP 10.0.0.10:80 -> 192.168.1.3:80",
        "http 192.168.1.3:80/health check of TCP 10.0.0.10:80 -> 192.168.1.3:80",
    ]
    assert {c.detail for c in result.changes} == {"restarts: timeout 1 -> 1.5"}


def test_check_of_another_kind_is_added_and_removed() -> None:
    new = edit(
        BASE,
        (
            "checks: [{type: tcp}]\n      - address: 192.168.1.3",
            "checks: [{type: icmp}]\n      - address: 192.168.1.3",
        ),
    )
    result = plan(BASE, new)
    assert [(c.action, c.subject, c.cost) for c in result.changes] == [
        ("add", "icmp 192.168.1.2 check of TCP 10.0.0.10:80 -> 192.168.1.2:80", Cost.HITLESS),
        ("remove", "tcp 192.168.1.2:80 check of TCP 10.0.0.10:80 -> 192.168.1.2:80", Cost.HITLESS),
    ]


# The vrrp scripts run as root whatever global.script_user says.
OWN_USERS = edit(
    BASE,
    ("    weight: -30\n", "    weight: -30\n    user: root\n"),
    ("    command: /usr/bin/true\n", "    command: /usr/bin/true\n    user: root\n"),
)


def test_check_keys_are_the_same_whether_rebuilt_or_not() -> None:
    # A script_user change makes the plan rebuild every check key (a script check's key holds
    # the user); the keys of checks it does not touch must come out as they do without it.
    changed = edit(
        OWN_USERS,
        ("checks: [{type: tcp}, {type: http", "checks: [{type: tcp}, {type: http, rise: 3"),
    )
    with_user = edit(changed, ("  router_id: lb-1\n", "  router_id: lb-1\n  script_user: nobody\n"))
    fast = plan(OWN_USERS, changed).changes
    rebuilt = plan(OWN_USERS, with_user).changes
    assert rebuilt[: len(fast)] == fast
    assert [(c.area, c.subject) for c in rebuilt[len(fast) :]] == [("global", "script_user")]
    assert fast == (
        Change(
            "check",
            "change",
            "http 192.168.1.3:80/health check of TCP 10.0.0.10:80 -> 192.168.1.3:80",
            "restarts: rise 1 -> 3",
            Cost.HITLESS,
        ),
    )


def test_script_user_restarts_the_script_checks_it_applies_to() -> None:
    old = edit(
        OWN_USERS,
        (
            "checks: [{type: tcp}]\n      - address: 192.168.1.3",
            "checks: [{type: script, command: /bin/check}]\n      - address: 192.168.1.3",
        ),
    )
    new = edit(old, ("  router_id: lb-1\n", "  router_id: lb-1\n  script_user: nobody\n"))
    result = plan(old, new)
    assert [(c.area, c.action, c.subject, c.detail, c.cost) for c in result.changes] == [
        (
            "check",
            "change",
            "script /bin/check check of TCP 10.0.0.10:80 -> 192.168.1.2:80",
            "restarts: user none -> nobody",
            Cost.HITLESS,
        ),
        (
            "global",
            "change",
            "script_user",
            "none -> nobody: hooks use it from their next run; scripts and checks are listed",
            Cost.HITLESS,
        ),
    ]


def test_sorry_server_follows_its_service_forwarding() -> None:
    sorry = edit(
        BASE, ("scheduler: wlc", "scheduler: wlc\n    sorry_server: {address: 192.168.9.9}")
    )
    dr = edit(sorry, ("scheduler: wlc", "scheduler: wlc\n    forwarding: DR"))
    assert only(plan(sorry, dr)).detail == "forwarding NAT -> DR (3 destinations follow)"


def test_script_user_restarts_the_vrrp_scripts_it_applies_to() -> None:
    new = edit(BASE, ("  router_id: lb-1\n", "  router_id: lb-1\n  script_user: nobody\n"))
    assert [(c.area, c.subject, c.detail, c.cost) for c in plan(BASE, new).changes] == [
        (
            "vrrp_script",
            "haproxy",
            "restarts in INIT (tracked by VI_1): user none -> nobody",
            Cost.ELECTION,
        ),
        (
            "vrrp_script",
            "spare",
            "restarts (tracked by no instance): user none -> nobody",
            Cost.HITLESS,
        ),
        (
            "global",
            "script_user",
            "none -> nobody: hooks use it from their next run; scripts and checks are listed",
            Cost.HITLESS,
        ),
    ]


# --- global ---


def test_global_keys_are_hitless() -> None:
    new = edit(
        BASE,
        (
            "  router_id: lb-1\n",
            "  router_id: lb-2\n  vrrp: {realtime_priority: 50}\n  ipvs: {resync_interval: 10}\n",
        ),
    )
    result = plan(BASE, new)
    assert [(c.subject, c.detail) for c in result.changes] == [
        ("router_id", "lb-1 -> lb-2"),
        ("vrrp.realtime_priority", "none -> 50: applies when the VRRP process restarts"),
        ("ipvs.resync_interval", "5 -> 10"),
    ]
    assert result.cost() is Cost.HITLESS


# --- output ---

SMALL = """
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [10.0.0.10/24]
virtual_servers:
  - address: 10.0.0.10
    port: 80
    protocol: TCP
    real_servers:
      - address: 192.168.1.2
      - address: 192.168.1.3
"""


def small_change() -> ReloadPlan:
    new = edit(
        SMALL,
        ("  VI_1:\n", "  web:\n"),
        ("      - address: 192.168.1.3\n", ""),
        ("    protocol: TCP\n", "    protocol: TCP\n    scheduler: rr\n"),
    )
    return plan(SMALL, new)


def test_text() -> None:
    assert small_change().text() == (
        "VRRP:\n"
        "  [hitless]          rename vrrp_instance   web (eth0 vrid 51 ipv4): renamed VI_1 -> web\n"
        "virtual services:\n"
        "  [hitless]          change virtual_service TCP 10.0.0.10:80: scheduler wlc -> rr\n"
        "  [drain]            remove real_server     TCP 10.0.0.10:80 -> 192.168.1.3:80: "
        "weight 0, then removed\n"
        "3 changes (cost: drain): 2 hitless, 1 drain"
    )


def test_to_json() -> None:
    assert small_change().to_json() == {
        "changes": [
            {
                "area": "vrrp_instance",
                "action": "rename",
                "subject": "web (eth0 vrid 51 ipv4)",
                "detail": "renamed VI_1 -> web",
                "cost": "hitless",
            },
            {
                "area": "virtual_service",
                "action": "change",
                "subject": "TCP 10.0.0.10:80",
                "detail": "scheduler wlc -> rr",
                "cost": "hitless",
            },
            {
                "area": "real_server",
                "action": "remove",
                "subject": "TCP 10.0.0.10:80 -> 192.168.1.3:80",
                "detail": "weight 0, then removed",
                "cost": "drain",
            },
        ],
        "cost": "drain",
        "counts": {"hitless": 2, "election": 0, "VIP move": 0, "drain": 1, "connection reset": 0},
    }


def test_costs_are_ordered() -> None:
    assert sorted(Cost, reverse=True)[0] is Cost.CONNECTION_RESET
    assert Cost.HITLESS < Cost.ELECTION < Cost.VIP_MOVE < Cost.DRAIN < Cost.CONNECTION_RESET
    assert ReloadPlan().cost() is Cost.HITLESS


# --- every key of the model has a rule ---


def test_every_instance_key_has_a_rule() -> None:
    assert set(INSTANCE_RULES) | INSTANCE_ELSEWHERE == set(VrrpInstance.model_fields)


def test_every_service_key_has_a_rule() -> None:
    assert set(SERVICE_KEYS) | SERVICE_NOT_COMPARED == set(VirtualServer.model_fields)


def test_every_real_server_key_has_a_rule() -> None:
    assert set(REAL_SERVER_RULES) | REAL_SERVER_ELSEWHERE == set(RealServer.model_fields)


def test_every_global_key_has_a_rule() -> None:
    top = {key.split(".", 1)[0] for key in GLOBAL_RULES | dict.fromkeys(GLOBAL_FOLDED)}
    assert top == set(GlobalConfig.model_fields)
    assert {
        k.split(".", 1)[1] for k in [*GLOBAL_RULES, *GLOBAL_FOLDED] if k.startswith("vrrp.")
    } == set(
        GlobalConfig.model_fields["vrrp"].annotation.model_fields  # type: ignore[union-attr]
    )


FILES = edit(
    BASE,
    (
        "vrrp_instances:\n",
        "vrrp_track_files:\n  maint: {file: /run/lvsha/maint, weight: 0}\n"
        "  prio: {file: /run/lvsha/prio, weight: -5}\nvrrp_instances:\n",
    ),
    ("    track_scripts: [haproxy]\n", "    track_scripts: [haproxy]\n    track_files: [maint]\n"),
)


def test_tracked_files_are_compared_by_name_and_effective_weight() -> None:
    new = edit(
        FILES,
        ("    track_files: [maint]\n", "    track_files: [{file: maint, reverse: true}, prio]\n"),
    )
    result = plan(FILES, new)
    assert [(c.area, c.action, c.detail, c.cost) for c in result.changes] == [
        ("track", "change", "file maint weight 0 -> 0 reverse", Cost.ELECTION),
        ("track", "add", "tracks file prio (weight -5)", Cost.ELECTION),
    ]
    assert plan(new, FILES).changes[-1].detail == "stops tracking file prio"


def test_a_tracked_files_path_is_an_election_its_init_hitless() -> None:
    moved = edit(FILES, ("/run/lvsha/maint", "/run/lvsha/maint2"))
    assert only(plan(FILES, moved)) == Change(
        "vrrp_track_file",
        "change",
        "maint",
        "file /run/lvsha/maint -> /run/lvsha/maint2: read at once (tracked by VI_1)",
        Cost.ELECTION,
    )
    untracked = edit(FILES, ("/run/lvsha/prio, weight: -5", "/run/lvsha/p, weight: -6"))
    assert [c.cost for c in plan(FILES, untracked).changes] == [Cost.HITLESS]
    init = edit(FILES, ("weight: 0}", "weight: 0, init: 0}"))
    assert only(plan(FILES, init)).detail == "init none -> 0: applies at the next start"
    assert only(plan(FILES, init)).cost is Cost.HITLESS


def test_vip_broadcast_or_scope_change_re_adds_it() -> None:
    old = edit(BASE, ("[10.0.0.20/24]", "[{address: 10.0.0.20/24, broadcast: '+'}]"))
    same = edit(BASE, ("[10.0.0.20/24]", "[{address: 10.0.0.20/24, broadcast: 10.0.0.255}]"))
    assert plan(old, same).changes == ()  # + is that address: nothing changes
    new = edit(BASE, ("[10.0.0.20/24]", "[{address: 10.0.0.20/24, broadcast: '-', scope: link}]"))
    change = only(plan(old, new))
    assert change.detail == (
        "re-added in VI_2 (eth0 vrid 52 ipv4): broadcast 10.0.0.255 -> 10.0.0.0, scope none -> link"
    )
    assert change.cost is Cost.VIP_MOVE
    numbered = edit(new, ("scope: link", "scope: 253"))
    assert plan(new, numbered).changes == ()  # link is scope 253


def test_smtp_alert_changes_are_hitless() -> None:
    new = edit(
        BASE,
        ("    track_scripts: [haproxy]\n", "    track_scripts: [haproxy]\n    smtp_alert: true\n"),
        ("  PAIR:\n", "  PAIR:\n    smtp_alert: false\n"),
        ("    scheduler: wlc\n", "    scheduler: wlc\n    smtp_alert: true\n"),
        ("        weight: 2\n", "        weight: 2\n        smtp_alert: false\n"),
        ("  router_id: lb-1\n", "  router_id: lb-1\n  notification: {smtp_alert_vrrp: false}\n"),
    )
    result = plan(BASE, new)
    assert {(c.area, c.detail) for c in result.changes} == {
        ("vrrp_instance", "smtp_alert none -> true"),
        ("sync_group", "smtp_alert none -> false"),
        ("virtual_service", "smtp_alert none -> true"),
        ("real_server", "smtp_alert none -> false"),
        ("global", "none -> false"),
    }
    assert [c.subject for c in result.changes if c.area == "global"] == [
        "notification.smtp_alert_vrrp"
    ]
    assert result.cost() is Cost.HITLESS
