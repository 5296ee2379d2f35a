"""Fill in every default that depends on other keys, so the model says what each omission means.

Models carry their built-in defaults; here keys that were not written take their value from
the enclosing level instead (a check from its virtual server, then from `global`), and derived
defaults are settled (an instance's family from its VIPs, v3 for IPv6).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from lvsha.config.checks import CheckTiming, HttpCheck, HttpsCheck
from lvsha.config.lvs import RealServer, VirtualServer
from lvsha.config.model import GlobalConfig, LvshaConfig
from lvsha.config.vrrp import Garp, VrrpInstance, VrrpScript
from lvsha.config.vsgroup import VirtualServerGroup, address_range

M = TypeVar("M", bound=BaseModel)


def inherit(own: M, fields: list[str], *sources: BaseModel) -> M:
    """Keys not set in `own` come from the first source that set them, else from the last."""
    update = {}
    for name in fields:
        if name in own.model_fields_set:
            continue
        for i, source in enumerate(sources):
            if name in source.model_fields_set or i == len(sources) - 1:
                update[name] = getattr(source, name)
                break
    return own.model_copy(update=update) if update else own


TIMING_FIELDS = list(CheckTiming.model_fields)


def _script(script: VrrpScript) -> VrrpScript:
    if "timeout" in script.model_fields_set:
        return script
    return script.model_copy(update={"timeout": script.interval})


def _instance(instance: VrrpInstance, glob: GlobalConfig) -> VrrpInstance:
    update: dict[str, object] = {}
    if "family" not in instance.model_fields_set:
        update["family"] = f"ipv{instance.virtual_ipaddresses[0].address.version}"
    family = update.get("family", instance.family)
    if "version" not in instance.model_fields_set:
        update["version"] = 3 if family == "ipv6" else glob.vrrp.version
    update["garp"] = inherit(instance.garp, list(Garp.model_fields), glob.vrrp.garp)
    if instance.skip_check_adv_addr is None:
        update["skip_check_adv_addr"] = glob.vrrp.skip_check_adv_addr
    return instance.model_copy(update=update)


def _real_server(rs: RealServer, vs: VirtualServer, glob: GlobalConfig) -> RealServer:
    checks = []
    for own in rs.checks:
        check = inherit(own, TIMING_FIELDS, vs.check_defaults, glob.check_defaults)
        update: dict[str, object] = {}
        if check.warmup is None:
            update["warmup"] = check.interval
        if isinstance(check, HttpCheck) and check.virtualhost is None:
            update["virtualhost"] = vs.virtualhost
        if isinstance(check, HttpsCheck) and check.sni is None:
            update["sni"] = update.get("virtualhost", check.virtualhost)
        checks.append(check.model_copy(update=update) if update else check)
    return rs.model_copy(
        update={
            "port": rs.port if rs.port is not None else (vs.port or 0),
            "forwarding": rs.forwarding or vs.forwarding,
            "inhibit_on_failure": (
                rs.inhibit_on_failure
                if rs.inhibit_on_failure is not None
                else vs.inhibit_on_failure
            ),
            "checks": checks,
        }
    )


def _group_family(group: VirtualServerGroup | None) -> str | None:
    """The family a group's members say: its first address's, else its first fwmark's."""
    if group is None:
        return None
    for member in group.members:
        if member.address is not None:
            return f"ipv{address_range(member.address)[0].version}"
    return next((m.family for m in group.members if m.family is not None), None)


def _virtual_server(
    vs: VirtualServer, glob: GlobalConfig, groups: dict[str, VirtualServerGroup]
) -> VirtualServer:
    update: dict[str, object] = {}
    family: str = vs.family
    if "family" not in vs.model_fields_set and vs.address is not None:
        family = update["family"] = f"ipv{vs.address.version}"
    elif "family" not in vs.model_fields_set and vs.group is not None:
        group_family = _group_family(groups.get(vs.group))
        if group_family is not None:
            family = update["family"] = group_family
    if vs.persistence_timeout and vs.persistence_granularity is None:
        update["persistence_granularity"] = 128 if family == "ipv6" else 32
    if vs.sorry_server is not None:
        sorry = vs.sorry_server
        update["sorry_server"] = sorry.model_copy(
            update={
                "port": sorry.port if sorry.port is not None else (vs.port or 0),
                "forwarding": sorry.forwarding or vs.forwarding,
            }
        )
    update["real_servers"] = [_real_server(rs, vs, glob) for rs in vs.real_servers]
    return vs.model_copy(update=update)


def normalize(config: LvshaConfig) -> LvshaConfig:
    glob = config.global_
    instances = {n: _instance(i, glob) for n, i in config.vrrp_instances.items()}
    sync = glob.lvs_sync_daemon
    if sync is not None and sync.sync_id is None and sync.vrrp_instance in instances:
        sync = sync.model_copy(update={"sync_id": instances[sync.vrrp_instance].virtual_router_id})
        glob = glob.model_copy(update={"lvs_sync_daemon": sync})
    return config.model_copy(
        update={
            "global_": glob,
            "vrrp_scripts": {n: _script(s) for n, s in config.vrrp_scripts.items()},
            "vrrp_instances": instances,
            "virtual_servers": [
                _virtual_server(vs, glob, config.virtual_server_groups)
                for vs in config.virtual_servers
            ],
        }
    )
