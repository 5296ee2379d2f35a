"""The whole configuration of one director: the root of the model."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, model_validator

from lvsha.config.base import InterfaceName, Model, Name, Seconds, TypeDoc, valid_interface
from lvsha.config.bgp import BgpSettings
from lvsha.config.checks import CheckTiming
from lvsha.config.lvs import VirtualServer
from lvsha.config.vrrp import Garp, SyncGroup, VrrpInstance, VrrpScript, VrrpTrackFile
from lvsha.config.vsgroup import VirtualServerGroup


def _email(value: object) -> object:
    """user@domain, or a local address (root, root@localhost) as keepalived files use."""
    if isinstance(value, str) and not re.fullmatch(r"[^@\s<>\"]+(@[^@\s<>\"]+)?", value):
        raise ValueError(f"'{value}' is not an email address (user@domain, or a local user)")
    return value


def _webhook(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"'{value}' is not an http:// or https:// URL")
    return value


EventName = Literal[
    "vrrp",
    "checker",
    "config",
    "process",
    "script",
    "bgp",
    "vrrp_state",
    "real_server",
    "quorum",
    "config_applied",
    "config_refused",
    "child_restarted",
    "script_refused",
    "bgp_route",
    "bgp_peer",
]
"""An event type, or a category of them (lvsha.alerts.events.CATEGORIES)."""

SeverityName = Literal["info", "warning", "critical"]


class Sink(Model):
    """What every alert sink has: which events it takes and how it sends them."""

    name: Name | None = Field(
        None, description="Shown in the logs and metrics (label sink); default: type-N."
    )
    events: list[EventName] | None = Field(
        None,
        description="Event types, or categories (vrrp, checker, config, process, script), to "
        "send; default: all.",
    )
    min_severity: SeverityName = Field(
        "info", description="Send events of this severity and above (info, warning, critical)."
    )
    timeout: Seconds = Field(10.0, gt=0, le=600, description="Limit of one delivery attempt.")
    retries: int = Field(
        3, ge=0, le=20, description="Attempts after a failed one, 1 s, 2 s, 4 s ... apart."
    )
    queue_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Alerts waiting to be sent; beyond it new ones are dropped, counted "
        "(lvsha_alerts_dropped_total) and logged.",
    )
    gather: Seconds = Field(
        2.0,
        ge=0,
        le=600,
        description="Wait this long after the first alert of a burst, and send what came "
        "meanwhile as one message.",
    )


class SmtpSink(Sink):
    """E-mail through an SMTP relay."""

    type: Literal["smtp"]
    server: str = Field(min_length=1, description="Relay host name or address.")
    port: int = Field(25, ge=1, le=65535)
    tls: Literal["auto", "starttls", "tls", "off"] = Field(
        "auto",
        description="auto: STARTTLS when the relay offers it; starttls: required; tls: "
        "TLS from the start (port 465); off: plain text, as keepalived.",
    )
    username: str | None = Field(None, description="Log in with this user (needs password_file).")
    password_file: str | None = Field(None, description="File holding the password.")
    sender: Annotated[str, BeforeValidator(_email)] = Field(
        alias="from", description="The sender address (From:)."
    )
    to: list[Annotated[str, BeforeValidator(_email)]] = Field(
        min_length=1, description="Recipients."
    )
    min_interval: Seconds = Field(
        60.0,
        ge=0,
        le=86400,
        description="At most one message this often: what comes in between goes in the next "
        "one, a digest.",
    )


class WebhookSink(Sink):
    """A JSON POST per alert, or per burst."""

    type: Literal["webhook"]
    url: Annotated[str, BeforeValidator(_webhook)] = Field(
        description="http:// or https:// URL to POST to."
    )
    secret_file: str | None = Field(
        None,
        description="File holding a secret: each POST then carries X-Lvsha-Signature: "
        "sha256=<HMAC-SHA256 of the body, hex>.",
    )
    min_interval: Seconds = Field(
        1.0, ge=0, le=86400, description="At most one POST this often (the rest wait for it)."
    )


class AlertmanagerSink(Sink):
    """Prometheus Alertmanager's v2 API: an alert per condition, fired and resolved."""

    type: Literal["alertmanager"]
    url: Annotated[str, BeforeValidator(_webhook)] = Field(
        description="Alertmanager's base URL, e.g. http://127.0.0.1:9093."
    )
    resend_interval: Seconds = Field(
        60.0, ge=1, le=3600, description="Firing alerts are sent again this often."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Added to every alert (router_id is always there)."
    )
    min_interval: Seconds = Field(1.0, ge=0, le=86400, description="At most one POST this often.")


AlertSink = Annotated[SmtpSink | WebhookSink | AlertmanagerSink, Field(discriminator="type")]


