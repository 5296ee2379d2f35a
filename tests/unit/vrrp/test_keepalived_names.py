"""The keepalived exporter's names (global.metrics.keepalived_names): its families, label names
and value encodings, from lvsha's figures."""

from __future__ import annotations

from typing import Any

from lvsha.daemon.metrics import Sample
from lvsha.net.links import LinkChanged
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.keepalived_names import (
    ERROR_COUNTERS,
    KEEPALIVED_FAMILIES,
    STATE_VALUES,
    keepalived_samples,
)
from lvsha.vrrp.wire import DropReason
from tests.unit.vrrp.engine_harness import Harness, config, instance, vip, wait_for

M, B, R, F = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.RELEASING, VrrpState.FAULT
COMMON = {"iname": "VI_1", "intf": "eth0", "vrid": "1"}


def samples(lab: Harness, up: bool = True) -> list[Sample]:
    assert lab.engine is not None
    return list(keepalived_samples(lab.engine, up=up))


def one(lab: Harness, family: str, **labels: str) -> float:
    found = [v for n, got, v in samples(lab) if n == family and got == labels]
    assert len(found) == 1, (family, labels, found)
    return found[0]


def states(lab: Harness) -> dict[tuple[str, str, str], float]:
    return {
        (name, labels["intf"], labels["ip_address"]): value
        for name, labels, value in samples(lab)
        if name in ("keepalived_vrrp_state", "keepalived_vrrp_excluded_state")
    }


def test_every_state_has_the_exporters_number() -> None:
    assert set(STATE_VALUES) == set(VrrpState)
    # keepalived-exporter's VRRPStates: INIT, BACKUP, MASTER, FAULT, numbered from 0.
    assert STATE_VALUES[VrrpState.INITIALIZE] == 0
    assert STATE_VALUES[B] == 1
    assert STATE_VALUES[M] == 2
    assert STATE_VALUES[F] == 3
    assert STATE_VALUES[R] == 1  # gave up mastership: release_master counted it


def test_the_families_are_the_exporters() -> None:
    assert {f.name for f in KEEPALIVED_FAMILIES} == {
        "keepalived_up",
        "keepalived_vrrp_state",
        "keepalived_vrrp_excluded_state",
        "keepalived_gratuitous_arp_delay_total",
        "keepalived_advertisements_received_total",
        "keepalived_advertisements_sent_total",
        "keepalived_become_master_total",
        "keepalived_release_master_total",
        "keepalived_packet_length_errors_total",
        "keepalived_advertisements_interval_errors_total",
        "keepalived_ip_ttl_errors_total",
        "keepalived_invalid_type_received_total",
        "keepalived_address_list_errors_total",
        "keepalived_authentication_invalid_total",
        "keepalived_authentication_mismatch_total",
        "keepalived_authentication_failure_total",
        "keepalived_priority_zero_received_total",
        "keepalived_priority_zero_sent_total",
        "keepalived_script_status",
        "keepalived_script_state",
    }
    kinds = {f.name: f.kind for f in KEEPALIVED_FAMILIES}
    assert all(kinds[n] == "counter" for n in kinds if n.endswith("_total"))
    assert all(kinds[n] == "gauge" for n in kinds if not n.endswith("_total"))


async def test_the_state_is_exported_per_vip_with_its_device(lab: Harness) -> None:
    excluded = [{"address": "198.51.100.7/24", "device": "eth1"}]
    cfg = config(
        {
            "VI_1": instance(
                1, vip(10), vip(11), state="MASTER", virtual_ipaddresses_excluded=excluded
            )
        }
    )
    engine = await lab.start(cfg)
    assert states(lab) == {
        ("keepalived_vrrp_state", "eth0", vip(10)): 1.0,
        ("keepalived_vrrp_state", "eth0", vip(11)): 1.0,
        ("keepalived_vrrp_excluded_state", "eth1", "198.51.100.7/24"): 1.0,
    }
    await wait_for(lambda: lab.state("VI_1") is M)
    assert set(states(lab).values()) == {2.0}
    engine.link_changed(LinkChanged("eth0", False))
    assert lab.state("VI_1") is F
    assert set(states(lab).values()) == {3.0}
    engine.link_changed(LinkChanged("eth0", True))
    await wait_for(lambda: lab.state("VI_1") is M)
    engine.set_handover(["VI_1"])
    assert lab.state("VI_1") is R
    assert set(states(lab).values()) == {1.0}
    assert one(lab, "keepalived_become_master_total", **COMMON) == 2.0
    assert one(lab, "keepalived_release_master_total", **COMMON) == 2.0  # to FAULT, RELEASING
    assert one(lab, "keepalived_priority_zero_sent_total", **COMMON) == 1.0
    await lab.stop()
    assert set(states(lab).values()) == {0.0}  # INIT


