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
import shlex
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
    "vmac_prefix": "not supported by lvsha: write each VMAC's name with use_vmac NAME",
    "strict_mode": "per-instance strict mode is not supported by lvsha: use vrrp_strict in "
    "global_defs",
}
"""keepalived keywords lvsha cannot say yet."""

_SHELL = re.compile(r"[|&;<>()`$]|\|\||&&")


_SHELLS = {"sh", "bash", "dash", "ash", "ksh", "zsh"}

SHELL_NOTE = (
    "uses shell syntax: keepalived 2 hands these words to the program without a shell (so "
    "the operators reach it as arguments; keepalived 1 used a shell); lvsha runs the line "
    "under sh -c, as it reads: check it does what you mean"
)


def command(text: str) -> str | list[str]:
    """A keepalived script line as an lvsha command: a shell's syntax runs under sh -c, and a
    line that calls a shell with -c itself is split into its words."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = []
    if len(words) >= 3 and words[0].rsplit("/", 1)[-1] in _SHELLS and words[1] == "-c":
        return words
    if _SHELL.search(text):
        return ["sh", "-c", text]
    return text


def _script(mapper: _Mapper, s: Statement, text: str) -> str | list[str]:
    """command(text), noting a line that now runs under a shell."""
    script = command(text)
    if isinstance(script, list) and script[:2] == ["sh", "-c"] and script[2:] == [text]:
        mapper.note(s, SHELL_NOTE, "changed")
    return script


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

    def flag(self, statement: Statement) -> bool | None:
        """A keepalived switch: the bare keyword, or followed by on/off, true/false, yes/no."""
        if not statement.args:
            return True
        word = statement.args[0].lower()
        if word in ("on", "true", "yes", "1"):
            return True
        if word in ("off", "false", "no", "0"):
            return False
        self.note(statement, f"'{statement.args[0]}' is not on/off, true/false or yes/no: left out")
        return None

    def put_flag(self, statement: Statement, target: dict[str, Any], key: str) -> None:
        """target[key] = the statement's switch, when it is one (else it is noted)."""
        flag = self.flag(statement)
        if flag is not None:
            target[key] = flag

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
    track_files: dict[str, Any] = {}
    server_groups: dict[str, Any] = {}
    no_protocol: list[tuple[dict[str, Any], Statement]] = []
    group_blocks: dict[str, Statement] = {}
    instance_blocks: dict[str, Statement] = {}
    strict: Statement | None = None
    for statement in parsed.statements:
        keyword = statement.keyword
        if keyword == "global_defs":
            seen_security, global_version, strict = _global_defs(
                mapper, statement, glob, seen_security, strict
            )
        elif keyword == "vrrp_script":
            _vrrp_script(mapper, statement, scripts)
        elif keyword in ("vrrp_track_file", "track_file"):
            _track_file(mapper, statement, track_files)
        elif keyword == "virtual_server_group":
            _server_group(mapper, statement, server_groups)
            if statement.args:
                group_blocks[statement.args[0]] = statement
        elif keyword == "vrrp_instance":
            _vrrp_instance(mapper, statement, instances, sync_daemons)
            if statement.args:
                instance_blocks[statement.args[0]] = statement
        elif keyword == "vrrp_sync_group":
            _sync_group(mapper, statement, groups)
        elif keyword == "virtual_server":
            _virtual_server(mapper, statement, servers, no_protocol)
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
    if strict is not None:
        _strict(mapper, strict, instances, instance_blocks, groups)
    _vmac_names(mapper, instances, instance_blocks)
    _mail_as_keepalived(mapper, parsed, glob, [instances, groups, servers])
    _group_protocols(mapper, no_protocol, server_groups)
    _group_uses(mapper, servers, server_groups, group_blocks)
    if scripts:
        document["vrrp_scripts"] = scripts
    if track_files:
        document["vrrp_track_files"] = track_files
    if instances:
        document["vrrp_instances"] = instances
    if groups:
        document["sync_groups"] = groups
    if servers:
        document["virtual_servers"] = servers
    if server_groups:
        document["virtual_server_groups"] = server_groups
    if not document["global"]:
        del document["global"]
    return Imported(document, mapper.notes)


