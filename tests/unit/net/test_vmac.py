"""The VMAC edge's pure parts: the virtual MAC, the rtnetlink requests, adopting or replacing
an existing link, and the kernel settings it writes."""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path

import pytest

from lvsha.net.nlmsg import NLMSGHDR
from lvsha.net.rtnl_dump import RTM_DELLINK, RTM_NEWLINK
from lvsha.net.vmac import (
    MACVLAN_MODE_PRIVATE,
    Family,
    FoundLink,
    MemoryVmacs,
    SysctlWriter,
    VmacError,
    VmacSpec,
    create_request,
    decode_found,
    delete_request,
    matches,
    up_request,
    virtual_mac,
)

SPEC = VmacSpec("vrrp.42", "eth0", 42, "ipv4")


def test_the_virtual_mac_is_rfc_5798_s() -> None:
    assert virtual_mac(1, "ipv4") == "00:00:5e:00:01:01"
    assert virtual_mac(255, "ipv4") == "00:00:5e:00:01:ff"
    assert virtual_mac(42, "ipv6") == "00:00:5e:00:02:2a"
    assert SPEC.mac == "00:00:5e:00:01:2a"
    for vrid in (0, 256):
        with pytest.raises(ValueError, match="not 1-255"):
            virtual_mac(vrid, "ipv4")


def test_the_create_request_says_private_macvlan_on_the_base_with_the_virtual_mac() -> None:
    message = create_request(SPEC, 7, sequence=9)
    length, kind, flags, sequence, _ = NLMSGHDR.unpack_from(message)
    assert (length, kind, sequence) == (len(message), RTM_NEWLINK, 9)
    assert flags == 0x1 | 0x4 | 0x400 | 0x200  # request, ack, create, excl
    found = decode_found(memoryview(message)[NLMSGHDR.size :])
    assert found == FoundLink(0, "macvlan", 7, MACVLAN_MODE_PRIVATE, "00:00:5e:00:01:2a")


def test_up_and_delete_requests_name_the_link_by_index() -> None:
    up = memoryview(up_request(12, 1))[NLMSGHDR.size :]
    assert bytes(up) == bytes([0, 0, 0, 0]) + (12).to_bytes(4, "little") + bytes(
        [1, 0, 0, 0, 1, 0, 0, 0]
    )
    delete = delete_request(12, 2)
    assert NLMSGHDR.unpack_from(delete)[1] == RTM_DELLINK
    assert delete[NLMSGHDR.size + 4 : NLMSGHDR.size + 8] == (12).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("found", "adopted"),
    [
        (FoundLink(5, "macvlan", 2, MACVLAN_MODE_PRIVATE, "00:00:5e:00:01:2a"), True),
        (FoundLink(5, "macvlan", 2, MACVLAN_MODE_PRIVATE, "00:00:5E:00:01:2A"), True),
        (FoundLink(5, "macvlan", 3, MACVLAN_MODE_PRIVATE, "00:00:5e:00:01:2a"), False),
        (FoundLink(5, "macvlan", 2, 4, "00:00:5e:00:01:2a"), False),  # bridge mode
        (FoundLink(5, "macvlan", 2, MACVLAN_MODE_PRIVATE, "00:00:5e:00:01:2b"), False),
        (FoundLink(5, "veth", 2, None, "00:00:5e:00:01:2a"), False),
        (FoundLink(5, None, None, None, "02:00:00:00:00:01"), False),
    ],
)
def test_only_the_right_vmac_is_adopted(found: FoundLink, adopted: bool) -> None:
    assert matches(found, SPEC, base_index=2) is adopted


def _conf(root: Path, family: str, interface: str, key: str, value: str = "0") -> Path:
    path = root / family / "conf" / interface / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return path


