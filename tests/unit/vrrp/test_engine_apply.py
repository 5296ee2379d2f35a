"""VrrpEngine.apply: a new configuration runs live, and what did not change is not touched."""

from __future__ import annotations

import asyncio
import itertools
from ipaddress import IPv4Address

import pytest

from lvsha.vrrp.engine import VrrpEngine
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.notify import NotifyState
from lvsha.vrrp.wire import DropReason
from tests.unit.vrrp.engine_harness import (
    INTERVAL,
    OWN,
    Harness,
    config,
    instance,
    vip,
    wait_for,
)

M, B, INIT = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.INITIALIZE


async def masters(lab: Harness, *names: str) -> VrrpEngine:
    engine = lab.engine
    assert engine is not None
    await wait_for(lambda: all(lab.state(n) is M for n in names))
    await wait_for(lambda: all(vip_on(lab, engine, n) for n in names))
    return engine


def vip_on(lab: Harness, engine: VrrpEngine, name: str) -> bool:
    held = engine.instances[name].runner.held
    return all(str(h.address) in lab.addresses.on(h.interface) for h in held)


async def right_after_an_advert(lab: Harness, name: str) -> None:
    sent = lab.socket(name).sent
    count = len(sent)
    await wait_for(lambda: len(sent) > count)


# 1. An unchanged instance keeps its state, timers and adverts.


async def test_an_unchanged_instance_keeps_its_state_timer_and_adverts(lab: Harness) -> None:
    old = config(
        {
            "VI_1": instance(1, vip(10), state="MASTER"),
            "VI_2": instance(2, vip(20), state="MASTER"),
        }
    )
    engine = await lab.start(old)
    await masters(lab, "VI_1", "VI_2")
    record = engine.instances["VI_1"]
    runner, sock, timer = record.runner, record.socket, record.runner._timer
    await right_after_an_advert(lab, "VI_1")
    timer = runner._timer
    sent = len(lab.socket("VI_1").sent)
    new = config(
        {
            "VI_1": instance(1, vip(10), state="MASTER"),
            "VI_2": instance(2, vip(20), vip(21), state="MASTER", priority=150),
        }
    )
    outcome = await engine.apply(new)
    assert outcome.ok, outcome
    assert "VI_1" not in outcome.summary
    assert engine.instances["VI_1"] is record
    assert record.runner is runner and record.socket is sock
    assert runner._timer is timer  # not re-armed
    assert len(lab.socket("VI_1").sent) == sent  # nothing sent out of schedule
    assert lab.state("VI_1") is M
    # and the adverts keep their schedule across the reload
    await wait_for(lambda: len(lab.socket("VI_1").sent) >= sent + 3)
    times = [at for at, _ in lab.socket("VI_1").sent]
    assert min(b - a for a, b in itertools.pairwise(times)) >= INTERVAL * 0.9
    assert lab.state_changes().count(("VI_1", "MASTER", "BACKUP")) == 0


