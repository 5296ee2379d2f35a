"""keepalived.conf statements mapped onto lvsha's configuration model.

Each keyword met is either mapped, or noted with why it was not and what to do. Where lvsha
is stricter than keepalived, the mapping keeps keepalived's behaviour on the wire and says so
(`Note.kind == "changed"`): an `auth_pass` longer than 8 characters is cut to the 8 keepalived
sends; `nopreempt` on an instance in state MASTER (which keepalived ignores) becomes
`preempt: true`; an absent `enable_script_security` is written as false, keepalived's default;
keepalived's VRRP version 2 is written out; a script using shell syntax runs under `sh -c`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lvsha.keepalived.syntax import Parsed, Statement, Where

NoteKind = Literal["dropped", "changed", "ignored"]


@dataclass(frozen=True, slots=True)
class Note:
    where: Where
    keyword: str
    text: str
    kind: NoteKind

    def __str__(self) -> str:
        return f"{self.where}: {self.keyword}: {self.text}"


@dataclass(slots=True)
class Imported:
    document: dict[str, Any]
    notes: list[Note] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether everything was mapped (nothing dropped)."""
        return not any(note.kind == "dropped" for note in self.notes)


OBSOLETE = {
    "nat_mask": "obsolete: keepalived ignores it too; nothing to do",
    "lvs_id": "obsolete (keepalived 1.x): router_id names the director",
    "nb_sock_retry": "obsolete: keepalived ignores it too",
}
"""Keywords keepalived itself ignores."""

UNSUPPORTED = {
    "use_vmac": "VMAC is not supported by lvsha yet: the VIPs go on the interface itself",
    "vmac_xmit_base": "VMAC is not supported by lvsha yet",
    "vrrp_strict": "not supported by lvsha yet; lvsha follows the RFC checks it needs",
    "vrrp_skip_check_adv_addr": "not supported by lvsha yet (lvsha takes such adverts and "
    "counts them in lvsha_vrrp_address_list_mismatch_total)",
    "dont_track_primary": "not supported by lvsha yet",
    "accept": "not supported by lvsha yet",
    "no_accept": "not supported by lvsha yet",
    "vrrp_mcast_group4": "not supported by lvsha yet: lvsha uses 224.0.0.18",
    "vrrp_mcast_group6": "not supported by lvsha yet: lvsha uses ff02::12",
    "track_file": "not supported by lvsha yet",
    "virtual_server_group": "not supported by lvsha yet: write one virtual server per member",
    "SMTP_CHECK": "not supported by lvsha yet: use a tcp check, or a script check",
    "notify_up": "not supported by lvsha yet",
    "notify_down": "not supported by lvsha yet",
    "lvs_timeouts": "not supported by lvsha: set them with ipvsadm --set",
    "lvs_flush": "lvsha adopts the IPVS table it finds instead of flushing it",
    "static_ipaddress": "not supported by lvsha: configure the addresses with the system",
    "static_routes": "not supported by lvsha: configure the routes with the system",
    "static_rules": "not supported by lvsha: configure the rules with the system",
    "virtual_routes": "not supported by lvsha yet",
    "virtual_rules": "not supported by lvsha yet",
    "net_namespace": "not supported: run lvsha in the namespace instead (ip netns exec)",
    "BFD_CHECK": "not supported by lvsha",
    "FILE_CHECK": "not supported by lvsha yet: use a script check",
    "omega": "not supported by lvsha yet (quorum_up/quorum_down at start and stop)",
    "quorum_up": "not supported by lvsha yet: lvsha sends a quorum alert instead",
    "quorum_down": "not supported by lvsha yet: lvsha sends a quorum alert instead",
}
"""keepalived keywords lvsha cannot say yet."""

_SHELL = re.compile(r"[|&;<>()`$]|\|\||&&")


def command(text: str) -> str | list[str]:
    """A keepalived script line as an lvsha command: a shell's syntax runs under sh -c."""
    if _SHELL.search(text):
        return ["sh", "-c", text]
    return text


def seconds(value: str) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else number


