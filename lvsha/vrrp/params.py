"""From the validated configuration to the plain values the VRRP machine, the wire, the receive
checks and the trackers take. Everyone else asks here (the drill included): each value derived
from an instance's configuration is derived once."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from lvsha.config.model import LvshaConfig
from lvsha.config.vrrp import SCOPES, VrrpInstance, vmac_interface_name
from lvsha.config.vrrp import VirtualAddress as ConfiguredVip
from lvsha.net.addresses import VipAttributes
from lvsha.net.garp import GarpSettings
from lvsha.vrrp.events import Address, VirtualAddress
from lvsha.vrrp.machine import (
    OWNER_PRIORITY,
    InitialState,
    InstanceParams,
    advert_interval_units,
    master_down_interval,
)
from lvsha.vrrp.tracking import AnyTracker, FileTracker, Tracker
from lvsha.vrrp.wire import Advert, AuthType, ReceivingInstance, VrrpVersion

__all__ = [
    "FILE_PREFIX",
    "INTERFACE_PREFIX",
    "OWNER_PRIORITY",
    "SCRIPT_PREFIX",
    "HeldAddress",
    "HeldKey",
    "InstanceIdentity",
    "address_scope",
    "advert_for",
    "advert_interval_units",
    "broadcast_address",
    "changed_settings",
    "garp_settings",
    "held_addresses",
    "instance_identity",
    "instance_params",
    "is_address_owner",
    "master_down_interval",
    "multicast_group",
    "no_accept_addresses",
    "rebuild_reason",
    "receiving_instance",
    "source_address",
    "sync_group_of",
    "tracked_files",
    "tracked_scripts",
    "trackers",
]

SCRIPT_PREFIX = "script:"
INTERFACE_PREFIX = "interface:"
FILE_PREFIX = "file:"


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
        reassert=not config.global_.vrrp.strict,
    )


def source_address(inst: VrrpInstance) -> Address | None:
    """The configured advert source, if any: unicast_src_ip with peers, else mcast_src_ip."""
    return inst.unicast_src_ip if inst.unicast_peers else inst.mcast_src_ip


def trackers(config: LvshaConfig, name: str) -> list[AnyTracker]:
    """The instance's tracked scripts, interfaces and files, each with its effective weight."""
    inst = config.vrrp_instances[name]
    found: list[AnyTracker] = [
        Tracker(
            SCRIPT_PREFIX + track.script,
            track.weight if track.weight is not None else config.vrrp_scripts[track.script].weight,
        )
        for track in inst.track_scripts
    ]
    found += [
        Tracker(INTERFACE_PREFIX + track.interface, track.weight) for track in inst.track_interfaces
    ]
    for ref in inst.track_files:
        track_file = config.vrrp_track_files[ref.file]
        found.append(
            FileTracker(
                FILE_PREFIX + ref.file,
                ref.weight if ref.weight is not None else track_file.weight,
                ref.reverse if ref.reverse is not None else track_file.reverse,
            )
        )
    return found


def multicast_group(config: LvshaConfig, inst: VrrpInstance) -> Address | None:
    """The group the instance's adverts go to and are heard on (global.vrrp.mcast_group4 or
    mcast_group6); None with unicast peers."""
    if inst.unicast_peers:
        return None
    vrrp = config.global_.vrrp
    if inst.family == "ipv6":
        return IPv6Address(vrrp.mcast_group6)
    return IPv4Address(vrrp.mcast_group4)


def no_accept_addresses(config: LvshaConfig) -> frozenset[Address]:
    """Every address packets may not be addressed to (lvsha.net.nft): the VIPs, excluded ones
    too, of each instance with accept: false, but the address owner's (priority 255 always
    accepts, RFC 5798 6.1)."""
    return frozenset(
        held.address.ip
        for inst in config.vrrp_instances.values()
        if not inst.accept and not is_address_owner(inst)
        for held in held_addresses(inst)
    )


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


def receiving_instance(inst: VrrpInstance, strict: bool = False) -> ReceivingInstance:
    """What received adverts are checked against: adverts carry only the non-excluded VIPs.
    `strict` is global.vrrp.strict: an address list that differs is then refused, unless the
    instance skips that check (skip_check_adv_addr, normalized from the global one)."""
    password = _password(inst)
    return ReceivingInstance(
        vrid=inst.virtual_router_id,
        version=VrrpVersion(inst.version),
        advert_interval=advert_interval_units(inst.version, inst.advert_interval),
        virtual_addresses=frozenset(vip.address.ip for vip in inst.virtual_ipaddresses),
        address_owner=is_address_owner(inst),
        auth_type=AuthType.SIMPLE_PASSWORD if password else AuthType.NONE,
        auth_password=password,
        refuse_address_mismatch=strict and not inst.skip_check_adv_addr,
    )


HeldKey: TypeAlias = tuple[str, Address]
"""(interface, address): what makes a held VIP the same one on the interface."""


@dataclass(frozen=True, slots=True)
class HeldAddress:
    """A VIP the master holds: where it goes, with which label, broadcast and scope."""

    address: VirtualAddress
    interface: str
    label: str | None = None
    broadcast: IPv4Address | None = None
    scope: int = 0
    """RT_SCOPE_*; 0 is global."""

    @property
    def key(self) -> HeldKey:
        """What makes it the same address on the interface (its prefix and attributes
        aside)."""
        return (self.interface, self.address.ip)

    @property
    def attributes(self) -> VipAttributes:
        return VipAttributes(self.label, self.broadcast, self.scope)


def broadcast_address(vip: ConfiguredVip) -> IPv4Address | None:
    """The VIP's broadcast address: as written, or from + (host bits set) or - (host bits
    clear) as keepalived derives it."""
    if vip.broadcast is None or vip.address.version != 4:
        return None
    network = vip.address.network
    if vip.broadcast == "+":
        return IPv4Address(network.broadcast_address)
    if vip.broadcast == "-":
        return IPv4Address(network.network_address)
    return IPv4Address(vip.broadcast)


def address_scope(vip: ConfiguredVip) -> int:
    """The VIP's scope as a number (RT_SCOPE_*), global when not configured."""
    if vip.scope is None or vip.address.version != 4:
        return 0
    return SCOPES[vip.scope] if isinstance(vip.scope, str) else vip.scope


def held_addresses(inst: VrrpInstance) -> list[HeldAddress]:
    """Every VIP the master holds, the excluded ones too, each on its device (by default the
    instance's VMAC interface with use_vmac, else its interface)."""
    default = vmac_interface_name(inst) or inst.interface
    return [
        HeldAddress(
            vip.address,
            vip.device or default,
            vip.label,
            broadcast_address(vip),
            address_scope(vip),
        )
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


def tracked_files(config: LvshaConfig) -> dict[str, str]:
    """The vrrp_track_files some instance tracks (only those are watched): name -> path."""
    names = dict.fromkeys(
        ref.file for inst in config.vrrp_instances.values() for ref in inst.track_files
    )
    return {name: config.vrrp_track_files[name].file for name in names}


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
