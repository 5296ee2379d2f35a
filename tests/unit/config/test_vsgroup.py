"""virtual_server_groups: member forms, range expansion, and every mistake check-config names."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from lvsha.config import ConfigError, load_text
from lvsha.config.source import format_path
from lvsha.config.vsgroup import MAX_RANGE, GroupMember, VirtualServerGroup, address_range


def group(*members: object) -> VirtualServerGroup:
    return VirtualServerGroup.model_validate({"members": list(members)})


@pytest.mark.parametrize(
    ("written", "addresses", "port"),
    [
        ("192.0.2.10:80", ["192.0.2.10"], 80),
        ("192.0.2.20-21:80", ["192.0.2.20", "192.0.2.21"], 80),
        ({"address": "192.0.2.20-21", "port": 80}, ["192.0.2.20", "192.0.2.21"], 80),
        (
            "192.0.2.254-192.0.3.1:443",
            ["192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1"],
            443,
        ),
        ("192.0.2.8/30:80", ["192.0.2.8", "192.0.2.9", "192.0.2.10", "192.0.2.11"], 80),
        ("[2001:db8::e-10]:443", ["2001:db8::e", "2001:db8::f", "2001:db8::10"], 443),
        ("2001:db8::1-2", ["2001:db8::1", "2001:db8::2"], None),
        ("192.0.2.10", ["192.0.2.10"], None),
    ],
)
def test_address_members_expand(written: object, addresses: list[str], port: int | None) -> None:
    (member,) = group(written).members
    assert member.addresses() == [ip_address(a) for a in addresses]
    assert member.port == port
    assert member.fwmark is None


@pytest.mark.parametrize(
    ("written", "fwmark", "family"),
    [("fwmark 7", 7, None), ("fwmark 7 ipv6", 7, "ipv6"), ({"fwmark": 9}, 9, None)],
)
def test_fwmark_members(written: object, fwmark: int, family: str | None) -> None:
    (member,) = group(written).members
    assert (member.fwmark, member.family, member.addresses()) == (fwmark, family, [])


def test_a_range_may_hold_the_limit_and_no_more() -> None:
    first, last = address_range("10.0.0.0-10.0.0.255")
    assert int(last) - int(first) + 1 == MAX_RANGE
    with pytest.raises(ValueError, match=r"is 257 addresses: a member may have at most 256"):
        address_range("10.0.0.0-10.0.1.0")
    with pytest.raises(ValueError, match="is 257 addresses"):
        address_range("2001:db8::1-101")
    with pytest.raises(ValueError, match="512 addresses"):
        address_range("10.0.0.0/23")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.0.2.20-19", "runs backwards or ends where it starts"),
        ("192.0.2.20-20", "runs backwards or ends where it starts"),
        ("192.0.2.20-192.0.2.1", "runs backwards"),
        ("192.0.2.20-300", "above 255"),
        ("192.0.2.20-x", r"is not a number \(the last octet\)"),
        ("2001:db8::20-fffff", "above ffff"),
        ("192.0.2.1/24", "host bits"),
        ("192.0.2.300", "is not an IPv4 or IPv6 address"),
    ],
)
def test_bad_ranges_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        address_range(text)


def test_a_member_is_one_kind() -> None:
    with pytest.raises(ValueError, match="set one of them"):
        GroupMember.model_validate({"port": 80})
    with pytest.raises(ValueError, match="fwmark member has no port"):
        GroupMember.model_validate({"fwmark": 1, "port": 80})
    with pytest.raises(ValueError, match="family is for fwmark members"):
        GroupMember.model_validate({"address": "192.0.2.1", "family": "ipv4"})


GOOD = """\
virtual_server_groups:
  web:
    members:
      - 192.0.2.10:80
      - 192.0.2.20-21:80
      - fwmark 7
virtual_servers:
  - group: web
    protocol: TCP
    real_servers:
      - {address: 10.0.0.1, port: 80}