async def test_a_reload_of_the_same_configuration_changes_nothing(lab: Harness) -> None:
    cfg = config({"VI_1": instance(1, vip(10), state="MASTER")})
    engine = await lab.start(cfg)
    await masters(lab, "VI_1")
    journal, reports = len(lab.addresses.journal), len(lab.reports)
    timer = engine.instances["VI_1"].runner._timer
    outcome = await engine.apply(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    assert outcome.ok and outcome.summary == "no VRRP change"
    assert engine.instances["VI_1"].runner._timer is timer
    assert len(lab.addresses.journal) == journal and len(lab.reports) == reports


# 2. A renamed instance changes nothing on the wire.


async def test_a_renamed_instance_changes_nothing_on_the_wire(lab: Harness) -> None:
    hooks = {"notify": {"master": ["/bin/true"]}}
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER", **hooks)}))
    await masters(lab, "VI_1")
    record = engine.instances["VI_1"]
    runner, sock = record.runner, record.socket
    await right_after_an_advert(lab, "VI_1")
    timer, sent, reports = runner._timer, len(sock.sent), len(lab.reports)  # type: ignore[attr-defined]
    advert = runner.advert
    outcome = await engine.apply(config({"VI_A": instance(1, vip(10), state="MASTER", **hooks)}))
    assert outcome.ok and "renamed VI_A" in outcome.summary
    assert list(engine.instances) == ["VI_A"]
    assert engine.instances["VI_A"] is record
    assert record.runner is runner and record.socket is sock and runner._timer is timer
    assert runner.name == "VI_A" and runner.machine.params.name == "VI_A"
    assert record.drop_log.instance == "VI_A"
    assert runner.advert == advert and lab.state("VI_A") is M
    assert len(sock.sent) == sent  # type: ignore[attr-defined]
    assert len(lab.reports) == reports  # no state change to report
    # From now on it is VI_A in reports and notify hooks.
    sock.hear(1, 200, [vip(10)])  # type: ignore[attr-defined]
    assert lab.state("VI_A") is B
    assert lab.state_changes()[-1] == ("VI_A", "MASTER", "BACKUP")
    assert lab.notifier.transitions[-1][1].name == "VI_A"


async def test_a_renamed_instance_stays_in_its_sync_group(lab: Harness) -> None:
    groups = {"sync_groups": {"G": {"instances": ["VI_1", "VI_2"]}}}
    engine = await lab.start(
        config(
            {
                "VI_1": instance(1, vip(10), state="MASTER"),
                "VI_2": instance(2, vip(20), state="MASTER"),
            },
            **groups,
        )
    )
    await masters(lab, "VI_1", "VI_2")
    new_groups = {"sync_groups": {"G": {"instances": ["VI_A", "VI_2"]}}}
    outcome = await engine.apply(
        config(
            {
                "VI_A": instance(1, vip(10), state="MASTER"),
                "VI_2": instance(2, vip(20), state="MASTER"),
            },
            **new_groups,
        )
    )
    assert outcome.ok, outcome
    assert engine.instances["VI_A"].runner.machine.params.sync_group == "G"
    # A member stepping down takes the renamed one with it: the group knows it by its new name.
    lab.socket("VI_2").hear(2, 200, [vip(20)])
    await wait_for(lambda: lab.state("VI_A") is B)


# 3. A changed priority follows the RFC rules at once.


async def test_a_masters_new_priority_is_in_its_next_advert(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    outcome = await engine.apply(
        config({"VI_1": instance(1, vip(10), state="MASTER", priority=50)})
    )
    assert outcome.ok and "priority 100 -> 50" in outcome.summary
    sent = len(lab.socket("VI_1").sent)
    await wait_for(lambda: len(lab.socket("VI_1").sent) > sent)
    assert lab.socket("VI_1").sent[-1][1].priority == 50
    assert lab.state("VI_1") is M  # a priority change is no state change


async def test_tracking_still_adjusts_the_new_base_priority(lab: Harness) -> None:
    lab.links["eth1"] = False
    tracked = {"track_interfaces": [{"interface": "eth1", "weight": -30}]}
    engine = await lab.start(config({"VI_1": instance(1, vip(10), **tracked)}))
    assert engine.instances["VI_1"].runner.machine.priority == 70
    await engine.apply(config({"VI_1": instance(1, vip(10), priority=200, **tracked)}))
    assert engine.instances["VI_1"].runner.machine.priority == 170
    assert engine.instances["VI_1"].runner.machine.params.priority == 200


@pytest.mark.parametrize("preempt", [True, False])
async def test_a_backup_raised_above_the_master_preempts_only_with_preempt(
    lab: Harness, preempt: bool
) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), priority=50, preempt=preempt)}))
    peer = asyncio.get_running_loop().create_task(advertise(lab, "VI_1", 100, [vip(10)]))
    try:
        await heard(lab, "VI_1", 2)
        assert lab.state("VI_1") is B
        await engine.apply(config({"VI_1": instance(1, vip(10), priority=150, preempt=preempt)}))
        if preempt:
            # RFC 5798 6.4.2: a lower master's adverts are ignored; Master_Down_Interval later
            # the backup takes over.
            await wait_for(lambda: lab.state("VI_1") is M, 2)
        else:
            await heard(lab, "VI_1", 6)  # twice its Master_Down_Interval
            assert lab.state("VI_1") is B
    finally:
        peer.cancel()


