"""What a reload would change, and what each change costs: a pure diff of two configurations.

`reload_plan(running, new)` takes two validated, normalized configurations (`lvsha.config`) and
returns a `ReloadPlan`: one `Change` per thing that differs, each labelled with its `Cost`. It
reads no file and knows nothing of runtime state, so where a cost depends on that state (is the
service below quorum now? which director is master?) the label is the worst the change can do.

Objects are matched by identity, never by name or position: a VRRP instance by (interface,
VRID, family) (`lvsha.vrrp.params.instance_identity`), a VIP by its address, a virtual service
by its kernel key (`lvsha.ipvs.specs.service_key`), a real server by (address, port) within its
service, a check by its `CheckKey` (as the check pool deduplicates checks) within its real
server. Renaming an instance is a rename; reordering services or real servers is no change.
Sync groups and track references name instances and scripts: they are compared through what
those names resolve to, so renaming an instance inside a group changes no group.

Defaults that normalization folds into the objects using them (`global.check_defaults`, a
virtual server's `check_defaults` and `virtualhost`, `global.vrrp.version` and `.garp`) are not
reported themselves: the checks and instances whose values they change are. A virtual server's
`forwarding` and `inhibit_on_failure` are reported once, on the service, for the real servers
that follow it.

The rules, per label (each rule table below says why for its keys):

- hitless: nothing on the wire changes. Names, notify hooks, GARP settings, the initial state,
  `global` keys, real-server weights and thresholds, a scheduler change between non-hashing
  schedulers, persistence timeout and granularity, added services and real servers (they enter
  per alpha/rise), checks added, removed or restarted (only that check starts again), VIPs
  added to or removed from an instance (a master adds or removes them without a state change;
  a peer whose list differs takes our adverts, logging the difference, until it is reloaded
  too: `lvsha.vrrp.wire.address_list_difference`), a quorum change without a sorry server.
- election: an instance starts or stops, or its priority order against the peer may change:
  priority (also to or from 255), preempt, preempt_delay, advert interval, version,
  authentication, advert source address and unicast peers, tracked interfaces and scripts and
  their weights, a tracked vrrp_script that restarts, sync group membership.
- VIP move: a VIP leaves one instance and joins another; or it is re-added in its instance with
  another prefix, device, label, broadcast or scope, which the kernel cannot edit in place (the
  same risk).
- drain: a real server leaves (weight 0, then removal); the sorry server is added, removed or
  replaced, or quorum or hysteresis change while a sorry server is configured, since losing
  quorum then takes every real server out (`lvsha.ipvs.desired`) and a plan cannot know how
  close to the line the service is.
- connection reset: a service is removed; a destination's forwarding method changes; scheduler
  flags or one-packet scheduling change; persistence is turned on or off (client affinity); the
  scheduler changes to or from a hashing one (sh, mh, dh, lblc, lblcr), which re-maps flows.

Order: VRRP first (vrrp_scripts; instances in the new file's order, each with its VIPs and
tracking; removed instances; sync groups), then virtual services in the new file's order (each
with its sorry server, real servers and their checks), then removed services, then `global`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeVar

from pydantic import BaseModel

from lvsha.checks.targets import (
    CheckKey,
    check_plan,
    group_service_id,
    real_server_id,
    virtual_service_id,
)
from lvsha.checks.verdict import RealServerId, host_port
from lvsha.config.lvs import RealServer, SorryServer, VirtualServer
from lvsha.config.model import GlobalConfig, LvshaConfig
from lvsha.config.vrrp import (
    Authentication,
    VirtualAddress,
    VrrpInstance,
    VrrpScript,
    vmac_interface_name,
)
from lvsha.gcpause import collector_paused
from lvsha.ipvs.model import ServiceKey
from lvsha.ipvs.specs import group_service_keys, service_key, service_options
from lvsha.vrrp.params import (
    InstanceIdentity,
    address_scope,
    broadcast_address,
    instance_identity,
)


class Cost(enum.Enum):
    """What a change costs, from cheapest to most expensive (`<` and `max` follow that)."""

    HITLESS = "hitless"
    """Nothing on the wire changes."""
    ELECTION = "election"
    """A VRRP instance starts or stops, or its priority order against the peer may change."""
    VIP_MOVE = "VIP move"
    """A VIP leaves one instance and joins another (or is deleted and added again)."""
    DRAIN = "drain"
    """A real server leaves: weight 0, then removal."""
    CONNECTION_RESET = "connection reset"
    """A service is removed, or a change may break established flows."""

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Cost):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Cost):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Cost):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Cost):
            return NotImplemented
        return self.rank >= other.rank


_RANK = {cost: rank for rank, cost in enumerate(Cost)}

HITLESS = Cost.HITLESS
ELECTION = Cost.ELECTION
VIP_MOVE = Cost.VIP_MOVE
DRAIN = Cost.DRAIN
CONNECTION_RESET = Cost.CONNECTION_RESET


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a reload would change."""

    area: str
    """vrrp_instance, vip, track, sync_group, vrrp_script, virtual_service, real_server, check,
    sorry_server or global."""
    action: str
    """add, remove, change, rename or move."""
    subject: str
    """The object's identity for people, e.g. "VI_1 (eth0 vrid 51 ipv4)", "TCP 10.0.0.10:80"."""
    detail: str
    """What differs, e.g. "priority 100 -> 150"."""
    cost: Cost

    def to_json(self) -> dict[str, str]:
        return {
            "area": self.area,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
            "cost": self.cost.value,
        }


_SECTIONS = {
    "vrrp_script": "VRRP",
    "vrrp_track_file": "VRRP",
    "vrrp_instance": "VRRP",
    "vip": "VRRP",
    "track": "VRRP",
    "sync_group": "VRRP",
    "virtual_service": "virtual services",
    "sorry_server": "virtual services",
    "real_server": "virtual services",
    "check": "virtual services",
    "global": "global",
}
_COST_WIDTH = max(len(f"[{cost.value}]") for cost in Cost)
_ACTION_WIDTH = max(len(action) for action in ("add", "remove", "change", "rename", "move"))
_AREA_WIDTH = max(len(area) for area in _SECTIONS)


