"""From the validated configuration to the plain values the VRRP machine, the wire, the receive
checks and the trackers take. Everyone else asks here (the drill included): each value derived
from an instance's configuration is derived once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from lvsha.config.model import LvshaConfig
from lvsha.config.vrrp import VrrpInstance, vmac_interface_name
from lvsha.net.garp import GarpSettings
from lvsha.vrrp.events import Address, VirtualAddress
from lvsha.vrrp.machine import (
    OWNER_PRIORITY,
    InitialState,
    InstanceParams,
    advert_interval_units,
    master_down_interval,
)
from lvsha.vrrp.tracking import Tracker
from lvsha.vrrp.wire import Advert, AuthType, ReceivingInstance, VrrpVersion

__all__ = [
    "INTERFACE_PREFIX",
    "OWNER_PRIORITY",
    "SCRIPT_PREFIX",
    "HeldAddress",
    "HeldKey",
    "InstanceIdentity",
    "advert_for",
    "advert_interval_units",
    "changed_settings",
    "garp_settings",
    "held_addresses",
    "instance_identity",
    "instance_params",
    "is_address_owner",
    "master_down_interval",
    "rebuild_reason",
    "receiving_instance",
    "source_address",
    "sync_group_of",
    "tracked_scripts",
    "trackers",
]

SCRIPT_PREFIX = "script:"
INTERFACE_PREFIX = "interface:"


InstanceIdentity = tuple[str, int, str]
"""(interface, VRID, family): what makes a VRRP instance the same one on the wire."""


def instance_identity(inst: VrrpInstance) -> InstanceIdentity:
    """An instance's identity across configurations: a renamed instance is the same one."""
    return (inst.interface, inst.virtual_router_id, inst.family)


def sync_group_of(config: LvshaConfig, instance: str) -> str | None:
    for name, group in config.sync_groups.items():
        if instance in group.instances:
            return name
    return None


def instance_params(config: LvshaConfig, name: str, primary_address: Address) -> InstanceParams:
    """The machine's parameters; `primary_address` comes from the interface at start-up
    unless the configuration pins the source address."""
    inst = config.vrrp_instances[name]
    return InstanceParams(
        name=name,
        vrid=inst.virtual_router_id,
        version=inst.version,
        priority=inst.priority,
        advert_interval=inst.advert_interval,
        primary_address=source_address(inst) or primary_address,
        vips=tuple(vip.address for vip in inst.virtual_ipaddresses),
        preempt=inst.preempt,
        preempt_delay=inst.preempt_delay,
        initial_state=InitialState.MASTER if inst.state == "MASTER" else InitialState.BACKUP,
        sync_group=sync_group_of(config, name),
    )


def source_address(inst: VrrpInstance) -> Address | None:
    """The configured advert source, if any: unicast_src_ip with peers, else mcast_src_ip."""
    return inst.unicast_src_ip if inst.unicast_peers else inst.mcast_src_ip


def trackers(config: LvshaConfig, name: str) -> list[Tracker]:
    """The instance's tracked scripts and interfaces, each with its effective weight."""
    inst = config.vrrp_instances[name]
    found = [
        Tracker(
            SCRIPT_PREFIX + track.script,
            track.weight if track.weight is not None else config.vrrp_scripts[track.script].weight,
        )
        for track in inst.track_scripts
    ]
    found += [
        Tracker(INTERFACE_PREFIX + track.interface, track.weight) for track in inst.track_interfaces
    ]
    return found


def is_address_owner(inst: VrrpInstance) -> bool:
    """Priority 255: this router owns the VIPs (RFC 5798 section 5.2.4)."""
    return inst.priority == OWNER_PRIORITY


def _password(inst: VrrpInstance) -> bytes:
    # keepalived's auth_pass keeps its first 8 characters, as the packet does.
    return inst.authentication.password.encode()[:8] if inst.authentication else b""


def advert_for(inst: VrrpInstance) -> Advert:
    """The advert this instance sends, priority aside (each SendAdvert sets it)."""
    v2 = inst.version == 2
    password = _password(inst)
    return Advert(
        version=VrrpVersion(inst.version),
        vrid=inst.virtual_router_id,
        priority=inst.priority,
        advert_interval=advert_interval_units(inst.version, inst.advert_interval),
        addresses=tuple(vip.address.ip for vip in inst.virtual_ipaddresses),
        auth_type=AuthType.SIMPLE_PASSWORD if v2 and password else AuthType.NONE,
        auth_data=password if v2 else b"",
    )


def receiving_instance(inst: VrrpInstance) -> ReceivingInstance:
    """What received adverts are checked against: adverts carry only the non-excluded VIPs."""
    password = _password(inst)
    return ReceivingInstance(
        vrid=inst.virtual_router_id,
        version=VrrpVersion(inst.version),
        advert_interval=advert_interval_units(inst.version, inst.advert_interval),
        virtual_addresses=frozenset(vip.address.ip for vip in inst.virtual_ipaddresses),
        address_owner=is_address_owner(inst),
        auth_type=AuthType.SIMPLE_PASSWORD if password else AuthType.NONE,
        auth_password=password,
    )


HeldKey: TypeAlias = tuple[str, Address]
"""(interface, address): what makes a held VIP the same one on the interface."""


@dataclass(frozen=True, slots=True)
class HeldAddress:
    """A VIP the master holds: where it goes and with which label."""

    address: VirtualAddress
    interface: str
    label: str | None = None

    @property
    def key(self) -> HeldKey:
        """What makes it the same address on the interface (its prefix and label aside)."""
        return (self.interface, self.address.ip)


def held_addresses(inst: VrrpInstance) -> list[HeldAddress]:
    """Every VIP the master holds, the excluded ones too, each on its device (by default the
    instance's VMAC interface with use_vmac, else its interface)."""
    default = vmac_interface_name(inst) or inst.interface
    return [
        HeldAddress(vip.address, vip.device or default, vip.label)
        for vip in [*inst.virtual_ipaddresses, *inst.virtual_ipaddresses_excluded]
    ]


def garp_settings(inst: VrrpInstance) -> GarpSettings:
    garp = inst.garp
    return GarpSettings(garp.burst, garp.interval, garp.delay, garp.refresh, garp.refresh_burst)


def tracked_scripts(config: LvshaConfig) -> list[str]:
    """The vrrp_scripts some instance tracks: only those run."""
    return list(
        dict.fromkeys(
            t.script for inst in config.vrrp_instances.values() for t in inst.track_scripts
        )
    )


def rebuild_reason(old: VrrpInstance, new: VrrpInstance) -> str | None:
    """Why an instance of the same identity cannot take `new` in place (another version or
    socket: it is stopped and started again), or None."""
    if old.version != new.version:
        return f"version {old.version} -> {new.version}"
    if source_address(old) != source_address(new):
        return f"source address {source_address(old)} -> {source_address(new)}"
    if old.unicast_peers != new.unicast_peers:
        return "unicast peers changed"
    if vmac_interface_name(old) != vmac_interface_name(new):
        before, after = vmac_interface_name(old), vmac_interface_name(new)
        return f"VMAC interface {before or 'none'} -> {after or 'none'}"
    if old.vmac_xmit_base != new.vmac_xmit_base:
        return (
            f"vmac_xmit_base {str(old.vmac_xmit_base).lower()} -> "
            + str(new.vmac_xmit_base).lower()
        )
    return None


def changed_settings(old: VrrpInstance, new: VrrpInstance) -> list[str]:
    """The instance's keys whose value differs, in the model's order."""
    return [key for key in type(new).model_fields if getattr(old, key) != getattr(new, key)]