class Notification(Model):
    """Where events are reported besides the logs and the event stream."""

    email: list[Annotated[str, BeforeValidator(_email)]] = Field(
        default_factory=list,
        description="Recipients (notification_email): with smtp_server, an smtp sink named email.",
    )
    email_from: Annotated[str, BeforeValidator(_email)] | None = Field(
        None, description="Sender (notification_email_from); default: lvsha@<host name>."
    )
    smtp_server: str | None = Field(None, description="SMTP relay host name or address.")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_timeout: Seconds = Field(30.0, gt=0, le=600, description="smtp_connect_timeout.")
    webhook_url: Annotated[str, BeforeValidator(_webhook)] | None = Field(
        None, description="A webhook sink named webhook: each event is POSTed here as JSON."
    )
    sinks: list[AlertSink] = Field(
        default_factory=list, description="Alert sinks, any number of each type."
    )
    smtp_alert: bool | None = Field(
        None,
        description="keepalived's smtp_alert: the default of every smtp_alert below. While no "
        "smtp_alert key is set anywhere, SMTP sinks take every event their `events` and "
        "min_severity let through; once one is, keepalived's defaults decide which VRRP and "
        "checker events they mail (instances and services: false, real servers: true).",
    )
    smtp_alert_vrrp: bool | None = Field(
        None,
        description="Default smtp_alert of VRRP instances and sync groups (keepalived's "
        "smtp_alert_vrrp); default: smtp_alert.",
    )
    smtp_alert_checker: bool | None = Field(
        None,
        description="Default smtp_alert of virtual and real servers (keepalived's "
        "smtp_alert_checker); default: smtp_alert.",
    )


def listen_address(value: str) -> tuple[str, int]:
    """(host, port) of "host:port", "[v6 address]:port" or ":port" (every address); ValueError
    naming the problem otherwise."""
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{value}' is not host:port (e.g. 127.0.0.1:9650 or [::1]:9650)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"'{value}': only an IPv6 address goes in brackets")
    elif ":" in host:
        raise ValueError(f"'{value}': put an IPv6 address in brackets, e.g. [::1]:9650")
    return host, int(port)


def _listen(value: object) -> object:
    if isinstance(value, str):
        listen_address(value)
    return value


class MetricsSettings(Model):
    """The Prometheus endpoint (the text files in the run directory are always written)."""

    listen: Annotated[str, BeforeValidator(_listen)] | None = Field(
        None,
        description="host:port to serve /metrics on, e.g. 127.0.0.1:9650 or [::1]:9650; "
        "none: no endpoint.",
    )
    keepalived_names: bool = Field(
        False,
        description="Also export the metric names of the keepalived exporter "
        "(keepalived_vrrp_state, ...), for existing dashboards.",
    )


def _multicast(version: int, default: str) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, str):
            try:
                address = ipaddress.ip_address(value.strip())
            except ValueError:
                raise ValueError(
                    f"'{value}' is not an IPv{version} address (e.g. {default})"
                ) from None
            if address.version != version or not address.is_multicast:
                raise ValueError(
                    f"'{value}' is not an IPv{version} multicast address (e.g. {default})"
                )
            return str(address)
        return value

    return BeforeValidator(check)


MulticastGroup4 = Annotated[str, _multicast(4, "224.0.0.18"), TypeDoc("IPv4 multicast address")]
MulticastGroup6 = Annotated[str, _multicast(6, "ff02::12"), TypeDoc("IPv6 multicast address")]


class VrrpDefaults(Model):
    """Defaults for every VRRP instance."""

    version: Literal[2, 3] = Field(2, description="VRRP version of IPv4 instances (vrrp_version).")
    garp: Garp = Field(default_factory=Garp)
    realtime_priority: int | None = Field(
        None,
        ge=1,
        le=99,
        description="Run the VRRP process with SCHED_FIFO at this priority, so adverts and "
        "timers are not delayed by other load; none: normal scheduling.",
    )
    strict: bool = Field(
        False,
        description="RFC compliance (vrrp_strict): refuse authentication, unicast peers, "
        "preempt_delay, state MASTER below priority 255, a first IPv6 VIP that is not "
        "link-local and VRRPv2 accept mode; drop adverts whose address list differs from ours "
        "(unless skip_check_adv_addr); a master discards lower-priority adverts instead of "
        "answering them. Unlike keepalived it drops no traffic to the VIPs by itself: that is "
        "accept: false.",
    )
    skip_check_adv_addr: bool = Field(
        False,
        description="Take adverts whose address list differs from ours even in strict mode "
        "(they are counted in lvsha_vrrp_address_list_mismatch_total); the default of each "
        "instance's skip_check_adv_addr (vrrp_skip_check_adv_addr).",
    )
    mcast_group4: MulticastGroup4 = Field(
        "224.0.0.18",
        description="Group IPv4 adverts are sent to and heard on (vrrp_mcast_group4); every "
        "peer must use the same.",
    )
    mcast_group6: MulticastGroup6 = Field(
        "ff02::12",
        description="Group IPv6 adverts are sent to and heard on (vrrp_mcast_group6).",
    )
    default_interface: InterfaceName | None = Field(
        None, description="Interface of an instance that names none (default_interface)."
    )


class LvsSyncDaemon(Model):
    """The kernel's IPVS connection sync daemon, following one VRRP instance's role."""

    interface: InterfaceName
    vrrp_instance: Name = Field(description="Master on this instance's master, backup elsewhere.")
    sync_id: int | None = Field(None, ge=0, le=255, description="Default: the instance's VRID.")


