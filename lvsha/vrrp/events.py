"""The VRRP machine's vocabulary: its states, the events it takes and the actions it returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TypeAlias

from lvsha.roles import VrrpState as VrrpState  # noqa: PLC0414 - re-exported: the machine's states

Address: TypeAlias = IPv4Address | IPv6Address
VirtualAddress: TypeAlias = IPv4Interface | IPv6Interface


class FaultReason(enum.Enum):
    LINK_DOWN = "link down"
    TRACKING = "tracking failed"
    SYNC_GROUP = "sync group in fault"


def _check_priority(priority: int, lowest: int) -> None:
    if not lowest <= priority <= 255:
        raise ValueError(f"VRRP priority {priority} outside {lowest}..255")


# Events


@dataclass(frozen=True, slots=True)
class Startup:
    pass


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    """A decoded, already validated advertisement from another router."""

    source: Address
    priority: int
    advert_interval: float
    """Seconds, as carried in the packet (v2: whole seconds, v3: centiseconds)."""

    def __post_init__(self) -> None:
        _check_priority(self.priority, 0)
        if not self.advert_interval > 0:
            raise ValueError(f"advert interval {self.advert_interval} s is not positive")


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """The effective priority computed by tracking (see tracking.py)."""

    priority: int

    def __post_init__(self) -> None:
        _check_priority(self.priority, 1)


@dataclass(frozen=True, slots=True)
class TrackingFault:
    """A weight-0 tracker started (active) or stopped (not active) failing."""

    active: bool


@dataclass(frozen=True, slots=True)
class LinkChanged:
    up: bool


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Handover:
    """`lvsha handover` (active) or its cancellation (not active).

    A handed-over instance behaves as if keepalived were stopped on this director while lvsha
    keeps running: a master sends priority 0 and keeps its VIPs until the new master is heard
    (make-before-break), then stays backup; a backup never takes over, whatever it hears or
    stops hearing, until the handover is cancelled."""

    active: bool


@dataclass(frozen=True, slots=True)
class SyncGroupFault:
    """Some member of this instance's sync group is (or no longer is) in fault on its own."""

    active: bool


@dataclass(frozen=True, slots=True)
class SyncGroupBackup:
    """Another member of the sync group went from master to backup: follow it."""


@dataclass(frozen=True, slots=True)
class SyncGroupMaster:
    """Every member of the sync group is ready to be master: become master."""


Event: TypeAlias = (
    Startup
    | AdvertReceived
    | TimerFired
    | PriorityChanged
    | TrackingFault
    | LinkChanged
    | Shutdown
    | Handover
    | SyncGroupFault
    | SyncGroupBackup
    | SyncGroupMaster
)


# Actions


@dataclass(frozen=True, slots=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True, slots=True)
class AddVips:
    vips: tuple[VirtualAddress, ...]


@dataclass(frozen=True, slots=True)
class RemoveVips:
    vips: tuple[VirtualAddress, ...]
    handover: bool = False
    """Letting go for a new master that has been heard (not a fault or a timeout): the
    adapter may keep answering until that master's announcements have landed."""


@dataclass(frozen=True, slots=True)
class Announce:
    """Gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6) for the VIPs."""

    vips: tuple[VirtualAddress, ...]


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: VrrpState
    new: VrrpState
    reason: str


@dataclass(frozen=True, slots=True)
class FaultChanged:
    """The set of reasons holding the instance in fault changed (empty: no fault)."""

    reasons: frozenset[FaultReason]


@dataclass(frozen=True, slots=True)
class ReadyForMaster:
    """Sync group members only: the master down timer expired (ready) or a master was heard."""

    ready: bool


Action: TypeAlias = (
    SendAdvert | AddVips | RemoveVips | Announce | StateChanged | FaultChanged | ReadyForMaster
)
