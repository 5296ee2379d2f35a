"""Configuration of VRRP instances, their scripts and sync groups."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from lvsha.config.base import (
    Command,
    InterfaceName,
    IPAddress,
    IPInterface,
    Model,
    Name,
    Seconds,
    shorthand,
)

Family = Literal["ipv4", "ipv6"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


InitialState = Annotated[Literal["MASTER", "BACKUP"], BeforeValidator(_upper)]


class Garp(Model):
    """Gratuitous ARP (IPv4) / unsolicited neighbour advertisement (IPv6) announcements."""

    burst: int = Field(
        5, ge=1, le=255, description="Packets sent at once on becoming master (garp_master_repeat)."
    )
    interval: Seconds = Field(
        0.0, ge=0, le=1, description="Gap between packets of one burst (garp_interval)."
    )
    delay: Seconds = Field(
        5.0,
        ge=0,
        le=3600,
        description="Delay before a second burst after becoming master; 0 sends none "
        "(garp_master_delay).",
    )
    refresh: Seconds = Field(
        0.0,
        ge=0,
        le=86400,
        description="Period of refresh bursts while master; 0 is off (garp_master_refresh).",
    )
    refresh_burst: int = Field(
        1, ge=1, le=255, description="Packets per refresh (garp_master_refresh_repeat)."
    )


def _broadcast(value: object) -> object:
    if isinstance(value, str) and value not in ("+", "-"):
        try:
            IPv4Address(value)
        except ValueError:
            raise ValueError(
                f"'{value}' is not an IPv4 address, nor + (host bits set) or - (host bits clear)"
            ) from None
    return value


SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
"""Address scope names and their numbers (iproute2's rt_scopes)."""


def _scope(value: object) -> object:
    """A scope name, or a number 0-255 (also written as a string, as keepalived reads it)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a scope name or a number 0-255")
    if isinstance(value, int) and not 0 <= value <= 255:
        raise ValueError(f"scope {value} is not a number 0-255")
    if isinstance(value, str) and value not in SCOPES:
        raise ValueError(
            f"'{value}' is not a scope: use global, site, link, host, nowhere or a number 0-255"
        )
    return value


AddressScope = Annotated[
    Literal["global", "site", "link", "host", "nowhere"] | int, BeforeValidator(_scope)
]


class VirtualAddress(Model):
    """A virtual IP. In YAML a bare string `192.0.2.10/24` is the same as `{address: ...}`."""

    address: IPInterface = Field(
        description="Address with prefix length; without one, /32 (IPv4) or /128 (IPv6)."
    )
    device: InterfaceName | None = Field(
        None, description="Interface to add it to; default: the instance's interface."
    )
    label: str | None = Field(
        None,
        max_length=15,
        description="Address label, e.g. eth0:vip; must start with the device name and ':'.",
    )
    broadcast: Annotated[str, BeforeValidator(_broadcast)] | None = Field(
        None,
        description="IPv4 only: the broadcast address (keepalived's brd), or + (host bits "
        "set) or - (host bits clear) from the VIP; none: no broadcast address.",
    )
    scope: AddressScope | None = Field(
        None,
        description="IPv4 only: the address scope, global, site, link, host, nowhere or a "
        "number 0-255; none: global. In the subnet of another address on the device, the "
        "kernel wants that address's scope.",
    )


Vip = Annotated[VirtualAddress, shorthand("address")]


class TrackInterface(Model):
    """An interface whose link state changes the instance's priority. `- eth1` is shorthand."""

    interface: InterfaceName
    weight: int = Field(
        0,
        ge=-254,
        le=254,
        description="Added to the priority while up (weight > 0) or while down (weight < 0); "
        "with 0, link down puts the instance in FAULT.",
    )


class TrackScript(Model):
    """A reference to a `vrrp_scripts` entry. `- check_haproxy` is shorthand."""

    script: Name
    weight: int | None = Field(
        None, ge=-254, le=254, description="Overrides the script's own weight for this instance."
    )


class TrackFileRef(Model):
    """A reference to a `vrrp_track_files` entry. `- maint_file` is shorthand."""

    file: Name
    weight: int | None = Field(
        None, ge=-254, le=254, description="Overrides the track file's own weight here."
    )
    reverse: bool | None = Field(None, description="Overrides the track file's own reverse here.")


class Notify(Model):
    """Hooks run on state changes, one at a time and in order, with keepalived's arguments
    (GROUP|INSTANCE, name, state, priority)."""

    master: Command | None = Field(None, description="Run on becoming MASTER (notify_master).")
    backup: Command | None = Field(None, description="Run on becoming BACKUP (notify_backup).")
    fault: Command | None = Field(None, description="Run on entering FAULT (notify_fault).")
    stop: Command | None = Field(None, description="Run when the instance stops (notify_stop).")
    any: Command | None = Field(None, description="Run on every state change (notify).")
    timeout: Seconds = Field(
        10.0, gt=0, le=3600, description="A hook still running after this is killed."
    )


class Authentication(Model):
    """VRRPv2 simple-password authentication, for peers running keepalived's auth_type PASS."""

    type: Literal["PASS"] = Field(description="Only PASS: AH is not supported.")
    password: str = Field(min_length=1, max_length=8, description="At most 8 characters.")


class VrrpInstance(Model):
    """One virtual router: an election on one interface, and the VIPs its master holds."""

    interface: InterfaceName = Field(
        description="Interface the adverts are sent and heard on; default: "
        "global.vrrp.default_interface."
    )
    virtual_router_id: int = Field(ge=1, le=255, description="VRID, 1-255, equal on all peers.")
    priority: int = Field(
        100, ge=1, le=255, description="1-254; 255 only for the owner of the VIPs."
    )
    advert_interval: Seconds = Field(
        1.0,
        gt=0,
        le=255,  # the v2 maximum; the version-specific rule is checked once the version is known
        description="v2: whole seconds 1-255; v3: 0.01-40.95 s in 10 ms steps.",
    )
    version: Literal[2, 3] = Field(
        2, description="VRRP version; default: 3 for IPv6, else global.vrrp.version."
    )
    family: Family = Field("ipv4", description="Address family; default: the VIPs' family.")
    virtual_ipaddresses: list[Vip] = Field(
        min_length=1, description="VIPs carried in adverts and held by the master."
    )
    virtual_ipaddresses_excluded: list[Vip] = Field(
        default_factory=list,
        description="VIPs held by the master but not carried in adverts (any family).",
    )
    state: InitialState = Field("BACKUP", description="Initial state: MASTER or BACKUP.")
    preempt: bool = Field(
        True,
        description="A higher-priority backup takes over from a lower master (nopreempt: false).",
    )
    preempt_delay: Seconds = Field(
        0.0, ge=0, le=1000, description="Seconds after start-up before this instance preempts."
    )
    mcast_src_ip: IPAddress | None = Field(
        None, description="Source of multicast adverts; default: the interface's primary address."
    )
    unicast_src_ip: IPAddress | None = Field(
        None, description="Source of unicast adverts; default: the interface's primary address."
    )
    unicast_peers: list[IPAddress] = Field(
        default_factory=list, description="Send adverts to these peers instead of multicast."
    )
    track_interfaces: list[Annotated[TrackInterface, shorthand("interface")]] = Field(
        default_factory=list
    )
    track_scripts: list[Annotated[TrackScript, shorthand("script")]] = Field(default_factory=list)
    notify: Notify = Field(default_factory=Notify)
    garp: Garp = Field(
        default_factory=Garp, description="Keys not set here come from global.vrrp.garp."
    )
    authentication: Authentication | None = Field(None, description="VRRPv2 only.")
    track_files: list[Annotated[TrackFileRef, shorthand("file")]] = Field(
        default_factory=list,
        description="vrrp_track_files whose number moves the priority (keepalived's track_file).",
    )
    smtp_alert: bool | None = Field(
        None,
        description="Mail this instance's state changes to the SMTP sinks; default: its sync "
        "group's smtp_alert, else global.notification.smtp_alert_vrrp, else smtp_alert, else "
        "false (as keepalived).",
    )
    dont_track_primary: bool = Field(
        False,
        description="The instance's own interface going down does not put it in FAULT "
        "(dont_track_primary); tracked interfaces still count.",
    )
    accept: bool = Field(
        True,
        description="Accept mode (RFC 5798 6.1): with false (no_accept), packets addressed to "
        "the VIPs are dropped (nftables table inet lvsha_vrrp; needs nft), VRRP and IPv6 "
        "neighbour discovery aside, unless the priority is 255.",
    )
    skip_check_adv_addr: bool | None = Field(
        None,
        description="Take adverts whose address list differs from ours even in strict mode; "
        "default: global.vrrp.skip_check_adv_addr.",
    )
    use_vmac: bool = Field(
        False,
        description="The master holds the VIPs on a macvlan whose MAC is the VRRP virtual MAC "
        "00:00:5e:00:01:VRID (IPv6: 00:00:5e:00:02:VRID): a failover needs no ARP update.",
    )
    vmac_interface: InterfaceName | None = Field(
        None, description="Name of the VMAC interface (use_vmac); default: vrrp.VRID."
    )
    vmac_xmit_base: bool = Field(
        False,
        description="With use_vmac, send adverts from the interface (its own MAC) instead of "
        "from the VMAC interface; they are received on the VMAC interface either way.",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _no_string_version(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() in ("2", "3"):
            raise ValueError(f"write the version as a number: {value.strip()}, not '{value}'")
        return value


VMAC_PREFIX = "vrrp"
"""keepalived's default VMAC interface names are vrrp.VRID, for either family."""


def vmac_interface_name(inst: VrrpInstance) -> str | None:
    """The VMAC interface of an instance with use_vmac (its vmac_interface, else
    vrrp.VRID as keepalived names it), or None without use_vmac."""
    if not inst.use_vmac:
        return None
    return inst.vmac_interface or f"{VMAC_PREFIX}.{inst.virtual_router_id}"


class VrrpScript(Model):
    """A command run periodically whose exit status (0 = healthy) feeds instance priority."""

    command: Command = Field(description="Program and arguments; no shell is involved.")
    interval: Seconds = Field(1.0, gt=0, le=86400, description="Seconds between runs.")
    timeout: Seconds = Field(
        1.0,
        gt=0,
        le=86400,
        description="A run still going after this fails and is killed; default: the interval.",
    )
    rise: int = Field(1, ge=1, le=255, description="Successes in a row to become healthy.")
    fall: int = Field(1, ge=1, le=255, description="Failures in a row to become failed.")
    weight: int = Field(
        0,
        ge=-254,
        le=254,
        description="> 0: added while healthy; < 0: added while failed; 0: failure means FAULT.",
    )
    user: str | None = Field(None, description="Run as this user; default: global.script_user.")


def _absolute(value: object) -> object:
    if isinstance(value, str):
        if not value.startswith("/"):
            raise ValueError(
                f"'{value}' is not an absolute path: write it from / "
                f"(e.g. /run/lvsha/{value.rsplit('/', 1)[-1]})"
            )
        if value.endswith("/") or "\0" in value:
            raise ValueError(f"'{value}' does not name a file (a path like /run/lvsha/prio)")
    return value


class VrrpTrackFile(Model):
    """A file holding a number that moves the priority of the instances tracking it
    (keepalived's track_file). It is read when written or replaced; a missing or empty file,
    or one not starting with a number, reads as 0."""

    file: Annotated[str, BeforeValidator(_absolute)] = Field(
        min_length=2, description="Absolute path; its directory must exist."
    )
    weight: int = Field(
        1,
        ge=-254,
        le=254,
        description="The number times the weight is added to the priority; a result of -254 "
        "or less means FAULT. With 0: a non-zero number means FAULT, 0 means fine.",
    )
    reverse: bool = Field(
        False,
        description="Subtract instead of add; with weight 0, 0 means FAULT and non-zero fine.",
    )
    init: int | None = Field(
        None,
        ge=-(2**31),
        le=2**31 - 1,
        description="Write this number to the file at start-up when it does not exist "
        "(init_file); none: leave it alone.",
    )
    init_overwrite: bool = Field(
        False, description="Write `init` at start-up even when the file exists (overwrite)."
    )


class SyncGroup(Model):
    """Instances that fail over together: when one leaves MASTER, all do."""

    instances: list[Name] = Field(min_length=1)
    notify: Notify = Field(default_factory=Notify)
    smtp_alert: bool | None = Field(
        None,
        description="Mail its members' state changes to the SMTP sinks, where a member says "
        "nothing; default: global.notification.smtp_alert_vrrp, else smtp_alert, else false.",
    )