async def heard(lab: Harness, name: str, adverts: int) -> None:
    """Until the peer has advertised `adverts` more times."""
    sock = lab.socket(name)
    until = sock.heard + adverts
    await wait_for(lambda: sock.heard >= until)


async def advertise(lab: Harness, name: str, priority: int, addresses: list[str]) -> None:
    """A peer master of VRID 1, advertising every interval."""
    await advertise_vrid(lab, name, 1, priority, addresses)


# 4. Changed VIPs: added and removed without a state change.


async def test_a_master_adds_announces_and_drops_vips_without_a_state_change(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    changes = len(lab.state_changes())
    outcome = await engine.apply(
        config(
            {
                "VI_1": instance(
                    1,
                    vip(10),
                    vip(11),
                    state="MASTER",
                    virtual_ipaddresses_excluded=[{"address": "198.51.100.9/24", "device": "eth1"}],
                )
            }
        )
    )
    assert outcome.ok and "VIPs +2 -0" in outcome.summary
    assert {vip(10), vip(11)} <= lab.addresses.on("eth0")
    assert "198.51.100.9/24" in lab.addresses.on("eth1")
    await wait_for(lambda: {"192.0.2.11", "198.51.100.9"} <= set(lab.announced()))
    assert lab.announced().count("192.0.2.10") == 1  # the VIP it held is not announced again
    sent = len(lab.socket("VI_1").sent)
    await wait_for(lambda: len(lab.socket("VI_1").sent) > sent)
    assert {str(a) for a in lab.socket("VI_1").sent[-1][1].addresses} == {
        "192.0.2.10",
        "192.0.2.11",
    }
    outcome = await engine.apply(config({"VI_1": instance(1, vip(11), state="MASTER")}))
    assert outcome.ok and "VIPs +0 -2" in outcome.summary
    assert lab.addresses.on("eth0") == {"192.0.2.1/24", vip(11)}
    assert lab.addresses.on("eth1") == {"198.51.100.1/24"}
    assert len(lab.state_changes()) == changes
    assert lab.state("VI_1") is M


async def test_a_backup_only_changes_what_it_would_hold(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    await wait_for(lambda: lab.state("VI_1") is B)
    journal = len(lab.addresses.journal)
    outcome = await engine.apply(config({"VI_1": instance(1, vip(11))}))
    assert outcome.ok
    assert len(lab.addresses.journal) == journal
    assert [str(h.address) for h in engine.instances["VI_1"].runner.held] == [vip(11)]
    # It takes the new list on becoming master.
    await wait_for(lambda: lab.state("VI_1") is M)
    await wait_for(lambda: vip(11) in lab.addresses.on("eth0"))
    assert vip(10) not in lab.addresses.on("eth0")


async def test_a_backup_reloaded_first_still_hears_its_master_with_the_old_vip_list(
    lab: Harness,
) -> None:
    # The peer is reloaded apart from us: until it is, its adverts carry the old VIP list.
    # A backup must not take over meanwhile (the difference is logged and counted).
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    peer = asyncio.get_running_loop().create_task(advertise(lab, "VI_1", 200, [vip(10)]))
    try:
        await heard(lab, "VI_1", 2)
        await engine.apply(config({"VI_1": instance(1, vip(10), vip(11))}))
        await heard(lab, "VI_1", 6)  # twice its Master_Down_Interval
        assert lab.state("VI_1") is B
    finally:
        peer.cancel()
    assert lab.socket("VI_1").drops[DropReason.ADDRESS_LIST_MISMATCH] >= 4


# 5. A VIP moved between two instances is never absent.


async def test_a_vip_moved_between_two_masters_is_never_absent(lab: Harness) -> None:
    engine = await lab.start(
        config(
            {
                "VI_1": instance(1, vip(10), vip(30), state="MASTER"),
                "VI_2": instance(2, vip(20), state="MASTER"),
            }
        )
    )
    await masters(lab, "VI_1", "VI_2")
    absent: list[str] = []
    lab.addresses.after_change = lambda: (
        absent.append("gone") if vip(30) not in lab.addresses.on("eth0") else None
    )
    outcome = await engine.apply(
        config(
            {
                "VI_1": instance(1, vip(10), state="MASTER"),
                "VI_2": instance(2, vip(20), vip(30), state="MASTER"),
            }
        )
    )
    assert outcome.ok, outcome
    assert absent == []
    assert vip(30) in lab.addresses.on("eth0")
    assert ("remove", "eth0", vip(30)) not in lab.addresses.journal
    # It is VI_2's now: VI_1 stepping down leaves it, VI_2 stepping down takes it off.
    lab.socket("VI_1").hear(1, 200, [vip(10)])
    await wait_for(lambda: vip(10) not in lab.addresses.on("eth0"))
    await wait_for(lambda: not engine.instances["VI_1"].runner._on)  # its removal is done
    assert vip(30) in lab.addresses.on("eth0")
    lab.socket("VI_2").hear(2, 200, [vip(20), vip(30)])
    await wait_for(lambda: vip(30) not in lab.addresses.on("eth0"))


async def test_a_vip_moved_to_a_backup_leaves_this_director(lab: Harness) -> None:
    # The new holder is a backup here: the VIP belongs to the other director's master of it.
    engine = await lab.start(
        config(
            {
                "VI_1": instance(1, vip(10), vip(30), state="MASTER"),
                "VI_2": instance(2, vip(20), priority=50),
            }
        )
    )
    peer = asyncio.get_running_loop().create_task(advertise_vrid(lab, "VI_2", 2, 200, [vip(20)]))
    try:
        await masters(lab, "VI_1")
        assert lab.state("VI_2") is B
        outcome = await engine.apply(
            config(
                {
                    "VI_1": instance(1, vip(10), state="MASTER"),
                    "VI_2": instance(2, vip(20), vip(30), priority=50),
                }
            )
        )
        assert outcome.ok
        assert vip(30) not in lab.addresses.on("eth0")
        assert lab.state("VI_2") is B
    finally:
        peer.cancel()


async def advertise_vrid(
    lab: Harness, name: str, vrid: int, priority: int, addresses: list[str]
) -> None:
    while True:
        if lab.engine is not None and name in lab.engine.instances:
            lab.socket(name).hear(vrid, priority, addresses)
        await asyncio.sleep(INTERVAL)


async def test_an_address_two_instances_hold_stays_while_one_holds_it(lab: Harness) -> None:
    # Two instances listing the same VIP: the one stepping down must not take it from the
    # other (the VIP-move rule, in steady state).
    engine = await lab.start(
        config(
            {
                "VI_1": instance(1, vip(10), vip(30), state="MASTER"),
                "VI_2": instance(2, vip(20), vip(30), state="MASTER"),
            }
        )
    )
    await masters(lab, "VI_1", "VI_2")
    lab.socket("VI_1").hear(1, 200, [vip(10), vip(30)])
    await wait_for(lambda: vip(10) not in lab.addresses.on("eth0"))
    assert vip(30) in lab.addresses.on("eth0")
    assert engine.instances["VI_2"].runner.state is M


# 6. Hooks, GARP and election settings in place; socket changes rebuild.


async def test_notify_garp_and_preempt_changes_apply_in_place(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    record = engine.instances["VI_1"]
    runner, timer = record.runner, record.runner._timer
    outcome = await engine.apply(
        config(
            {
                "VI_1": instance(
                    1,
                    vip(10),
                    notify={"backup": ["/bin/true"]},
                    garp={"burst": 3, "delay": 0, "refresh": 60},
                    preempt_delay=5.0,
                )
            }
        )
    )
    assert outcome.ok, outcome
    assert engine.instances["VI_1"] is record and record.runner is runner
    assert runner._timer is timer
    assert runner.garp.burst == 3 and runner.garp.refresh == 60
    assert runner.machine.params.preempt_delay == 5.0
    assert record.hooks.backup is not None
    assert lab.state("VI_1") is M
    lab.socket("VI_1").hear(1, 200, [vip(10)])
    assert lab.notifier.transitions[-1][1].state is NotifyState.BACKUP
    assert lab.notifier.transitions[-1][0] is record.hooks


async def test_a_master_takes_a_shorter_advert_interval_from_its_next_advert(lab: Harness) -> None:
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10), state="MASTER", advert_interval=1.0)})
    )
    await masters(lab, "VI_1")
    await right_after_an_advert(lab, "VI_1")
    applied = asyncio.get_running_loop().time()
    outcome = await engine.apply(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    assert outcome.ok
    sent = lab.socket("VI_1").sent
    count = len(sent)
    await wait_for(lambda: len(sent) >= count + 3, 1.0)
    assert sent[count][0] - applied < 0.5  # not the old interval's 1 s
    assert sent[count][1].advert_interval == round(INTERVAL * 100)
    assert lab.state("VI_1") is M


async def test_new_unicast_peers_restart_the_instance_on_a_new_socket(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    old = engine.instances["VI_1"]
    outcome = await engine.apply(
        config({"VI_1": instance(1, vip(10), state="MASTER", unicast_peers=["192.0.2.2"])})
    )
    assert outcome.ok and "restarted" in outcome.summary
    new = engine.instances["VI_1"]
    assert new is not old and new.socket is not old.socket
    assert lab.socket("VI_1").settings.unicast_peers == (IPv4Address("192.0.2.2"),)
    # The old one left as at shutdown: priority 0, then closed.
    assert old.socket.sent[-1][1].priority == 0  # type: ignore[attr-defined]
    await wait_for(lambda: old.closed)
    assert old.socket.closed  # type: ignore[attr-defined]
    await wait_for(lambda: lab.state("VI_1") is M)
    await wait_for(lambda: vip(10) in lab.addresses.on("eth0"))


# 7. Instances added and removed; a failure to start rolls back.


async def test_an_added_instance_starts_and_a_removed_one_stops(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    old = engine.instances["VI_1"]
    outcome = await engine.apply(config({"VI_2": instance(2, vip(20), state="MASTER")}))
    assert outcome.ok
    assert "added VI_2" in outcome.summary and "removed VI_1" in outcome.summary
    assert list(engine.instances) == ["VI_2"]
    assert old.socket.sent[-1][1].priority == 0  # type: ignore[attr-defined]
    stop = [t for h, t in lab.notifier.transitions if t.state is NotifyState.STOP]
    assert [t.name for t in stop] == ["VI_1"]
    await wait_for(lambda: old.closed)
    assert vip(10) not in lab.addresses.on("eth0")
    # The parent hears the removed instance leave (its name is no other instance's).
    assert ("VI_1", "RELEASING", "INITIALIZE") in lab.state_changes()
    await masters(lab, "VI_2")


async def test_a_socket_that_cannot_open_leaves_everything_as_it_was(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    before = engine.config
    record = engine.instances["VI_1"]
    timer = record.runner._timer
    lab.refuse_socket.add("eth1")
    outcome = await engine.apply(
        config(
            {
                "VI_1": instance(1, vip(10), vip(11), state="MASTER", priority=150),
                "VI_2": instance(2, "198.51.100.20/24", interface="eth1"),
                "VI_3": instance(3, vip(30)),
            }
        )
    )
    assert not outcome.ok
    assert any("cannot open the VRRP socket on eth1" in e for e in outcome.errors)
    assert outcome.left == ""
    assert engine.config is before and list(engine.instances) == ["VI_1"]
    assert record.runner.machine.params.priority == 100
    assert record.runner._timer is timer
    assert vip(11) not in lab.addresses.on("eth0")
    opened = [s for s in lab.sockets if s.settings.interface == "eth0" and s is not record.socket]
    assert opened and all(s.closed for s in opened)  # VI_3's socket, opened then closed


# 8. Track scripts, tracked interfaces, sync groups.


async def test_track_scripts_unchanged_keep_running_changed_restart(lab: Harness) -> None:
    scripts = {
        "chk_a": {"command": ["/bin/true"], "interval": 0.1, "timeout": 0.1, "weight": 10},
        "chk_b": {"command": ["/bin/true"], "interval": 0.1, "timeout": 0.1, "weight": 20},
    }
    tracked = {"track_scripts": ["chk_a", "chk_b"]}
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10), **tracked)}, vrrp_scripts=scripts)
    )
    await wait_for(lambda: engine.instances["VI_1"].runner.machine.priority == 130)
    a, b = engine._scripts["chk_a"], engine._scripts["chk_b"]
    scripts["chk_b"] = {**scripts["chk_b"], "command": ["/bin/false"]}
    outcome = await engine.apply(
        config(
            {
                "VI_1": instance(
                    1, vip(10), track_scripts=["chk_a", {"script": "chk_b", "weight": 5}]
                )
            },
            vrrp_scripts=scripts,
        )
    )
    assert outcome.ok and "vrrp script chk_b restarted" in outcome.summary
    assert engine._scripts["chk_a"] is a and a.state is not None and a.state.healthy
    assert engine._scripts["chk_b"] is not b
    # The weight applies at once, on the health the script had; its new command then fails.
    assert engine.instances["VI_1"].runner.machine.priority == 115
    await wait_for(lambda: engine.instances["VI_1"].runner.machine.priority == 110)
    outcome = await engine.apply(config({"VI_1": instance(1, vip(10))}, vrrp_scripts=scripts))
    assert outcome.ok and "vrrp script chk_a stopped" in outcome.summary
    assert engine._scripts == {}
    assert engine.instances["VI_1"].runner.machine.priority == 100


