"""Sync groups: members fail over together (keepalived's vrrp_sync_group rules)."""

from __future__ import annotations

from collections import deque
from ipaddress import IPv4Address, IPv4Interface

import pytest

from lvsha.vrrp.events import (
    Action,
    AddVips,
    AdvertReceived,
    Event,
    FaultChanged,
    FaultReason,
    LinkChanged,
    ReadyForMaster,
    RemoveVips,
    SendAdvert,
    Startup,
    StateChanged,
    SyncGroupBackup,
    SyncGroupFault,
    SyncGroupMaster,
    TimerFired,
    TrackingFault,
    VrrpState,
)
from lvsha.vrrp.machine import InstanceParams, VrrpMachine
from lvsha.vrrp.syncgroup import MemberEvent, SyncGroup

B, M, F = VrrpState.BACKUP, VrrpState.MASTER, VrrpState.FAULT
PEER = IPv4Address("192.0.2.20")


class Router:
    """The adapter's loop in miniature: machines, one sync group, events fed depth-first."""

    def __init__(self, names: list[str]) -> None:
        self.group = SyncGroup("VG_1", names)
        self.machines = {
            name: VrrpMachine(
                InstanceParams(
                    name=name,
                    vrid=10 + i,
                    version=3,
                    priority=100,
                    advert_interval=1.0,
                    primary_address=IPv4Address("192.0.2.10"),
                    vips=(IPv4Interface(f"192.0.2.{100 + i}/24"),),
                    sync_group="VG_1",
                )
            )
            for i, name in enumerate(names)
        }
        self.log: list[tuple[str, Action]] = []

    def feed(self, member: str, event: Event, now: float) -> None:
        pending = deque([MemberEvent(member, event)])  # type: ignore[arg-type]
        while pending:
            item = pending.popleft()
            for action in self.machines[item.member].handle(item.event, now):
                self.log.append((item.member, action))
                pending.extend(self.group.on_action(item.member, action))

    def states(self) -> dict[str, VrrpState]:
        return {name: m.state for name, m in self.machines.items()}

    def actions_of(self, member: str) -> list[Action]:
        return [a for name, a in self.log if name == member]

    def start_all(self, now: float) -> None:
        for name in self.machines:
            self.feed(name, Startup(), now)

    def all_masters(self, now: float) -> None:
        """Run every member's master down timer out, so the group becomes master."""
        for name, machine in self.machines.items():
            deadline = machine.next_deadline()
            assert deadline is not None
            self.feed(name, TimerFired(), max(now, deadline))
        assert set(self.states().values()) == {M}


def test_member_in_fault_takes_the_others_to_fault_and_back() -> None:
    router = Router(["VI_A", "VI_B", "VI_C"])
    router.start_all(0.0)
    router.all_masters(0.0)
    router.log.clear()
    router.feed("VI_A", LinkChanged(up=False), 4.0)
    assert router.states() == {"VI_A": F, "VI_B": F, "VI_C": F}
    assert router.group.in_fault
    # A master forced to fault by the group still tells its backups (priority 0).
    assert SendAdvert(0) in router.actions_of("VI_B")
    assert any(isinstance(a, RemoveVips) for a in router.actions_of("VI_B"))
    router.feed("VI_A", LinkChanged(up=True), 5.0)
    assert router.states() == {"VI_A": B, "VI_B": B, "VI_C": B}
    assert not router.group.in_fault


def test_group_stays_in_fault_while_any_member_is_in_fault_on_its_own() -> None:
    router = Router(["VI_A", "VI_B"])
    router.start_all(0.0)
    router.feed("VI_A", TrackingFault(active=True), 1.0)
    router.feed("VI_B", LinkChanged(up=False), 2.0)
    router.feed("VI_A", TrackingFault(active=False), 3.0)
    assert router.states() == {"VI_A": F, "VI_B": F}
    assert router.machines["VI_A"].fault_reasons == {FaultReason.SYNC_GROUP}
    router.feed("VI_B", LinkChanged(up=True), 4.0)
    assert router.states() == {"VI_A": B, "VI_B": B}


def test_master_going_to_backup_takes_the_other_masters_to_backup() -> None:
    router = Router(["VI_A", "VI_B", "VI_C"])
    router.start_all(0.0)
    router.all_masters(0.0)
    router.log.clear()
    router.feed("VI_B", AdvertReceived(PEER, 200, 1.0), 4.0)
    assert router.states() == {"VI_A": B, "VI_B": B, "VI_C": B}
    for name in ("VI_A", "VI_C"):
        actions = router.actions_of(name)
        assert any(isinstance(a, RemoveVips) for a in actions)
        # keepalived sends no advert for a member that follows the group to backup.
        assert not any(isinstance(a, SendAdvert) for a in actions)


