"""Rules that span several keys: references, uniqueness and contradictions.

They run on the normalized model, so inherited defaults count, and each finding names the one
key to change.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lvsha.config.checks import HttpCheck, HttpsCheck, PortCheck, UdpCheck
from lvsha.config.lvs import RealServer, VirtualServer
from lvsha.config.model import AlertmanagerSink, LvshaConfig, SmtpSink, WebhookSink
from lvsha.config.source import Path, format_path
from lvsha.config.vrrp import VrrpInstance, VrrpScript, VrrpTrackFile, vmac_interface_name
from lvsha.config.vsgroup import VirtualServerGroup

# Adverts must fit an Ethernet MTU: 20/40 bytes of IP header, 8 of VRRP, 4/16 per address.
MAX_VIPS = {"ipv4": 255, "ipv6": 90}
# 65,535 bytes of IPv4 datagram less 20 of IP header and 8 of UDP header.
MAX_UDP_PAYLOAD = 65507


@dataclass(frozen=True, slots=True)
class Finding:
    path: Path
    message: str
    at: Literal["key", "value"] = "value"


class _Findings:
    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(self, path: Path, message: str, at: Literal["key", "value"] = "value") -> None:
        self.items.append(Finding(path, message, at))


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f": did you mean '{close[0]}'?" if close else ""


def _advert_interval(out: _Findings, path: Path, inst: VrrpInstance) -> None:
    seconds = inst.advert_interval
    if inst.version == 2:
        if seconds != int(seconds) or not 1 <= seconds <= 255:
            out.add(
                (*path, "advert_interval"),
                f"VRRPv2 adverts carry whole seconds 1-255, got {seconds:g}: "
                "round it, or use version: 3 for sub-second intervals",
            )
        return
    centis = round(seconds * 100)
    if abs(centis - seconds * 100) > 1e-6 or not 1 <= centis <= 4095:
        out.add(
            (*path, "advert_interval"),
            f"VRRPv3 intervals are 0.01-40.95 s in steps of 10 ms, got {seconds:g}",
        )


def _vips(out: _Findings, path: Path, inst: VrrpInstance) -> None:
    seen: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Path] = {}
    for key in ("virtual_ipaddresses", "virtual_ipaddresses_excluded"):
        for i, vip in enumerate(getattr(inst, key)):
            vpath = (*path, key, i)
            family = f"ipv{vip.address.version}"
            if key == "virtual_ipaddresses" and family != inst.family:
                out.add(
                    vpath,
                    f"{vip.address} is {family} but the instance is {inst.family}: one instance "
                    "carries one family; put it in virtual_ipaddresses_excluded or in another "
                    "instance",
                )
            if vip.address.ip in seen:
                out.add(
                    vpath,
                    f"{vip.address.ip} is listed twice (also {format_path(seen[vip.address.ip])})",
                )
            seen[vip.address.ip] = vpath
            device = vip.device or inst.interface
            if vip.label is not None and not vip.label.startswith(f"{device}:"):
                out.add(
                    (*vpath, "label"),
                    f"label '{vip.label}' must start with the device name: '{device}:...'",
                )
            if vip.address.version == 6:
                for attribute in ("broadcast", "scope"):
                    if getattr(vip, attribute) is not None:
                        out.add(
                            (*vpath, attribute),
                            f"{attribute} applies to IPv4 VIPs only (the kernel has no "
                            f"{attribute} for IPv6 addresses): remove it",
                        )
            elif vip.broadcast in ("+", "-") and vip.address.network.prefixlen > 30:
                out.add(
                    (*vpath, "broadcast"),
                    f"a /{vip.address.network.prefixlen} has no broadcast address to derive: "
                    "write the address, or remove broadcast",
                )
    limit = MAX_VIPS[inst.family]
    if len(inst.virtual_ipaddresses) > limit:
        out.add(
            (*path, "virtual_ipaddresses"),
            f"{len(inst.virtual_ipaddresses)} {inst.family} VIPs do not fit one advert (at most "
            f"{limit}): move the rest to virtual_ipaddresses_excluded",
        )


def _election(out: _Findings, path: Path, inst: VrrpInstance) -> None:
    if inst.family == "ipv6" and inst.version == 2:
        out.add(
            (*path, "version"),
            "VRRPv2 has no IPv6 (RFC 3768): use version: 3 for IPv6 VIPs",
        )
    if inst.priority == 255:
        own = inst.unicast_src_ip or inst.mcast_src_ip
        vips = {vip.address.ip for vip in inst.virtual_ipaddresses}
        if own is None or own not in vips:
            out.add(
                (*path, "priority"),
                "priority 255 is reserved for the owner of the VIPs (RFC 5798 5.2.4): use "
                "1-254, or set unicast_src_ip / mcast_src_ip to the VIP this router owns",
            )
    if not inst.preempt and inst.priority == 255:
        out.add(
            (*path, "preempt"),
            "the address owner (priority 255) always preempts (RFC 5798 6.4.1): remove "
            "preempt: false, or use a priority of 1-254",
        )
    if not inst.preempt and inst.state == "MASTER":
        out.add(
            (*path, "preempt"),
            "preempt: false with state: MASTER is contradictory (keepalived silently drops "
            "nopreempt here): use state: BACKUP with preempt: false, or remove preempt: false",
        )
    if inst.preempt and inst.preempt_delay > 0 and inst.state == "MASTER":
        out.add(
            (*path, "preempt_delay"),
            "preempt_delay holds back a backup's takeover; with state: MASTER it is "
            "contradictory: use state: BACKUP, or remove preempt_delay",
        )
    if not inst.preempt and inst.preempt_delay > 0:
        out.add(
            (*path, "preempt_delay"),
            "preempt_delay does nothing with preempt: false: remove one of them",
        )
    if inst.authentication is not None and inst.version == 3:
        out.add(
            (*path, "authentication"),
            "VRRPv3 has no authentication (RFC 5798 removed it): remove it or use version: 2",
        )


def _addresses(out: _Findings, path: Path, inst: VrrpInstance) -> None:
    version = 6 if inst.family == "ipv6" else 4
    for key in ("mcast_src_ip", "unicast_src_ip"):
        addr = getattr(inst, key)
        if addr is not None and addr.version != version:
            out.add((*path, key), f"{addr} is not {inst.family} like the instance")
    if inst.unicast_peers and inst.mcast_src_ip is not None:
        out.add(
            (*path, "mcast_src_ip"),
            "mcast_src_ip is for multicast, but unicast_peers are set: use unicast_src_ip",
        )
    if inst.unicast_src_ip is not None and not inst.unicast_peers:
        out.add(
            (*path, "unicast_src_ip"),
            "unicast_src_ip without unicast_peers: add the peers, or remove it",
        )
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for i, peer in enumerate(inst.unicast_peers):
        ppath = (*path, "unicast_peers", i)
        if peer.version != version:
            out.add(ppath, f"peer {peer} is not {inst.family} like the instance")
        if peer in seen:
            out.add(ppath, f"peer {peer} is listed twice")
        if peer == inst.unicast_src_ip:
            out.add(ppath, f"peer {peer} is this router's own unicast_src_ip")
        seen.add(peer)


def _strict(out: _Findings, path: Path, inst: VrrpInstance) -> None:
    """global.vrrp.strict: what the RFCs forbid and keepalived's vrrp_strict refuses (or
    silently resets), refused here with the key to change."""
    why = "global.vrrp.strict"
    if inst.authentication is not None:
        out.add(
            (*path, "authentication"),
            f"{why}: RFC 3768 removed authentication and RFC 5798 has none: remove it, or "
            "turn strict off",
        )
    if inst.unicast_peers:
        out.add(
            (*path, "unicast_peers"),
            f"{why}: VRRP is multicast (RFC 5798 5.1.1.2): remove the unicast peers, or turn "
            "strict off",
        )
    if inst.preempt_delay > 0:
        out.add(
            (*path, "preempt_delay"),
            f"{why}: the RFCs have no preempt delay: remove it, or turn strict off",
        )
    if inst.state == "MASTER" and inst.priority != 255:
        out.add(
            (*path, "state"),
            f"{why}: only the address owner (priority 255) starts as master (RFC 5798 6.4.1): "
            "use state: BACKUP, or turn strict off",
        )
    first = inst.virtual_ipaddresses[0].address.ip
    if inst.family == "ipv6" and not first.is_link_local:
        out.add(
            (*path, "virtual_ipaddresses", 0),
            f"{why}: the first IPv6 address must be the link-local one (RFC 5798 5.2.9), not "
            f"{first}: put a fe80:: VIP first, or turn strict off",
        )
    if inst.version == 2 and inst.accept and inst.priority != 255:
        out.add(
            (*path, "accept"),
            f"{why}: a VRRPv2 router that does not own the VIPs must not accept packets "
            "addressed to them (RFC 3768 6.4.3): set accept: false, or turn strict off",
        )


def _tracking(
    out: _Findings,
    path: Path,
    inst: VrrpInstance,
    scripts: dict[str, VrrpScript],
    files: dict[str, VrrpTrackFile],
) -> None:
    names: set[str] = set()
    for i, track in enumerate(inst.track_scripts):
        tpath = (*path, "track_scripts", i)
        if track.script not in scripts:
            out.add(
                tpath,
                f"no vrrp_scripts entry named '{track.script}'{_suggest(track.script, scripts)}",
            )
        if track.script in names:
            out.add(tpath, f"script '{track.script}' is tracked twice")
        names.add(track.script)
    interfaces: set[str] = set()
    for i, iface in enumerate(inst.track_interfaces):
        if iface.interface in interfaces:
            out.add(
                (*path, "track_interfaces", i), f"interface '{iface.interface}' is tracked twice"
            )
        interfaces.add(iface.interface)
    tracked_files: set[str] = set()
    for i, ref in enumerate(inst.track_files):
        fpath = (*path, "track_files", i)
        if ref.file not in files:
            out.add(
                fpath,
                f"no vrrp_track_files entry named '{ref.file}'{_suggest(ref.file, files)}",
            )
        if ref.file in tracked_files:
            out.add(fpath, f"track file '{ref.file}' is tracked twice")
        tracked_files.add(ref.file)


def _vmac(out: _Findings, config: LvshaConfig) -> None:
    """VMAC settings: only with use_vmac, one VMAC interface per instance, never an
    interface the configuration uses otherwise."""
    used: dict[str, str] = {}
    for name, inst in config.vrrp_instances.items():
        used.setdefault(inst.interface, f"the interface of vrrp_instances.{name}")
        for track in inst.track_interfaces:
            used.setdefault(track.interface, f"tracked by vrrp_instances.{name}")
    sync_daemon = config.global_.lvs_sync_daemon
    if sync_daemon is not None:
        used.setdefault(sync_daemon.interface, "the interface of global.lvs_sync_daemon")
    owners: dict[str, str] = {}
    for name, inst in config.vrrp_instances.items():
        path: Path = ("vrrp_instances", name)
        for key in ("vmac_interface", "vmac_xmit_base"):
            if getattr(inst, key) not in (None, False) and not inst.use_vmac:
                out.add(
                    (*path, key),
                    f"{key} of vrrp_instances.{name} needs use_vmac: true: add it, or remove {key}",
                )
        vmac = vmac_interface_name(inst)
        if vmac is None:
            continue
        if inst.vmac_xmit_base and inst.family == "ipv6":
            out.add(
                (*path, "vmac_xmit_base"),
                f"vmac_xmit_base of vrrp_instances.{name} is not supported for IPv6 by lvsha: "
                "a backup's VMAC sends MLD reports from the virtual MAC, which draw the "
                "master's traffic to the backup, and adverts sent from the interface never "
                "draw it back (keepalived drops those reports with firewall rules lvsha does "
                "not write); remove vmac_xmit_base",
            )
        key_path = (*path, "vmac_interface") if inst.vmac_interface else (*path, "use_vmac")
        default = "" if inst.vmac_interface else " (the default name, vrrp.VRID)"
        if vmac in owners:
            out.add(
                key_path,
                f"VMAC interface {vmac}{default} of vrrp_instances.{name} is already the VMAC "
                f"interface of vrrp_instances.{owners[vmac]}: give each its own "
                "vmac_interface",
            )
        elif vmac in used:
            out.add(
                key_path,
                f"VMAC interface {vmac}{default} of vrrp_instances.{name} is {used[vmac]}: "
                "lvsha creates and removes its VMAC interface, so it must be a name of its "
                "own; set vmac_interface to another name",
            )
        owners.setdefault(vmac, name)


def _vrrp(out: _Findings, config: LvshaConfig) -> None:
    routers: dict[tuple[str, int, str], str] = {}
    _vmac(out, config)
    for name, inst in config.vrrp_instances.items():
        path: Path = ("vrrp_instances", name)
        _advert_interval(out, path, inst)
        _vips(out, path, inst)
        _election(out, path, inst)
        _addresses(out, path, inst)
        _tracking(out, path, inst, config.vrrp_scripts, config.vrrp_track_files)
        if config.global_.vrrp.strict:
            _strict(out, path, inst)
        router = (inst.interface, inst.virtual_router_id, inst.family)
        if router in routers:
            out.add(
                (*path, "virtual_router_id"),
                f"virtual router {inst.virtual_router_id} on {inst.interface} ({inst.family}) is "
                f"already vrrp_instances.{routers[router]}: each instance needs its own "
                "virtual_router_id on an interface",
            )
        else:
            routers[router] = name
    for name, script in config.vrrp_scripts.items():
        if script.timeout > script.interval:
            out.add(
                ("vrrp_scripts", name, "timeout"),
                f"timeout {script.timeout:g} s is longer than interval {script.interval:g} s: "
                "runs would overlap; shorten the timeout or lengthen the interval",
            )
    for name, track_file in config.vrrp_track_files.items():
        if track_file.init_overwrite and track_file.init is None:
            out.add(
                ("vrrp_track_files", name, "init_overwrite"),
                "init_overwrite writes `init` over the file at start-up: set init (the number "
                "to write, e.g. 0)",
            )
    member_of: dict[str, str] = {}
    for group, sync in config.sync_groups.items():
        listed: set[str] = set()
        for i, member in enumerate(sync.instances):
            mpath: Path = ("sync_groups", group, "instances", i)
            if member not in config.vrrp_instances:
                known = config.vrrp_instances
                out.add(mpath, f"no vrrp_instances entry named '{member}'{_suggest(member, known)}")
            elif member in listed:
                out.add(mpath, f"'{member}' is listed twice")
            elif member in member_of:
                out.add(
                    mpath,
                    f"'{member}' is already in sync group '{member_of[member]}': an instance "
                    "belongs to one group",
                )
            listed.add(member)
            member_of.setdefault(member, group)
    sync_daemon = config.global_.lvs_sync_daemon
    if sync_daemon is not None and sync_daemon.vrrp_instance not in config.vrrp_instances:
        name = sync_daemon.vrrp_instance
        out.add(
            ("global", "lvs_sync_daemon", "vrrp_instance"),
            f"no vrrp_instances entry named '{name}'{_suggest(name, config.vrrp_instances)}",
        )


def _service_key(out: _Findings, path: Path, vs: VirtualServer, explicit_family: bool) -> None:
    if vs.group is not None:
        for key in ("address", "port", "fwmark"):
            if getattr(vs, key) is not None:
                out.add(
                    (*path, key),
                    f"a virtual server with a group has no {key} of its own (its services are "
                    f"the members of group '{vs.group}'): remove {key}, or remove group",
                )
        return
    if vs.fwmark is not None:
        for key in ("address", "port", "protocol"):
            if getattr(vs, key) is not None:
                out.add(
                    (*path, key),
                    f"a fwmark service has no {key}: remove it, or remove fwmark",
                )
        return
    if vs.address is None:
        out.add(path, "missing key 'address' (with port and protocol), or 'fwmark'")
        return
    if vs.protocol is None:
        out.add(
            path,
            "missing required key 'protocol' (TCP, UDP or SCTP): keepalived silently "
            "assumes UDP here; say which one",
        )
    if vs.port is None:
        out.add(path, "missing required key 'port' (0 means all ports, with persistence)")
    elif vs.port == 0 and not vs.persistence_timeout:
        out.add(
            (*path, "port"),
            "port 0 (all ports) needs persistence_timeout: IPVS accepts it only for "
            "persistent services",
        )
    if explicit_family and f"ipv{vs.address.version}" != vs.family:
        out.add((*path, "family"), f"family {vs.family} does not match address {vs.address}")


def _service_options(out: _Findings, path: Path, vs: VirtualServer) -> None:
    for i, flag in enumerate(vs.scheduler_flags):
        owner = flag.split("-")[0]
        if owner != vs.scheduler:
            out.add(
                (*path, "scheduler_flags", i),
                f"{flag} is a flag of the {owner} scheduler, not of {vs.scheduler}",
            )
    if vs.ops and vs.protocol != "UDP":
        out.add((*path, "ops"), "one-packet scheduling (ops) is for UDP services only")
    if vs.persistence_granularity is not None:
        limit = 128 if vs.family == "ipv6" else 32
        if not vs.persistence_timeout:
            out.add(
                (*path, "persistence_granularity"),
                "persistence_granularity needs persistence_timeout",
            )
        elif vs.persistence_granularity > limit:
            out.add(
                (*path, "persistence_granularity"),
                f"an {vs.family} prefix length is 0-{limit}, got {vs.persistence_granularity}",
            )
    if vs.hysteresis >= vs.quorum:
        out.add(
            (*path, "hysteresis"),
            f"hysteresis {vs.hysteresis} must be less than quorum {vs.quorum}, or the sorry "
            "server could never go in",
        )
    sorry = vs.sorry_server
    if (
        sorry is not None
        and f"ipv{sorry.address.version}" != vs.family
        and sorry.forwarding != "TUN"
    ):
        out.add(
            (*path, "sorry_server", "address"),
            f"{sorry.address} is not {vs.family} like the service (mixed families need TUN)",
        )


def _port_rule(
    out: _Findings,
    path: Path,
    vs: VirtualServer,
    rs: RealServer,
    groups: dict[str, VirtualServerGroup],
) -> None:
    group = groups.get(vs.group) if vs.group is not None else None
    if group is not None and rs.forwarding in ("DR", "TUN") and rs.port:
        ports = sorted({m.port for m in group.members if m.port} - {rs.port})
        if ports:
            out.add(
                (*path, "port"),
                f"with {rs.forwarding} the real server port must equal the virtual port, but "
                f"group '{vs.group}' has members on port {ports[0]} (only NAT can map ports): "
                "remove port or use NAT",
            )
        return
    if rs.forwarding in ("DR", "TUN") and vs.port and rs.port and rs.port != vs.port:
        out.add(
            (*path, "port"),
            f"with {rs.forwarding} the real server port must equal the virtual server port "
            f"{vs.port} (only NAT can map ports): remove port or use NAT",
        )


def _checks(out: _Findings, path: Path, rs: RealServer) -> None:
    for i, check in enumerate(rs.checks):
        cpath = (*path, "checks", i)
        if isinstance(check, PortCheck) and check.port is None and not rs.port:
            out.add(
                cpath,
                f"a {check.type} check needs a port: set port on the check or on the real server",
            )
        if isinstance(check, HttpCheck):
            if check.digest is not None and check.method == "HEAD":
                out.add((*cpath, "digest"), "a HEAD response has no body to digest: use GET")
            if check.regex is not None and check.method == "HEAD":
                out.add((*cpath, "regex"), "a HEAD response has no body to match: use GET")
            if check.regex_negate and check.regex is None:
                out.add((*cpath, "regex_negate"), "regex_negate needs a regex")
        if isinstance(check, HttpsCheck):
            if (check.client_cert is None) != (check.client_key is None):
                which = "client_key" if check.client_key is None else "client_cert"
                out.add(cpath, f"client_cert and client_key go together: add {which}")
            if check.ca_file is not None and not check.tls_verify:
                out.add((*cpath, "ca_file"), "ca_file is only used with tls_verify: true")
        if isinstance(check, UdpCheck):
            _udp(out, cpath, check)


def _udp(out: _Findings, path: Path, check: UdpCheck) -> None:
    if check.payload is not None and check.payload_hex is not None:
        out.add((*path, "payload_hex"), "set payload or payload_hex, not both")
    expects = [k for k in ("expect", "expect_hex", "expect_regex") if getattr(check, k)]
    if len(expects) > 1:
        out.add((*path, expects[1]), f"set one of expect, expect_hex, expect_regex, not {expects}")
    if expects and not check.require_reply:
        out.add(
            (*path, expects[0]),
            f"{expects[0]} needs a reply, but require_reply is false: remove one of them",
        )
    for key in ("payload_hex", "expect_hex"):
        text = getattr(check, key)
        if text is not None:
            try:
                bytes.fromhex(text)
            except ValueError:
                out.add((*path, key), f"'{text}' is not hex bytes (e.g. '0a1b ff')")
    payload = (
        len(check.payload.encode())
        if check.payload is not None
        else len(check.payload_hex or "") // 2
    )
    if payload > MAX_UDP_PAYLOAD:
        key = "payload" if check.payload is not None else "payload_hex"
        out.add(
            (*path, key),
            f"{payload} bytes do not fit one UDP datagram (at most {MAX_UDP_PAYLOAD})",
        )


def _virtual_servers(out: _Findings, config: LvshaConfig, explicit: list[bool]) -> None:
    services: dict[tuple[object, ...], str] = {}
    users: dict[str, int] = {}
    for n, vs in enumerate(config.virtual_servers):
        path: Path = ("virtual_servers", n)
        _service_key(out, path, vs, explicit[n])
        _service_options(out, path, vs)
        if vs.group is None:
            key = (
                ("fwmark", vs.fwmark, vs.family)
                if vs.fwmark is not None
                else (vs.protocol, vs.address, vs.port)
            )
            if key in services:
                out.add(
                    path,
                    f"the same service as {services[key]}: each address, port and "
                    "protocol (or fwmark and family) is one virtual server",
                )
            else:
                services[key] = f"virtual_servers[{n}]"
        elif vs.group in users:
            out.add(
                (*path, "group"),
                f"group '{vs.group}' is already virtual_servers[{users[vs.group]}]'s: a group's "
                "services belong to one virtual server; define another group",
            )
        elif vs.group not in config.virtual_server_groups:
            known = config.virtual_server_groups
            out.add(
                (*path, "group"),
                f"no virtual_server_groups entry named '{vs.group}'{_suggest(vs.group, known)}",
            )
        else:
            users[vs.group] = n
            _group_services(out, n, vs, config.virtual_server_groups[vs.group], services)
        seen: dict[tuple[object, ...], int] = {}
        for m, rs in enumerate(vs.real_servers):
            rpath = (*path, "real_servers", m)
            rs_key = (rs.address, rs.port)
            if rs_key in seen:
                out.add(
                    rpath,
                    f"real server {rs.address} port {rs.port} is listed twice (also real_servers"
                    f"[{seen[rs_key]}]): merge them",
                )
            seen.setdefault(rs_key, m)
            if f"ipv{rs.address.version}" != vs.family and rs.forwarding != "TUN":
                out.add(
                    (*rpath, "address"),
                    f"{rs.address} is not {vs.family} like the service (IPVS mixes families "
                    "only with TUN)",
                )
            if rs.lower_threshold and not rs.upper_threshold:
                out.add(
                    (*rpath, "lower_threshold"),
                    "lower_threshold needs an upper_threshold (IPVS refuses it alone)",
                )
            elif rs.upper_threshold and rs.lower_threshold > rs.upper_threshold:
                out.add(
                    (*rpath, "lower_threshold"),
                    f"lower_threshold {rs.lower_threshold} is above upper_threshold "
                    f"{rs.upper_threshold}",
                )
            _port_rule(out, rpath, vs, rs, config.virtual_server_groups)
            _checks(out, rpath, rs)


def _group_services(
    out: _Findings,
    n: int,
    vs: VirtualServer,
    group: VirtualServerGroup,
    services: dict[tuple[object, ...], str],
) -> None:
    """The members of the group virtual server `n` serves: each a service of `vs.family` that
    no other virtual server (nor another member) has."""
    assert vs.group is not None
    path: Path = ("virtual_servers", n)
    has_addresses = any(member.address is not None for member in group.members)
    if has_addresses and vs.protocol is None:
        out.add(
            path,
            "missing required key 'protocol' (TCP, UDP or SCTP) for the address members of "
            f"group '{vs.group}': keepalived silently assumes UDP here; say which one",
        )
    for i, member in enumerate(group.members):
        mpath: Path = ("virtual_server_groups", vs.group, "members", i)
        keys: list[tuple[object, ...]] = []
        if member.fwmark is not None:
            family = member.family or vs.family
            if family != vs.family:
                out.add(
                    (*mpath, "family"),
                    f"fwmark {member.fwmark} is {family}, but virtual_servers[{n}] is "
                    f"{vs.family} like its real servers: one virtual server serves one family",
                )
            keys.append(("fwmark", member.fwmark, family))
        else:
            addresses = member.addresses()
            address_family = f"ipv{addresses[0].version}"
            if address_family != vs.family:
                out.add(
                    (*mpath, "address"),
                    f"{member.address} is {address_family}, but virtual_servers[{n}] is "
                    f"{vs.family} like its real servers: one virtual server serves one "
                    "family; use another group for the other family",
                )
            port = member.port or 0
            if port == 0 and not vs.persistence_timeout:
                out.add(
                    mpath,
                    f"{member.address} has no port (all ports): IPVS accepts that only for "
                    f"persistent services: set persistence_timeout on virtual_servers[{n}], or "
                    "give the member a port",
                )
            keys.extend((vs.protocol, address, port) for address in addresses)
        where = f"virtual_server_groups.{vs.group}.members[{i}]"
        for key in keys:
            if key in services:
                shown = f"fwmark {key[1]}" if key[0] == "fwmark" else f"{key[1]} port {key[2]}"
                out.add(
                    mpath,
                    f"{shown} is already the service of {services[key]}: a service belongs to "
                    "one virtual server, once",
                )
                break
            services[key] = where


def _unused_groups(out: _Findings, config: LvshaConfig) -> None:
    used = {vs.group for vs in config.virtual_servers}
    if any(name is not None and name not in config.virtual_server_groups for name in used):
        return  # a misspelt group: its own finding says which one was meant
    for name in config.virtual_server_groups:
        if name not in used:
            out.add(
                ("virtual_server_groups", name),
                f"group '{name}' is used by no virtual server: add `group: {name}` to one, or "
                "remove the group",
                at="key",
            )


def _global(out: _Findings, config: LvshaConfig) -> None:
    note = config.global_.notification
    if note.email and note.smtp_server is None:
        out.add(
            ("global", "notification", "email"),
            "email recipients need smtp_server: add it, or remove email",
        )
    _sinks(out, config)
    if not config.vrrp_instances and not config.virtual_servers:
        out.add((), "nothing to do: define vrrp_instances or virtual_servers")


def _sinks(out: _Findings, config: LvshaConfig) -> None:
    note = config.global_.notification
    names: dict[str, str] = {}
    if note.email and note.smtp_server is not None:
        names["email"] = "email and smtp_server"
    if note.webhook_url is not None:
        names["webhook"] = "webhook_url"
    counts: dict[str, int] = {}
    for n, sink in enumerate(note.sinks):
        path = ("global", "notification", "sinks", n)
        counts[sink.type] = counts.get(sink.type, 0) + 1
        name = sink.name or f"{sink.type}-{counts[sink.type]}"
        if name in names:
            out.add(
                (*path, "name"),
                f"sink name '{name}' is taken (by {names[name]}): give each sink its own name",
            )
        names[name] = f"sinks[{n}]"
        secrets = []
        if isinstance(sink, SmtpSink):
            if (sink.username is None) != (sink.password_file is None):
                out.add(
                    (*path, "username" if sink.username is None else "password_file"),
                    "username and password_file go together: set both to log in, or neither",
                )
            secrets.append(("password_file", sink.password_file))
        elif isinstance(sink, WebhookSink):
            secrets.append(("secret_file", sink.secret_file))
        elif isinstance(sink, AlertmanagerSink):
            for label in sink.labels:
                if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
                    out.add(
                        (*path, "labels", label),
                        f"'{label}' is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    )
                elif label in ("alertname", "router_id", "severity") or label.startswith("__"):
                    out.add(
                        (*path, "labels", label),
                        f"label '{label}' is lvsha's to set: choose another name",
                    )
        for key, file in secrets:
            if file is None:
                continue
            try:
                with open(file, "rb") as handle:
                    empty = not handle.read().strip()
            except OSError as exc:
                out.add((*path, key), f"cannot read {file}: {exc.strerror or exc}")
                continue
            if empty:
                out.add((*path, key), f"{file} is empty")


def _bgp(out: _Findings, config: LvshaConfig) -> None:
    bgp = config.bgp
    if bgp is None:
        return
    named = {vs.name: vs for vs in config.virtual_servers if vs.name is not None}
    seen: set[str] = set()
    for n, name in enumerate(bgp.announce):
        path: Path = ("bgp", "announce", n)
        if name in seen:
            out.add(path, f"'{name}' is announced twice: name each virtual server once")
            continue
        seen.add(name)
        vs = named.get(name)
        if vs is None:
            out.add(
                path,
                f"no virtual server named '{name}' (announce virtual servers by their "
                f"`name`){_suggest(name, named)}",
            )
        elif vs.group is not None or vs.address is None:
            what = f"group '{vs.group}'" if vs.group is not None else f"fwmark {vs.fwmark}"
            out.add(
                path,
                f"'{name}' serves {what}, not one address: announce virtual servers that have "
                "an `address` (its /32 or /128 route is what lvsha announces)",
            )
    peers: set[str] = set()
    for n, peer in enumerate(bgp.peers):
        if str(peer.address) in peers:
            out.add(("bgp", "peers", n, "address"), f"peer {peer.address} is listed twice")
        peers.add(str(peer.address))
    families = {vs.address.version for vs in named.values() if vs.name in seen and vs.address}
    for version in sorted(families):
        if not any(peer.address.version == version for peer in bgp.peers):
            out.add(
                ("bgp", "peers"),
                f"IPv{version} addresses are announced but no peer has an IPv{version} address: "
                f"lvsha announces a family's routes to the peers of that family",
            )


def check_semantics(config: LvshaConfig, explicit_vs_family: list[bool]) -> list[Finding]:
    """`explicit_vs_family[n]`: whether virtual server n wrote `family` itself."""
    out = _Findings()
    _global(out, config)
    _vrrp(out, config)
    _virtual_servers(out, config, explicit_vs_family)
    _unused_groups(out, config)
    _bgp(out, config)
    return out.items
