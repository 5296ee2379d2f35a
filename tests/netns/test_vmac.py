"""VMAC (use_vmac) in namespaces: the master holds the VIP on a macvlan with the VRRP virtual
MAC, so the client's neighbour entry for the VIP never changes across a failover and the client
sends no ARP request for it; with vmac_xmit_base the adverts leave from the base interface's
MAC; a crashed VRRP child leaves no VIP on its VMAC."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from lvsha.drill.capture import Capture
from lvsha.drill.lab import Host, Lab, LabError, wait_until
from tests.netns.director import REPO, Director, vrrp_config

pytestmark = pytest.mark.netns

VRID = 42
VIP = "192.0.2.100/24"
VIP_IP = "192.0.2.100"
VMAC = "vrrp.42"
VIRTUAL_MAC = "00:00:5e:00:01:2a"
VRRP_CHILD = "lvsha.daemon.vrrp_process"
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
_PACKET_OUTGOING = 4
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def vmac_config(priority: int, *, xmit_base: bool = False, preempt: bool = True) -> str:
    text = vrrp_config(vrid=VRID, priority=priority, vip=VIP, preempt=preempt)
    text += "    use_vmac: true\n"
    if xmit_base:
        text += "    vmac_xmit_base: true\n"
    return text


def on_vmac(director: Director, address: str = VIP_IP) -> bool:
    """Whether `address` is on the director's VMAC interface (False when it has none)."""
    try:
        shown = director.host.ip("-o", "addr", "show", "dev", VMAC)
    except LabError:
        return False
    return f" {address}/" in shown


def has_vmac(host: Host) -> bool:
    try:
        host.ip("link", "show", VMAC)
    except LabError:
        return False
    return True


def holders(directors: tuple[Director, ...]) -> list[str]:
    return [d.host.name for d in directors if on_vmac(d)]


def mac_of(host: Host, interface: str = "eth0") -> str:
    address: str = json.loads(host.ip("-j", "link", "show", interface))[0]["address"]
    return address


def neighbour(client: Host, address: str = VIP_IP) -> dict[str, object]:
    entries = json.loads(client.ip("-j", "neigh", "show", address, "dev", "eth0") or "[]")
    return entries[0] if entries else {}


def pings(client: Host) -> bool:
    return client.run("ping", "-c", "1", "-W", "1", VIP_IP, check=False).returncode == 0


def open_arp_sniffer(client: Host) -> socket.socket:
    def opened() -> socket.socket:
        # Outgoing frames reach only ETH_P_ALL sockets, not a socket of one protocol.
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sniffer.bind(("eth0", ETH_P_ALL))
        return sniffer

    return client.call(opened)


def arp_requests_sent(sniffer: socket.socket, target: str = VIP_IP) -> list[str]:
    """The ARP requests for `target` the client sent since the sniffer opened."""
    sent: list[str] = []
    wanted = socket.inet_aton(target)
    while select.select([sniffer], [], [], 0)[0]:
        frame, address = sniffer.recvfrom(65535)
        if address[2] != _PACKET_OUTGOING or len(frame) < 14 + _ARP.size:
            continue
        if int.from_bytes(frame[12:14], "big") != ETH_P_ARP:
            continue
        fields = _ARP.unpack_from(frame, 14)
        if fields[4] == 1 and fields[8] == wanted:
            sent.append(frame.hex())
    return sent


@pytest.fixture
def pair(lab: Lab) -> Iterator[tuple[Director, Director, Host]]:
    """Hosts a and b (directors, not started yet) and a client, on one switch."""
    a_host = lab.add_host("a", "192.0.2.11/24")
    b_host = lab.add_host("b", "192.0.2.12/24")
    client = lab.add_host("client", "192.0.2.50/24")
    # The client's entry must not age into a reachability probe during the test: any ARP
    # request it sends is then one the failover caused.
    client.run("sysctl", "-qw", "net.ipv4.neigh.eth0.base_reachable_time_ms=600000")
    a = Director(a_host, vmac_config(150), VIP)
    b = Director(b_host, vmac_config(100), VIP)
    yield a, b, client
    for director in (a, b):
        if director.running():
            director.crash()


