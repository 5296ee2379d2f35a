"""The VRRP wire keywords with real `lvsha run` directors in namespaces (issue 14):
dont_track_primary, accept: false, strict with and without skip_check_adv_addr, and
mcast_group4."""

from __future__ import annotations

import socket
import struct
import time
from ipaddress import IPv4Address, IPv6Address

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns import servers
from tests.netns.director import Director, metric, start
from tests.netns.keepalived import Keepalived, KeepalivedInstance
from tests.netns.reload_helpers import ReloadDirector

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VIP_IP = VIP.split("/", maxsplit=1)[0]
OTHER_VIP = "192.0.2.101/24"


def config(
    vrid: int,
    priority: int,
    vip: str = VIP,
    *,
    glob: str = "",
    extra: str = "",
) -> str:
    text = "global:\n  vrrp:\n" + glob if glob else ""
    return text + (
        "vrrp_instances:\n"
        "  VI:\n"
        "    interface: eth0\n"
        f"    virtual_router_id: {vrid}\n"
        f"    priority: {priority}\n"
        "    version: 3\n"
        "    advert_interval: 0.1\n"
        f"    virtual_ipaddresses: ['{vip}']\n"
        "    garp: {delay: 0}\n" + extra
    )


def stays(predicate: object, seconds: float, what: str) -> None:
    """`predicate` holds for the whole of `seconds` (something must NOT happen meanwhile)."""
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.02)


# --- dont_track_primary ---------------------------------------------------------------------


@pytest.mark.parametrize("dont_track", [False, True])
def test_link_down_on_the_instance_interface_faults_unless_dont_track_primary(
    lab: Lab, directors: list[Director], dont_track: bool
) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    extra = "    dont_track_primary: true\n" if dont_track else ""
    a = start(directors, host, config(7, 150, extra=extra))
    wait_until(a.holds_vip, 10, what="a master")
    host.link_up(False)  # carrier gone on a's eth0
    wait_until(lambda: "link eth0 down" in a.log(), 5, what="the link monitor saw it")
    if dont_track:
        # Ten advert intervals and more: the instance must stay master, VIP held.
        stays(lambda: "FAULT" not in a.log() and a.holds_vip(), 1.0, "no fault, VIP held")
    else:
        wait_until(lambda: "MASTER -> FAULT" in a.log(), 5, what="a in FAULT")
        wait_until(lambda: not a.holds_vip(), 5, what="the VIP off")
    host.link_up(True)
    wait_until(lambda: "link eth0 up" in a.log(), 5, what="link back")
    wait_until(a.holds_vip, 10, what="a master again")
    assert ("FAULT" in a.log()) is not dont_track


# --- accept ---------------------------------------------------------------------------------


def nft_tables(host: Host) -> str:
    return host.run("nft", "list", "tables").stdout