async def test_a_newly_tracked_interface_that_is_down_applies_at_once(lab: Harness) -> None:
    lab.links["eth1"] = False
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    outcome = await engine.apply(
        config({"VI_1": instance(1, vip(10), state="MASTER", track_interfaces=["eth1"])})
    )
    assert outcome.ok
    assert lab.state("VI_1") is VrrpState.FAULT
    await wait_for(lambda: vip(10) not in lab.addresses.on("eth0"))


async def test_instances_joining_a_sync_group_fail_over_together(lab: Harness) -> None:
    both = {
        "VI_1": instance(1, vip(10), state="MASTER"),
        "VI_2": instance(2, vip(20), state="MASTER"),
    }
    engine = await lab.start(config(both))
    await masters(lab, "VI_1", "VI_2")
    outcome = await engine.apply(config(both, sync_groups={"G": {"instances": ["VI_1", "VI_2"]}}))
    assert outcome.ok and "sync group None -> G" in outcome.summary
    lab.socket("VI_1").hear(1, 200, [vip(10)])
    await wait_for(lambda: lab.state("VI_2") is B)
    # And leaving it: each on its own again.
    outcome = await engine.apply(config(both))
    assert outcome.ok
    assert engine.instances["VI_2"].runner.machine.params.sync_group is None


