"""An imported keepalived.conf behaves as the original on the wire (issue 14).

For each configuration, keepalived runs the original on director k and lvsha runs what
`lvsha import-keepalived` made of the same file on director l (the file differs between them
only in `@k` / `@l` lines, as a pair's shared file would). In both orders of start the same
director wins, a failover works both ways, and the VIP answers a client.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.keepalived.importer import import_keepalived
from tests.netns.director import Director
from tests.netns.keepalived import Keepalived

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

VIP = "192.0.2.100/24"
VIP2 = "192.0.2.101/24"
K, L = "192.0.2.11", "192.0.2.12"


@dataclass(frozen=True)
class Scenario:
    text: str
    interval: float
    preempt: bool = True


SCENARIOS = {
    # VRRPv2 multicast with a PASS longer than keepalived sends (it sends the first 8).
    "v2-multicast-pass": Scenario(
        """\
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
@k  priority 150
@l  priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass longsecret99
    }
    virtual_ipaddress {
        192.0.2.100/24
    }
}
""",
        1.0,
    ),
    # VRRPv3 unicast at 0.1 s, lvsha the higher priority this time.
    "v3-unicast": Scenario(
        f"""\
global_defs {{
    vrrp_version 3
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 52
@k  priority 100
@l  priority 150
    advert_int 0.1
@k  unicast_src_ip {K}
@l  unicast_src_ip {L}
    unicast_peer {{
@k      {L}
@l      {K}
    }}
    virtual_ipaddress {{
        192.0.2.100/24
    }}
}}
""",
        0.1,
    ),
    # nopreempt: whoever is master stays master.
    "nopreempt": Scenario(
        """\
vrrp_instance VI_1 {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 53
@k  priority 150
@l  priority 100
    advert_int 0.1
    version 3
    virtual_ipaddress {
        192.0.2.100/24
    }
}
""",
        0.1,
        preempt=False,
    ),
}


def imported(text: str, config_id: str, tmp_path: Path) -> str:
    source = tmp_path / "keepalived.conf"
    source.write_text(text)
    out = tmp_path / "lvsha.yaml"
    err = io.StringIO()
    assert import_keepalived(str(source), str(out), config_id, err=err) == 0, err.getvalue()
    return out.read_text()


def holds(host: Host, vip: str = VIP) -> bool:
    return f" {vip.split('/', maxsplit=1)[0]}/" in host.ip("-o", "addr", "show", "dev", "eth0")


class Pair:
    """keepalived on director k with `text` (its own -i k), lvsha on director l with
    `lvsha_yaml` (the import of the same file for l), and a client."""

    def __init__(self, lab: Lab, text: str, interval: float, lvsha_yaml: str) -> None:
        self.text = text
        self.k_host = lab.add_host("k", f"{K}/24")
        self.l_host = lab.add_host("l", f"{L}/24")
        self.client = lab.add_host("c", "192.0.2.50/24")

        self.l_yaml = lvsha_yaml
        self.keepalived: Keepalived | None = None
        self.lvsha: Director | None = None
        # Master_Down_Interval and some: the wait for any takeover.
        self.takeover = 4 * interval + 3.0

    def start(self, who: str) -> None:
        if who == "k":
            # keepalived reads the very same file, with its own -i.
            self.keepalived = Keepalived(self.k_host, text=self.text, config_id="k")
            self.keepalived.start()
        else:
            self.lvsha = Director(self.l_host, self.l_yaml, VIP)
            self.lvsha.start()

    def stop(self, who: str) -> None:
        if who == "k" and self.keepalived is not None:
            self.keepalived.stop()
            self.keepalived = None
        elif who == "l" and self.lvsha is not None:
            assert self.lvsha.stop() == 0, self.lvsha.log()
            self.lvsha = None

    def holds(self, host: Host, vip: str) -> bool:
        """Whether `host` holds `vip` (where each director puts it)."""
        return holds(host, vip)

    def master(self, vip: str = VIP) -> str | None:
        hosts = (("k", self.k_host), ("l", self.l_host))
        held = [name for name, host in hosts if self.holds(host, vip)]
        return held[0] if len(held) == 1 else None

    def wait_master(self, who: str, what: str, vip: str = VIP) -> None:
        wait_until(lambda: self.master(vip) == who, self.takeover + 10, what=what)

    def steady(self, who: str, seconds: float) -> None:
        """`who` stays the only master for `seconds` (sampled)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert self.master() == who, f"expected {who} as the only master"
            time.sleep(0.05)  # sampling a state that must hold, not waiting for one

    def vip_answers(self) -> bool:
        done = self.client.run(
            "ping", "-c", "1", "-W", "1", VIP.split("/", maxsplit=1)[0], check=False
        )
        return done.returncode == 0

    def close(self) -> None:
        if self.keepalived is not None:
            self.keepalived.crash()
        if self.lvsha is not None and self.lvsha.running():
            self.lvsha.crash()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("first", ["k", "l"])