@dataclass(frozen=True)
class ReloadPlan:
    """Every change a reload would make, in a stable order."""

    changes: tuple[Change, ...] = ()

    def cost(self) -> Cost:
        """The most expensive change's cost; hitless when there is no change."""
        return max((change.cost for change in self.changes), key=_RANK.__getitem__, default=HITLESS)

    def counts(self) -> dict[Cost, int]:
        """How many changes of each cost; every cost is present, cheapest first."""
        counted = Counter(change.cost for change in self.changes)
        return {cost: counted[cost] for cost in Cost}

    def text(self) -> str:
        """For terminals: a line per change under its section, then a summary line."""
        if not self.changes:
            return "no changes"
        lines: list[str] = []
        section = None
        for change in self.changes:
            if _SECTIONS.get(change.area, change.area) != section:
                section = _SECTIONS.get(change.area, change.area)
                lines.append(f"{section}:")
            label = f"[{change.cost.value}]"
            line = (
                f"  {label:<{_COST_WIDTH}} {change.action:<{_ACTION_WIDTH}} "
                f"{change.area:<{_AREA_WIDTH}} {change.subject}"
            )
            lines.append(f"{line}: {change.detail}" if change.detail else line)
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        """E.g. "3 changes (cost: drain): 2 hitless, 1 drain"; "no changes" when empty."""
        total = len(self.changes)
        if not total:
            return "no changes"
        counted = ", ".join(f"{n} {cost.value}" for cost, n in self.counts().items() if n)
        return f"{_plural(total, 'change')} (cost: {self.cost().value}): {counted}"

    def to_json(self) -> dict[str, object]:
        """For tools: the changes, the plan's cost and the count per cost (every cost listed)."""
        return {
            "changes": [change.to_json() for change in self.changes],
            "cost": self.cost().value,
            "counts": {cost.value: n for cost, n in self.counts().items()},
        }


def reload_plan(old: LvshaConfig, new: LvshaConfig) -> ReloadPlan:
    """What applying `new` to a director running `old` would change, and at what cost.

    Both are configurations as `lvsha.config.load_text` / `load_file` return them (normalized).
    """
    # A large pair of configurations holds millions of objects and planning makes no cycles.
    with collector_paused():
        return ReloadPlan(tuple(_Planner(old, new).changes()))


# --- rule tables: what each key costs, and why --------------------------------------------------

INSTANCE_RULES: dict[str, tuple[Cost, str]] = {
    "priority": (ELECTION, "the order against the peer may change; 255 makes or unmakes the owner"),
    "advert_interval": (
        ELECTION,
        "a v2 peer discards adverts of another interval (RFC 3768 7.1); a v3 backup's "
        "Master_Down_Interval follows the master's interval",
    ),
    "version": (ELECTION, "a peer on the other version drops our adverts"),
    "state": (HITLESS, "the initial state: a running instance is past it"),
    "preempt": (ELECTION, "a backup above the master may take over at once"),
    "preempt_delay": (ELECTION, "changes when a backup above the master takes over"),
    "mcast_src_ip": (
        ELECTION,
        "the advert source breaks priority ties (RFC 5798 6.4.3); a peer may filter on it",
    ),
    "unicast_src_ip": (
        ELECTION,
        "the advert source breaks priority ties (RFC 5798 6.4.3); a peer may filter on it",
    ),
    "unicast_peers": (ELECTION, "a peer that stops hearing us takes over; a new one may preempt"),
    "notify": (HITLESS, "hooks run from the next state change"),
    "garp": (HITLESS, "used from the next mastership or refresh"),
    "authentication": (ELECTION, "a peer with the old password drops our adverts"),
    "smtp_alert": (HITLESS, "mails follow from the next state change"),
    "dont_track_primary": (
        ELECTION,
        "with the instance's interface down, false puts it in FAULT and true takes it out",
    ),
    "accept": (
        HITLESS,
        "packets to the VIPs are dropped (false) or taken (true) from the reload on; VRRP "
        "itself is not touched",
    ),
    "skip_check_adv_addr": (
        ELECTION,
        "in strict mode a backup that refuses the master's adverts (their address list "
        "differs) takes over",
    ),
    "use_vmac": (
        ELECTION,
        "the instance restarts on or off its VMAC interface: its VIPs, adverts and MAC move",
    ),
    "vmac_interface": (ELECTION, "the instance restarts on its new VMAC interface"),
    "vmac_xmit_base": (ELECTION, "the instance restarts: its adverts leave from another MAC"),
}
"""VrrpInstance keys compared one by one; nested ones (notify, garp) key by key."""
INSTANCE_ELSEWHERE = frozenset(
    {
        "interface",  # identity
        "virtual_router_id",  # identity
        "family",  # identity
        "virtual_ipaddresses",  # by address (_Planner._vip_changes)
        "virtual_ipaddresses_excluded",
        "track_interfaces",  # by interface and script (_Planner._tracking)
        "track_scripts",
        "track_files",
    }
)

SCRIPT_RESTART_KEYS = (
    "command",
    "interval",
    "timeout",
    "rise",
    "fall",
    "user",
    "enable_script_security",
)
"""vrrp_scripts keys (with the effective user and script security) whose change restarts the
script. A restarted script is in INIT until its first result, where its weight applies to no
instance and an instance tracking it with weight 0 waits for it: a tracked script that restarts
costs an election, an untracked one nothing. A script's own weight is reported on the instances
that track it (as their effective weight changes), on the script only when none does."""

HASHING_SCHEDULERS = frozenset({"sh", "mh", "dh", "lblc", "lblcr"})
"""Schedulers that pick the server by hashing an address: changing to or from one re-maps flows
(connection reset)."""

SERVICE_KEYS = {
    "name": "a rename, hitless",
    "scheduler": "hitless, unless to or from a hashing scheduler: connection reset",
    "scheduler_flags": "connection reset: flows re-mapped",
    "ops": "connection reset: one-packet scheduling changes how flows are kept",
    "persistence_timeout": "on or off: connection reset (client affinity); otherwise hitless",
    "persistence_granularity": "hitless: applies to new affinities",
    "quorum": "drain with a sorry server configured, else hitless",
    "hysteresis": "drain with a sorry server configured, else hitless",
    "sorry_server": "see _Planner._sorry_server",
    "forwarding": "connection reset, reported once for the destinations that follow it",
    "inhibit_on_failure": "hitless, reported once for the real servers that follow it",
    "real_servers": "by (address, port)",
    "quorum_up": "hitless: the hook runs from the next quorum change",
    "quorum_down": "hitless: the hook runs from the next quorum change",
    "omega": "hitless: read when lvsha stops",
    "smtp_alert": "hitless: mails follow from the next quorum change",
}
"""VirtualServer keys compared, with their rule."""
SERVICE_HOOK_KEYS = ("quorum_up", "quorum_down", "omega")
"""VirtualServer keys of its hooks: the checker uses the new ones from the next transition (or
stop), so a change is hitless."""
SERVICE_NOT_COMPARED = frozenset(
    {
        "address",  # identity
        "port",
        "protocol",
        "fwmark",
        "family",
        "virtualhost",  # folded into http checks by normalization
        "check_defaults",  # folded into checks by normalization
        "group",  # identity: its members are services, compared by kernel key
    }
)

