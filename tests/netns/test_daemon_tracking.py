"""`lvsha run` end to end: notify hooks, track scripts, track interfaces and sync groups."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import Director

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VIP2 = "192.0.2.101/24"


def instance(name: str, vrid: int, priority: int, vip: str, extra: str = "") -> str:
    return (
        f"  {name}:\n"
        "    interface: eth0\n"
        f"    virtual_router_id: {vrid}\n"
        f"    priority: {priority}\n"
        "    version: 3\n"
        "    advert_interval: 100ms\n"
        f"    virtual_ipaddresses: ['{vip}']\n"
        "    garp: {delay: 0}\n" + extra
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    # /tmp is world-writable: script security refuses scripts there, but the files the
    # scripts write or test may live anywhere.
    with tempfile.TemporaryDirectory(prefix="lvsha-track-") as tmp:
        yield Path(tmp)


def pair(lab: Lab) -> tuple[Host, Host]:
    return lab.add_host("a", "192.0.2.11/24"), lab.add_host("b", "192.0.2.12/24")


def run(host: Host, config: str, vip: str = VIP) -> Director:
    director = Director(host, config, vip)
    director.start()
    return director


def test_notify_hooks_run_in_order_with_keepalived_arguments(lab: Lab, scratch: Path) -> None:
    a_host, _ = pair(lab)
    out = scratch / "notify.out"
    hooks = (
        "    notify:\n"
        f"      master: [/bin/sh, -c, 'echo master-hook >> {out}']\n"
        f"      backup: [/bin/sh, -c, 'echo backup-hook >> {out}']\n"
        f"      any: [/bin/sh, -c, 'echo \"$@\" >> {out}', sh]\n"
    )
    a = run(a_host, "vrrp_instances:\n" + instance("VI", 42, 150, VIP, hooks))
    try:
        wait_until(lambda: out.exists() and out.read_text().count("\n") >= 4, 10, what="hooks")
        assert out.read_text().splitlines()[:4] == [
            "backup-hook",
            "INSTANCE VI BACKUP 150",
            "master-hook",
            "INSTANCE VI MASTER 150",
        ]
    finally:
        a.crash()


def test_failing_track_script_lowers_priority_and_fails_over(lab: Lab, scratch: Path) -> None:
    a_host, b_host = pair(lab)
    flag = scratch / "healthy"
    flag.touch()
    script = (
        "vrrp_scripts:\n"
        "  chk:\n"
        f"    command: [/usr/bin/test, -e, {flag}]\n"
        "    interval: 200ms\n"
        "    timeout: 200ms\n"
        "    weight: -100\n"
    )
    a = run(
        a_host,
        script + "vrrp_instances:\n" + instance("VI", 42, 150, VIP, "    track_scripts: [chk]\n"),
    )
    b = run(b_host, "vrrp_instances:\n" + instance("VI", 42, 100, VIP))
    try:
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="a master")
        flag.unlink()  # 150 - 100 = 50, below b's 100: b preempts
        wait_until(lambda: b.holds_vip() and not a.holds_vip(), 5, what="b takes over")
        assert "vrrp script chk: failed" in a.log()
        flag.touch()  # back to 150: a preempts again
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 5, what="a takes back")
    finally:
        a.crash()
        b.crash()


def test_tracked_interface_down_puts_the_instance_in_fault(lab: Lab) -> None:
    a_host, b_host = pair(lab)
    # an uplink of a's to track: a veth pair inside a's namespace
    a_host.ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
    a_host.ip("link", "set", "up0", "up")
    a_host.ip("link", "set", "up1", "up")
    a = run(
        a_host, "vrrp_instances:\n" + instance("VI", 42, 150, VIP, "    track_interfaces: [up0]\n")
    )
    b = run(b_host, "vrrp_instances:\n" + instance("VI", 42, 100, VIP))
    try:
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="a master")
        a_host.ip("link", "set", "up1", "down")  # up0 loses carrier
        wait_until(lambda: b.holds_vip() and not a.holds_vip(), 5, what="b takes over")
        assert "MASTER -> FAULT" in a.log()
        a_host.ip("link", "set", "up1", "up")
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 5, what="a back")
        assert "FAULT -> BACKUP" in a.log()
    finally:
        a.crash()
        b.crash()


def test_sync_group_fails_over_together(lab: Lab, scratch: Path) -> None:
    a_host, b_host = pair(lab)
    flag = scratch / "healthy"
    flag.touch()
    script = (
        "vrrp_scripts:\n"
        "  chk:\n"
        f"    command: [/usr/bin/test, -e, {flag}]\n"
        "    interval: 200ms\n"
        "    timeout: 200ms\n"
    )
    group = "sync_groups:\n  G:\n    instances: [V1, V2]\n"

    def config(priority: int, tracked: bool) -> str:
        track = "    track_scripts: [chk]\n" if tracked else ""
        return (
            (script if tracked else "")
            + "vrrp_instances:\n"
            + instance("V1", 42, priority, VIP, track)
            + instance("V2", 43, priority, VIP2)
            + group
        )

    a = run(a_host, config(150, tracked=True))
    b = run(b_host, config(100, tracked=False))
    a2 = Director(a_host, "", VIP2)  # only to read VIP2 on a's interface
    b2 = Director(b_host, "", VIP2)
    try:
        wait_until(lambda: a.holds_vip() and a2.holds_vip(), 10, what="a holds both VIPs")
        # If b was master first (a's track script not yet run), it lets go after a handover
        # grace once it hears a: wait for that rather than assume b never took them.
        wait_until(lambda: not b.holds_vip() and not b2.holds_vip(), 5, what="b holds neither VIP")
        flag.unlink()  # V1 on a faults (weight 0); the group takes V2 with it
        wait_until(lambda: b.holds_vip() and b2.holds_vip(), 5, what="b holds both")
        # a's removal is an asynchronous netlink call: b may add first, so wait for it
        wait_until(lambda: not a.holds_vip() and not a2.holds_vip(), 5, what="a released both VIPs")
    finally:
        a.crash()
        b.crash()