class _Mapper:
    def __init__(self) -> None:
        self.notes: list[Note] = []

    def note(self, statement: Statement, text: str, kind: NoteKind = "dropped") -> None:
        self.notes.append(Note(statement.where, statement.keyword, text, kind))

    def unmapped(self, statement: Statement, block: str) -> None:
        keyword = statement.keyword
        if keyword in OBSOLETE:
            self.note(statement, OBSOLETE[keyword], "ignored")
        elif keyword in UNSUPPORTED:
            self.note(statement, UNSUPPORTED[keyword])
        else:
            self.note(
                statement,
                f"not a {block} keyword lvsha knows keepalived to have (a typo?): left out; "
                "check it against keepalived.conf(5)",
            )

    def value(self, statement: Statement, count: int = 1) -> list[str] | None:
        if len(statement.args) < count:
            self.note(statement, f"expects {count} value(s), has {len(statement.args)}: left out")
            return None
        return statement.args

    def number(self, statement: Statement, convert: Callable[[str], Any] = int) -> Any:
        args = self.value(statement)
        if args is None:
            return None
        try:
            return convert(args[0])
        except ValueError:
            self.note(statement, f"'{args[0]}' is not a number: left out")
            return None


def map_config(parsed: Parsed) -> Imported:
    mapper = _Mapper()
    document: dict[str, Any] = {"global": {}}
    glob: dict[str, Any] = document["global"]
    seen_security = False
    global_version: int | None = None
    instances: dict[str, Any] = {}
    scripts: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    servers: list[dict[str, Any]] = []
    sync_daemons: list[dict[str, Any]] = []
    for statement in parsed.statements:
        keyword = statement.keyword
        if keyword == "global_defs":
            seen_security, global_version = _global_defs(mapper, statement, glob, seen_security)
        elif keyword == "vrrp_script":
            _vrrp_script(mapper, statement, scripts)
        elif keyword == "vrrp_instance":
            _vrrp_instance(mapper, statement, instances, sync_daemons)
        elif keyword == "vrrp_sync_group":
            _sync_group(mapper, statement, groups)
        elif keyword == "virtual_server":
            _virtual_server(mapper, statement, servers)
        else:
            mapper.unmapped(statement, "top-level")
    if not seen_security:
        glob["enable_script_security"] = False
        first = parsed.statements[0] if parsed.statements else None
        if first is not None:
            mapper.notes.append(
                Note(
                    first.where,
                    "enable_script_security",
                    "absent, so off as in keepalived (lvsha's own default is on): written as "
                    "false; turn it on once the scripts are owned by root",
                    "changed",
                )
            )
    if sync_daemons and "lvs_sync_daemon" not in glob:
        glob["lvs_sync_daemon"] = sync_daemons[0]
    for instance in instances.values():
        if "version" not in instance:
            instance["version"] = global_version or (3 if instance.get("family") == "ipv6" else 2)
    if scripts:
        document["vrrp_scripts"] = scripts
    if instances:
        document["vrrp_instances"] = instances
    if groups:
        document["sync_groups"] = groups
    if servers:
        document["virtual_servers"] = servers
    if not document["global"]:
        del document["global"]
    return Imported(document, mapper.notes)


def _global_defs(
    mapper: _Mapper, block: Statement, glob: dict[str, Any], seen_security: bool
) -> tuple[bool, int | None]:
    version: int | None = None
    note: dict[str, Any] = {}
    for s in block.block or ():
        k = s.keyword
        if k == "notification_email":
            note["email"] = [item.keyword for item in s.block or ()] + list(s.args)
        elif k == "notification_email_from" and mapper.value(s):
            note["email_from"] = s.args[0]
        elif k == "smtp_server" and mapper.value(s):
            note["smtp_server"] = s.args[0]
            if len(s.args) > 1 and s.args[1].isdigit():
                note["smtp_port"] = int(s.args[1])  # digits: checked just above
        elif k == "smtp_connect_timeout":
            timeout = mapper.number(s, seconds)
            if timeout is not None:
                note["smtp_timeout"] = timeout
        elif k == "router_id" and mapper.value(s):
            glob["router_id"] = s.args[0]
        elif k == "enable_script_security":
            seen_security = True
            glob["enable_script_security"] = s.args[:1] not in (["off"], ["false"], ["no"])
        elif k == "script_user" and mapper.value(s):
            glob["script_user"] = s.args[0]
            if len(s.args) > 1:
                mapper.note(
                    s, "the group is not supported: the user's own group is used", "changed"
                )
        elif k == "vrrp_version":
            version = mapper.number(s)
        elif k in (
            "vrrp_garp_master_delay",
            "vrrp_garp_master_repeat",
            "vrrp_garp_interval",
            "vrrp_garp_master_refresh",
            "vrrp_garp_master_refresh_repeat",
        ):
            _garp(mapper, s, glob.setdefault("vrrp", {}).setdefault("garp", {}))
        elif k == "lvs_sync_daemon":
            _sync_daemon(mapper, s, glob)
        elif k in ("smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker"):
            mapper.note(
                s,
                "alerts go to every sink by default; to narrow an smtp sink, give it "
                "events: [vrrp] or [checker] (lvsha has no per-instance switch)",
                "ignored",
            )
        elif k in (
            "vrrp_check_unicast_src",
            "checker_log_all_failures",
            "vrrp_no_swap",
            "checker_no_swap",
            "vrrp_priority",
            "checker_priority",
        ):
            mapper.note(s, "no lvsha equivalent needed: ignored", "ignored")
        else:
            mapper.unmapped(s, "global_defs")
    if note:
        glob["notification"] = note
    if version is not None and version not in (2, 3):
        mapper.note(block, f"vrrp_version {version}: only 2 and 3 exist; 2 used", "changed")
        version = 2
    if version is not None:
        glob.setdefault("vrrp", {})["version"] = version
    return seen_security, version


