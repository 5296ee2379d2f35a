"""`lvsha run` end to end: a master's VIPs carry their broadcast, scope, label and device as
configured (keepalived's brd, scope, label, dev), and a reload that changes one adds the VIP
again as configured now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import REPO, Director

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
LINK_VIP = "198.51.100.10/24"
"""In a subnet of its own on eth0: the kernel wants a secondary address's scope to be its
primary's, so a scope other than global needs its own subnet (as with keepalived)."""
UPLINK_VIP = "203.0.113.5/24"


def config(link_scope: str) -> str:
    return (
        "vrrp_instances:\n"
        "  VI:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 42\n"
        "    priority: 150\n"
        "    version: 3\n"
        "    advert_interval: 100ms\n"
        "    garp: {delay: 0}\n"
        "    virtual_ipaddresses:\n"
        f"      - '{VIP}'\n"
        f"      - {{address: '{LINK_VIP}', broadcast: '+', scope: {link_scope}, "
        "label: 'eth0:vip'}\n"
        "    virtual_ipaddresses_excluded:\n"
        f"      - {{address: '{UPLINK_VIP}', device: up0, broadcast: 203.0.113.200, "
        "label: 'up0:web'}\n"
    )


def addresses(host: Host, interface: str) -> dict[str, dict[str, Any]]:
    """`ip -j addr show dev INTERFACE` as {"address/prefix": entry}."""
    (link,) = json.loads(host.ip("-j", "addr", "show", "dev", interface))
    return {f"{a['local']}/{a['prefixlen']}": a for a in link["addr_info"]}


def shown(host: Host, interface: str, vip: str) -> tuple[str | None, str, str] | None:
    entry = addresses(host, interface).get(vip)
    if entry is None:
        return None
    return (entry.get("broadcast"), entry["scope"], entry["label"])


def test_a_masters_vips_carry_broadcast_scope_label_and_device(lab: Lab) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    # a second interface of the director's, for the VIP with its own device
    host.ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
    host.ip("link", "set", "up0", "up")
    host.ip("link", "set", "up1", "up")
    director = Director(host, config("link"), VIP)
    director.start()
    try:
        wait_until(director.holds_vip, 10, what="master")
        wait_until(lambda: shown(host, "up0", UPLINK_VIP) is not None, 5, what="uplink VIP")
        assert shown(host, "eth0", LINK_VIP) == ("198.51.100.255", "link", "eth0:vip")
        assert shown(host, "up0", UPLINK_VIP) == ("203.0.113.200", "global", "up0:web")
        assert shown(host, "eth0", VIP) == (None, "global", "eth0")
        assert UPLINK_VIP not in addresses(host, "eth0")

        staging = director.config_path.with_name("lvsha.yaml.new")
        staging.write_text(config("host"))
        os.replace(staging, director.config_path)
        run_dir = str(director.workdir / "run")
        done = subprocess.run(
            host.argv([sys.executable, "-m", "lvsha", "reload", "--run-dir", run_dir]),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(
            lambda: shown(host, "eth0", LINK_VIP) == ("198.51.100.255", "host", "eth0:vip"),
            5,
            what="the VIP added again with scope host",
        )
        assert director.holds_vip()
        assert shown(host, "up0", UPLINK_VIP) == ("203.0.113.200", "global", "up0:web")
        assert director.stop() == 0
        assert LINK_VIP not in addresses(host, "eth0")
        assert UPLINK_VIP not in addresses(host, "up0")
    finally:
        if director.running():
            director.crash()
