"""lvsha and Debian's keepalived 2.2.7 as VRRP peers, both roles, v2 and v3.

Who is master is read from the wire-visible effect (which host holds the VIP) and from
keepalived's own log; "never two masters" is sampled in every steady state.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import Director, vrrp_config
from tests.netns.keepalived import Keepalived, KeepalivedInstance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

VIP = "192.0.2.100/24"
VRID = 51


@dataclass(frozen=True)
class Flavour:
    version: int
    interval: float
    password: str | None = None

    @property
    def master_down(self) -> float:
        return 3 * self.interval + self.interval  # skew is below one interval at any priority


FLAVOURS = {
    "v2": Flavour(2, 1.0),
    "v2-pass": Flavour(2, 1.0, "s3cret"),
    "v3": Flavour(3, 0.1),
}


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return FLAVOURS[request.param]


class Pair:
    """keepalived on host k (192.0.2.11), lvsha on host l (192.0.2.12)."""

    def __init__(self, lab: Lab, flavour: Flavour) -> None:
        self.flavour = flavour
        self.k_host = lab.add_host("k", "192.0.2.11/24")
        self.l_host = lab.add_host("l", "192.0.2.12/24")
        self.keepalived: Keepalived | None = None
        self.lvsha: Director | None = None

    def start_keepalived(self, priority: int, nopreempt: bool = False) -> Keepalived:
        f = self.flavour
        keepalived = Keepalived(
            self.k_host,
            KeepalivedInstance(
                vrid=VRID,
                priority=priority,
                virtual_addresses=(VIP,),
                advert_interval=f.interval,
                version=2 if f.version == 2 else 3,
                nopreempt=nopreempt,
                auth_pass=f.password,
            ),
        )
        keepalived.start()
        self.keepalived = keepalived
        return keepalived

    def start_lvsha(self, priority: int, preempt: bool = True) -> Director:
        f = self.flavour
        config = vrrp_config(
            vrid=VRID,
            priority=priority,
            vip=VIP,
            version=f.version,
            interval=f.interval,
            preempt=preempt,
            password=f.password,
        )
        director = Director(self.l_host, config, VIP)
        director.start()
        self.lvsha = director
        return director

    def holders(self) -> list[str]:
        found = []
        for name, host in (("keepalived", self.k_host), ("lvsha", self.l_host)):
            if holds_vip(host):
                found.append(name)
        return found

    def crash_keepalived(self) -> None:
        assert self.keepalived is not None
        self.keepalived.crash()
        # a crashed host's addresses go with it
        if holds_vip(self.k_host):
            self.k_host.ip("addr", "del", VIP, "dev", "eth0")
        self.keepalived.stop()
        self.keepalived = None

    def steady(self, expected: list[str], seconds: float) -> None:
        """Exactly `expected` holds the VIP for `seconds` (never two masters)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert self.holders() == expected
            time.sleep(0.02)

    def close(self) -> None:
        if self.keepalived is not None:
            self.keepalived.stop()
        if self.lvsha is not None and self.lvsha.running():
            self.lvsha.crash()


def holds_vip(host: Host) -> bool:
    return " 192.0.2.100/" in host.ip("-o", "addr", "show", "dev", "eth0")


@pytest.fixture
def pair(lab: Lab, flavour: Flavour) -> Iterator[Pair]:
    built = Pair(lab, flavour)
    try:
        yield built
    finally:
        built.close()


def test_keepalived_master_lvsha_backup(pair: Pair) -> None:
    f = pair.flavour
    keepalived = pair.start_keepalived(150)
    wait_until(lambda: pair.holders() == ["keepalived"], 5 * f.master_down + 5, what="k master")
    lvsha = pair.start_lvsha(100)
    wait_until(lambda: "INITIALIZE -> BACKUP" in lvsha.log(), 15, what="lvsha up")
    pair.steady(["keepalived"], 3 * f.master_down)
    assert keepalived.state() == "MASTER"

    # keepalived dies: lvsha takes over after Master_Down_Interval
    pair.crash_keepalived()
    wait_until(lambda: pair.holders() == ["lvsha"], 2 * f.master_down + 1, what="lvsha takes over")

    # keepalived returns with the higher priority and preempts; lvsha lets go
    back = pair.start_keepalived(150)
    wait_until(lambda: back.state() == "MASTER", 5 * f.master_down + 5, what="k preempts")
    wait_until(
        lambda: pair.holders() == ["keepalived"], 2 * f.master_down + 1, what="lvsha backs off"
    )
    pair.steady(["keepalived"], 2 * f.master_down)
    assert "MASTER -> BACKUP (higher priority master 192.0.2.11 (priority 150))" in lvsha.log()