async def test_an_unchanged_group_follows_a_members_new_tracking(lab: Harness) -> None:
    lab.links["eth1"] = False
    group = {"sync_groups": {"G": {"instances": ["VI_1", "VI_2"]}}}
    vi_2 = instance(2, vip(20), state="MASTER")
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10), state="MASTER"), "VI_2": vi_2}, **group)
    )
    await masters(lab, "VI_1", "VI_2")
    outcome = await engine.apply(
        config(
            {"VI_1": instance(1, vip(10), state="MASTER", track_interfaces=["eth1"]), "VI_2": vi_2},
            **group,
        )
    )
    assert outcome.ok
    assert lab.state("VI_1") is VrrpState.FAULT
    assert lab.state("VI_2") is VrrpState.FAULT  # one member in fault puts the group in fault


# 9. Transactional: a kernel refusal rolls back; what cannot be, is reported.


async def test_a_refused_address_rolls_back_the_whole_reload(lab: Harness) -> None:
    both = {
        "VI_1": instance(1, vip(10), state="MASTER"),
        "VI_2": instance(2, vip(20), state="MASTER"),
    }
    engine = await lab.start(config(both))
    await masters(lab, "VI_1", "VI_2")
    before = engine.config
    lab.addresses.refuse_add.add(vip(22))
    outcome = await engine.apply(
        config(
            {
                "VI_1": instance(1, vip(10), vip(11), state="MASTER"),
                "VI_2": instance(2, vip(20), vip(21), vip(22), state="MASTER"),
                "VI_3": instance(3, vip(30)),
            }
        )
    )
    assert not outcome.ok
    assert any(vip(22) in e and "refused" in e for e in outcome.errors)
    assert outcome.left == ""
    assert engine.config is before and list(engine.instances) == ["VI_1", "VI_2"]
    assert lab.addresses.on("eth0") == {"192.0.2.1/24", vip(10), vip(20)}
    assert [str(h.address) for h in engine.instances["VI_1"].runner.held] == [vip(10)]
    assert {str(a) for a in engine.instances["VI_2"].runner.advert.addresses} == {"192.0.2.20"}
    assert lab.state("VI_1") is M and lab.state("VI_2") is M
    assert not any(a in {"192.0.2.11", "192.0.2.21"} for a in lab.announced())