_GARP_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "vrrp_garp_master_delay": ("delay", seconds),
    "garp_master_delay": ("delay", seconds),
    "vrrp_garp_master_repeat": ("burst", int),
    "garp_master_repeat": ("burst", int),
    "vrrp_garp_interval": ("interval", seconds),
    "vrrp_garp_master_refresh": ("refresh", seconds),
    "garp_master_refresh": ("refresh", seconds),
    "vrrp_garp_master_refresh_repeat": ("refresh_burst", int),
    "garp_master_refresh_repeat": ("refresh_burst", int),
}


def _garp(mapper: _Mapper, s: Statement, garp: dict[str, Any]) -> None:
    key, convert = _GARP_KEYS[s.keyword]
    value = mapper.number(s, convert)
    if value is not None:
        garp[key] = value


def _sync_daemon(mapper: _Mapper, s: Statement, glob: dict[str, Any]) -> None:
    # 2.x: lvs_sync_daemon IF [inst] INSTANCE [id N] ...; 1.x: lvs_sync_daemon_interface.
    args = list(s.args)
    if len(args) < 2:
        mapper.note(s, "needs an interface and a VRRP instance (lvsha follows its role): left out")
        return
    interface, rest = args[0], args[1:]
    if rest and rest[0] == "inst":
        rest = rest[1:]
    if not rest:
        mapper.note(s, "names no VRRP instance (lvsha follows one's role): left out")
        return
    daemon: dict[str, Any] = {"interface": interface, "vrrp_instance": rest[0]}
    if "id" in rest[1:]:
        position = rest.index("id", 1)
        if position + 1 < len(rest) and rest[position + 1].isdigit():
            daemon["sync_id"] = int(rest[position + 1])
    glob["lvs_sync_daemon"] = daemon


def _vrrp_script(mapper: _Mapper, block: Statement, scripts: dict[str, Any]) -> None:
    if not block.args:
        mapper.note(block, "has no name: left out")
        return
    script: dict[str, Any] = {}
    for s in block.block or ():
        k = s.keyword
        if k == "script" and mapper.value(s):
            script["command"] = command(" ".join(s.args))
            if isinstance(script["command"], list):
                mapper.note(
                    s, "uses shell syntax: runs under sh -c, as keepalived's does", "changed"
                )
        elif k in ("interval", "timeout"):
            value = mapper.number(s, seconds)
            if value is not None:
                script[k] = value
        elif k in ("rise", "fall", "weight"):
            value = mapper.number(s)
            if value is not None:
                script[k] = value
        elif k == "user" and mapper.value(s):
            script["user"] = s.args[0]
        elif k == "init_fail":
            mapper.note(s, "lvsha scripts start failed until a first success anyway", "ignored")
        else:
            mapper.unmapped(s, "vrrp_script")
    if "command" not in script:
        mapper.note(block, "has no script line: left out")
        return
    interval = script.get("interval", 1)
    if script.get("timeout", 1) > interval:
        mapper.note(
            block,
            f"timeout {script['timeout']} s is longer than interval {interval} s, which "
            "lvsha refuses (runs would overlap; keepalived skips runs instead): timeout set "
            "to the interval",
            "changed",
        )
        script["timeout"] = interval
    scripts[block.args[0]] = script


_NOTIFY = {
    "notify_master": "master",
    "notify_backup": "backup",
    "notify_fault": "fault",
    "notify_stop": "stop",
    "notify": "any",
}


