"""pyroute2's IPVS API against the real kernel table, read back independently with ipvsadm.

These pin down the library behaviour the IPVS netlink port relies on, including its
quirks: "update" deletes, "set" replaces a whole entry, IPv6 needs an explicit netmask.
"""

from __future__ import annotations

import errno
from socket import AF_INET, AF_INET6, IPPROTO_TCP
from typing import Any

import pytest
from pyroute2 import IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

from tests.kernel.ipvsadm import ipvsadm, ipvsadm_rules

pytestmark = pytest.mark.kernel

MASQ, TUNNEL, DROUTE = 0, 2, 3  # IP_VS_CONN_F_* forwarding methods
PERSISTENT, HASHED = 0x1, 0x2  # IP_VS_SVC_F_*

VIP = "192.0.2.1"
WEB = {"addr": VIP, "port": 80, "protocol": IPPROTO_TCP}


def web_service(**fields: Any) -> Any:
    return IPVSService(**WEB, **fields)


def service_attrs(message: Any) -> dict[str, Any]:
    nested = message.get("IPVS_CMD_ATTR_SERVICE")
    return {name: value for name, value in nested["attrs"] if "STATS" not in name}


def dest_attrs(message: Any) -> dict[str, Any]:
    nested = message.get("IPVS_CMD_ATTR_DEST")
    return {name: value for name, value in nested["attrs"] if "STATS" not in name}


async def dests_by_addr(ipvs: Any, service: Any) -> dict[tuple[str, int], dict[str, Any]]:
    # The kernel's dump order is not the add order; key by (address, port).
    found = {}
    for message in await ipvs.dest("dump", service=service):
        attrs = dest_attrs(message)
        found[(attrs["IPVS_DEST_ATTR_ADDR"], attrs["IPVS_DEST_ATTR_PORT"])] = attrs
    return found


async def test_tcp_service_with_nat_and_dr_destinations(ipvs: Any) -> None:
    await ipvs.service("add", service=web_service(sched_name="rr"))
    await ipvs.dest(
        "add",
        service=web_service(),
        dest=IPVSDest(addr="198.51.100.10", port=8080, fwd_method=MASQ, weight=5),
    )
    await ipvs.dest("add", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80))
    assert ipvsadm_rules() == [
        "-A -t 192.0.2.1:80 -s rr",
        "-a -t 192.0.2.1:80 -r 198.51.100.10:8080 -m -w 5",
        "-a -t 192.0.2.1:80 -r 198.51.100.11:80 -g -w 1",
    ]
    assert "TCP  192.0.2.1:80 rr" in ipvsadm("-L", "-n")

    [service] = [service_attrs(m) for m in await ipvs.service("dump")]
    assert service["IPVS_SVC_ATTR_AF"] == AF_INET
    assert service["IPVS_SVC_ATTR_ADDR"] == VIP
    assert service["IPVS_SVC_ATTR_PORT"] == 80
    assert service["IPVS_SVC_ATTR_SCHED_NAME"] == "rr"
    assert service["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.255"
    # The kernel reports its internal "hashed" bit alongside the flags that were set.
    assert service["IPVS_SVC_ATTR_FLAGS"]["flags"] == HASHED
    dests = await dests_by_addr(ipvs, web_service())
    assert {key: attrs["IPVS_DEST_ATTR_FWD_METHOD"] for key, attrs in dests.items()} == {
        ("198.51.100.10", 8080): MASQ,
        ("198.51.100.11", 80): DROUTE,
    }
    assert dests[("198.51.100.10", 8080)]["IPVS_DEST_ATTR_WEIGHT"] == 5

    await ipvs.dest(
        "set", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80, weight=7)
    )
    assert ipvsadm_rules()[2] == "-a -t 192.0.2.1:80 -r 198.51.100.11:80 -g -w 7"
    assert ipvsadm_rules()[1] == "-a -t 192.0.2.1:80 -r 198.51.100.10:8080 -m -w 5"

    await ipvs.dest("del", service=web_service(), dest=IPVSDest(addr="198.51.100.10", port=8080))
    assert ipvsadm_rules() == [
        "-A -t 192.0.2.1:80 -s rr",
        "-a -t 192.0.2.1:80 -r 198.51.100.11:80 -g -w 7",
    ]

    await ipvs.service("del", service=web_service())
    assert ipvsadm_rules() == []
    assert await ipvs.service("dump") == []