async def test_adverts_and_priority_zero(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    await wait_for(lambda: lab.state("VI_1") is M)
    sock = lab.socket("VI_1")
    sock.hear(1, 200, [vip(10)])
    sock.hear(1, 0, [vip(10)])
    assert one(lab, "keepalived_advertisements_received_total", **COMMON) == 2.0
    assert one(lab, "keepalived_priority_zero_received_total", **COMMON) == 1.0
    assert one(lab, "keepalived_advertisements_sent_total", **COMMON) == len(sock.sent) >= 1
    assert one(lab, "keepalived_become_master_total", **COMMON) == 1.0
    assert one(lab, "keepalived_release_master_total", **COMMON) == 1.0


async def test_error_counters_sum_their_drop_reasons(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    drops = lab.socket("VI_1").drops
    expected: dict[str, float] = {}
    for n, (family, reasons) in enumerate(ERROR_COUNTERS.items(), 1):
        for reason in reasons:
            for _ in range(n):
                drops.record(reason)
        expected[family] = float(n * len(reasons))
    drops.record(DropReason.VRID_MISMATCH)  # no keepalived counter: lvsha's only
    for family, count in expected.items():
        assert one(lab, family, **COMMON) == count, family
    mapped = {r for reasons in ERROR_COUNTERS.values() for r in reasons}
    assert len(mapped) == sum(len(r) for r in ERROR_COUNTERS.values())  # none counted twice
    assert one(lab, "keepalived_ip_ttl_errors_total", **COMMON) == float(
        drops[DropReason.TTL_NOT_255]
    )


async def test_the_garp_delay_is_the_setting(lab: Harness) -> None:
    garp: dict[str, Any] = {"burst": 1, "delay": 2.5}
    await lab.start(config({"VI_1": instance(1, vip(10), garp=garp)}))
    assert one(lab, "keepalived_gratuitous_arp_delay_total", **COMMON) == 2.5


async def test_track_scripts_status_and_state(lab: Harness) -> None:
    scripts = {
        "good": {"command": "/bin/true", "interval": 0.05},
        "bad": {"command": "/bin/false", "interval": 0.05},
        "slow": {"command": "/bin/sleep 30", "interval": 60, "timeout": 60},
    }
    tracked = instance(1, vip(10), track_scripts=["good", "bad", "slow"])
    await lab.start(config({"VI_1": tracked}, vrrp_scripts=scripts))
    assert lab.engine is not None
    engine = lab.engine

    def script(name: str) -> tuple[float, float]:
        return (
            one(lab, "keepalived_script_status", name=name),
            one(lab, "keepalived_script_state", name=name),
        )

    await wait_for(
        lambda: all(
            (s := engine.scripts[n].state) is not None and s.healthy is not None
            for n in ("good", "bad")
        )
    )
    assert script("good")[0] == 1.0  # GOOD
    assert script("bad")[0] == 0.0  # BAD
    await wait_for(lambda: script("slow") == (0.0, 1.0))  # no result yet (BAD), running


async def test_down_says_only_so(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    assert samples(lab, up=False) == [("keepalived_up", {}, 0.0)]
    assert samples(lab)[0] == ("keepalived_up", {}, 1.0)
    labels = {name: set(found) for name, found, _ in samples(lab)}
    assert labels["keepalived_vrrp_state"] == {"iname", "intf", "vrid", "ip_address"}
    assert labels["keepalived_advertisements_sent_total"] == {"iname", "intf", "vrid"}