def test_no_member_becomes_master_until_every_member_is_ready() -> None:
    router = Router(["VI_A", "VI_B"])
    router.start_all(0.0)
    a, b = router.machines["VI_A"], router.machines["VI_B"]
    deadline = a.next_deadline()
    assert deadline is not None
    # VI_B still hears a live master; VI_A's master down timer runs out.
    router.feed("VI_B", AdvertReceived(PEER, 200, 1.0), deadline - 0.5)
    router.feed("VI_A", TimerFired(), deadline)
    assert ReadyForMaster(ready=True) in router.actions_of("VI_A")
    assert router.states() == {"VI_A": B, "VI_B": B}
    assert not any(isinstance(action, AddVips) for _, action in router.log)
    # VI_A keeps waiting, re-arming its timer without repeating itself, while VI_B's
    # master keeps advertising.
    again = a.next_deadline()
    assert again is not None and again > deadline
    for step in range(4):
        router.feed("VI_B", AdvertReceived(PEER, 200, 1.0), deadline + 0.5 + step)
    router.feed("VI_A", TimerFired(), again)
    assert router.actions_of("VI_A").count(ReadyForMaster(ready=True)) == 1
    # Now VI_B's master goes quiet as well: both become master together.
    b_deadline = b.next_deadline()
    assert b_deadline is not None
    router.feed("VI_B", TimerFired(), b_deadline)
    assert router.states() == {"VI_A": M, "VI_B": M}
    assert [a for a in router.actions_of("VI_A") if isinstance(a, AddVips)] == [
        AddVips((IPv4Interface("192.0.2.100/24"),))
    ]


def test_member_hearing_a_master_again_is_no_longer_ready() -> None:
    router = Router(["VI_A", "VI_B"])
    router.start_all(0.0)
    deadline = router.machines["VI_A"].next_deadline()
    assert deadline is not None
    router.feed("VI_A", TimerFired(), deadline)
    router.feed("VI_A", AdvertReceived(PEER, 200, 1.0), deadline + 0.1)
    assert router.actions_of("VI_A")[-1] == ReadyForMaster(ready=False)
    b_deadline = router.machines["VI_B"].next_deadline()
    assert b_deadline is not None
    router.feed("VI_B", TimerFired(), b_deadline)
    assert router.states() == {"VI_A": B, "VI_B": B}


def test_address_owner_in_a_group_waits_for_the_others() -> None:
    group = SyncGroup("VG_1", ["VI_A", "VI_B"])
    owner = VrrpMachine(
        InstanceParams(
            name="VI_A",
            vrid=1,
            version=3,
            priority=255,
            advert_interval=1.0,
            primary_address=IPv4Address("192.0.2.10"),
            vips=(IPv4Interface("192.0.2.100/24"),),
            sync_group="VG_1",
        )
    )
    actions = owner.handle(Startup(), 0.0)
    assert owner.state is B
    assert ReadyForMaster(ready=True) in actions
    events = [e for a in actions for e in group.on_action("VI_A", a)]
    assert events == []


def test_group_rules_in_isolation() -> None:
    group = SyncGroup("VG_1", ["VI_A", "VI_B"])
    fault = FaultChanged(frozenset({FaultReason.LINK_DOWN}))
    assert group.on_action("VI_A", fault) == [
        MemberEvent("VI_A", SyncGroupFault(active=True)),
        MemberEvent("VI_B", SyncGroupFault(active=True)),
    ]
    # The echo of the group's own fault is not a fault of the member's own.
    assert group.on_action("VI_B", FaultChanged(frozenset({FaultReason.SYNC_GROUP}))) == []
    assert group.on_action("VI_A", FaultChanged(frozenset({FaultReason.SYNC_GROUP}))) == [
        MemberEvent("VI_A", SyncGroupFault(active=False)),
        MemberEvent("VI_B", SyncGroupFault(active=False)),
    ]
    group.on_action("VI_A", StateChanged(B, M, "x"))
    group.on_action("VI_B", StateChanged(B, M, "x"))
    assert group.on_action("VI_A", StateChanged(M, B, "higher master")) == [
        MemberEvent("VI_B", SyncGroupBackup())
    ]
    # The follower's own report does not cascade again.
    assert group.on_action("VI_B", StateChanged(M, B, "followed")) == []
    assert group.on_action("VI_A", ReadyForMaster(ready=True)) == []
    assert group.on_action("VI_B", ReadyForMaster(ready=True)) == [
        MemberEvent("VI_A", SyncGroupMaster()),
        MemberEvent("VI_B", SyncGroupMaster()),
    ]
    assert group.on_action("VI_A", SendAdvert(100)) == []


def test_no_master_while_the_group_is_in_fault() -> None:
    group = SyncGroup("VG_1", ["VI_A", "VI_B"])
    group.on_action("VI_A", FaultChanged(frozenset({FaultReason.TRACKING})))
    group.on_action("VI_B", ReadyForMaster(ready=True))
    assert group.on_action("VI_A", ReadyForMaster(ready=True)) == []


@pytest.mark.parametrize(("members", "message"), [([], "no instances"), (["A", "A"], "twice")])
def test_group_refuses_bad_membership(members: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyncGroup("VG_1", members)


def test_group_refuses_unknown_member() -> None:
    group = SyncGroup("VG_1", ["VI_A"])
    with pytest.raises(ValueError, match="not in sync group"):
        group.on_action("VI_X", SendAdvert(100))