def _vip(mapper: _Mapper, s: Statement) -> dict[str, Any] | str | None:
    words = [s.keyword, *s.args]
    address = words[0]
    try:
        ipaddress.ip_interface(address)
    except ValueError:
        mapper.note(s, f"'{address}' is not an address: left out")
        return None
    vip: dict[str, Any] = {"address": address}
    index = 1
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        if word == "dev" and value:
            vip["device"] = value
        elif word == "label" and value:
            vip["label"] = value
        else:
            mapper.note(
                s,
                f"'{word}' on a virtual address is not supported by lvsha yet: "
                "the address is kept without it",
            )
        index += 2
    return vip if len(vip) > 1 else address


def _members(block: Statement) -> list[str]:
    """The words of a block, one or several to a line."""
    return [word for item in block.block or () for word in (item.keyword, *item.args)]


def _vrrp_instance(
    mapper: _Mapper,
    block: Statement,
    instances: dict[str, Any],
    sync_daemons: list[dict[str, Any]],
) -> None:
    if not block.args:
        mapper.note(block, "has no name: left out")
        return
    name = block.args[0]
    instance: dict[str, Any] = {}
    nopreempt: Statement | None = None
    for s in block.block or ():
        k = s.keyword
        if k == "state" and mapper.value(s):
            instance["state"] = s.args[0].upper()
        elif k == "interface" and mapper.value(s):
            instance["interface"] = s.args[0]
        elif k in ("virtual_router_id", "priority"):
            value = mapper.number(s)
            if value is not None:
                instance[k] = value
        elif k == "advert_int":
            value = mapper.number(s, seconds)
            if value is not None:
                instance["advert_interval"] = value
        elif k == "version":
            value = mapper.number(s)
            if value is not None:
                instance["version"] = value
        elif k == "nopreempt":
            nopreempt = s
            instance["preempt"] = False
        elif k == "preempt":
            instance["preempt"] = True
        elif k == "preempt_delay":
            value = mapper.number(s, seconds)
            if value is not None:
                instance["preempt_delay"] = value
        elif k in ("mcast_src_ip", "unicast_src_ip") and mapper.value(s):
            instance[k] = s.args[0]
        elif k == "unicast_peer":
            instance["unicast_peers"] = _members(s)
        elif k == "lvs_sync_daemon_interface" and mapper.value(s):
            # keepalived 1.x: the sync daemon follows this instance.
            sync_daemons.append({"interface": s.args[0], "vrrp_instance": name})
        elif k == "authentication":
            _authentication(mapper, s, instance)
        elif k in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
            vips: list[dict[str, Any] | str] = []
            seen: set[str] = set()
            for item in s.block or ():
                vip = _vip(mapper, item)
                if vip is None:
                    continue
                address = vip["address"] if isinstance(vip, dict) else vip
                if address in seen:
                    mapper.note(item, f"{address} is listed twice: kept once", "changed")
                    continue
                seen.add(address)
                vips.append(vip)
            instance[k.replace("virtual_ipaddress", "virtual_ipaddresses")] = vips
        elif k == "track_interface":
            instance["track_interfaces"] = [_tracked(mapper, t, "interface") for t in s.block or ()]
        elif k == "track_script":
            instance["track_scripts"] = [_tracked(mapper, t, "script") for t in s.block or ()]
        elif k in _NOTIFY and mapper.value(s):
            instance.setdefault("notify", {})[_NOTIFY[k]] = command(s.args[0])
            if len(s.args) > 1:
                mapper.note(
                    s,
                    "the user and group after the script are not supported: "
                    "global.script_user runs it",
                    "changed",
                )
        elif k in _GARP_KEYS:
            _garp(mapper, s, instance.setdefault("garp", {}))
        elif k == "debug":
            mapper.note(s, "accepted by keepalived for compatibility; nothing to do", "ignored")
        elif k == "smtp_alert":
            mapper.note(s, "alerts go to every sink; lvsha has no per-instance switch", "ignored")
        else:
            mapper.unmapped(s, "vrrp_instance")
    if nopreempt is not None and instance.get("state") == "MASTER":
        instance["preempt"] = True
        mapper.note(
            nopreempt,
            "keepalived ignores nopreempt in state MASTER: written as "
            "preempt: true, which is what the old file did; use state BACKUP on both "
            "directors to stop preempting",
            "changed",
        )
    vips = instance.get("virtual_ipaddresses", [])
    first = vips[0] if vips else None
    address = first["address"] if isinstance(first, dict) else first
    if address is not None and ":" in address:
        instance["family"] = "ipv6"
    instances[name] = instance