async def test_set_replaces_the_whole_destination(ipvs: Any) -> None:
    await ipvs.service("add", service=web_service(sched_name="wrr"))
    nat = {"addr": "198.51.100.10", "port": 80, "fwd_method": MASQ}
    await ipvs.dest("add", service=web_service(), dest=IPVSDest(**nat, u_thresh=50, l_thresh=5))
    # IPVSDest fills in its defaults, so a weight-only edit also resets forwarding to DR
    # and the thresholds to 0: always send the complete desired destination.
    await ipvs.dest(
        "set", service=web_service(), dest=IPVSDest(addr="198.51.100.10", port=80, weight=8)
    )
    [dest] = (await dests_by_addr(ipvs, web_service())).values()
    assert (dest["IPVS_DEST_ATTR_FWD_METHOD"], dest["IPVS_DEST_ATTR_U_THRESH"]) == (DROUTE, 0)
    await ipvs.dest(
        "set",
        service=web_service(),
        dest=IPVSDest(**nat, weight=8, u_thresh=100, l_thresh=10),
    )
    assert ipvsadm_rules()[1] == "-a -t 192.0.2.1:80 -r 198.51.100.10:80 -m -w 8"
    thresholds = [line.split() for line in ipvsadm("-L", "-n", "--thresholds").splitlines()]
    assert ["->", "198.51.100.10:80", "100", "10", "0", "0"] in thresholds


async def test_update_command_deletes_in_pyroute2_0_9_7(ipvs: Any) -> None:
    await ipvs.service("add", service=web_service(sched_name="rr"))
    await ipvs.dest("add", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80))
    await ipvs.dest(
        "update", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80, weight=3)
    )
    assert ipvsadm_rules() == ["-A -t 192.0.2.1:80 -s rr"]
    await ipvs.service("update", service=web_service(sched_name="wlc"))
    assert ipvsadm_rules() == []


async def test_service_edit_in_place_keeps_destinations(ipvs: Any) -> None:
    await ipvs.service("add", service=web_service(sched_name="rr"))
    await ipvs.dest("add", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80))
    persistent = {"flags": PERSISTENT, "mask": 0xFFFF}
    await ipvs.service(
        "set",
        service=web_service(
            sched_name="wlc", flags=persistent, timeout=300, netmask="255.255.255.0"
        ),
    )
    assert ipvsadm_rules() == [
        "-A -t 192.0.2.1:80 -s wlc -p 300 -M 255.255.255.0",
        "-a -t 192.0.2.1:80 -r 198.51.100.11:80 -g -w 1",
    ]
    [service] = [service_attrs(m) for m in await ipvs.service("dump")]
    assert service["IPVS_SVC_ATTR_FLAGS"]["flags"] == PERSISTENT | HASHED
    assert service["IPVS_SVC_ATTR_TIMEOUT"] == 300
    await ipvs.service("set", service=web_service(sched_name="wlc"))
    assert ipvsadm_rules()[0] == "-A -t 192.0.2.1:80 -s wlc"


async def test_ipv6_service_needs_prefix_length_as_netmask(ipvs: Any) -> None:
    def v6_service(**fields: Any) -> Any:
        return IPVSService(addr="2001:db8::1", port=443, protocol=IPPROTO_TCP, **fields)

    with pytest.raises(NetlinkError) as no_netmask:
        await ipvs.service("add", service=v6_service(sched_name="rr"))
    assert no_netmask.value.code == errno.EINVAL
    # The kernel reads an IPv6 netmask as a prefix length in a 32-bit field; pyroute2
    # encodes the field as an IPv4 address, so /128 is written "128.0.0.0".
    await ipvs.service("add", service=v6_service(sched_name="rr", netmask="128.0.0.0"))
    await ipvs.dest(
        "add",
        service=v6_service(),
        dest=IPVSDest(addr="2001:db8::10", port=8443, fwd_method=MASQ, weight=2),
    )
    await ipvs.dest(
        "add",
        service=v6_service(),
        dest=IPVSDest(addr="198.51.100.30", port=443, fwd_method=TUNNEL),
    )
    assert ipvsadm_rules() == [
        "-A -t [2001:db8::1]:443 -s rr",
        "-a -t [2001:db8::1]:443 -r 198.51.100.30:443 -i -w 1 --tun-type ipip",
        "-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m -w 2",
    ]
    [service] = [service_attrs(m) for m in await ipvs.service("dump")]
    assert (service["IPVS_SVC_ATTR_AF"], service["IPVS_SVC_ATTR_NETMASK"]) == (
        AF_INET6,
        "128.0.0.0",
    )
    dests = await dests_by_addr(ipvs, v6_service())
    assert dests[("2001:db8::10", 8443)]["IPVS_DEST_ATTR_ADDR_FAMILY"] == AF_INET6
    assert dests[("198.51.100.30", 443)]["IPVS_DEST_ATTR_ADDR_FAMILY"] == AF_INET


