"""An imported keepalived.conf with use_vmac behaves as the original on the wire (issue 14).

keepalived runs the original on director k and lvsha runs the YAML the import writes for
director l (the file differs between them only in `@k` / `@l` lines). Both hold the VIP on a
VMAC interface with the virtual MAC: in both orders of start the same director wins, a failover
works both ways, the VIP answers the client, and the client's neighbour entry for the VIP keeps
the virtual MAC throughout. The configuration the import must mean is kept here as a module
constant, and the test checks the import's output means the same before running it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvsha.config import load_text
from lvsha.drill.lab import Host, Lab, LabError, wait_until
from tests.netns.test_import_equivalence import Pair, imported

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

VIP = "192.0.2.100/24"
VIP_IP = "192.0.2.100"
K, L = "192.0.2.11", "192.0.2.12"
GARP_SETTLE = 5.0 + 3.0
"""Seconds for the VIP to answer after a takeover: the second GARP burst's delay and some."""

# VRRPv2 (keepalived's default version) multicast with use_vmac: keepalived's VMAC is vrrp.54.
KEEPALIVED_VMAC = """\
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 54
@k  priority 150
@l  priority 100
    advert_int 1
    use_vmac
    virtual_ipaddress {
        192.0.2.100/24
    }
}
"""

LVSHA_VMAC = """\
global:
  enable_script_security: false
vrrp_instances:
  VI_1:
    state: BACKUP
    interface: eth0
    virtual_router_id: 54
    priority: 100
    advert_interval: 1
    virtual_ipaddresses:
    - 192.0.2.100/24
    version: 2
    use_vmac: true
"""

# VRRPv3 at 0.1 s with vmac_xmit_base (adverts from the base interface's MAC), and a VMAC
# named by the configuration; lvsha the higher priority this time.
KEEPALIVED_XMIT_BASE = """\
global_defs {
    vrrp_version 3
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 55
@k  priority 100
@l  priority 150
    advert_int 0.1
    use_vmac vip55
    vmac_xmit_base
    virtual_ipaddress {
        192.0.2.100/24
    }
}
"""

LVSHA_XMIT_BASE = """\
global:
  vrrp:
    version: 3
  enable_script_security: false
vrrp_instances:
  VI_1:
    state: BACKUP
    interface: eth0
    virtual_router_id: 55
    priority: 150
    advert_interval: 0.1
    virtual_ipaddresses:
    - 192.0.2.100/24
    version: 3
    use_vmac: true
    vmac_interface: vip55
    vmac_xmit_base: true
"""


@dataclass(frozen=True)
class Scenario:
    keepalived: str
    lvsha: str
    vmac: str
    vrid: int
    interval: float

    @property
    def virtual_mac(self) -> str:
        return f"00:00:5e:00:01:{self.vrid:02x}"

    @property
    def higher(self) -> str:
        return "k" if "@k  priority 150" in self.keepalived else "l"


SCENARIOS = {
    "vmac-v2": Scenario(KEEPALIVED_VMAC, LVSHA_VMAC, "vrrp.54", 54, 1.0),
    "vmac-xmit-base-v3": Scenario(KEEPALIVED_XMIT_BASE, LVSHA_XMIT_BASE, "vip55", 55, 0.1),
}


def on_vmac(host: Host, vmac: str) -> bool:
    try:
        shown = host.ip("-o", "addr", "show", "dev", vmac)
    except LabError:
        return False
    return f" {VIP_IP}/" in shown


class VmacPair(Pair):
    """The pair of test_import_equivalence, holding the VIP on VMAC interfaces."""

    def __init__(self, lab: Lab, scenario: Scenario, lvsha_text: str) -> None:
        super().__init__(lab, scenario.keepalived, scenario.interval, lvsha_text)
        self.scenario = scenario
        # No reachability probe of the client's own during the test (see the neighbour check).
        self.client.run("sysctl", "-qw", "net.ipv4.neigh.eth0.base_reachable_time_ms=600000")

    def holds(self, host: Host, vip: str) -> bool:
        return on_vmac(host, self.scenario.vmac)

    def answers_at_the_virtual_mac(self) -> None:
        """The VIP answers; while lvsha holds it, the client knows it at the virtual MAC.

        Not while keepalived holds it: keepalived leaves the base interface's arp_announce
        alone, so when its reply to the client leaves through eth0 (the first of the two
        routes to the subnet) and its kernel asks for the client's MAC, the request names the
        VIP as its sender and the client learns the VIP at eth0's MAC. lvsha sets
        arp_announce=2 on the base (lvsha.net.vmac); the takeover's gratuitous ARP from its
        VMAC puts the virtual MAC back.

        Within GARP_SETTLE: keepalived leaving mastership may still hold the VIP when lvsha's
        takeover GARP reaches its VMAC (private mode delivers a frame from the virtual MAC to
        it alone) and answer it from the virtual MAC, drawing the switch back to itself (lvsha
        sets drop_gratuitous_arp on its VMAC against this). With vmac_xmit_base nothing else
        lvsha sends carries the virtual MAC, so the switch follows at lvsha's second GARP
        burst, garp delay (5 s, as keepalived's garp_master_delay) after the takeover."""
        wait_until(self.vip_answers, GARP_SETTLE, what="the VIP answers the client")
        if self.master() != "l":
            return
        entries = json.loads(self.client.ip("-j", "neigh", "show", VIP_IP, "dev", "eth0"))
        assert [e.get("lladdr") for e in entries] == [self.scenario.virtual_mac], entries


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("first", ["k", "l"])
def test_the_imported_vmac_file_elects_and_fails_over_as_the_original(
    lab: Lab, name: str, first: str, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    text = imported(scenario.keepalived, "l", tmp_path)
    assert load_text(text, "imported.yaml") == load_text(scenario.lvsha, "expected.yaml"), text
    pair = VmacPair(lab, scenario, text)
    second = "l" if first == "k" else "k"
    winner = scenario.higher
    loser = "l" if winner == "k" else "k"
    try:
        pair.start(first)
        pair.wait_master(first, f"{first} master on its own")
        pair.start(second)
        pair.wait_master(winner, f"{winner} master once both run")
        pair.steady(winner, 3 * scenario.interval + 0.5)
        pair.answers_at_the_virtual_mac()
        pair.stop(winner)
        pair.wait_master(loser, f"{loser} takes over")
        pair.answers_at_the_virtual_mac()
        pair.start(winner)
        pair.wait_master(winner, f"{winner} back as master")
        pair.answers_at_the_virtual_mac()
    finally:
        pair.close()