async def test_a_rollback_that_cannot_complete_says_what_is_left(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await masters(lab, "VI_1")
    lab.addresses.refuse_add.add(vip(12))
    lab.addresses.refuse_remove.add(vip(11))
    outcome = await engine.apply(
        config({"VI_1": instance(1, vip(10), vip(11), vip(12), state="MASTER")})
    )
    assert not outcome.ok
    assert vip(11) in outcome.left and "stays on eth0" in outcome.left


async def test_a_removal_refused_after_the_commit_is_reported(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), vip(11), state="MASTER")}))
    await masters(lab, "VI_1")
    lab.addresses.refuse_remove.add(vip(11))
    new = config({"VI_1": instance(1, vip(10), state="MASTER")})
    outcome = await engine.apply(new)
    assert not outcome.ok
    assert engine.config is new
    assert "the new configuration runs" in outcome.left and vip(11) in outcome.left


async def test_the_source_address_comes_from_the_interface(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    assert lab.socket("VI_1").settings.source == OWN


async def test_a_masters_vip_with_a_new_scope_or_broadcast_is_added_again(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await wait_for(lambda: lab.state("VI_1") is M)
    await wait_for(lambda: vip(10) in lab.addresses.on("eth0"))

    def assigned() -> tuple[object, int, str | None]:
        (found,) = (
            a for a in lab.addresses.interfaces["eth0"].addresses if str(a.address) == vip(10)
        )
        return (found.broadcast, found.scope, found.label)

    assert assigned() == (None, 0, None)
    changed = {"address": vip(10), "broadcast": "+", "scope": "link", "label": "eth0:vip"}
    settings = instance(1, state="MASTER", virtual_ipaddresses=[changed])
    outcome = await engine.apply(config({"VI_1": settings}))
    assert outcome.ok, outcome
    assert "virtual_ipaddresses" in outcome.summary or "VIP settings" in outcome.summary
    await wait_for(lambda: assigned() == (IPv4Address("192.0.2.255"), 253, "eth0:vip"))
    assert lab.state("VI_1") is M
    held = engine.instances["VI_1"].runner.held
    assert [(h.broadcast, h.scope, h.label) for h in held] == [
        (IPv4Address("192.0.2.255"), 253, "eth0:vip")
    ]