async def test_mixed_family_destination_must_tunnel(ipvs: Any) -> None:
    await ipvs.service("add", service=web_service(sched_name="rr"))
    with pytest.raises(NetlinkError) as nat:
        await ipvs.dest(
            "add",
            service=web_service(),
            dest=IPVSDest(addr="2001:db8::10", port=80, fwd_method=MASQ),
        )
    assert nat.value.code == errno.EINVAL
    assert ipvsadm_rules() == ["-A -t 192.0.2.1:80 -s rr"]


async def test_fwmark_service(ipvs: Any) -> None:
    def marked(**fields: Any) -> Any:
        return IPVSService(fwmark=7, af=AF_INET, **fields)

    # Without an address pyroute2 adds neither family nor netmask, and the kernel
    # requires both for a new service.
    with pytest.raises(NetlinkError) as bare:
        await ipvs.service("add", service=IPVSService(fwmark=7, sched_name="rr"))
    assert bare.value.code == errno.EINVAL
    await ipvs.service("add", service=marked(sched_name="rr", netmask="255.255.255.255"))
    await ipvs.dest("add", service=marked(), dest=IPVSDest(addr="198.51.100.40", port=0))
    await ipvs.dest(
        "add", service=marked(), dest=IPVSDest(addr="198.51.100.41", port=80, fwd_method=MASQ)
    )
    assert ipvsadm_rules() == [
        "-A -f 7 -s rr",
        "-a -f 7 -r 198.51.100.40:0 -g -w 1",
        "-a -f 7 -r 198.51.100.41:80 -m -w 1",
    ]
    [message] = await ipvs.service("dump")
    service = service_attrs(message)
    assert service["IPVS_SVC_ATTR_FWMARK"] == 7
    assert "IPVS_SVC_ATTR_ADDR" not in service
    # A dumped fwmark service works as the key for its destinations.
    assert len(await ipvs.dest("dump", service=IPVSService.from_message(message))) == 2
    await ipvs.service("del", service=marked())
    assert ipvsadm_rules() == []


async def test_errors_carry_the_kernel_errno(ipvs: Any) -> None:
    await ipvs.service("add", service=web_service(sched_name="rr"))
    await ipvs.dest("add", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80))
    missing_service = IPVSService(addr="192.0.2.99", port=80, protocol=IPPROTO_TCP)
    cases = [
        (errno.EEXIST, ipvs.service("add", service=web_service(sched_name="rr"))),
        (
            errno.EEXIST,
            ipvs.dest("add", service=web_service(), dest=IPVSDest(addr="198.51.100.11", port=80)),
        ),
        (errno.ESRCH, ipvs.service("del", service=missing_service)),
        (errno.ESRCH, ipvs.service("get", service=missing_service)),
        (
            errno.ESRCH,
            ipvs.dest("add", service=missing_service, dest=IPVSDest(addr="198.51.100.11", port=80)),
        ),
        (
            errno.ENOENT,
            ipvs.dest("del", service=web_service(), dest=IPVSDest(addr="198.51.100.12", port=80)),
        ),
        (
            errno.ENOENT,
            ipvs.dest("set", service=web_service(), dest=IPVSDest(addr="198.51.100.12", port=80)),
        ),
        (errno.ENOENT, ipvs.service("set", service=web_service(sched_name="no-such-sched"))),
    ]
    codes = []
    for _, request in cases:
        try:
            await request
        except NetlinkError as error:
            codes.append(error.code)
        else:
            codes.append(0)
    assert codes == [expected for expected, _ in cases]
    assert ipvsadm_rules() == [
        "-A -t 192.0.2.1:80 -s rr",
        "-a -t 192.0.2.1:80 -r 198.51.100.11:80 -g -w 1",
    ]
