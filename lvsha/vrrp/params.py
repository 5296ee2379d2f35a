"""From the validated configuration to the plain values the VRRP machine and trackers take."""

from __future__ import annotations

from lvsha.config.model import LvshaConfig
from lvsha.config.vrrp import VrrpInstance
from lvsha.vrrp.events import Address
from lvsha.vrrp.machine import InitialState, InstanceParams
from lvsha.vrrp.tracking import Tracker

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