def pings(client: Host, address: str) -> bool:
    return client.run("ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def tcp_connects(client: Host, address: str, port: int) -> bool:
    def connect() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            try:
                sock.connect((address, port))
            except OSError:
                return False
            return True

    return client.call(connect)


@pytest.mark.parametrize("accept", [True, False])
def test_accept_false_drops_ping_and_tcp_to_the_master_vip(
    lab: Lab, directors: list[Director], accept: bool
) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    client = lab.add_host("c", "192.0.2.50/24")
    server = servers.start(host, "tcp", "--address", "0.0.0.0", "--port", "8080")
    try:
        extra = "" if accept else "    accept: false\n"
        a = start(directors, host, config(7, 150, extra=extra))
        wait_until(a.holds_vip, 10, what="a master")
        # the director's own address answers either way: only the VIP is filtered
        assert pings(client, "192.0.2.11")
        assert tcp_connects(client, "192.0.2.11", 8080)
        assert pings(client, VIP_IP) is accept
        assert tcp_connects(client, VIP_IP, 8080) is accept
        assert ("lvsha_vrrp" in nft_tables(host)) is not accept
        assert a.stop() == 0
        assert "lvsha_vrrp" not in nft_tables(host)  # removed at stop
        assert "Traceback" not in a.log()
    finally:
        servers.stop(server)


def test_accept_false_clears_a_table_a_crashed_run_left(
    lab: Lab, directors: list[Director]
) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    client = lab.add_host("c", "192.0.2.50/24")
    a = start(directors, host, config(7, 150, extra="    accept: false\n"))
    wait_until(a.holds_vip, 10, what="a master")
    a.crash()
    assert "lvsha_vrrp" in nft_tables(host)  # left behind by the crash
    # The same director (its run directory records the table), restarted with accept on.
    a.config_path.write_text(config(7, 150))
    a.start()
    wait_until(a.holds_vip, 10, what="master again")
    assert "lvsha_vrrp" not in nft_tables(host)
    assert pings(client, VIP_IP)


# --- strict and skip_check_adv_addr ---------------------------------------------------------


@pytest.mark.parametrize("skip", [False, True])
def test_strict_backup_refuses_a_master_with_another_address_list_unless_skip(
    lab: Lab, directors: list[Director], skip: bool
) -> None:
    a_host = lab.add_host("a", "192.0.2.11/24")
    b_host = lab.add_host("b", "192.0.2.12/24")
    # b: a higher-priority master of the same VRID with another VIP set.
    b = start(directors, b_host, config(9, 200, OTHER_VIP), OTHER_VIP)
    wait_until(b.holds_vip, 10, what="b master")
    glob = "    strict: true\n" + ("    skip_check_adv_addr: true\n" if skip else "")
    a = start(directors, a_host, config(9, 100, glob=glob))
    wait_until(lambda: "INITIALIZE -> BACKUP" in a.log(), 10, what="a running")
    if skip:
        stays(lambda: not a.holds_vip(), 1.5, "a stays backup")
        wait_until(
            lambda: metric(a, "lvsha_vrrp_address_list_mismatch_total", instance="VI") >= 5,
            5,
            what="the taken mismatches counted",
        )
        assert "taken, but virtual addresses differ" in a.log()
    else:
        wait_until(a.holds_vip, 5, what="a takes over: it refuses b's adverts")
        wait_until(
            lambda: (
                metric(
                    a, "lvsha_vrrp_rx_errors_total", instance="VI", reason="address_list_refused"
                )
                >= 5
            ),
            5,
            what="the refusals counted",
        )
        assert "strict mode: RFC 3768 7.1; skip_check_adv_addr takes them" in a.log()
    assert b.holds_vip()


# --- mcast_group4 ---------------------------------------------------------------------------

GROUP = "224.0.0.100"


def open_group_listener(group: str) -> socket.socket:
    """A raw VRRP socket on eth0 joined to `group` (run in the listener's namespace)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    ifindex = socket.if_nametoindex("eth0")
    membership = struct.pack("=4s4si", IPv4Address(group).packed, bytes(4), ifindex)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.settimeout(5.0)
    return sock


def destinations(sock: socket.socket, count: int) -> set[str]:
    """The destination addresses of the next `count` VRRP packets heard."""
    found = set()
    for _ in range(count):
        packet = sock.recv(2048)
        found.add(str(IPv4Address(packet[16:20])))
    return found


def test_two_directors_elect_one_master_on_their_own_group(
    lab: Lab, directors: list[Director]
) -> None:
    a_host = lab.add_host("a", "192.0.2.11/24")
    b_host = lab.add_host("b", "192.0.2.12/24")
    listener_host = lab.add_host("l", "192.0.2.60/24")
    listener = listener_host.call(lambda: open_group_listener(GROUP))
    try:
        glob = f"    mcast_group4: {GROUP}\n"
        a = start(directors, a_host, config(11, 150, glob=glob))
        b = start(directors, b_host, config(11, 100, glob=glob))
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="a alone master")
        stays(lambda: a.holds_vip() and not b.holds_vip(), 1.0, "one master")
        assert destinations(listener, 10) == {GROUP}
        a.crash()
        wait_until(b.holds_vip, 5, what="b takes over on the group")
    finally:
        listener.close()


def test_directors_on_different_groups_do_not_hear_each_other(
    lab: Lab, directors: list[Director]
) -> None:
    a_host = lab.add_host("a", "192.0.2.11/24")
    b_host = lab.add_host("b", "192.0.2.12/24")
    a = start(directors, a_host, config(11, 150, glob=f"    mcast_group4: {GROUP}\n"))
    wait_until(a.holds_vip, 10, what="a master")
    b = start(directors, b_host, config(11, 100))  # the default group, 224.0.0.18
    wait_until(b.holds_vip, 10, what="b master too: it hears nobody on 224.0.0.18")


# --- reloads --------------------------------------------------------------------------------


def reloaded(director: ReloadDirector, text: str) -> None:
    director.edit(text)
    result = director.reload()
    assert result.returncode == 0, result.describe()


def test_a_reload_turns_accept_off_and_on_while_master(lab: Lab) -> None:
    host = lab.add_host("a", "192.0.2.11/24")
    client = lab.add_host("c", "192.0.2.50/24")
    a = ReloadDirector(host, config(7, 150), VIP)
    a.start(dry_run=False)
    try:
        wait_until(a.holds_vip, 10, what="a master")
        assert pings(client, VIP_IP)
        reloaded(a, config(7, 150, extra="    accept: false\n"))
        assert not pings(client, VIP_IP)
        assert a.holds_vip()  # still master: accept changes no election
        reloaded(a, config(7, 150))
        assert pings(client, VIP_IP)
        assert "lvsha_vrrp" not in nft_tables(host)
    finally:
        print(f"--- log of a:\n{a.log()}")
        a.crash()


def test_a_reload_moves_a_director_to_another_group(lab: Lab) -> None:
    a = ReloadDirector(lab.add_host("a", "192.0.2.11/24"), config(11, 150), VIP)
    b = ReloadDirector(lab.add_host("b", "192.0.2.12/24"), config(11, 100), VIP)
    a.start(dry_run=False)
    b.start(dry_run=False)
    try:
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="a alone master")
        glob = f"    mcast_group4: {GROUP}\n"
        reloaded(a, config(11, 150, glob=glob))
        assert "multicast group 224.0.0.18 -> 224.0.0.100" in a.log()
        # b no longer hears a on 224.0.0.18, nor a b on the new group: both are master
        # until b moves to the group too. a's instance restarts on the new group (its old one
        # hands the VIP to b on leaving), so wait for its own second takeover first.
        wait_until(
            lambda: a.log().count("BACKUP -> MASTER") >= 2, 5, what="a master on the new group"
        )
        wait_until(lambda: a.holds_vip() and b.holds_vip(), 5, what="two masters")
        stays(lambda: a.holds_vip() and b.holds_vip(), 1.0, "neither hears the other")
        reloaded(b, config(11, 100, glob=glob))
        wait_until(lambda: a.holds_vip() and not b.holds_vip(), 10, what="one master again")
    finally:
        for director in (a, b):
            print(f"--- log of {director.host.name}:\n{director.log()}")
            director.crash()


# --- against keepalived ---------------------------------------------------------------------


def keepalived_text(priority: int, vip: str, *global_lines: str) -> str:
    """keepalived.conf of one VRRPv3 instance, VRID 11, with `global_lines` in global_defs."""
    text = KeepalivedInstance(
        vrid=11, priority=priority, virtual_addresses=(vip,), advert_interval=0.1, version=3
    ).config_text()
    return text.replace("global_defs {\n", "global_defs {\n" + "".join(global_lines), 1)


def keepalived_holds(host: Host, vip: str) -> bool:
    return f" {vip.split('/', maxsplit=1)[0]}/" in host.ip("-o", "addr", "show", "dev", "eth0")


def test_keepalived_and_lvsha_elect_on_vrrp_mcast_group4(
    lab: Lab, directors: list[Director]
) -> None:
    k_host = lab.add_host("k", "192.0.2.11/24")
    l_host = lab.add_host("l", "192.0.2.12/24")
    listener_host = lab.add_host("m", "192.0.2.60/24")
    listener = listener_host.call(lambda: open_group_listener(GROUP))
    keepalived = Keepalived(
        k_host, text=keepalived_text(200, VIP, f"    vrrp_mcast_group4 {GROUP}\n")
    )
    keepalived.start()
    try:
        wait_until(lambda: keepalived.state() == "MASTER", 10, what="keepalived master")
        lvsha = start(directors, l_host, config(11, 100, glob=f"    mcast_group4: {GROUP}\n"))
        wait_until(lambda: "INITIALIZE -> BACKUP" in lvsha.log(), 10, what="lvsha running")
        stays(lambda: not lvsha.holds_vip(), 1.0, "lvsha stays backup: it hears keepalived")
        assert destinations(listener, 10) == {GROUP}
        keepalived.crash()
        if keepalived_holds(k_host, VIP):
            k_host.ip("addr", "del", VIP, "dev", "eth0")
        wait_until(lvsha.holds_vip, 5, what="lvsha takes over")
    finally:
        listener.close()
        keepalived.stop()
        print(f"--- keepalived log:\n{keepalived.log_text()}")


@pytest.mark.parametrize("skip", [False, True])
def test_keepalived_2_2_refuses_another_address_list_even_without_strict(
    lab: Lab, directors: list[Director], skip: bool
) -> None:
    """What the importer maps from: keepalived 2.2 (up to 2.3.2) drops an advert whose address
    list differs in every mode, and vrrp_skip_check_adv_addr only skips the check for the
    master it already accepted, so a backup that never accepted one takes over all the same."""
    k_host = lab.add_host("k", "192.0.2.11/24")
    l_host = lab.add_host("l", "192.0.2.12/24")
    lvsha = start(directors, l_host, config(11, 200, OTHER_VIP), OTHER_VIP)
    wait_until(lvsha.holds_vip, 10, what="lvsha master")
    extra = ("    vrrp_skip_check_adv_addr\n",) if skip else ()
    keepalived = Keepalived(k_host, text=keepalived_text(100, VIP, *extra))
    keepalived.start()
    try:
        wait_until(lambda: keepalived.state() == "MASTER", 10, what="keepalived takes over")
        assert keepalived.find_line(
            r"ip address associated with VRID 11 not present in MASTER advert: 192\.0\.2\.100"
        )
    finally:
        keepalived.stop()
        print(f"--- keepalived log:\n{keepalived.log_text()}")


# --- mcast_group6 ---------------------------------------------------------------------------

VIP6 = "2001:db8::100/64"
GROUP6 = "ff02::1:12"


def ipv6_destinations(group: str, count: int) -> set[str]:
    """The destinations of the next `count` VRRP packets on eth0, heard by a raw socket joined
    to `group` (run in the listener's namespace)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        request = IPv6Address(group).packed + struct.pack("=i", socket.if_nametoindex("eth0"))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)
        sock.settimeout(5.0)
        found = set()
        for _ in range(count):
            _, ancillary, _, _ = sock.recvmsg(2048, 256)
            for level, kind, data in ancillary:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    found.add(str(IPv6Address(data[:16])))
        return found


def test_two_ipv6_directors_elect_on_mcast_group6(lab: Lab, directors: list[Director]) -> None:
    glob = f"    mcast_group6: '{GROUP6}'\n"
    listener = lab.add_host("m", "2001:db8::60/64")
    a = start(
        directors, lab.add_host("a", "2001:db8::11/64"), config(46, 150, VIP6, glob=glob), VIP6
    )
    wait_until(a.holds_vip, 20, what="a master")  # link-local addresses pass DAD first
    b = start(
        directors, lab.add_host("b", "2001:db8::12/64"), config(46, 100, VIP6, glob=glob), VIP6
    )
    wait_until(lambda: "INITIALIZE -> BACKUP" in b.log(), 20, what="b running")
    stays(lambda: a.holds_vip() and not b.holds_vip(), 1.0, "b hears a on the group")
    assert listener.call(lambda: ipv6_destinations(GROUP6, 10)) == {GROUP6}
    a.crash()
    wait_until(b.holds_vip, 5, what="b takes over")