def test_lvsha_master_keepalived_backup(pair: Pair) -> None:
    f = pair.flavour
    lvsha = pair.start_lvsha(150)
    wait_until(lambda: pair.holders() == ["lvsha"], 15, what="lvsha master")
    keepalived = pair.start_keepalived(100)
    wait_until(lambda: keepalived.state() == "BACKUP", 15, what="k backup")
    pair.steady(["lvsha"], 3 * f.master_down)
    assert keepalived.entered("MASTER") is None

    # lvsha dies: keepalived takes over
    lvsha.crash()
    wait_until(lambda: keepalived.state() == "MASTER", 2 * f.master_down + 1, what="k takes over")
    wait_until(lambda: pair.holders() == ["keepalived"], 2, what="k holds the VIP")

    # lvsha returns with the higher priority and preempts keepalived
    since = time.monotonic()
    lvsha.start()
    wait_until(
        lambda: keepalived.entered("BACKUP", since) is not None,
        5 * f.master_down + 15,
        what="k steps down",
    )
    wait_until(lambda: pair.holders() == ["lvsha"], 2 * f.master_down + 1, what="lvsha preempts")
    pair.steady(["lvsha"], 2 * f.master_down)


def test_graceful_stop_of_lvsha_hands_over_to_keepalived(pair: Pair) -> None:
    lvsha = pair.start_lvsha(150)
    wait_until(lambda: pair.holders() == ["lvsha"], 15, what="lvsha master")
    keepalived = pair.start_keepalived(100)
    wait_until(lambda: keepalived.state() == "BACKUP", 15, what="k backup")
    since = time.monotonic()
    assert lvsha.stop() == 0
    # keepalived heard priority 0 and took over within its skew time, not a master-down
    assert keepalived.find_line("received priority 0", since) is not None
    assert keepalived.state() == "MASTER"
    assert pair.holders() == ["keepalived"]


def deaf_to_vrrp(host: Host, deaf: bool) -> None:
    """Drop (or stop dropping) the VRRP adverts `host` receives: a split brain on demand."""
    if deaf:
        host.run("nft", "add table inet lvsha_test")
        host.run(
            "nft",
            "add chain inet lvsha_test input { type filter hook input priority 0 ; }",
        )
        host.run("nft", "add rule inet lvsha_test input ip protocol 112 drop")
    else:
        host.run("nft", "delete table inet lvsha_test")


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed")
@pytest.mark.parametrize("lvsha_higher_ip", [True, False], ids=["lvsha-wins", "keepalived-wins"])
def test_split_brain_heals_to_the_higher_address_at_equal_priority(
    lab: Lab, lvsha_higher_ip: bool
) -> None:
    """RFC 5798 6.4.3: a master hearing an equal priority from a higher address steps down.
    (A backup does not preempt at equal priority, 6.4.2, so only a split brain shows it.)"""
    pair = Pair(lab, FLAVOURS["v3"])
    if not lvsha_higher_ip:
        pair.k_host.ip("addr", "flush", "dev", "eth0")
        pair.l_host.ip("addr", "flush", "dev", "eth0")
        pair.k_host.ip("addr", "add", "192.0.2.12/24", "dev", "eth0")
        pair.l_host.ip("addr", "add", "192.0.2.11/24", "dev", "eth0")
    try:
        keepalived = pair.start_keepalived(100)
        wait_until(lambda: pair.holders() == ["keepalived"], 15, what="k master")
        for host in (pair.k_host, pair.l_host):
            deaf_to_vrrp(host, True)
        pair.start_lvsha(100)
        wait_until(lambda: len(pair.holders()) == 2, 15, what="split brain: both master")
        since = time.monotonic()
        for host in (pair.k_host, pair.l_host):
            deaf_to_vrrp(host, False)
        winner = ["lvsha"] if lvsha_higher_ip else ["keepalived"]
        wait_until(lambda: pair.holders() == winner, 5, what=f"{winner} alone master")
        pair.steady(winner, 1.5)
        if lvsha_higher_ip:
            assert keepalived.entered("BACKUP", since) is not None
    finally:
        pair.close()


def test_keepalived_nopreempt_is_respected(lab: Lab) -> None:
    f = FLAVOURS["v3"]
    pair = Pair(lab, f)
    try:
        pair.start_lvsha(100)
        wait_until(lambda: pair.holders() == ["lvsha"], 15, what="lvsha master alone")
        keepalived = pair.start_keepalived(150, nopreempt=True)
        wait_until(lambda: keepalived.state() == "BACKUP", 15, what="k backup")
        pair.steady(["lvsha"], 2.0)  # 20 advert intervals: the higher keepalived waits
    finally:
        pair.close()