def _authentication(mapper: _Mapper, block: Statement, instance: dict[str, Any]) -> None:
    kind, password = None, None
    for s in block.block or ():
        if s.keyword == "auth_type" and mapper.value(s):
            kind = s.args[0].upper()
        elif s.keyword == "auth_pass" and mapper.value(s):
            password = s.args[0]
            if len(password) > 8:
                mapper.note(
                    s,
                    f"{len(password)} characters: keepalived sends the first 8, so "
                    "the import keeps those 8",
                    "changed",
                )
                password = password[:8]
        else:
            mapper.unmapped(s, "authentication")
    if kind == "AH":
        mapper.note(block, "AH authentication is not supported by lvsha (RFC 3768 removed it)")
        return
    if password is not None:
        instance["authentication"] = {"type": "PASS", "password": password}


def _tracked(mapper: _Mapper, s: Statement, key: str) -> dict[str, Any] | str:
    if len(s.args) >= 2 and s.args[0] == "weight":
        try:
            return {key: s.keyword, "weight": int(s.args[1])}
        except ValueError:
            mapper.note(s, f"weight '{s.args[1]}' is not a number: tracked without it")
    elif s.args:
        mapper.note(s, f"'{' '.join(s.args)}' is not supported by lvsha yet: tracked without it")
    return s.keyword


def _sync_group(mapper: _Mapper, block: Statement, groups: dict[str, Any]) -> None:
    if not block.args:
        mapper.note(block, "has no name: left out")
        return
    group: dict[str, Any] = {}
    for s in block.block or ():
        if s.keyword == "group":
            group["instances"] = _members(s)
        elif s.keyword in _NOTIFY and mapper.value(s):
            group.setdefault("notify", {})[_NOTIFY[s.keyword]] = command(s.args[0])
        else:
            mapper.unmapped(s, "vrrp_sync_group")
    if not group.get("instances"):
        mapper.note(block, "has no group { INSTANCE ... } block: left out")
        return
    groups[block.args[0]] = group


_SCHEDULERS = {
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "mh",
    "twos",
}


def _whole(mapper: _Mapper, s: Statement, word: str, what: str) -> int | None:
    if word.isdigit():
        return int(word)
    mapper.note(s, f"'{word}' is not a {what}: left out")
    return None


def _virtual_server(mapper: _Mapper, block: Statement, servers: list[dict[str, Any]]) -> None:
    server: dict[str, Any] = {}
    args = block.args
    if args[:1] == ["fwmark"] and len(args) >= 2:
        mark = _whole(mapper, block, args[1], "firewall mark")
        if mark is None:
            return
        server["fwmark"] = mark
    elif args[:1] == ["group"]:
        mapper.note(block, UNSUPPORTED["virtual_server_group"])
        return
    elif len(args) >= 2:
        port = _whole(mapper, block, args[1], "port number")
        if port is None:
            return
        server["address"], server["port"] = args[0], port
    else:
        mapper.note(block, "needs an address and a port, or fwmark N: left out")
        return
    delay_loop: float | int | None = None
    for s in block.block or ():
        k = s.keyword
        if k in ("lb_algo", "lvs_sched") and mapper.value(s):
            if s.args[0] in _SCHEDULERS:
                server["scheduler"] = s.args[0]
            else:
                mapper.note(s, f"scheduler '{s.args[0]}' is not one IPVS has: wlc used", "changed")
        elif k in ("lb_kind", "lvs_method") and mapper.value(s):
            server["forwarding"] = s.args[0].upper()
        elif k == "protocol" and mapper.value(s):
            if "fwmark" in server:
                mapper.note(
                    s, "a fwmark service has no protocol (the mark selects): ignored", "ignored"
                )
            else:
                server["protocol"] = s.args[0].upper()
        elif k == "persistence_timeout":
            value = mapper.number(s)
            if value is not None:
                server["persistence_timeout"] = value
        elif k in ("quorum", "hysteresis"):
            value = mapper.number(s)
            if value is not None:
                server[k] = value
        elif k == "delay_loop":
            delay_loop = mapper.number(s, seconds)
        elif k == "sorry_server" and mapper.value(s, 2):
            port = _whole(mapper, s, s.args[1], "port number")
            if port is not None:
                server["sorry_server"] = {"address": s.args[0], "port": port}
        elif k == "inhibit_on_failure":
            server["inhibit_on_failure"] = True
        elif k == "alpha":
            server.setdefault("check_defaults", {})["alpha"] = True
        elif k == "virtualhost" and mapper.value(s):
            server["virtualhost"] = s.args[0]
        elif k == "real_server":
            real = _real_server(mapper, s, delay_loop)
            if real is not None:
                server.setdefault("real_servers", []).append(real)
        else:
            mapper.unmapped(s, "virtual_server")
    if "address" in server and "protocol" not in server:
        server["protocol"] = "UDP"
        mapper.note(
            block,
            "no protocol: keepalived silently assumes UDP, so the import writes "
            "UDP; write protocol TCP if that is what it serves",
            "changed",
        )
    if delay_loop is not None:
        server.setdefault("check_defaults", {})["interval"] = delay_loop
    servers.append(server)