REAL_SERVER_RULES: dict[str, tuple[Cost, str]] = {
    "weight": (HITLESS, "edited in place (IPVS_CMD_SET_DEST)"),
    "upper_threshold": (HITLESS, "edited in place"),
    "lower_threshold": (HITLESS, "edited in place"),
    "inhibit_on_failure": (HITLESS, "applies from the next failure"),
    "forwarding": (CONNECTION_RESET, "established flows were set up for the old method"),
    "notify_up": (HITLESS, "the hook runs from the next transition"),
    "notify_down": (HITLESS, "the hook runs from the next transition"),
    "smtp_alert": (HITLESS, "mails follow from the next change"),
}
"""RealServer keys besides its identity (address, port) and its checks (by CheckKey)."""
REAL_SERVER_ELSEWHERE = frozenset({"address", "port", "checks"})

GLOBAL_RULES: dict[str, tuple[Cost, str]] = {
    "router_id": (HITLESS, ""),
    "notification": (HITLESS, ""),
    "script_user": (HITLESS, "hooks use it from their next run; scripts and checks are listed"),
    "enable_script_security": (
        HITLESS,
        "hooks use it from their next run; scripts and checks are listed",
    ),
    "vrrp.realtime_priority": (HITLESS, "applies when the VRRP process restarts"),
    "lvs_sync_daemon": (HITLESS, "the kernel's connection sync daemon restarts"),
    "ipvs.on_stop": (HITLESS, "applies when lvsha stops"),
    "ipvs.resync_interval": (HITLESS, ""),
    "control": (HITLESS, "the control socket's access follows at once"),
    "metrics.listen": (HITLESS, "the endpoint moves at once"),
    "metrics.keepalived_names": (HITLESS, "from the VRRP process's next metrics file"),
    "watchdog_bound": (HITLESS, ""),
    "vrrp.strict": (
        ELECTION,
        "a backup that refuses the master's adverts (their address list differs) takes over",
    ),
    "vrrp.mcast_group4": (
        ELECTION,
        "IPv4 multicast instances restart on the new group: a peer still on the old one "
        "no longer hears them, nor they it",
    ),
    "vrrp.mcast_group6": (
        ELECTION,
        "IPv6 multicast instances restart on the new group: a peer still on the old one "
        "no longer hears them, nor they it",
    ),
}
"""Global keys (a key is ruled by its longest dotted prefix here), with the note shown after
the change. Only the VRRP keys that change what adverts are sent to or taken from cost an
election; the rest are hitless."""
GLOBAL_FOLDED = frozenset(
    {
        "check_defaults",
        "vrrp.version",
        "vrrp.garp",
        "vrrp.skip_check_adv_addr",
        "vrrp.default_interface",
    }
)
"""Folded into checks and instances by normalization: their effect is reported there."""

CHECK_NEUTRAL_GLOBALS = frozenset(
    {
        "router_id",
        "notification",
        "vrrp",
        "lvs_sync_daemon",
        "ipvs",
        "check_defaults",
        "control",
        "metrics",
        "watchdog_bound",
    }
)
"""Global keys `check_plan` does not read (check_defaults is folded into each check's model,
which is compared itself): a change of these alone leaves every check key as it was. Any other
global key (script_user, enable_script_security, one added later) makes the plan rebuild them."""

_ADVERT_NOTE = "; the peer logs that our address lists differ until it is reloaded too"


def _global_rule(key: str) -> tuple[Cost, str]:
    prefix = key
    while prefix not in GLOBAL_RULES:
        if "." not in prefix:
            # A key added to the model with no rule here: the rule tests catch it; until then,
            # the dearer label.
            return (ELECTION, "no reload rule for this key")
        prefix = prefix.rsplit(".", 1)[0]
    return GLOBAL_RULES[prefix]


# --- values as people read them ---------------------------------------------------------------

_SECRET_KEYS = frozenset({"password", "webhook_url", "url"})
"""Keys whose values a plan never shows (a password; a webhook or Alertmanager URL often
carries a token)."""


