"""use_vmac, vmac_interface and vmac_xmit_base: defaults, keepalived's names, and what
check-config refuses (each problem names the instance and the key)."""

from __future__ import annotations

import pytest

from lvsha.config import ConfigError, load_text
from lvsha.config.vrrp import vmac_interface_name

BASE = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [192.0.2.10/24]
"""


def instance_text(name: str, vrid: int, *extra: str, interface: str = "eth0") -> str:
    lines = [
        f"  {name}:",
        f"    interface: {interface}",
        f"    virtual_router_id: {vrid}",
        f"    virtual_ipaddresses: [192.0.2.{vrid}/24]",
        *(f"    {line}" for line in extra),
    ]
    return "\n".join(lines) + "\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_text(text, "t.yaml")
    return [str(p) for p in raised.value.problems]


def test_vmac_is_off_by_default() -> None:
    inst = load_text(BASE).vrrp_instances["VI_1"]
    assert (inst.use_vmac, inst.vmac_interface, inst.vmac_xmit_base) == (False, None, False)
    assert vmac_interface_name(inst) is None


def test_the_default_name_is_keepalived_s_for_either_family() -> None:
    inst = load_text(BASE + "    use_vmac: true\n").vrrp_instances["VI_1"]
    assert vmac_interface_name(inst) == "vrrp.51"
    v6 = load_text(
        "vrrp_instances:\n"
        + instance_text("VI_6", 7, "use_vmac: true").replace("192.0.2.7/24", "2001:db8::7/64")
    ).vrrp_instances["VI_6"]
    assert (v6.family, vmac_interface_name(v6)) == ("ipv6", "vrrp.7")


def test_a_named_vmac_interface_is_used() -> None:
    text = BASE + "    use_vmac: true\n    vmac_interface: vip51\n    vmac_xmit_base: true\n"
    inst = load_text(text).vrrp_instances["VI_1"]
    assert vmac_interface_name(inst) == "vip51"
    assert inst.vmac_xmit_base


@pytest.mark.parametrize(
    ("line", "key"),
    [("vmac_interface: vip51", "vmac_interface"), ("vmac_xmit_base: true", "vmac_xmit_base")],
)
def test_vmac_keys_without_use_vmac_are_refused(line: str, key: str) -> None:
    (problem,) = problems_of(BASE + f"    {line}\n")
    assert f"vrrp_instances.VI_1.{key}" in problem
    assert f"{key} of vrrp_instances.VI_1 needs use_vmac: true" in problem


def test_two_instances_on_one_vmac_interface_are_refused() -> None:
    text = (
        "vrrp_instances:\n"
        + instance_text("VI_1", 51, "use_vmac: true", "vmac_interface: vip")
        + instance_text("VI_2", 52, "use_vmac: true", "vmac_interface: vip")
    )
    (problem,) = problems_of(text)
    assert "vrrp_instances.VI_2.vmac_interface" in problem
    assert "VMAC interface vip of vrrp_instances.VI_2 is already the VMAC interface of " in problem
    assert "vrrp_instances.VI_1: give each its own vmac_interface" in problem


def test_the_same_vrid_on_two_interfaces_clashes_on_the_default_name() -> None:
    text = (
        "vrrp_instances:\n"
        + instance_text("VI_A", 51, "use_vmac: true")
        + instance_text("VI_B", 51, "use_vmac: true", interface="eth1")
    )
    (problem,) = problems_of(text)
    assert "vrrp_instances.VI_B.use_vmac" in problem
    assert "VMAC interface vrrp.51 (the default name, vrrp.VRID) of vrrp_instances.VI_B" in problem


@pytest.mark.parametrize(
    ("extra", "other", "what"),
    [
        ("", "eth0", "the interface of vrrp_instances.VI_1"),
        ("", "eth1", "the interface of vrrp_instances.VI_2"),
        ("    track_interfaces: [eth9]\n", "eth9", "tracked by vrrp_instances.VI_1"),
    ],
)
def test_a_vmac_named_as_a_real_interface_is_refused(extra: str, other: str, what: str) -> None:
    text = (
        "vrrp_instances:\n"
        + instance_text("VI_1", 51, "use_vmac: true", f"vmac_interface: {other}")
        + extra
        + instance_text("VI_2", 52, interface="eth1")
    )
    (problem,) = problems_of(text)
    assert "vrrp_instances.VI_1.vmac_interface" in problem
    assert f"VMAC interface {other} of vrrp_instances.VI_1 is {what}" in problem
    assert "set vmac_interface to another name" in problem


def test_a_vmac_name_over_15_characters_is_refused() -> None:
    (problem,) = problems_of(
        BASE + "    use_vmac: true\n    vmac_interface: a-very-long-vmac-name\n"
    )
    assert "vrrp_instances.VI_1.vmac_interface" in problem
    assert "not a valid interface name: 1-15 characters" in problem


def test_vmac_xmit_base_is_refused_for_ipv6() -> None:
    text = "vrrp_instances:\n" + instance_text(
        "VI_6", 7, "use_vmac: true", "vmac_xmit_base: true"
    ).replace("192.0.2.7/24", "2001:db8::7/64")
    (problem,) = problems_of(text)
    assert "vrrp_instances.VI_6.vmac_xmit_base" in problem
    assert "not supported for IPv6 by lvsha: a backup's VMAC sends MLD reports" in problem
