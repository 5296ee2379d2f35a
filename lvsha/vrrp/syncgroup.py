"""Sync groups: VRRP instances on one router that fail over together (keepalived's
vrrp_sync_group), as a pure core fed with the members' actions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsha.vrrp.events import (
    Action,
    FaultChanged,
    FaultReason,
    ReadyForMaster,
    StateChanged,
    SyncGroupBackup,
    SyncGroupFault,
    SyncGroupMaster,
    VrrpState,
)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """An event for one member's machine, to be handled before any other event."""

    member: str
    event: SyncGroupFault | SyncGroupBackup | SyncGroupMaster


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """What a member's machine says of itself, for a group formed while it runs (a reload)."""

    state: VrrpState
    fault_reasons: frozenset[FaultReason] = frozenset()
    ready: bool = False


@dataclass(slots=True)
class _Member:
    state: VrrpState = VrrpState.INITIALIZE
    own_fault: bool = False
    """In fault for a reason of its own, not only because the group is."""
    ready: bool = False


class SyncGroup:
    """keepalived's rules: one member in fault puts all in fault until no member is in fault
    on its own; one member going from master to backup takes the other masters with it; and
    no member becomes master until every member is ready to (which avoids a group split
    across two routers when each holds the higher priority for some members).

    Feed it every action of every member (`on_action`); feed the events it returns to the
    named members at once, then their actions back here. It records the state it commands
    before the member reports it, so the order the returned events are fed in does not matter.
    """

    def __init__(self, name: str, members: Iterable[str]) -> None:
        self.name = name
        self._members: dict[str, _Member] = {}
        for member in members:
            if member in self._members:
                raise ValueError(f"sync group {name!r}: instance {member!r} listed twice")
            self._members[member] = _Member()
        if not self._members:
            raise ValueError(f"sync group {name!r} has no instances")
        self._in_fault = False

    @classmethod
    def resume(
        cls, name: str, members: Mapping[str, MemberSnapshot]
    ) -> tuple[SyncGroup, list[MemberEvent]]:
        """A group formed from members already running (a reload changed its membership),
        with the events that bring them in line with the group's rules at once: each member
        in fault exactly while some member is in fault on its own, and the members ready for
        master granted it when every other member is ready too or master already. A member
        that is master while another is backup stays so until the next transition: the group
        follows from there, as it does at start-up."""
        group = cls(name, members)
        for member, snapshot in members.items():
            record = group._members[member]
            record.state = snapshot.state
            record.own_fault = bool(snapshot.fault_reasons - {FaultReason.SYNC_GROUP})
            record.ready = snapshot.ready
        group._in_fault = any(r.own_fault for r in group._members.values())
        events = [
            MemberEvent(member, SyncGroupFault(active=group._in_fault))
            for member, snapshot in members.items()
            if (FaultReason.SYNC_GROUP in snapshot.fault_reasons) != group._in_fault
        ]
        if any(r.ready for r in group._members.values()):
            events += group._grant_master()
        return group, events

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._members)

    @property
    def in_fault(self) -> bool:
        return self._in_fault

    def state_of(self, member: str) -> VrrpState:
        return self._member(member).state

    def on_action(self, member: str, action: Action) -> list[MemberEvent]:
        """Take one action a member's machine returned; return the events it calls for."""
        record = self._member(member)
        if isinstance(action, StateChanged):
            record.state = action.new
            if action.old is VrrpState.MASTER and action.new is VrrpState.BACKUP:
                return self._follow_to_backup()
            return []
        if isinstance(action, FaultChanged):
            record.own_fault = bool(action.reasons - {FaultReason.SYNC_GROUP})
            return self._update_fault()
        if isinstance(action, ReadyForMaster):
            record.ready = action.ready
            return self._grant_master() if action.ready else []
        # Adverts, VIPs and announcements are each member's own business.
        return []

    def _member(self, member: str) -> _Member:
        try:
            return self._members[member]
        except KeyError:
            raise ValueError(f"{member!r} is not in sync group {self.name!r}") from None

    def _follow_to_backup(self) -> list[MemberEvent]:
        events = []
        for name, record in self._members.items():
            if record.state is VrrpState.MASTER:
                record.state = VrrpState.BACKUP
                events.append(MemberEvent(name, SyncGroupBackup()))
        return events

    def _update_fault(self) -> list[MemberEvent]:
        in_fault = any(record.own_fault for record in self._members.values())
        if in_fault == self._in_fault:
            return []
        self._in_fault = in_fault
        # Every member, the one at fault included: it must stay in fault while any other
        # member still is, even after its own reason clears.
        return [MemberEvent(name, SyncGroupFault(active=in_fault)) for name in self._members]

    def _grant_master(self) -> list[MemberEvent]:
        if self._in_fault:
            return []
        records = self._members.values()
        if not all(r.ready or r.state is VrrpState.MASTER for r in records):
            return []
        events = []
        for name, record in self._members.items():
            if record.ready:
                record.ready = False
                record.state = VrrpState.MASTER
                events.append(MemberEvent(name, SyncGroupMaster()))
        return events
