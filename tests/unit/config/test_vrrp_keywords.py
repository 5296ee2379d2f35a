"""The VRRP wire keywords of keepalived files: strict, skip_check_adv_addr, the multicast
groups, default_interface, dont_track_primary and accept."""

from __future__ import annotations

import pytest

from lvsha.config import ConfigError, LvshaConfig, load_text
from lvsha.config.source import format_path


def instance(extra: str = "", *, interface: str | None = "eth0", vip: str = "192.0.2.10") -> str:
    lines = ["vrrp_instances:", "  VI_1:"]
    if interface is not None:
        lines.append(f"    interface: {interface}")
    lines += ["    virtual_router_id: 5", f"    virtual_ipaddresses: ['{vip}']"]
    return "\n".join(lines) + "\n" + extra


def problems(text: str) -> list[tuple[str, str, int]]:
    """(path, message, line) of every problem of `text`; fails if it loads."""
    with pytest.raises(ConfigError) as caught:
        load_text(text, "test.yaml")
    return [(format_path(p.path), p.message, p.location.line) for p in caught.value.problems]


def test_defaults_change_nothing_on_the_wire() -> None:
    config = load_text(instance())
    vrrp = config.global_.vrrp
    assert (vrrp.strict, vrrp.skip_check_adv_addr) == (False, False)
    assert (vrrp.mcast_group4, vrrp.mcast_group6) == ("224.0.0.18", "ff02::12")
    assert vrrp.default_interface is None
    inst = config.vrrp_instances["VI_1"]
    assert (inst.dont_track_primary, inst.accept) == (False, True)
    assert inst.skip_check_adv_addr is False  # normalized from the global default


V4 = " is not an IPv4 multicast address (e.g. 224.0.0.18)"
V6 = " is not an IPv6 multicast address (e.g. ff02::12)"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mcast_group4", "224.0.0.100", None),
        ("mcast_group4", "239.1.2.3", None),
        (
            "mcast_group4",
            "192.0.2.1",
            "'192.0.2.1'" + V4,
        ),
        (
            "mcast_group4",
            "ff02::12",
            "'ff02::12'" + V4,
        ),
        ("mcast_group4", "nonsense", "'nonsense' is not an IPv4 address (e.g. 224.0.0.18)"),
        ("mcast_group6", "ff02::1:12", None),
        (
            "mcast_group6",
            "2001:db8::1",
            "'2001:db8::1'" + V6,
        ),
        (
            "mcast_group6",
            "224.0.0.18",
            "'224.0.0.18'" + V6,
        ),
    ],
)
def test_multicast_groups_are_checked(key: str, value: str, message: str | None) -> None:
    text = f"global:\n  vrrp:\n    {key}: '{value}'\n" + instance()
    if message is None:
        assert getattr(load_text(text).global_.vrrp, key) == value
        return
    assert problems(text) == [(f"global.vrrp.{key}", message, 3)]


def test_an_instance_without_interface_takes_the_default_interface() -> None:
    text = "global:\n  vrrp:\n    default_interface: bond0\n" + instance(
        "  VI_2:\n    interface: eth1\n    virtual_router_id: 6\n"
        "    virtual_ipaddresses: [192.0.2.11]\n",
        interface=None,
    )
    config = load_text(text)
    assert config.vrrp_instances["VI_1"].interface == "bond0"
    assert config.vrrp_instances["VI_2"].interface == "eth1"  # its own wins


def test_without_interface_or_default_the_instance_is_named() -> None:
    assert problems(instance(interface=None)) == [
        (
            "vrrp_instances.VI_1.interface",
            "missing required key 'interface': instance 'VI_1' names none; set it, or "
            "global.vrrp.default_interface",
            3,
        )
    ]


def test_an_invalid_default_interface_is_reported_once_where_it_stands() -> None:
    text = "global:\n  vrrp:\n    default_interface: 'a/b'\n" + instance(interface=None)
    found = problems(text)
    assert found[0][:2] == (
        "global.vrrp.default_interface",
        "'a/b' is not a valid interface name: 1-15 characters, no '/', ':' or spaces",
    )
    # the instance still says it has none, rather than repeating the bad name
    assert found[1][0] == "vrrp_instances.VI_1.interface"
    assert len(found) == 2


