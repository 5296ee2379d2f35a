"""The reload rules of the VRRP wire keywords, and `lvsha run` without nft."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lvsha.config import load_text
from lvsha.daemon.reload_plan import Cost, reload_plan

BASE = """\
global:
  vrrp: {GLOBAL}
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    version: 3
    virtual_ipaddresses: [192.0.2.10/24]
{EXTRA}"""


def text(glob: str = "{}", extra: str = "") -> str:
    return BASE.replace("{GLOBAL}", glob).replace("{EXTRA}", extra)


def changes(old: str, new: str) -> list[tuple[str, str, str, Cost]]:
    plan = reload_plan(load_text(old), load_text(new))
    return [(c.area, c.subject, c.detail, c.cost) for c in plan.changes]


def test_strict_and_the_groups_cost_an_election() -> None:
    assert changes(text(), text("{strict: true}")) == [
        (
            "global",
            "vrrp.strict",
            "false -> true: a backup that refuses the master's adverts (their address list "
            "differs) takes over",
            Cost.ELECTION,
        )
    ]
    found = changes(text(), text("{mcast_group4: 224.0.0.100}"))
    assert [(a, s, c) for a, s, _, c in found] == [("global", "vrrp.mcast_group4", Cost.ELECTION)]
    assert found[0][2].startswith("224.0.0.18 -> 224.0.0.100: IPv4 multicast instances restart")


def test_instance_keys_have_their_costs() -> None:
    def only(extra: str) -> tuple[str, Cost]:
        (found,) = changes(text(), text(extra=extra))
        assert found[1] == "VI_1 (eth0 vrid 51 ipv4)"
        return found[2].split(":")[0], found[3]

    assert only("    accept: false\n") == ("accept true -> false", Cost.HITLESS)
    assert only("    dont_track_primary: true\n") == (
        "dont_track_primary false -> true",
        Cost.ELECTION,
    )
    assert only("    skip_check_adv_addr: true\n") == (
        "skip_check_adv_addr false -> true",
        Cost.ELECTION,
    )


def test_folded_globals_show_on_the_instances_they_change() -> None:
    found = changes(text(), text("{skip_check_adv_addr: true}"))
    assert [(a, d.split(":")[0]) for a, _, d, _ in found] == [
        ("vrrp_instance", "skip_check_adv_addr false -> true")
    ]
    # default_interface: the instance names its own interface, so nothing changes
    assert changes(text(), text("{default_interface: eth9}")) == []


def test_run_refuses_to_start_accept_false_without_nft(tmp_path: Path) -> None:
    config = tmp_path / "lvsha.yaml"
    config.write_text(text(extra="    accept: false\n"))
    done = subprocess.run(
        [sys.executable, "-m", "lvsha", "run", str(config), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PATH": str(tmp_path)},  # no nft on it
    )
    assert done.returncode == 1
    assert (
        "not starting: vrrp_instances VI_1: accept: false needs nftables, and nft is not "
        "installed: install it (apt install nftables) or set accept: true" in done.stderr
    )
    assert not (tmp_path / "run").exists()  # nothing started