def _global_defs(
    mapper: _Mapper,
    block: Statement,
    glob: dict[str, Any],
    seen_security: bool,
    strict: Statement | None,
) -> tuple[bool, int | None, Statement | None]:
    version: int | None = None
    note: dict[str, Any] = {}
    vrrp: dict[str, Any] = glob.setdefault("vrrp", {})
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
            mapper.put_flag(s, note, k)
        elif k == "vrrp_strict":
            if mapper.flag(s):
                vrrp["strict"] = True
                strict = s
        elif k == "vrrp_skip_check_adv_addr":
            mapper.put_flag(s, vrrp, "skip_check_adv_addr")
        elif k in ("vrrp_mcast_group4", "vrrp_mcast_group6") and mapper.value(s):
            vrrp[k.removeprefix("vrrp_")] = s.args[0]
        elif k == "default_interface":
            mapper.note(
                s,
                "keepalived uses it only for static addresses and routes without a dev, which "
                "lvsha leaves to the system (each keepalived instance names its interface); "
                "nothing to do",
                "ignored",
            )
        elif k == "smtp_helo_name":
            mapper.note(
                s, "lvsha's mail greets the relay with the host's name (not supported by lvsha yet)"
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
        vrrp["version"] = version
    if not vrrp:
        del glob["vrrp"]
    return seen_security, version, strict


def _vmac_names(mapper: _Mapper, instances: dict[str, Any], blocks: dict[str, Statement]) -> None:
    """keepalived numbers a VMAC whose default name (vrrp.VRID) is taken: vrrp6.VRID for an
    IPv6 instance, else vrrp1.VRID, vrrp2.VRID ...; lvsha refuses the clash, so the names it
    would use are written out. An IPv6 instance's vmac_xmit_base is left out: lvsha cannot
    keep a backup's VMAC silent then (its MLD reports would carry the virtual MAC)."""
    taken = {i["vmac_interface"] for i in instances.values() if "vmac_interface" in i}
    for name, instance in instances.items():
        if not instance.get("use_vmac"):
            continue
        ipv6 = instance.get("family") == "ipv6"
        if ipv6 and instance.pop("vmac_xmit_base", False):
            mapper.note(
                blocks[name],
                "vmac_xmit_base on an IPv6 instance is not supported by lvsha: left out (the "
                "adverts leave from the VMAC)",
            )
        if "vmac_interface" in instance:
            continue
        vrid = instance.get("virtual_router_id")
        chosen = f"vrrp.{vrid}"
        candidates = iter([f"vrrp6.{vrid}"] if ipv6 else [])
        number = 1
        while chosen in taken:
            chosen = next(candidates, f"vrrp{number}.{vrid}")
            number += 0 if chosen.startswith("vrrp6.") else 1
        if chosen != f"vrrp.{vrid}":
            instance["vmac_interface"] = chosen
            mapper.note(
                blocks[name],
                f"its VMAC's default name vrrp.{vrid} is taken: keepalived names it {chosen}, "
                "written out as vmac_interface",
                "changed",
            )
        taken.add(chosen)


def _mentions(value: object, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_mentions(item, key) for item in value.values())
    if isinstance(value, list):
        return any(_mentions(item, key) for item in value)
    return False


def _mail_as_keepalived(
    mapper: _Mapper, parsed: Parsed, glob: dict[str, Any], mapped: list[object]
) -> None:
    """keepalived mails VRRP changes only where smtp_alert says so, and real server changes
    unless it says not; lvsha's e-mail sink mails everything unless told. A file that says
    nothing gets keepalived's choice written out."""
    notification = glob.get("notification", {})
    if not (notification.get("email") and notification.get("smtp_server")):
        return
    if any(key.startswith("smtp_alert") for key in notification) or _mentions(mapped, "smtp_alert"):
        return
    notification["smtp_alert_vrrp"] = False
    first = parsed.statements[0]
    mapper.notes.append(
        Note(
            first.where,
            "smtp_alert",
            "absent, so keepalived mails real server changes but no VRRP state changes: "
            "written as smtp_alert_vrrp: false",
            "changed",
        )
    )


def _strict(
    mapper: _Mapper,
    strict: Statement,
    instances: dict[str, Any],
    blocks: dict[str, Statement],
    groups: dict[str, Any],
) -> None:
    """What keepalived's vrrp_strict does to each instance, written out (lvsha's strict refuses
    these where keepalived quietly changes them): unicast peers make keepalived leave the
    instance out; authentication is not sent; state MASTER below priority 255 starts as
    BACKUP; preempt_delay is off; and no_accept is implied (a VRRPv2 non-owner's accept is
    forced off), so its master drops traffic addressed to the VIPs."""
    implied: list[str] = []
    for name in list(instances):
        instance, block = instances[name], blocks[name]
        owner = instance.get("priority") == 255
        if instance.get("unicast_peers"):
            del instances[name]
            for group in groups.values():
                group["instances"] = [i for i in group.get("instances", []) if i != name]
            mapper.note(
                block,
                "keepalived does not run an instance with unicast peers under vrrp_strict: "
                "left out, as keepalived leaves it; remove vrrp_strict or the peers",
            )
            continue
        changes: list[str] = []
        if instance.pop("authentication", None) is not None:
            changes.append("its authentication is not sent, so it is left out")
        if instance.get("state") == "MASTER" and not owner:
            instance["state"] = "BACKUP"
            changes.append("state MASTER below priority 255 starts as BACKUP")
        if instance.pop("preempt_delay", None) is not None:
            changes.append("preempt_delay is off, so it is left out")
        if "accept" not in instance:
            if not owner:
                instance["accept"] = False
                implied.append(name)
        elif instance["accept"] and instance.get("version") == 2 and not owner:
            instance["accept"] = False
            changes.append("accept is forced off for a VRRPv2 non-owner: accept: false")
        if changes:
            mapper.note(
                block, "under vrrp_strict keepalived changes it: " + "; ".join(changes), "changed"
            )
    for name in [name for name, group in groups.items() if not group.get("instances")]:
        del groups[name]
    if implied:
        mapper.note(
            strict,
            "keepalived's vrrp_strict implies no_accept: its master drops traffic addressed "
            f"to the VIPs; written as accept: false on {', '.join(implied)} (say accept in an "
            "instance, or accept: true, to let it answer)",
            "changed",
        )


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
    options = rest[1:]
    for index in range(0, len(options), 2):
        option = options[index]
        value = options[index + 1] if index + 1 < len(options) else ""
        if option == "id" and value.isdigit():
            daemon["sync_id"] = int(value)
        elif option in ("maxlen", "port", "ttl", "group"):
            mapper.note(
                s,
                f"'{option} {value}': lvsha runs the sync daemon with the kernel's default "
                f"{option} (not supported by lvsha yet)",
            )
        else:
            mapper.note(s, f"'{option} {value}' is not an lvs_sync_daemon option: left out")
    glob["lvs_sync_daemon"] = daemon


def _vrrp_script(mapper: _Mapper, block: Statement, scripts: dict[str, Any]) -> None:
    if not block.args:
        mapper.note(block, "has no name: left out")
        return
    script: dict[str, Any] = {}
    for s in block.block or ():
        k = s.keyword
        if k == "script" and mapper.value(s):
            script["command"] = _script(mapper, s, " ".join(s.args))
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


def _track_file(mapper: _Mapper, block: Statement, track_files: dict[str, Any]) -> None:
    if not block.args:
        mapper.note(block, "has no name: left out")
        return
    tracked: dict[str, Any] = {}
    for s in block.block or ():
        k = s.keyword
        if k == "file" and mapper.value(s):
            tracked["file"] = s.args[0]
            if not s.args[0].startswith("/"):
                mapper.note(
                    s,
                    f"'{s.args[0]}' is relative to keepalived's working directory, /: written "
                    f"as /{s.args[0]}",
                    "changed",
                )
                tracked["file"] = "/" + s.args[0]
        elif k == "weight" and mapper.value(s):
            weight = _signed(mapper, s, s.args[0])
            if weight is not None:
                tracked["weight"] = weight
            if s.args[1:2] == ["reverse"]:
                tracked["reverse"] = True
        elif k == "init_file":
            words = list(s.args)
            if "overwrite" in words:
                words.remove("overwrite")
                tracked["init_overwrite"] = True
            value = _signed(mapper, s, words[0]) if words else 0
            if value is not None:
                tracked["init"] = value
        else:
            mapper.unmapped(s, "vrrp_track_file")
    if "file" not in tracked:
        mapper.note(block, "has no file line: left out")
        return
    track_files[block.args[0]] = tracked


def _signed(mapper: _Mapper, s: Statement, word: str) -> int | None:
    try:
        return int(word)
    except ValueError:
        mapper.note(s, f"'{word}' is not a whole number: left out")
        return None


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
    ipv6 = ":" in address
    index = 1
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        if word == "dev" and value:
            vip["device"] = value
        elif word == "label" and value:
            vip["label"] = value
        elif word in ("brd", "broadcast") and value and ipv6:
            mapper.note(
                s, "keepalived skips an IPv6 address given a broadcast: left out, as it does"
            )
            return None
        elif word in ("brd", "broadcast") and value:
            vip["broadcast"] = value
        elif word == "scope" and value and ipv6:
            mapper.note(
                s, f"scope {value}: keepalived ignores it on IPv6; so does lvsha", "ignored"
            )
        elif word == "scope" and value:
            vip["scope"] = value
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
                    lost = " ".join(item.args)
                    mapper.note(
                        item,
                        f"{address} is listed twice: kept the first"
                        + (f" ('{lost}' of this one left out)" if lost else ""),
                        "changed",
                    )
                    continue
                seen.add(address)
                vips.append(vip)
            instance[k.replace("virtual_ipaddress", "virtual_ipaddresses")] = vips
        elif k == "track_interface":
            instance["track_interfaces"] = [_tracked(mapper, t, "interface") for t in s.block or ()]
        elif k == "track_script":
            instance["track_scripts"] = [_tracked(mapper, t, "script") for t in s.block or ()]
        elif k in _NOTIFY and mapper.value(s):
            instance.setdefault("notify", {})[_NOTIFY[k]] = _hook(mapper, s)
        elif k in _GARP_KEYS:
            _garp(mapper, s, instance.setdefault("garp", {}))
        elif k == "debug":
            mapper.note(s, "accepted by keepalived for compatibility; nothing to do", "ignored")
        elif k in ("smtp_alert", "dont_track_primary", "skip_check_adv_addr", "vmac_xmit_base"):
            mapper.put_flag(s, instance, k)
        elif k in ("accept", "no_accept"):
            instance["accept"] = k == "accept"
        elif k == "use_vmac":
            instance["use_vmac"] = True
            if s.args:
                instance["vmac_interface"] = s.args[0]
        elif k == "track_file":
            instance["track_files"] = [_tracked(mapper, t, "file") for t in s.block or ()]
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
            tracked: dict[str, Any] = {key: s.keyword, "weight": int(s.args[1])}
        except ValueError:
            mapper.note(s, f"weight '{s.args[1]}' is not a number: tracked without it")
        else:
            if s.args[2:3] == ["reverse"] and key == "file":
                tracked["reverse"] = True
            elif s.args[2:3] == ["noreverse"] and key == "file":
                pass  # the default
            elif s.args[2:]:
                mapper.note(s, f"'{' '.join(s.args[2:])}' is not supported by lvsha yet: left out")
            return tracked
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
            group.setdefault("notify", {})[_NOTIFY[s.keyword]] = _hook(mapper, s)
        elif s.keyword == "smtp_alert":
            mapper.put_flag(s, group, "smtp_alert")
        elif s.keyword in ("track_interface", "track_script", "track_file", "global_tracking"):
            mapper.note(
                s,
                "tracking on a sync group is not supported by lvsha yet: track in each of its "
                "instances instead",
            )
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


def _server_group(mapper: _Mapper, block: Statement, groups: dict[str, Any]) -> None:
    """virtual_server_group NAME { VIP PORT | VIP-LAST PORT | fwmark N ... }."""
    if not block.args:
        mapper.note(block, "has no name: left out")
        return
    members: list[dict[str, Any]] = []
    for s in block.block or ():
        if s.keyword == "fwmark":
            mark = _whole(mapper, s, s.args[0], "firewall mark") if mapper.value(s) else None
            if mark is None:
                continue
            fwmark: dict[str, Any] = {"fwmark": mark}
            family = {"inet": "ipv4", "inet6": "ipv6"}.get(s.args[1] if len(s.args) > 1 else "")
            if family is not None:
                fwmark["family"] = family
            elif len(s.args) > 1:
                mapper.note(s, f"'{s.args[1]}' is not inet or inet6: left out")
            members.append(fwmark)
            continue
        member: dict[str, Any] = {"address": s.keyword}
        if s.args:
            port = _whole(mapper, s, s.args[0], "port number")
            if port is None:
                continue
            member["port"] = port
        if len(s.args) > 1:
            mapper.note(s, f"'{' '.join(s.args[1:])}' after the port: left out")
        members.append(member)
    if not members:
        mapper.note(block, "has no members: left out")
        return
    groups[block.args[0]] = {"members": members}


def _group_uses(
    mapper: _Mapper,
    servers: list[dict[str, Any]],
    groups: dict[str, Any],
    blocks: dict[str, Statement],
) -> None:
    """lvsha wants each group served by exactly one virtual server: an unused group is left
    out (keepalived does nothing with it either), and a group that several virtual servers
    serve (TCP and UDP, say) is copied for the second and later ones."""
    users: dict[str, list[dict[str, Any]]] = {}
    for server in servers:
        if "group" in server:
            users.setdefault(server["group"], []).append(server)
    for name in [name for name in groups if name not in users]:
        del groups[name]
        mapper.note(blocks[name], f"{name} is used by no virtual_server: left out", "ignored")
    for name, using in users.items():
        for count, server in enumerate(using[1:], start=2):
            copy = f"{name}_{count}"
            while copy in groups:
                copy += "_"
            if name in groups:
                groups[copy] = {"members": [dict(m) for m in groups[name]["members"]]}
            server["group"] = copy
            if name in blocks:
                mapper.note(
                    blocks[name],
                    f"{name} is served by more than one virtual_server; lvsha wants one each: "
                    f"copied as {copy}",
                    "changed",
                )


def _group_protocols(
    mapper: _Mapper, no_protocol: list[tuple[dict[str, Any], Statement]], groups: dict[str, Any]
) -> None:
    """A group server without protocol: UDP as keepalived assumes, unless its group has only
    fwmark members (a mark needs no protocol)."""
    for server, block in no_protocol:
        members = groups.get(server["group"], {}).get("members", [])
        if not members or not all("fwmark" in member for member in members):
            server["protocol"] = "UDP"
            mapper.note(block, _NO_PROTOCOL, "changed")


def _whole(mapper: _Mapper, s: Statement, word: str, what: str) -> int | None:
    if word.isdigit():
        return int(word)
    mapper.note(s, f"'{word}' is not a {what}: left out")
    return None


def _virtual_server(
    mapper: _Mapper,
    block: Statement,
    servers: list[dict[str, Any]],
    no_protocol: list[tuple[dict[str, Any], Statement]],
) -> None:
    server: dict[str, Any] = {}
    args = block.args
    if args[:1] == ["fwmark"] and len(args) >= 2:
        mark = _whole(mapper, block, args[1], "firewall mark")
        if mark is None:
            return
        server["fwmark"] = mark
    elif args[:1] == ["group"] and len(args) >= 2:
        server["group"] = args[1]
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
        elif k in ("smtp_alert", "omega"):
            mapper.put_flag(s, server, k)
        elif k in ("quorum_up", "quorum_down") and mapper.value(s):
            server[k] = _hook(mapper, s)
        elif k == "real_server":
            real = _real_server(mapper, s, delay_loop)
            if real is not None:
                server.setdefault("real_servers", []).append(real)
        else:
            mapper.unmapped(s, "virtual_server")
    if "group" in server and "protocol" not in server:
        no_protocol.append((server, block))  # decided once the group is known
    elif "address" in server and "protocol" not in server:
        server["protocol"] = "UDP"
        mapper.note(block, _NO_PROTOCOL, "changed")
    if delay_loop is not None:
        server.setdefault("check_defaults", {})["interval"] = delay_loop
    servers.append(server)


_NO_PROTOCOL = (
    "no protocol: keepalived silently assumes UDP, so the import writes UDP; write protocol "
    "TCP if that is what it serves"
)

_CHECKS = {
    "TCP_CHECK": "tcp",
    "HTTP_GET": "http",
    "SSL_GET": "https",
    "MISC_CHECK": "script",
    "PING_CHECK": "icmp",
    "DNS_CHECK": "dns",
    "UDP_CHECK": "udp",
    "SMTP_CHECK": "smtp",
}


def _hook(mapper: _Mapper, s: Statement) -> str | list[str]:
    """A notify or quorum script: the command, then perhaps a user keepalived runs it as."""
    hook = _script(mapper, s, s.args[0])
    if len(s.args) > 1:
        mapper.note(
            s,
            "the user and group after the script are not supported: global.script_user runs it",
            "changed",
        )
    return hook


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
        elif k in ("notify_up", "notify_down") and mapper.value(s):
            real[k] = _hook(mapper, s)
        elif k == "smtp_alert":
            mapper.put_flag(s, real, "smtp_alert")
        else:
            mapper.unmapped(s, "real_server")
    if checks:
        real["checks"] = checks
    return real


def _checks(mapper: _Mapper, block: Statement, kind: str) -> list[dict[str, Any]]:
    check: dict[str, Any] = {"type": kind}
    urls: list[dict[str, Any]] = []
    hosts: list[dict[str, Any]] = []
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
            check["command"] = _script(mapper, s, " ".join(s.args))
        elif k == "misc_dynamic" and kind == "script":
            check["dynamic_weight"] = True
        elif k == "virtualhost" and kind in ("http", "https") and mapper.value(s):
            check["virtualhost"] = s.args[0]
        elif k == "user" and kind == "script" and mapper.value(s):
            check["user"] = s.args[0]
            if len(s.args) > 1:
                mapper.note(
                    s, "the group is not supported: the user's own group is used", "changed"
                )
        elif k == "type" and kind == "dns" and mapper.value(s):
            check["query_type"] = s.args[0].upper()
        elif k == "name" and kind == "dns" and mapper.value(s):
            check["name"] = s.args[0]
        elif k == "helo_name" and kind == "smtp" and mapper.value(s):
            check["helo_name"] = s.args[0]
        elif k == "host" and kind == "smtp":
            hosts.append(_smtp_host(mapper, s))
        elif k == "payload" and kind == "udp" and mapper.value(s):
            check["payload_hex"] = "".join(s.args)
        elif k == "require_reply" and kind == "udp":
            check["require_reply"] = True
            if s.args:
                mapper.note(
                    s,
                    "matching the first bytes of the reply is not supported by lvsha yet "
                    "(expect_hex compares a whole reply): any reply passes",
                )
        elif k in ("min_reply_length", "max_reply_length") and kind == "udp":
            mapper.note(s, "reply lengths are not supported by lvsha yet: any reply passes")
        elif k in ("warmup", "alpha"):
            if k == "alpha":
                check["alpha"] = True
            else:
                value = mapper.number(s, seconds)
                if value is not None:
                    check["warmup"] = value
        else:
            mapper.unmapped(s, block.keyword)
    if kind == "udp" and "require_reply" not in check:
        check["require_reply"] = False  # keepalived's UDP_CHECK passes without a reply
    if urls:
        return [{**check, **url} for url in urls]
    if hosts:
        # keepalived: each host block is one more checker with its own connection; the
        # block's own connection keys, when it has any, make a checker of their own too.
        own = {"address", "port", "bind_address", "timeout"}
        common = {key: value for key, value in check.items() if key not in own}
        first = [check] if own & check.keys() else []
        return first + [{**common, **host} for host in hosts]
    return [check]


def _smtp_host(mapper: _Mapper, block: Statement) -> dict[str, Any]:
    """An SMTP_CHECK host block: one more address to check (all must pass, as in keepalived)."""
    host: dict[str, Any] = {}
    for s in block.block or ():
        if s.keyword in ("connect_ip", "bindto") and mapper.value(s):
            host["address" if s.keyword == "connect_ip" else "bind_address"] = s.args[0]
        elif s.keyword == "connect_port":
            value = mapper.number(s)
            if value is not None:
                host["port"] = value
        elif s.keyword == "connect_timeout":
            value = mapper.number(s, seconds)
            if value is not None:
                host["timeout"] = value
        else:
            mapper.unmapped(s, "host")
    return host


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