def configure(pair: tuple[Director, Director, Host], *, xmit_base: bool) -> None:
    a, b, _ = pair
    a.config_path.write_text(vmac_config(150, xmit_base=xmit_base, preempt=False))
    b.config_path.write_text(vmac_config(100, xmit_base=xmit_base))


def start_pair(pair: tuple[Director, Director, Host]) -> None:
    a, b, _ = pair
    a.start()
    wait_until(lambda: holders((a, b)) == ["a"], 10, what="a master on its VMAC")
    b.start()
    wait_until(lambda: "-> BACKUP" in b.log(), 10, what="b backup")
    wait_until(lambda: has_vmac(b.host), 5, what="b's VMAC interface")


def switch_port_of(lab: Lab, mac: str) -> str | None:
    """The switch port the bridge has learned `mac` at, if any."""
    shown = subprocess.run(
        ["bridge", "-n", lab.switch, "-j", "fdb", "show", "br", "br0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for entry in json.loads(shown or "[]"):
        if entry.get("mac") == mac and "permanent" not in entry.get("state", ""):
            return str(entry["ifname"])
    return None


def backup_stays_silent(a: Director, seconds: float) -> None:
    """Nothing leaves the backup's VMAC: the switch keeps the virtual MAC at the master a's
    port (IGMP or MLD reports from it would move it, and a's traffic with it)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert switch_port_of(a.host.lab, VIRTUAL_MAC) == a.host.switch_port
        time.sleep(0.1)  # sampling a state that must hold, not waiting for one


def host_dies(director: Director) -> None:
    """The whole director goes at once, its VMAC (and so its VIP) with it, as with a host."""
    director.crash()
    director.host.ip("link", "del", VMAC)


@pytest.mark.parametrize("xmit_base", [False, True], ids=["vmac", "xmit_base"])
def test_a_failover_keeps_the_clients_neighbour_entry_and_needs_no_arp(
    pair: tuple[Director, Director, Host], xmit_base: bool
) -> None:
    a, b, client = pair
    configure(pair, xmit_base=xmit_base)
    start_pair(pair)
    directors = (a, b)
    assert not a.holds(VIP_IP), "the VIP belongs on the VMAC, not on eth0"
    assert not on_vmac(b)
    assert mac_of(a.host, VMAC) == mac_of(b.host, VMAC) == VIRTUAL_MAC
    # IGMPv3 repeats an unsolicited report within a second (igmpv3_unsolicited_report_interval).
    backup_stays_silent(a, 2.5)
    with closing(open_arp_sniffer(client)) as sniffer:
        wait_until(lambda: pings(client), 10, what="the client reaches the VIP on a")
        # The sniffer sees the client's requests: the first ping had to ask once.
        assert arp_requests_sent(sniffer)
    assert neighbour(client).get("lladdr") == VIRTUAL_MAC

    capture = Capture(client)
    with closing(open_arp_sniffer(client)) as sniffer, capture:
        failover = time.monotonic()
        host_dies(a)
        wait_until(lambda: holders(directors) == ["b"], 10, what="b takes over on its VMAC")
        wait_until(lambda: pings(client), 10, what="the client reaches the VIP on b")
        entry = neighbour(client)
        assert entry.get("lladdr") == VIRTUAL_MAC, entry
        states = entry.get("state")
        assert isinstance(states, list) and not {"FAILED", "INCOMPLETE"} & set(states), entry
        assert arp_requests_sent(sniffer) == [], "the client had to ask for the VIP's MAC"
        wait_until(
            lambda: bool(capture.adverts_since(failover)), 5, what="b's adverts at the client"
        )
        sent_from = {seen.source_mac for seen in capture.adverts_since(failover)}
    assert sent_from == ({mac_of(b.host)} if xmit_base else {VIRTUAL_MAC})
    log = b.log()
    assert "Traceback" not in log and f"VMAC {VMAC} on eth0" in log


@pytest.mark.parametrize("xmit_base", [False, True], ids=["vmac", "xmit_base"])
def test_a_graceful_stop_hands_over_and_removes_the_vmac(
    pair: tuple[Director, Director, Host], xmit_base: bool
) -> None:
    a, b, client = pair
    configure(pair, xmit_base=xmit_base)
    start_pair(pair)
    wait_until(lambda: pings(client), 10, what="the client reaches the VIP on a")
    with closing(open_arp_sniffer(client)) as sniffer:
        assert a.stop() == 0
        assert holders((a, b)) == ["b"]
        assert not has_vmac(a.host), "a's VMAC is left behind"
        # a, still holding the VIP while it hands over, did not answer b's gratuitous ARP
        # from the virtual MAC: the switch sends the VIP's traffic to b (with xmit_base, b's
        # adverts would never correct it).
        assert switch_port_of(a.host.lab, VIRTUAL_MAC) == b.host.switch_port
        wait_until(lambda: pings(client), 10, what="the client reaches the VIP on b")
        assert neighbour(client).get("lladdr") == VIRTUAL_MAC
        assert arp_requests_sent(sniffer) == []
    assert "VMAC vrrp.42 removed" in a.log()
    # eth0 has its own ARP settings back (the lab's defaults).
    for key, value in (("arp_ignore", "0"), ("arp_filter", "0"), ("arp_announce", "0")):
        shown = a.host.run("sysctl", "-n", f"net.ipv4.conf.eth0.{key}").stdout.strip()
        assert shown == value, key
    assert b.host.run("sysctl", "-n", "net.ipv4.conf.eth0.arp_announce").stdout.strip() == "2"


def test_a_crashed_vrrp_child_leaves_no_vip_on_its_vmac(
    pair: tuple[Director, Director, Host],
) -> None:
    a, b, _ = pair
    configure(pair, xmit_base=False)  # a: nopreempt, so b stays master after a's restart
    start_pair(pair)
    pid = a.child_pid(VRRP_CHILD)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        new = a.child_pid(VRRP_CHILD)
        return new is not None and new != pid

    wait_until(restarted, 10, what="a's VRRP child restarted")
    wait_until(lambda: holders((a, b)) == ["b"], 10, what="b alone holds the VIP")
    assert "an earlier lvsha process added it" in a.log()
    assert has_vmac(a.host), "the restarted child adopts its VMAC"
    assert "VMAC vrrp.42 on eth0 (00:00:5e:00:01:2a): adopted" in a.log()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert holders((a, b)) == ["b"]
        time.sleep(0.05)


def test_an_ipv6_failover_keeps_the_ipv6_virtual_mac(lab: Lab) -> None:
    """IPv6 (VRRPv3): the VMAC carries 00:00:5e:00:02:VRID and the base's link-local address,
    adverts come from that address, and the client's entry for the VIP survives a failover."""
    vip6, address = "2001:db8::100/64", "2001:db8::100"
    client = lab.add_host("c", "2001:db8::1/64")
    directors = []
    for name, number, priority in (("a", 11, 150), ("b", 12, 100)):
        host = lab.add_host(name, f"2001:db8::{number}/64")
        text = vrrp_config(vrid=VRID, priority=priority, vip=vip6) + "    use_vmac: true\n"
        directors.append(Director(host, text, vip6))
    a, b = directors
    try:
        a.start()
        b.start()
        # Link-local addresses pass duplicate address detection first (about a second).
        wait_until(lambda: on_vmac(a, address) and not on_vmac(b, address), 20, what="a master")
        assert mac_of(a.host, VMAC) == "00:00:5e:00:02:2a"
        link_local = a.host.ip("-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
        assert link_local.split()[3] in a.host.ip("-6", "-o", "addr", "show", "dev", VMAC)
        client.run("ping", "-6", "-c", "1", "-W", "2", address)
        assert neighbour6(client, address) == "00:00:5e:00:02:2a"
        host_dies(a)
        wait_until(lambda: on_vmac(b, address), 10, what="b takes the IPv6 VIP over")
        client.run("ping", "-6", "-c", "1", "-W", "2", address)
        assert neighbour6(client, address) == "00:00:5e:00:02:2a"
        assert "Traceback" not in b.log()
    finally:
        for director in directors:
            if director.running():
                director.crash()


def neighbour6(client: Host, address: str) -> str | None:
    for entry in json.loads(client.ip("-6", "-j", "neigh", "show", "dev", "eth0")):
        if entry.get("dst") == address and "lladdr" in entry:
            return str(entry["lladdr"])
    return None


def lvsha_cli(director: Director, *args: str) -> subprocess.CompletedProcess[str]:
    run_dir = str(director.workdir / "run")
    return subprocess.run(
        director.host.argv([sys.executable, "-m", "lvsha", *args, "--run-dir", run_dir]),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )


def test_a_reload_moves_the_vip_onto_a_new_vmac_and_back(lab: Lab) -> None:
    """use_vmac turned on by a reload creates the VMAC and puts the VIP there; `lvsha status`
    names it; turned off again, the VIP returns to eth0 and the VMAC is removed."""
    host = lab.add_host("a", "192.0.2.11/24")
    plain = vrrp_config(vrid=VRID, priority=150, vip=VIP)
    a = Director(host, plain, VIP)
    try:
        a.start()
        wait_until(lambda: a.holds(VIP_IP), 10, what="a master on eth0")
        a.config_path.write_text(vmac_config(150))
        done = lvsha_cli(a, "reload")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: on_vmac(a) and not a.holds(VIP_IP), 10, what="the VIP on the VMAC")
        status = lvsha_cli(a, "status")
        assert status.returncode == 0, status.stderr
        assert f"VIPs {VIP} on VMAC {VMAC}" in status.stdout, status.stdout
        a.config_path.write_text(plain)
        done = lvsha_cli(a, "reload")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: a.holds(VIP_IP), 10, what="the VIP back on eth0")
        wait_until(lambda: not has_vmac(host), 10, what="the VMAC removed")
        assert "Traceback" not in a.log()
    finally:
        if a.running():
            a.crash()


def test_a_wrong_link_of_the_vmac_s_name_is_replaced(lab: Lab) -> None:
    """A leftover vrrp.42 that is not the VMAC wanted (bridge mode, another MAC) is deleted
    and made again; a VIP with its own device stays on that device."""
    host = lab.add_host("a", "192.0.2.11/24")
    host.ip(
        "link", "add", VMAC, "link", "eth0", "address", "02:00:00:00:00:42",
        "type", "macvlan", "mode", "bridge",
    )  # fmt: skip
    text = vmac_config(150) + (
        "    virtual_ipaddresses_excluded: [{address: 198.51.100.7/24, device: eth0}]\n"
    )
    a = Director(host, text, VIP)
    try:
        a.start()
        wait_until(lambda: on_vmac(a), 10, what="a master on its VMAC")
        details = json.loads(host.ip("-d", "-j", "link", "show", VMAC))[0]
        assert details["address"] == VIRTUAL_MAC
        assert details["linkinfo"]["info_kind"] == "macvlan"
        assert details["linkinfo"]["info_data"]["mode"] == "private"
        assert "exists but is not the VMAC wanted" in a.log()
        assert f"VMAC {VMAC} on eth0 ({VIRTUAL_MAC}): replaced" in a.log()
        wait_until(lambda: a.holds("198.51.100.7"), 5, what="the excluded VIP on eth0")
        assert not on_vmac(a, "198.51.100.7")
    finally:
        if a.running():
            a.crash()