def _fmt(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return repr(value)
    if isinstance(value, Authentication):
        return value.type  # never the password
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(_fmt(item) for item in items) + "]"
    if isinstance(value, BaseModel):
        shown = (f"{name} {_fmt(getattr(value, name))}" for name in type(value).model_fields)
        return "{" + ", ".join(shown) + "}"
    if dataclasses.is_dataclass(value) and type(value).__str__ is object.__str__:
        shown = (
            f"{f.name} {_fmt(getattr(value, f.name))}"
            for f in dataclasses.fields(value)
            if f.compare
        )
        return "{" + ", ".join(shown) + "}"
    return str(value)


def _values(key: str, old: object, new: object) -> str:
    """ "old -> new", or "changed" for a secret."""
    if key.rsplit(".", 1)[-1] in _SECRET_KEYS:
        return "changed"
    return f"{_fmt(old)} -> {_fmt(new)}"


def _differs(key: str, old: object, new: object) -> str:
    return f"{key} {_values(key, old, new)}"


def _model_diff(
    old: BaseModel, new: BaseModel, prefix: str = "", skip: frozenset[str] = frozenset()
) -> list[tuple[str, object, object]]:
    """(dotted key, old, new) for each value that differs; nested models are descended."""
    found: list[tuple[str, object, object]] = []
    for name in type(old).model_fields:
        key = f"{prefix}{name}"
        if key in skip:
            continue
        a, b = getattr(old, name), getattr(new, name)
        if isinstance(a, BaseModel) and type(a) is type(b):
            found += _model_diff(a, b, f"{key}.", skip)
        elif a != b:
            found.append((key, a, b))
    return found


def _dataclass_diff(old: object, new: object, name: str, found: list[str]) -> None:
    """What differs between two unequal probe keys, by leaf field name, descending into
    dataclasses of the same type ("interval 2 -> 3", "path /a -> /b")."""
    if dataclasses.is_dataclass(old) and not isinstance(old, type) and type(old) is type(new):
        for field in _compared_fields(type(old)):
            a, b = getattr(old, field), getattr(new, field)
            if a != b:
                _dataclass_diff(a, b, field, found)
        return
    text = _differs(name, old, new)
    if text not in found:  # a timeout is both the probe's and the check's
        found.append(text)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _compared_fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
    return names


def _instance_subject(name: str, inst: VrrpInstance) -> str:
    return f"{name} ({inst.interface} vrid {inst.virtual_router_id} {inst.family})"


def _vip_device(vip: VirtualAddress, inst: VrrpInstance) -> str:
    """Where the VIP goes: its device, else the instance's VMAC interface or interface."""
    return vip.device or vmac_interface_name(inst) or inst.interface


def _vip_count(inst: VrrpInstance) -> int:
    return len(inst.virtual_ipaddresses) + len(inst.virtual_ipaddresses_excluded)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _sorry_at(sorry: SorryServer) -> str:
    return host_port(str(sorry.address), sorry.port or 0)


def _probe_kind(key: CheckKey) -> str:
    """tcp, http, https, udp, dns, smtp, icmp or script: what a check's key may change and still be
    the same check restarting."""
    return key.probe.describe().split(" ", 1)[0]


H = TypeVar("H", bound=Hashable)


def _surplus(items: Sequence[H], others: Sequence[H]) -> list[H]:
    """The items of `items` not matched one-for-one by `others`, in order (a multiset minus)."""
    unmatched = Counter(others)
    left: list[H] = []
    for item in items:
        if unmatched[item] > 0:
            unmatched[item] -= 1
        else:
            left.append(item)
    return left


# --- the planner ------------------------------------------------------------------------------

_VipOwner = tuple[InstanceIdentity, VirtualAddress, bool]
"""(owning instance, the VIP as configured there, excluded from adverts)."""
_SyncDaemon = tuple[str, InstanceIdentity, int | None]
"""(interface, instance followed, sync_id) of `global.lvs_sync_daemon`."""


@dataclass(frozen=True, slots=True)
class _Service:
    vs: VirtualServer
    real_servers: dict[RealServerId, RealServer]
    """By identity: (virtual service, address, port), as the check pool has it."""


class _Planner:
    def __init__(self, old: LvshaConfig, new: LvshaConfig) -> None:
        self.old = old
        self.new = new
        self.out: list[Change] = []
        self.old_instances = {instance_identity(i): (n, i) for n, i in old.vrrp_instances.items()}
        self.new_instances = {instance_identity(i): (n, i) for n, i in new.vrrp_instances.items()}
        self.script_renames = self._script_renames()
        self.moved_from: Counter[InstanceIdentity] = Counter()

    def changes(self) -> list[Change]:
        self._vrrp_scripts()
        self._vrrp_track_files()
        self._vrrp_instances()
        self._sync_groups()
        self._services()
        self._global()
        self._bgp()
        return self.out

    def _add(self, area: str, action: str, subject: str, detail: str, cost: Cost) -> None:
        self.out.append(Change(area, action, subject, detail, cost))

    def _add_by_cost(self, area: str, subject: str, diffs: Iterable[tuple[Cost, str]]) -> None:
        """One "change" per cost, its differences joined in the order found."""
        grouped: dict[Cost, list[str]] = {}
        for cost, text in diffs:
            grouped.setdefault(cost, []).append(text)
        for cost in Cost:
            if cost in grouped:
                self._add(area, "change", subject, "; ".join(grouped[cost]), cost)

    # --- vrrp_scripts ---

    @staticmethod
    def _effective_script(config: LvshaConfig, script: VrrpScript) -> dict[str, object]:
        """The script as the VRRP process runs it (user and script security resolved)."""
        glob = config.global_
        return {
            "command": script.command,
            "interval": script.interval,
            "timeout": script.timeout,
            "rise": script.rise,
            "fall": script.fall,
            "user": script.user if script.user is not None else glob.script_user,
            "enable_script_security": glob.enable_script_security,
            "weight": script.weight,
        }

    def _script_renames(self) -> dict[str, str]:
        """Old name -> new name of scripts that changed only their name. The apply keeps such a
        script running, with its health, under the new name."""
        gone = {
            name: self._effective_script(self.old, script)
            for name, script in self.old.vrrp_scripts.items()
            if name not in self.new.vrrp_scripts
        }
        renames: dict[str, str] = {}
        for name, script in self.new.vrrp_scripts.items():
            if name in self.old.vrrp_scripts:
                continue
            definition = self._effective_script(self.new, script)
            for old_name, old_definition in gone.items():
                if old_name not in renames and old_definition == definition:
                    renames[old_name] = name
                    break
        return renames

    def _trackers_of(self, script: str) -> list[str]:
        return [
            name
            for name, inst in self.new.vrrp_instances.items()
            if any(track.script == script for track in inst.track_scripts)
        ]

    def _vrrp_scripts(self) -> None:
        renamed_from = {new: old for old, new in self.script_renames.items()}
        for name, script in self.new.vrrp_scripts.items():
            if name in renamed_from:
                detail = f"renamed {renamed_from[name]} -> {name}: keeps running, with its health"
                self._add("vrrp_script", "rename", name, detail, HITLESS)
                continue
            if name not in self.old.vrrp_scripts:
                self._add("vrrp_script", "add", name, "starts", HITLESS)
                continue
            before = self._effective_script(self.old, self.old.vrrp_scripts[name])
            after = self._effective_script(self.new, script)
            trackers = self._trackers_of(name)
            restarts = [
                _differs(key, before[key], after[key])
                for key in SCRIPT_RESTART_KEYS
                if before[key] != after[key]
            ]
            if restarts and trackers:
                detail = f"restarts in INIT (tracked by {', '.join(trackers)}): "
                self._add("vrrp_script", "change", name, detail + "; ".join(restarts), ELECTION)
            elif restarts:
                detail = "restarts (tracked by no instance): " + "; ".join(restarts)
                self._add("vrrp_script", "change", name, detail, HITLESS)
            if before["weight"] != after["weight"] and not trackers:
                detail = _differs("weight", before["weight"], after["weight"])
                self._add(
                    "vrrp_script", "change", name, f"{detail} (tracked by no instance)", HITLESS
                )
        for name in self.old.vrrp_scripts:
            if name not in self.new.vrrp_scripts and name not in self.script_renames:
                self._add("vrrp_script", "remove", name, "stops", HITLESS)

    # --- vrrp_track_files ---

    def _vrrp_track_files(self) -> None:
        """A tracked file's weight is reported on the instances that track it (_tracking); its
        path here: the number read from the new file moves their priority at once. The init
        settings apply at the next start, as in keepalived (a reload writes no file)."""
        old_files, new_files = self.old.vrrp_track_files, self.new.vrrp_track_files
        for name, track_file in new_files.items():
            trackers = [
                n
                for n, inst in self.new.vrrp_instances.items()
                if any(t.file == name for t in inst.track_files)
            ]
            if name not in old_files:
                self._add("vrrp_track_file", "add", name, f"watches {track_file.file}", HITLESS)
                continue
            before = old_files[name]
            diffs: list[tuple[Cost, str]] = []
            if before.file != track_file.file:
                text = _differs("file", before.file, track_file.file)
                if trackers:
                    diffs.append(
                        (ELECTION, f"{text}: read at once (tracked by {', '.join(trackers)})")
                    )
                else:
                    diffs.append((HITLESS, text))
            for key in ("weight", "reverse"):
                if getattr(before, key) != getattr(track_file, key) and not trackers:
                    text = _differs(key, getattr(before, key), getattr(track_file, key))
                    diffs.append((HITLESS, f"{text} (tracked by no instance)"))
            for key in ("init", "init_overwrite"):
                if getattr(before, key) != getattr(track_file, key):
                    text = _differs(key, getattr(before, key), getattr(track_file, key))
                    diffs.append((HITLESS, f"{text}: applies at the next start"))
            self._add_by_cost("vrrp_track_file", name, diffs)
        for name in old_files:
            if name not in new_files:
                self._add("vrrp_track_file", "remove", name, "no longer watched", HITLESS)

    # --- vrrp_instances, their VIPs and tracking ---

    def _old_subject(self, identity: InstanceIdentity) -> str:
        return _instance_subject(*self.old_instances[identity])

    def _new_subject(self, identity: InstanceIdentity) -> str:
        return _instance_subject(*self.new_instances[identity])

    def _vrrp_instances(self) -> None:
        vips = self._vip_changes()
        for identity, (name, inst) in self.new_instances.items():
            subject = _instance_subject(name, inst)
            if identity not in self.old_instances:
                detail = f"starts: priority {inst.priority}, {_plural(_vip_count(inst), 'VIP')}"
                self._add("vrrp_instance", "add", subject, detail, ELECTION)
                self.out += vips.get(identity, [])
                continue
            old_name, old_inst = self.old_instances[identity]
            if old_name != name:
                detail = f"renamed {old_name} -> {name}"
                self._add("vrrp_instance", "rename", subject, detail, HITLESS)
            self._add_by_cost("vrrp_instance", subject, self._instance_diffs(old_inst, inst))
            self.out += vips.get(identity, [])
            self._tracking(subject, old_inst, inst)
        for identity, (name, inst) in self.old_instances.items():
            if identity in self.new_instances:
                continue
            moved = self.moved_from[identity]
            leaving = _vip_count(inst) - moved
            verb = "leaves" if leaving == 1 else "leave"
            detail = f"stops: {_plural(leaving, 'VIP')} {verb} this director"
            if moved:
                detail += f", {moved} {'moves' if moved == 1 else 'move'} to another instance"
            self._add("vrrp_instance", "remove", _instance_subject(name, inst), detail, ELECTION)

    def _instance_diffs(self, old: VrrpInstance, new: VrrpInstance) -> list[tuple[Cost, str]]:
        diffs: list[tuple[Cost, str]] = []
        for key, (cost, _) in INSTANCE_RULES.items():
            a, b = getattr(old, key), getattr(new, key)
            if key == "unicast_peers":  # the set of peers, not their order
                a, b = frozenset(a), frozenset(b)
            if a == b:
                continue
            if isinstance(a, BaseModel) and type(a) is type(b):
                diffs += [(cost, _differs(k, x, y)) for k, x, y in _model_diff(a, b, f"{key}.")]
            elif key == "state":
                diffs.append(
                    (cost, f"{_differs(key, a, b)} (the initial state, for the next start)")
                )
            else:
                diffs.append((cost, _differs(key, a, b)))
        return diffs

    @staticmethod
    def _vip_owners(
        instances: Mapping[str, VrrpInstance],
    ) -> dict[IPv4Address | IPv6Address, dict[InstanceIdentity, _VipOwner]]:
        owners: dict[IPv4Address | IPv6Address, dict[InstanceIdentity, _VipOwner]] = {}
        for inst in instances.values():
            identity = instance_identity(inst)
            for excluded, vips in (
                (False, inst.virtual_ipaddresses),
                (True, inst.virtual_ipaddresses_excluded),
            ):
                for vip in vips:
                    owners.setdefault(vip.address.ip, {})[identity] = (identity, vip, excluded)
        return owners

    def _vip_changes(self) -> dict[InstanceIdentity, list[Change]]:
        """VIP changes, filed under the (new) instance whose lines they follow. The VIPs of an
        added or removed instance come and go with it, except those that move."""
        filed: dict[InstanceIdentity, list[Change]] = {}
        old_owners = self._vip_owners(self.old.vrrp_instances)
        new_owners = self._vip_owners(self.new.vrrp_instances)
        for address in {**old_owners, **new_owners}:
            before = old_owners.get(address, {})
            after = new_owners.get(address, {})
            subject = str(address)
            for identity, owner in after.items():
                if identity in before:
                    change = self._vip_edit(subject, before[identity], owner)
                    if change is not None:
                        filed.setdefault(identity, []).append(change)
            left = [owner for identity, owner in before.items() if identity not in after]
            joined = [owner for identity, owner in after.items() if identity not in before]
            for source, target in zip(left, joined, strict=False):
                self.moved_from[source[0]] += 1
                where = f"{self._old_subject(source[0])} -> {self._new_subject(target[0])}"
                edits = self._vip_attribute_diffs(source, target)
                detail = where + (f" ({', '.join(edits)})" if edits else "")
                filed.setdefault(target[0], []).append(
                    Change("vip", "move", subject, detail, VIP_MOVE)
                )
            for identity, vip, excluded in left[len(joined) :]:
                if identity not in self.new_instances:
                    continue  # leaves with its instance
                detail = f"{vip.address} leaves {self._new_subject(identity)}"
                detail += ", was excluded from adverts" if excluded else _ADVERT_NOTE
                cost = HITLESS
                filed.setdefault(identity, []).append(
                    Change("vip", "remove", subject, detail, cost)
                )
            for identity, vip, excluded in joined[len(left) :]:
                if identity not in self.old_instances:
                    continue  # comes with its instance
                device = _vip_device(vip, self.new_instances[identity][1])
                detail = f"{vip.address} on {device} joins {self._new_subject(identity)}"
                detail += ", excluded from adverts" if excluded else _ADVERT_NOTE
                cost = HITLESS
                filed.setdefault(identity, []).append(Change("vip", "add", subject, detail, cost))
        return filed

    def _vip_attribute_diffs(self, old: _VipOwner, new: _VipOwner) -> list[str]:
        """What the kernel cannot edit in place: prefix, device, label, broadcast, scope."""
        diffs = []
        old_vip, new_vip = old[1], new[1]
        if old_vip.address != new_vip.address:
            before, after = old_vip.address.network.prefixlen, new_vip.address.network.prefixlen
            diffs.append(f"prefix /{before} -> /{after}")
        old_device = _vip_device(old_vip, self.old_instances[old[0]][1])
        new_device = _vip_device(new_vip, self.new_instances[new[0]][1])
        if old_device != new_device:
            diffs.append(f"device {old_device} -> {new_device}")
        if old_vip.label != new_vip.label:
            diffs.append(f"label {_fmt(old_vip.label)} -> {_fmt(new_vip.label)}")
        if broadcast_address(old_vip) != broadcast_address(new_vip):
            old_brd, new_brd = broadcast_address(old_vip), broadcast_address(new_vip)
            diffs.append(f"broadcast {_fmt(old_brd)} -> {_fmt(new_brd)}")
        if address_scope(old_vip) != address_scope(new_vip):
            diffs.append(f"scope {_fmt(old_vip.scope)} -> {_fmt(new_vip.scope)}")
        return diffs

    def _vip_edit(self, subject: str, old: _VipOwner, new: _VipOwner) -> Change | None:
        where = self._new_subject(new[0])
        readded = self._vip_attribute_diffs(old, new)
        if readded:
            detail = f"re-added in {where}: {', '.join(readded)}"
            return Change("vip", "change", subject, detail, VIP_MOVE)
        if old[2] != new[2]:
            state = "now excluded from adverts" if new[2] else "now carried in adverts"
            return Change("vip", "change", subject, f"{state} of {where}{_ADVERT_NOTE}", HITLESS)
        return None

    def _tracking(self, subject: str, old: VrrpInstance, new: VrrpInstance) -> None:
        """Tracked interfaces and scripts, by the interface and the script they name (a renamed
        script is the same one) and their effective weights. Each change moves the priority or
        the instance's FAULT condition (weight 0): an election."""
        old_ifaces = {t.interface: t.weight for t in old.track_interfaces}
        new_ifaces = {t.interface: t.weight for t in new.track_interfaces}
        old_scripts = {
            self.script_renames.get(t.script, t.script): _weight(self.old, t.script, t.weight)
            for t in old.track_scripts
        }
        new_scripts = {t.script: _weight(self.new, t.script, t.weight) for t in new.track_scripts}
        old_files = {
            t.file: _file_weight(self.old, t.file, t.weight, t.reverse) for t in old.track_files
        }
        new_files = {
            t.file: _file_weight(self.new, t.file, t.weight, t.reverse) for t in new.track_files
        }
        before: Mapping[str, object]
        after: Mapping[str, object]
        for kind, before, after in (
            ("interface", old_ifaces, new_ifaces),
            ("script", old_scripts, new_scripts),
            ("file", old_files, new_files),
        ):
            for name, weight in after.items():
                if name not in before:
                    detail = f"tracks {kind} {name} (weight {weight})"
                    self._add("track", "add", subject, detail, ELECTION)
                elif before[name] != weight:
                    detail = f"{kind} {name} weight {before[name]} -> {weight}"
                    self._add("track", "change", subject, detail, ELECTION)
            for name in before:
                if name not in after:
                    self._add("track", "remove", subject, f"stops tracking {kind} {name}", ELECTION)

    # --- sync groups ---

    @staticmethod
    def _members(config: LvshaConfig, names: Sequence[str]) -> list[InstanceIdentity]:
        return [instance_identity(config.vrrp_instances[name]) for name in names]

    def _sync_groups(self) -> None:
        """Groups match by name, or by their members when renamed. Membership decides which
        states follow which: a member joining or leaving, and a group coming or going, are
        elections. The group's notify hooks are hitless."""
        old_groups = self.old.sync_groups
        new_groups = self.new.sync_groups
        by_members = {
            frozenset(self._members(self.old, group.instances)): name
            for name, group in old_groups.items()
            if name not in new_groups
        }
        matched: set[str] = set()
        for name, group in new_groups.items():
            members = self._members(self.new, group.instances)
            old_name = name if name in old_groups else by_members.get(frozenset(members))
            if old_name is None or old_name in matched:
                detail = "members " + ", ".join(self._new_subject(m) for m in members)
                self._add("sync_group", "add", name, detail, ELECTION)
                continue
            matched.add(old_name)
            old_group = old_groups[old_name]
            if old_name != name:
                self._add("sync_group", "rename", name, f"renamed {old_name} -> {name}", HITLESS)
            old_members = self._members(self.old, old_group.instances)
            diffs = [
                (ELECTION, f"{self._new_subject(m)} joins") for m in members if m not in old_members
            ]
            diffs += [
                (ELECTION, f"{self._subject(m)} leaves") for m in old_members if m not in members
            ]
            diffs += [
                (HITLESS, _differs(k, a, b))
                for k, a, b in _model_diff(old_group.notify, group.notify, "notify.")
            ]
            if old_group.smtp_alert != group.smtp_alert:
                diffs.append(
                    (HITLESS, _differs("smtp_alert", old_group.smtp_alert, group.smtp_alert))
                )
            self._add_by_cost("sync_group", name, diffs)
        for name, group in old_groups.items():
            if name not in new_groups and name not in matched:
                kept = [
                    m for m in self._members(self.old, group.instances) if m in self.new_instances
                ]
                detail = "its instances fail over alone" if kept else "its instances are removed"
                self._add("sync_group", "remove", name, detail, ELECTION)

    def _subject(self, identity: InstanceIdentity) -> str:
        if identity in self.new_instances:
            return self._new_subject(identity)
        return self._old_subject(identity)

    # --- virtual services, real servers, checks ---

    @staticmethod
    def _service_map(config: LvshaConfig) -> dict[ServiceKey, _Service]:
        """Each kernel service; a group's members share their virtual server's entry."""
        services: dict[ServiceKey, _Service] = {}
        for vs in config.virtual_servers:
            service = virtual_service_id(vs)
            real_servers = {real_server_id(vs, rs, service): rs for rs in vs.real_servers}
            entry = _Service(vs, real_servers)
            if vs.group is None:
                services[service_key(vs)] = entry
                continue
            group = config.virtual_server_groups[vs.group]
            for key in group_service_keys(vs, group):
                services[key] = entry
        return services

    def _check_keys(
        self,
        old_services: Mapping[ServiceKey, _Service],
        new_services: Mapping[ServiceKey, _Service],
    ) -> tuple[dict[RealServerId, list[CheckKey]], dict[RealServerId, list[CheckKey]]]:
        """The check keys, old and new, of the kept real servers whose keys may differ.

        `check_plan` builds them (it owns what makes two checks one), from each configuration
        reduced to those real servers. It builds a key from the global settings, the virtual
        server, the real server's identity and the check's own configuration only, so a real
        server whose checks and context are all equal has equal keys, and none are built for it:
        planning 10,000 unchanged real servers costs no probe construction.
        """
        same_global = all(
            getattr(self.old.global_, name) == getattr(self.new.global_, name)
            for name in GlobalConfig.model_fields
            if name not in CHECK_NEUTRAL_GLOBALS
        )
        old_wanted: list[VirtualServer] = []
        new_wanted: list[VirtualServer] = []
        groups: set[str] = set()
        for key, after in new_services.items():
            before = old_services.get(key)
            if before is None:
                continue
            if after.vs.group is not None:
                if after.vs.group in groups:
                    continue  # a group's real servers are one set, whatever its members
                groups.add(after.vs.group)
            same_context = same_global and _same_settings(before.vs, after.vs)
            pairs = [
                (before.real_servers[rid], rs)
                for rid, rs in after.real_servers.items()
                if rid in before.real_servers
                and not (same_context and before.real_servers[rid].checks == rs.checks)
            ]
            if pairs:
                old_rs = [old_rs for old_rs, _ in pairs]
                new_rs = [new_rs for _, new_rs in pairs]
                old_wanted.append(before.vs.model_copy(update={"real_servers": old_rs}))
                new_wanted.append(after.vs.model_copy(update={"real_servers": new_rs}))
        return _checks_by_server(self.old, old_wanted), _checks_by_server(self.new, new_wanted)

    def _services(self) -> None:
        old_services = self._service_map(self.old)
        new_services = self._service_map(self.new)
        old_checks, new_checks = self._check_keys(old_services, new_services)
        groups: set[str] = set()
        for key, service in new_services.items():
            before = old_services.get(key)
            vs = service.vs
            if before is None:
                checks = sum(len(rs.checks) for rs in vs.real_servers)
                if vs.group is not None:
                    detail = (
                        f"member of group {vs.group}: its "
                        f"{_plural(len(vs.real_servers), 'real server')} enter as the group's "
                        "checks say"
                    )
                else:
                    detail = (
                        f"{_plural(len(vs.real_servers), 'real server')}, "
                        f"{_plural(checks, 'check')}: real servers enter per alpha/rise"
                    )
                self._add("virtual_service", "add", str(key), detail, HITLESS)
                continue
            if vs.group is not None:
                # A group's settings, real servers and checks are one for its members: said
                # once, of the group.
                if vs.group in groups:
                    continue
                groups.add(vs.group)
            self._service(key, before, service, old_checks, new_checks)
        for key, service in old_services.items():
            if key not in new_services:
                count = _plural(len(service.vs.real_servers), "real server")
                detail = f"removed with its {count}: established flows break"
                self._add("virtual_service", "remove", str(key), detail, CONNECTION_RESET)

    def _service(
        self,
        key: ServiceKey,
        before: _Service,
        after: _Service,
        old_checks: Mapping[RealServerId, list[CheckKey]],
        new_checks: Mapping[RealServerId, list[CheckKey]],
    ) -> None:
        old, new = before.vs, after.vs
        subject = str(key) if new.group is None else group_service_id(new.group)
        if old.name != new.name:
            detail = f"renamed {_fmt(old.name)} -> {_fmt(new.name)}"
            self._add("virtual_service", "rename", subject, detail, HITLESS)
        followed = {
            k for k in ("forwarding", "inhibit_on_failure") if getattr(old, k) != getattr(new, k)
        }
        diffs = self._service_options(old, new)
        for name in sorted(followed):
            count = sum(
                1
                for rs_key, rs in after.real_servers.items()
                if rs_key in before.real_servers
                and _follows(name, old, new, before.real_servers[rs_key], rs)
            )
            if name == "forwarding" and _sorry_follows(old, new):
                count += 1
            if count:
                cost = CONNECTION_RESET if name == "forwarding" else HITLESS
                noun = "destination" if name == "forwarding" else "real server"
                text = _differs(name, getattr(old, name), getattr(new, name))
                diffs.append((cost, f"{text} ({_plural(count, noun)} follow)"))
        self._add_by_cost("virtual_service", subject, diffs)
        self._sorry_server(subject, old, new)
        for rs_key, rs in after.real_servers.items():
            old_rs = before.real_servers.get(rs_key)
            if old_rs == rs and rs_key not in old_checks and not followed:
                continue  # the same, checks too (see _check_keys)
            rs_subject = f"{subject} -> {host_port(rs_key.address, rs_key.port)}"
            if old_rs is None:
                detail = f"enters per alpha/rise, {_plural(len(rs.checks), 'check')}"
                self._add("real_server", "add", rs_subject, detail, HITLESS)
                continue
            rs_diffs = [
                (cost, _differs(name, getattr(old_rs, name), getattr(rs, name)))
                for name, (cost, _) in REAL_SERVER_RULES.items()
                if getattr(old_rs, name) != getattr(rs, name)
                and not (name in followed and _follows(name, old, new, old_rs, rs))
            ]
            self._add_by_cost("real_server", rs_subject, rs_diffs)
            self._checks(rs_subject, old_checks.get(rs_key, []), new_checks.get(rs_key, []))
        for rs_key in before.real_servers:
            if rs_key not in after.real_servers:
                rs_subject = f"{subject} -> {host_port(rs_key.address, rs_key.port)}"
                self._add("real_server", "remove", rs_subject, "weight 0, then removed", DRAIN)

    @staticmethod
    def _service_options(old: VirtualServer, new: VirtualServer) -> list[tuple[Cost, str]]:
        diffs: list[tuple[Cost, str]] = []
        if old.scheduler != new.scheduler:
            hashing = {old.scheduler, new.scheduler} & HASHING_SCHEDULERS
            text = _differs("scheduler", old.scheduler, new.scheduler)
            diffs.append(
                (CONNECTION_RESET, f"{text}: flows re-mapped") if hashing else (HITLESS, text)
            )
        if sorted(old.scheduler_flags) != sorted(new.scheduler_flags):
            before, after = sorted(old.scheduler_flags), sorted(new.scheduler_flags)
            diffs.append((CONNECTION_RESET, _differs("scheduler_flags", before, after)))
        if old.ops != new.ops:
            diffs.append((CONNECTION_RESET, _differs("ops", old.ops, new.ops)))
        was = service_options(old).persistence
        now = service_options(new).persistence
        if was is None or now is None:
            if (was is None) != (now is None):
                text = _differs(
                    "persistence_timeout", old.persistence_timeout, new.persistence_timeout
                )
                turned = "off" if now is None else "on"
                diffs.append((CONNECTION_RESET, f"{text}: client affinity {turned}"))
        else:
            if was.timeout != now.timeout:
                diffs.append((HITLESS, _differs("persistence_timeout", was.timeout, now.timeout)))
            if was.prefix_length != now.prefix_length:
                text = _differs("persistence_granularity", was.prefix_length, now.prefix_length)
                diffs.append((HITLESS, text))
        quorum_cost = DRAIN if new.sorry_server is not None else HITLESS
        for name in ("quorum", "hysteresis"):
            a, b = getattr(old, name), getattr(new, name)
            if a != b:
                note = (
                    ": below it the sorry server takes every real server's place"
                    if quorum_cost is DRAIN
                    else ""
                )
                diffs.append((quorum_cost, f"{_differs(name, a, b)}{note}"))
        for name in SERVICE_HOOK_KEYS:
            a, b = getattr(old, name), getattr(new, name)
            if a != b:
                diffs.append((HITLESS, _differs(name, a, b)))
        if old.smtp_alert != new.smtp_alert:
            diffs.append((HITLESS, _differs("smtp_alert", old.smtp_alert, new.smtp_alert)))
        return diffs

    def _sorry_server(self, subject: str, old: VirtualServer, new: VirtualServer) -> None:
        """A sorry server serves while the service is below quorum, which a plan cannot know:
        adding one may take every real server out now, removing or replacing one may take out
        the server serving now. Both are drains. Its weight is edited in place; its forwarding
        is as a real server's."""
        a, b = old.sorry_server, new.sorry_server
        if a is not None and (b is None or _sorry_at(a) != _sorry_at(b)):
            detail = "leaves: weight 0, then removed"
            self._add("sorry_server", "remove", f"{subject} sorry {_sorry_at(a)}", detail, DRAIN)
        if b is not None and (a is None or _sorry_at(a) != _sorry_at(b)):
            detail = "serves below quorum: if the service is below it now, every real server leaves"
            self._add("sorry_server", "add", f"{subject} sorry {_sorry_at(b)}", detail, DRAIN)
        if a is None or b is None or _sorry_at(a) != _sorry_at(b):
            return
        diffs: list[tuple[Cost, str]] = []
        if a.weight != b.weight:
            diffs.append((HITLESS, _differs("weight", a.weight, b.weight)))
        if a.forwarding != b.forwarding and not _sorry_follows(old, new):
            diffs.append((CONNECTION_RESET, _differs("forwarding", a.forwarding, b.forwarding)))
        self._add_by_cost("sorry_server", f"{subject} sorry {_sorry_at(b)}", diffs)

    def _checks(self, subject: str, old: list[CheckKey], new: list[CheckKey]) -> None:
        """Checks match by key as a multiset (their order does not matter). What is left pairs
        by probe kind, in order, as a check that restarts with what differs; the rest are added
        or removed. All are hitless: only that check starts again (the apply presumes its real
        server stands as it did, as `lvsha.checks.state.Presumption` does after a restart)."""
        if old == new:
            return
        gone = _surplus(old, new)
        for key in _surplus(new, old):
            where = f"{key.probe.describe()} check of {subject}"
            pair = next((g for g in gone if _probe_kind(g) == _probe_kind(key)), None)
            if pair is None:
                self._add("check", "add", where, "starts", HITLESS)
                continue
            gone.remove(pair)
            found: list[str] = []
            _dataclass_diff(pair, key, "check", found)
            self._add("check", "change", where, "restarts: " + "; ".join(found), HITLESS)
        for key in gone:
            where = f"{key.probe.describe()} check of {subject}"
            self._add("check", "remove", where, "stops", HITLESS)

    # --- bgp ---

    def _bgp(self) -> None:
        old, new = self.old.bgp, self.new.bgp
        if old is None or new is None:
            if old is not new:
                action = "add" if old is None else "remove"
                detail = (
                    "announce the virtual servers' addresses through FRR"
                    if old is None
                    else "every route lvsha announced is withdrawn; its BGP sessions stay"
                )
                self._add("bgp", action, "bgp", detail, Cost.DRAIN)
            return
        for key, a, b in _model_diff(old, new, skip=frozenset()):
            cost, note = BGP_RULES[key.split(".", 1)[0]]
            detail = _values(key, a, b) + (f": {note}" if note else "")
            self._add("bgp", "change", key, detail, cost)

    # --- global ---

    def _global(self) -> None:
        old, new = self.old.global_, self.new.global_
        for key, a, b in _model_diff(old, new, skip=GLOBAL_FOLDED | {"lvs_sync_daemon"}):
            cost, note = _global_rule(key)
            detail = _values(key, a, b) + (f": {note}" if note else "")
            self._add("global", "change", key, detail, cost)
        before = _sync_daemon(old, self.old_instances)
        after = _sync_daemon(new, self.new_instances)
        if before != after:
            cost, note = GLOBAL_RULES["lvs_sync_daemon"]
            shown = _values(
                "lvs_sync_daemon",
                None if before is None else old.lvs_sync_daemon,
                None if after is None else new.lvs_sync_daemon,
            )
            self._add("global", "change", "lvs_sync_daemon", f"{shown}: {note}", cost)


BGP_RULES: dict[str, tuple[Cost, str]] = {
    "asn": (
        Cost.CONNECTION_RESET,
        "FRR's BGP instance is made again: every session restarts and the routes leave the "
        "routers meanwhile",
    ),
    "router_id": (Cost.CONNECTION_RESET, "every BGP session restarts"),
    "peers": (HITLESS, "sessions of peers added or removed start or end; the others stay"),
    "announce": (
        Cost.DRAIN,
        "an address no longer announced is withdrawn (flows to it move to other directors); "
        "a new one is announced once its services have quorum",
    ),
    "bfd": (HITLESS, "the BFD profile changes in place"),
    "graceful_shutdown": (HITLESS, "applies to the next handover or stop"),
    "vtysh": (HITLESS, "the next FRR call uses it"),
    "timeout": (HITLESS, ""),
    "poll_interval": (HITLESS, ""),
}
"""`bgp` keys, with the note shown after a change."""


def _checks_by_server(
    config: LvshaConfig, virtual_servers: list[VirtualServer]
) -> dict[RealServerId, list[CheckKey]]:
    """The check keys of `virtual_servers` (in `config`'s global context), per real server."""
    grouped: dict[RealServerId, list[CheckKey]] = {}
    if not virtual_servers:
        return grouped
    reduced = config.model_copy(update={"virtual_servers": virtual_servers})
    for target in check_plan(reduced).targets:
        grouped.setdefault(target.real_server, []).append(target.key)
    return grouped


def _same_settings(old: VirtualServer, new: VirtualServer) -> bool:
    """Every key of the two virtual servers but their real servers is equal."""
    return all(
        getattr(old, name) == getattr(new, name)
        for name in VirtualServer.model_fields
        if name != "real_servers"
    )


def _weight(config: LvshaConfig, script: str, override: int | None) -> int:
    return override if override is not None else config.vrrp_scripts[script].weight


def _file_weight(config: LvshaConfig, name: str, weight: int | None, reverse: bool | None) -> str:
    """A tracked file's effective weight as the plan shows it, e.g. "-10", "0 reverse"."""
    track_file = config.vrrp_track_files[name]
    weight = weight if weight is not None else track_file.weight
    reverse = reverse if reverse is not None else track_file.reverse
    return f"{weight}{' reverse' if reverse else ''}"


def _follows(
    name: str, old_vs: VirtualServer, new_vs: VirtualServer, old_rs: RealServer, rs: RealServer
) -> bool:
    """The real server's value changed from the service's old value to its new one."""
    return bool(
        getattr(old_rs, name) == getattr(old_vs, name)
        and getattr(rs, name) == getattr(new_vs, name)
    )


def _sorry_follows(old: VirtualServer, new: VirtualServer) -> bool:
    """The same sorry server's forwarding changed along with its service's."""
    a, b = old.sorry_server, new.sorry_server
    return (
        a is not None
        and b is not None
        and _sorry_at(a) == _sorry_at(b)
        and old.forwarding != new.forwarding
        and a.forwarding == old.forwarding
        and b.forwarding == new.forwarding
    )


def _sync_daemon(
    glob: GlobalConfig, instances: Mapping[InstanceIdentity, tuple[str, VrrpInstance]]
) -> _SyncDaemon | None:
    """The sync daemon's settings with the instance it follows by identity (a renamed instance
    is the same one)."""
    sync = glob.lvs_sync_daemon
    if sync is None:
        return None
    for identity, (name, _) in instances.items():
        if name == sync.vrrp_instance:
            return (sync.interface, identity, sync.sync_id)
    raise ValueError(f"lvs_sync_daemon follows no instance named {sync.vrrp_instance!r}")