@pytest.mark.parametrize(
    ("family", "ipv6_vips", "ipv6_off"),
    [("ipv4", False, True), ("ipv4", True, False), ("ipv6", False, False)],
)
def test_the_settings_of_the_vmac_and_its_base(
    tmp_path: Path, family: Family, ipv6_vips: bool, ipv6_off: bool
) -> None:
    spec = VmacSpec(
        "vrrp.42",
        "eth0",
        42,
        family,
        IPv6Address("fe80::1"),
        ipv6=ipv6_vips,
    )
    wanted = {
        ("ipv4", "eth0", "arp_ignore"): "1",
        ("ipv4", "eth0", "arp_filter"): "1",
        ("ipv4", "eth0", "arp_announce"): "2",
        ("ipv4", "vrrp.42", "arp_ignore"): "1",
        ("ipv4", "vrrp.42", "accept_local"): "1",
        ("ipv4", "vrrp.42", "rp_filter"): "0",
        ("ipv4", "vrrp.42", "drop_gratuitous_arp"): "1",
        ("ipv6", "vrrp.42", "addr_gen_mode"): "1",
        # IPv6 off unless it is needed there (an IPv6 instance, IPv6 VIPs on the VMAC).
        ("ipv6", "vrrp.42", "disable_ipv6"): "1" if ipv6_off else "0",
    }
    paths = {
        key: _conf(tmp_path, *key, value="1" if key[2] == "rp_filter" else "0") for key in wanted
    }
    reports = tmp_path / "ipv4" / "igmp_link_local_mcast_reports"
    reports.write_text("1\n")
    SysctlWriter(tmp_path).prepare(spec)
    assert {key: path.read_text().strip() for key, path in paths.items()} == wanted
    assert reports.read_text().strip() == "0"


def test_a_setting_that_cannot_be_written_names_itself(tmp_path: Path) -> None:
    with pytest.raises(VmacError, match=r"net\.ipv4\.conf\.eth0\.arp_ignore=1"):
        SysctlWriter(tmp_path).prepare(SPEC)


async def test_memory_vmacs_create_adopt_replace_and_remove() -> None:
    vmacs = MemoryVmacs()
    assert await vmacs.ensure(SPEC) == "created"
    assert await vmacs.ensure(SPEC) == "adopted"
    assert await vmacs.ensure(VmacSpec("vrrp.42", "eth0", 42, "ipv6")) == "replaced"
    assert await vmacs.remove("vrrp.42")
    assert not await vmacs.remove("vrrp.42")


def test_the_base_gets_its_settings_back_when_its_last_vmac_goes(tmp_path: Path) -> None:
    base = {key: _conf(tmp_path, "ipv4", "eth0", key, "0") for key in ("arp_ignore", "arp_filter")}
    base["arp_announce"] = _conf(tmp_path, "ipv4", "eth0", "arp_announce", "2")  # already so
    for name in ("vrrp.1", "vrrp.2"):
        for key in ("arp_ignore", "accept_local", "rp_filter", "drop_gratuitous_arp"):
            _conf(tmp_path, "ipv4", name, key)
        for key in ("addr_gen_mode", "disable_ipv6"):
            _conf(tmp_path, "ipv6", name, key)
    reports = tmp_path / "ipv4" / "igmp_link_local_mcast_reports"
    reports.write_text("1\n")
    writer = SysctlWriter(tmp_path)
    writer.prepare(VmacSpec("vrrp.1", "eth0", 1, "ipv4"))
    writer.prepare(VmacSpec("vrrp.2", "eth0", 2, "ipv4"))
    assert {k: p.read_text().strip() for k, p in base.items()} == dict.fromkeys(base, "1") | {
        "arp_announce": "2"
    }
    writer.release("vrrp.1")
    assert base["arp_ignore"].read_text().strip() == "1", "vrrp.2 still sits on eth0"
    assert reports.read_text().strip() == "0"
    writer.release("vrrp.2")
    assert reports.read_text().strip() == "1"
    assert {k: p.read_text().strip() for k, p in base.items()} == {
        "arp_ignore": "0",
        "arp_filter": "0",
        "arp_announce": "2",
    }