"""


def test_a_group_loads_and_takes_its_family_from_its_members() -> None:
    config = load_text(GOOD)
    (vs,) = config.virtual_servers
    assert (vs.group, vs.family, vs.address, vs.port, vs.fwmark) == (
        "web",
        "ipv4",
        None,
        None,
        None,
    )
    six = load_text(
        GOOD.replace("192.0.2.10:80", "'[2001:db8::10]:80'")
        .replace("192.0.2.20-21:80", "'[2001:db8::20-21]:80'")
        .replace("10.0.0.1,", "'2001:db8:1::1',")
    )
    assert six.virtual_servers[0].family == "ipv6"


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as raised:
        load_text(text, "test.yaml")
    return [(format_path(p.path), p.message) for p in raised.value.problems]


def only_problem(text: str) -> tuple[str, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        (
            "    protocol: TCP\n",
            "    protocol: TCP\n    address: 192.0.2.1\n",
            "virtual_servers[0].address",
            "a virtual server with a group has no address of its own",
        ),
        (
            "  - group: web\n",
            "  - group: webs\n",
            "virtual_servers[0].group",
            "no virtual_server_groups entry named 'webs': did you mean 'web'?",
        ),
        (
            "    protocol: TCP\n",
            "",
            "virtual_servers[0]",
            "missing required key 'protocol' (TCP, UDP or SCTP) for the address members",
        ),
        (
            "      - 192.0.2.10:80\n",
            "      - 192.0.2.10\n",
            "virtual_server_groups.web.members[0]",
            "192.0.2.10 has no port (all ports): IPVS accepts that only for persistent",
        ),
        (
            "      - 192.0.2.10:80\n",
            "      - 192.0.2.10:80\n      - 192.0.2.9-10:80\n",
            "virtual_server_groups.web.members[1]",
            "192.0.2.10 port 80 is already the service of virtual_server_groups.web.members[0]",
        ),
        (
            "      - 192.0.2.20-21:80\n",
            "      - '[2001:db8::20-21]:80'\n",
            "virtual_server_groups.web.members[1].address",
            "2001:db8::20-21 is ipv6, but virtual_servers[0] is ipv4 like its real servers",
        ),
        (
            "      - fwmark 7\n",
            "      - fwmark 7 ipv6\n",
            "virtual_server_groups.web.members[2].family",
            "fwmark 7 is ipv6, but virtual_servers[0] is ipv4",
        ),
        (
            "      - {address: 10.0.0.1, port: 80}\n",
            "      - {address: 10.0.0.1, port: 8080, forwarding: DR}\n",
            "virtual_servers[0].real_servers[0].port",
            "group 'web' has members on port 80 (only NAT can map ports)",
        ),
        (
            "      - {address: 10.0.0.1, port: 80}\n",
            "      - {address: '2001:db8::1', port: 80}\n",
            "virtual_servers[0].real_servers[0].address",
            "2001:db8::1 is not ipv4 like the service",
        ),
    ],
)
def test_mistakes_are_named(old: str, new: str, path: str, message: str) -> None:
    assert old in GOOD
    found_path, found = only_problem(GOOD.replace(old, new))
    assert found_path == path
    assert message in found


def test_a_group_serves_one_virtual_server() -> None:
    text = GOOD + "  - group: web\n    protocol: UDP\n"
    assert only_problem(text) == (
        "virtual_servers[1].group",
        "group 'web' is already virtual_servers[0]'s: a group's services belong to one virtual "
        "server; define another group",
    )


def test_a_member_may_not_be_another_virtual_servers_service() -> None:
    plain = "  - {address: 192.0.2.21, port: 80, protocol: TCP}\n"
    path, message = only_problem(GOOD + plain)
    assert path == "virtual_servers[1]"
    assert "the same service as virtual_server_groups.web.members[1]" in message
    # The other way round: the plain virtual server first, the group's member second.
    text = GOOD.replace("virtual_servers:\n", "virtual_servers:\n" + plain)
    path, message = only_problem(text)
    assert path == "virtual_server_groups.web.members[1]"
    assert "192.0.2.21 port 80 is already the service of virtual_servers[0]" in message
    # The same address on another protocol is another service.
    load_text(GOOD + plain.replace("TCP", "UDP"))


def test_an_unused_group_is_refused() -> None:
    text = GOOD.replace(
        "virtual_servers:", "  spare:\n    members: [192.0.2.99:80]\nvirtual_servers:"
    )
    assert only_problem(text) == (
        "virtual_server_groups.spare",
        "group 'spare' is used by no virtual server: add `group: spare` to one, or remove the "
        "group",
    )


def test_an_empty_group_is_refused() -> None:
    text = GOOD.replace("      - 192.0.2.10:80\n      - 192.0.2.20-21:80\n      - fwmark 7\n", "")
    assert only_problem(text.replace("    members:\n", "    members: []\n")) == (
        "virtual_server_groups.web.members",
        "list should have at least 1 item after validation, not 0",
    )


def test_a_port_less_member_is_accepted_with_persistence() -> None:
    text = GOOD.replace("      - 192.0.2.10:80\n", "      - 192.0.2.10\n").replace(
        "    protocol: TCP\n", "    protocol: TCP\n    persistence_timeout: 300\n"
    )
    assert load_text(text).virtual_server_groups["web"].members[0].port is None