def test_skip_check_adv_addr_follows_the_global_one_unless_set() -> None:
    text = "global:\n  vrrp:\n    skip_check_adv_addr: true\n" + instance(
        "  VI_2:\n    interface: eth0\n    virtual_router_id: 6\n"
        "    virtual_ipaddresses: [192.0.2.11]\n    skip_check_adv_addr: false\n"
    )
    config = load_text(text)
    assert config.vrrp_instances["VI_1"].skip_check_adv_addr is True
    assert config.vrrp_instances["VI_2"].skip_check_adv_addr is False


STRICT = "global:\n  vrrp:\n    strict: true\n"


def test_strict_takes_an_rfc_conforming_instance() -> None:
    config: LvshaConfig = load_text(STRICT + instance("    version: 3\n"))
    assert config.global_.vrrp.strict
    v2 = load_text(STRICT + instance("    accept: false\n"))
    assert v2.vrrp_instances["VI_1"].version == 2


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        (
            "    version: 2\n    accept: false\n"
            "    authentication: {type: PASS, password: secret}\n",
            "authentication",
            "global.vrrp.strict: RFC 3768 removed authentication and RFC 5798 has none",
        ),
        (
            "    version: 3\n    unicast_peers: [192.0.2.2]\n",
            "unicast_peers",
            "global.vrrp.strict: VRRP is multicast (RFC 5798 5.1.1.2)",
        ),
        (
            "    version: 3\n    preempt_delay: 5\n",
            "preempt_delay",
            "global.vrrp.strict: the RFCs have no preempt delay",
        ),
        (
            "    version: 3\n    state: MASTER\n    priority: 200\n",
            "state",
            "global.vrrp.strict: only the address owner (priority 255) starts as master",
        ),
        (
            "    version: 2\n",
            "accept",
            "global.vrrp.strict: a VRRPv2 router that does not own the VIPs must not accept "
            "packets addressed to them (RFC 3768 6.4.3): set accept: false",
        ),
    ],
)
def test_strict_refuses_what_the_rfcs_forbid(extra: str, path: str, message: str) -> None:
    found = problems(STRICT + instance(extra))
    assert [(p, m.split(":")[0]) for p, m, _ in found] == [
        (f"vrrp_instances.VI_1.{path}", "global.vrrp.strict")
    ]
    assert found[0][1].startswith(message)
    assert found[0][1].endswith("or turn strict off")
    # the same instance without strict is fine
    load_text(instance(extra))


def test_strict_wants_the_link_local_address_first_in_ipv6() -> None:
    found = problems(STRICT + instance(vip="2001:db8::10/64"))
    assert found[0][:2] == (
        "vrrp_instances.VI_1.virtual_ipaddresses[0]",
        "global.vrrp.strict: the first IPv6 address must be the link-local one (RFC 5798 "
        "5.2.9), not 2001:db8::10: put a fe80:: VIP first, or turn strict off",
    )
    load_text(
        STRICT
        + instance(vip="fe80::10/64").replace(
            "['fe80::10/64']", "['fe80::10/64', '2001:db8::10/64']"
        )
    )


def test_the_address_owner_may_accept_and_start_as_master_in_strict_mode() -> None:
    owner = "    priority: 255\n    state: MASTER\n    mcast_src_ip: 192.0.2.10\n    version: 2\n"
    load_text(STRICT + instance(owner))


def test_the_reference_lists_the_new_keys() -> None:
    from lvsha.config.reference import reference  # noqa: PLC0415

    text = reference()
    for key in (
        "strict",
        "skip_check_adv_addr",
        "mcast_group4",
        "mcast_group6",
        "default_interface",
        "dont_track_primary",
        "accept",
    ):
        assert f"`{key}`" in text, key
