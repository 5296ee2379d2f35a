"""The reload plan for the VMAC keys: any change restarts the instance (an election), and a VIP
added to a VMAC instance is shown on the VMAC interface."""

from __future__ import annotations

import pytest

from lvsha.config import load_text
from lvsha.daemon.reload_plan import INSTANCE_RULES, Change, Cost, reload_plan

BASE = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [10.0.0.10/24]
"""


def plan_of(old_extra: str, new_extra: str) -> list[Change]:
    return list(reload_plan(load_text(BASE + old_extra), load_text(BASE + new_extra)).changes)


@pytest.mark.parametrize(
    ("old", "new", "detail", "moved"),
    [
        ("", "    use_vmac: true\n", "use_vmac false -> true", "device eth0 -> vrrp.51"),
        ("    use_vmac: true\n", "", "use_vmac true -> false", "device vrrp.51 -> eth0"),
        (
            "    use_vmac: true\n",
            "    use_vmac: true\n    vmac_interface: vip51\n",
            "vmac_interface none -> vip51",
            "device vrrp.51 -> vip51",
        ),
        (
            "    use_vmac: true\n",
            "    use_vmac: true\n    vmac_xmit_base: true\n",
            "vmac_xmit_base false -> true",
            None,
        ),
    ],
)
def test_a_vmac_change_is_an_election_and_moves_the_vips_with_the_device(
    old: str, new: str, detail: str, moved: str | None
) -> None:
    changes = plan_of(old, new)
    instance = [c for c in changes if c.area == "vrrp_instance"]
    assert [(c.cost, c.subject) for c in instance] == [(Cost.ELECTION, "VI_1 (eth0 vrid 51 ipv4)")]
    assert detail in instance[0].detail
    vips = [c for c in changes if c.area == "vip"]
    if moved is None:
        assert vips == []
    else:
        assert [(c.cost, c.subject) for c in vips] == [(Cost.VIP_MOVE, "10.0.0.10")]
        assert moved in vips[0].detail


def test_every_vmac_key_has_a_rule() -> None:
    for key in ("use_vmac", "vmac_interface", "vmac_xmit_base"):
        assert INSTANCE_RULES[key][0] is Cost.ELECTION


def test_a_vip_added_to_a_vmac_instance_joins_on_the_vmac() -> None:
    old = BASE + "    use_vmac: true\n"
    new = old.replace("[10.0.0.10/24]", "[10.0.0.10/24, 10.0.0.11/24]")
    (change,) = reload_plan(load_text(old), load_text(new)).changes
    assert change.detail.startswith("10.0.0.11/24 on vrrp.51 joins VI_1")
