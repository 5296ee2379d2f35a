"""VrrpEngine.set_handover: `lvsha handover` on a running engine, at start and across reloads."""

from __future__ import annotations

import logging

import pytest

from lvsha.vrrp.events import VrrpState
from tests.unit.vrrp.engine_harness import Harness, config, instance, vip, wait_for

M, B, R, INIT = (
    VrrpState.MASTER,
    VrrpState.BACKUP,
    VrrpState.RELEASING,
    VrrpState.INITIALIZE,
)
GROUP = {"G": {"instances": ["VI_1", "VI_2"]}}


def both(**settings: object) -> dict[str, dict[str, object]]:
    return {
        "VI_1": instance(1, vip(10), state="MASTER", **settings),
        "VI_2": instance(2, vip(20), state="MASTER", **settings),
    }


async def masters(lab: Harness, *names: str) -> None:
    await wait_for(lambda: all(lab.state(n) is M for n in names))
    await wait_for(lambda: {vip(10), vip(20)} & lab.addresses.on("eth0"))


def handed_over(lab: Harness, name: str) -> bool:
    assert lab.engine is not None
    return lab.engine.instances[name].runner.machine.handed_over


def timer(lab: Harness, name: str) -> float | None:
    assert lab.engine is not None
    return lab.engine.instances[name].runner.machine.next_deadline()


async def test_a_master_hands_over_make_before_break_and_stays_backup(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    engine.set_handover(["VI_1"])
    assert lab.state("VI_1") is R
    assert lab.socket("VI_1").sent[-1][1].priority == 0
    assert vip(10) in lab.addresses.on("eth0")  # kept until the new master is heard
    assert engine.handed_over == {"VI_1"}
    lab.socket("VI_1").hear(1, 90, [vip(10)])
    assert lab.state("VI_1") is B
    await wait_for(lambda: vip(10) not in lab.addresses.on("eth0"))
    # The peer stops advertising: this one does not take over (no Master_Down_Timer).
    assert timer(lab, "VI_1") is None
    assert ("VI_1", "RELEASING", "BACKUP") in lab.state_changes()


async def test_cancelling_lets_the_backup_take_over_again(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    engine.set_handover(["VI_1"])
    lab.socket("VI_1").hear(1, 90, [vip(10)])
    assert lab.state("VI_1") is B
    engine.set_handover([])
    assert not handed_over(lab, "VI_1") and engine.handed_over == frozenset()
    # The peer (priority 90) is silent: Master_Down_Interval later this one is master.
    await wait_for(lambda: lab.state("VI_1") is M)
    await wait_for(lambda: vip(10) in lab.addresses.on("eth0"))


async def test_a_handover_that_hears_no_new_master_stays_master(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    engine.set_handover(["VI_1"])
    await wait_for(lambda: lab.state("VI_1") is M)
    record = engine.instances["VI_1"]
    assert record.reason.startswith("handover failed")
    assert engine.handed_over == frozenset()
    assert vip(10) in lab.addresses.on("eth0")
    assert ("VI_1", "RELEASING", "MASTER") in lab.state_changes()


async def test_a_sync_group_is_handed_over_as_one(lab: Harness) -> None:
    engine = await lab.start(config(both(), sync_groups=GROUP))
    await masters(lab, "VI_1", "VI_2")
    engine.set_handover(["VI_2"])
    assert engine.handed_over == {"VI_1", "VI_2"}
    assert lab.state("VI_1") is R and lab.state("VI_2") is R
    lab.socket("VI_1").hear(1, 90, [vip(10)])
    lab.socket("VI_2").hear(2, 90, [vip(20)])
    assert lab.state("VI_1") is B and lab.state("VI_2") is B
    assert timer(lab, "VI_1") is None and timer(lab, "VI_2") is None


async def test_a_failed_handover_in_a_sync_group_takes_the_whole_group_back(
    lab: Harness,
) -> None:
    engine = await lab.start(config(both(), sync_groups=GROUP))
    await masters(lab, "VI_1", "VI_2")
    engine.set_handover(["VI_1"])
    lab.socket("VI_2").hear(2, 90, [vip(20)])  # VI_2's peer took over; VI_1's never did
    assert lab.state("VI_2") is B
    await wait_for(lambda: lab.state("VI_1") is M)
    assert engine.handed_over == frozenset()
    await wait_for(lambda: not handed_over(lab, "VI_2"))
    assert timer(lab, "VI_2") is not None  # normal VRRP again


async def test_unknown_names_are_warned_of_and_ignored(
    lab: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    with caplog.at_level(logging.WARNING, logger="lvsha.vrrp"):
        engine.set_handover(["VI_9", "VI_1"])
    assert engine.handed_over == {"VI_1"}
    assert "handover of VI_9 ignored: no such VRRP instance" in caplog.messages


@pytest.mark.parametrize(
    "settings",
    [{"state": "MASTER"}, {"priority": 255, "mcast_src_ip": "192.0.2.10"}, {}],
    ids=["initial-state-master", "address-owner", "backup"],
)
async def test_handed_over_at_start_never_becomes_master(
    lab: Harness, settings: dict[str, object]
) -> None:
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10), **settings)}), handed_over=["VI_1"]
    )
    assert lab.state("VI_1") is B
    assert timer(lab, "VI_1") is None
    assert engine.handed_over == {"VI_1"}
    assert lab.socket("VI_1").sent == []
    engine.set_handover([])
    await wait_for(lambda: lab.state("VI_1") is M)


async def test_an_in_place_reload_keeps_the_handover_under_the_new_name(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}), handed_over=["VI_1"])
    outcome = await engine.apply(config({"VI_X": instance(1, vip(10), priority=150)}))
    assert outcome.ok and "renamed VI_X" in outcome.summary
    assert engine.handed_over == {"VI_X"}
    assert handed_over(lab, "VI_X") and timer(lab, "VI_X") is None


@pytest.mark.parametrize("name", ["VI_1", "VI_R"], ids=["same-name", "renamed"])
async def test_a_rebuilt_instance_starts_handed_over(lab: Harness, name: str) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}), handed_over=["VI_1"])
    old = engine.instances["VI_1"]
    outcome = await engine.apply(
        config({name: instance(1, vip(10), state="MASTER", unicast_peers=["192.0.2.2"])})
    )
    assert outcome.ok and "restarted" in outcome.summary
    assert engine.instances[name] is not old
    assert lab.state(name) is B and timer(lab, name) is None
    assert engine.handed_over == {name}


async def test_a_sync_group_formed_by_a_reload_is_handed_over_whole(lab: Harness) -> None:
    engine = await lab.start(config(both()), handed_over=["VI_1"])
    assert engine.handed_over == {"VI_1"}
    await wait_for(lambda: lab.state("VI_2") is M)
    outcome = await engine.apply(config(both(), sync_groups=GROUP))
    assert outcome.ok
    assert engine.handed_over == {"VI_1", "VI_2"}
    assert lab.state("VI_2") is R