_CHECKS = {
    "TCP_CHECK": "tcp",
    "HTTP_GET": "http",
    "SSL_GET": "https",
    "MISC_CHECK": "script",
    "PING_CHECK": "icmp",
    "DNS_CHECK": "dns",
    "UDP_CHECK": "udp",
}


def _real_server(
    mapper: _Mapper, block: Statement, delay_loop: float | int | None
) -> dict[str, Any] | None:
    if not block.args:
        mapper.note(block, "needs an address: left out")
        return None
    real: dict[str, Any] = {"address": block.args[0]}
    if len(block.args) > 1:
        port = _whole(mapper, block, block.args[1], "port number")
        if port is None:
            return None
        real["port"] = port
    checks: list[dict[str, Any]] = []
    for s in block.block or ():
        k = s.keyword
        if k == "weight":
            value = mapper.number(s)
            if value is not None:
                real["weight"] = value
        elif k == "inhibit_on_failure":
            real["inhibit_on_failure"] = True
        elif k in ("uthreshold", "lthreshold"):
            value = mapper.number(s)
            if value is not None:
                real["upper_threshold" if k == "uthreshold" else "lower_threshold"] = value
        elif k in _CHECKS:
            checks += _checks(mapper, s, _CHECKS[k])
        else:
            mapper.unmapped(s, "real_server")
    if checks:
        real["checks"] = checks
    return real


def _checks(mapper: _Mapper, block: Statement, kind: str) -> list[dict[str, Any]]:
    check: dict[str, Any] = {"type": kind}
    urls: list[dict[str, Any]] = []
    for s in block.block or ():
        k = s.keyword
        if k in ("connect_timeout", "misc_timeout"):
            value = mapper.number(s, seconds)
            if value is not None:
                check["timeout"] = value
        elif k == "connect_port":
            value = mapper.number(s)
            if value is not None:
                check["port"] = value
        elif k in ("connect_ip", "bindto") and mapper.value(s):
            check["address" if k == "connect_ip" else "bind_address"] = s.args[0]
        elif k in ("retry", "nb_get_retry"):
            value = mapper.number(s)
            if value is not None:
                check["retries"] = value
        elif k == "delay_before_retry":
            value = mapper.number(s, seconds)
            if value is not None:
                check["delay_before_retry"] = value
        elif k == "delay_loop":
            value = mapper.number(s, seconds)
            if value is not None:
                check["interval"] = value
        elif k == "url" and kind in ("http", "https"):
            urls.append(_url(mapper, s))
        elif k == "misc_path" and kind == "script" and mapper.value(s):
            check["command"] = command(" ".join(s.args))
        elif k == "misc_dynamic" and kind == "script":
            check["dynamic_weight"] = True
        elif k == "virtualhost" and kind in ("http", "https") and mapper.value(s):
            check["virtualhost"] = s.args[0]
        elif k in ("warmup", "alpha"):
            if k == "alpha":
                check["alpha"] = True
            else:
                value = mapper.number(s, seconds)
                if value is not None:
                    check["warmup"] = value
        else:
            mapper.unmapped(s, block.keyword)
    if urls:
        return [{**check, **url} for url in urls]
    return [check]


def _url(mapper: _Mapper, block: Statement) -> dict[str, Any]:
    url: dict[str, Any] = {}
    for s in block.block or ():
        if s.keyword == "path" and mapper.value(s):
            url["path"] = s.args[0]
        elif s.keyword == "digest" and mapper.value(s):
            url["digest"] = f"md5:{s.args[0].lower()}"
        elif s.keyword == "status_code" and mapper.value(s):
            url["status"] = [int(code) if code.isdigit() else code for code in s.args]
        else:
            mapper.unmapped(s, "url")
    return url