def test_the_imported_file_elects_and_fails_over_as_the_original(
    lab: Lab, tmp_path: Path, name: str, first: str
) -> None:
    scenario = SCENARIOS[name]
    pair = Pair(lab, scenario.text, scenario.interval, imported(scenario.text, "l", tmp_path))
    second = "l" if first == "k" else "k"
    higher = "k" if "@k  priority 150" in scenario.text else "l"
    try:
        pair.start(first)
        pair.wait_master(first, f"{first} master on its own")
        pair.start(second)
        # With preemption the higher priority wins whatever the order; without it the first
        # stays master.
        winner = higher if scenario.preempt else first
        pair.wait_master(winner, f"{winner} master once both run")
        pair.steady(winner, 3 * scenario.interval + 0.5)
        assert pair.vip_answers(), "the VIP does not answer the client"
        # Failover one way: the master stops, the other takes over and answers.
        loser = second if winner == first else first
        pair.stop(winner)
        pair.wait_master(loser, f"{loser} takes over")
        assert pair.vip_answers(), "the VIP does not answer after the takeover"
        # And back: the stopped one returns; with preemption it takes over again, without
        # it the master stays, and stopping that one moves the VIP back.
        pair.start(winner)
        if scenario.preempt and winner == higher:
            pair.wait_master(winner, f"{winner} back as master")
        else:
            pair.steady(loser, 3 * scenario.interval + 0.5)
            pair.stop(loser)
            pair.wait_master(winner, f"{winner} master again")
        assert pair.vip_answers(), "the VIP does not answer after the way back"
    finally:
        pair.close()


def test_a_sync_group_moves_both_instances_together(lab: Lab, tmp_path: Path) -> None:
    text = """\
vrrp_sync_group G {
    group {
        VI_A VI_B
    }
}
vrrp_instance VI_A {
    interface eth0
    virtual_router_id 61
@k  priority 150
@l  priority 100
    advert_int 0.1
    version 3
    virtual_ipaddress {
        192.0.2.100/24
    }
}
vrrp_instance VI_B {
    interface eth0
    virtual_router_id 62
@k  priority 150
@l  priority 100
    advert_int 0.1
    version 3
    virtual_ipaddress {
        192.0.2.101/24
    }
}
"""
    pair = Pair(lab, text, 0.1, imported(text, "l", tmp_path))
    try:
        pair.start("l")
        pair.start("k")
        for vip in (VIP, VIP2):
            pair.wait_master("k", f"k master of {vip}", vip)
        pair.stop("k")
        for vip in (VIP, VIP2):
            pair.wait_master("l", f"l takes over {vip}", vip)
        assert pair.vip_answers()
    finally:
        pair.close()


def test_a_track_script_weight_moves_mastership_as_in_keepalived(lab: Lab, tmp_path: Path) -> None:
    k_ok, l_ok = tmp_path / "k-ok", tmp_path / "l-ok"
    k_ok.write_text("")
    l_ok.write_text("")
    text = f"""\
vrrp_script chk {{
@k  script "test -e {k_ok}"
@l  script "test -e {l_ok}"
    interval 1
    weight -60
}}
vrrp_instance VI_1 {{
    interface eth0
    virtual_router_id 63
@k  priority 100
@l  priority 150
    advert_int 0.1
    version 3
    virtual_ipaddress {{
        192.0.2.100/24
    }}
    track_script {{
        chk
    }}
}}
"""
    pair = Pair(lab, text, 0.1, imported(text, "l", tmp_path))
    try:
        pair.start("k")
        pair.start("l")
        pair.wait_master("l", "l master (150 against 100)")
        # lvsha's script fails: 90 against 100, keepalived takes over.
        l_ok.unlink()
        pair.wait_master("k", "k master once l's script fails")
        l_ok.write_text("")
        pair.wait_master("l", "l master again once its script passes")
        # keepalived's script fails too: 40 against 150, nothing moves.
        k_ok.unlink()
        pair.steady("l", 3.0)
        assert pair.vip_answers()
    finally:
        pair.close()