class IpvsSettings(Model):
    """How lvsha keeps the kernel's IPVS table."""

    on_stop: Literal["keep", "remove"] = Field(
        "keep",
        description="On stop, keep the table (a restart adopts it and connections survive) "
        "or remove the services lvsha manages (keepalived removes them).",
    )
    resync_interval: Seconds = Field(
        5.0,
        gt=0,
        le=3600,
        description="Re-read the kernel table this often to correct drift. A re-read dumps "
        "every service (as ipvsadm -Ln does): with thousands of entries, allow it more time.",
    )
    drain_removed: Seconds = Field(
        0.0,
        ge=0,
        le=86400,
        description="A real server that a reload removes from a virtual server stays in IPVS "
        "at weight 0 this long (no new connections; established ones go on), then is deleted. "
        "0: deleted at once, as keepalived does. A removed virtual server is deleted at once.",
    )


def _group(value: object) -> object:
    """A group name that exists on this host, or a numeric group id."""
    if isinstance(value, bool):
        raise ValueError("expected a group name or number")
    if isinstance(value, int):
        if not 0 <= value <= 0xFFFF_FFFE:
            raise ValueError(f"group id {value} is out of range")
        return value
    if isinstance(value, str):
        if value.isascii() and value.isdigit():
            return _group(int(value))
        import grp  # noqa: PLC0415 - only for the few files that name a group

        try:
            grp.getgrnam(value)
        except KeyError:
            raise ValueError(
                f"group '{value}' does not exist on this host: create it (groupadd {value}) "
                "or give a group id"
            ) from None
        return value
    return value


GroupName = Annotated[str | int, BeforeValidator(_group)]


class ControlSettings(Model):
    """Who may use the control socket (RUN_DIR/control.sock) besides root."""

    admin_group: GroupName | None = Field(
        None,
        description="Members may change things (drain, maint, ready, handover, reload) and "
        "read everything.",
    )
    read_group: GroupName | None = Field(
        None,
        description="Members may read (status, events, reload --plan). The socket belongs to "
        "this group (else to admin_group), mode 0660: admin_group members who are not in it "
        "can only reach it as root.",
    )


class GlobalConfig(Model):
    router_id: str | None = Field(
        None, min_length=1, max_length=64, description="Name in notifications; default: host name."
    )
    notification: Notification = Field(default_factory=Notification)
    script_user: str | None = Field(
        None, description="Default user for scripts and hooks; default: root."
    )
    enable_script_security: bool = Field(
        True,
        description="Refuse scripts that a non-root user could modify: the program, its #! "
        "interpreter, and a script handed to a shell or interpreter (sh SCRIPT, python SCRIPT).",
    )
    check_defaults: CheckTiming = Field(default_factory=CheckTiming)
    vrrp: VrrpDefaults = Field(default_factory=VrrpDefaults)
    lvs_sync_daemon: LvsSyncDaemon | None = None
    ipvs: IpvsSettings = Field(default_factory=IpvsSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    watchdog_bound: Seconds = Field(
        2.0,
        gt=0,
        le=60,
        description="Under systemd's WatchdogSec, the watchdog is fed only while the VRRP "
        "process answers within this long.",
    )


class LvshaConfig(Model):
    """The configuration of one director."""

    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    vrrp_scripts: dict[Name, VrrpScript] = Field(
        default_factory=dict, description="Named scripts that instances track."
    )
    vrrp_track_files: dict[Name, VrrpTrackFile] = Field(
        default_factory=dict,
        description="Named files holding a number that instances track (keepalived's track_file).",
    )
    vrrp_instances: dict[Name, VrrpInstance] = Field(default_factory=dict)
    sync_groups: dict[Name, SyncGroup] = Field(default_factory=dict)
    virtual_servers: list[VirtualServer] = Field(default_factory=list)
    virtual_server_groups: dict[Name, VirtualServerGroup] = Field(
        default_factory=dict,
        description="Named sets of services (keepalived's virtual_server_group) that a virtual "
        "server serves as one, with `group: NAME`.",
    )
    bgp: BgpSettings | None = Field(
        None,
        description="Announce virtual servers' addresses over BGP through the local FRR "
        "(active-active directors behind ECMP routers).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_interface(cls, data: object) -> object:
        """An instance without `interface` takes global.vrrp.default_interface: filled in
        here, on the raw data, so `interface` stays required on the instance (without either,
        the error names the instance). A default that is not a valid name fills nothing: its
        own error says why."""
        if not isinstance(data, dict):
            return data
        glob, instances = data.get("global"), data.get("vrrp_instances")
        vrrp = glob.get("vrrp") if isinstance(glob, dict) else None
        default = vrrp.get("default_interface") if isinstance(vrrp, dict) else None
        if not isinstance(default, str) or not isinstance(instances, dict):
            return data
        try:
            valid_interface(default)
        except ValueError:
            return data
        filled = {
            name: {**inst, "interface": default}
            if isinstance(inst, dict) and "interface" not in inst
            else inst
            for name, inst in instances.items()
        }
        return {**data, "vrrp_instances": filled}
