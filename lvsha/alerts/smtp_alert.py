"""keepalived's smtp_alert: which VRRP and checker events the SMTP sinks mail.

keepalived 2.2 resolves each object's smtp_alert when it reads its configuration (vrrp.c,
check_data.c): its own setting, else global_defs' smtp_alert_vrrp (instances, sync groups) or
smtp_alert_checker (virtual and real servers), else smtp_alert, else a default: false for
instances, sync groups and virtual servers (quorum changes), true for real servers. lvsha does
the same, with two differences it says in the configuration reference:

- while no smtp_alert key is set anywhere, this policy lets everything through: SMTP sinks
  mail what their `events` and `min_severity` take, as before these keys existed (keepalived
  would mail real-server changes only; an imported file says `smtp_alert_vrrp: false` to get
  exactly that);
- lvsha reports a sync group's members one by one (keepalived mails the group once instead), so
  a member that sets nothing follows its group's smtp_alert before the global ones.

Events of other types (reloads, restarted processes, refused scripts) are lvsha's own: no
smtp_alert applies to them, and SMTP sinks take them as their `events` say.
"""

from __future__ import annotations

from collections.abc import Mapping

from lvsha.alerts.events import Event, FieldValue
from lvsha.checks.verdict import host_port
from lvsha.config.model import LvshaConfig
from lvsha.ipvs.specs import service_key


def _first(*settings: bool | None, default: bool) -> bool:
    for setting in settings:
        if setting is not None:
            return setting
    return default


def _any_set(config: LvshaConfig) -> bool:
    notification = config.global_.notification
    return (
        any(
            setting is not None
            for setting in (
                notification.smtp_alert,
                notification.smtp_alert_vrrp,
                notification.smtp_alert_checker,
            )
        )
        or any(inst.smtp_alert is not None for inst in config.vrrp_instances.values())
        or any(group.smtp_alert is not None for group in config.sync_groups.values())
        or any(
            vs.smtp_alert is not None or any(rs.smtp_alert is not None for rs in vs.real_servers)
            for vs in config.virtual_servers
        )
    )


class SmtpAlertPolicy:
    """Each VRRP instance's, virtual service's and real server's effective smtp_alert in one
    configuration; `mails(event)` says whether an SMTP sink may send it."""

    def __init__(self, config: LvshaConfig) -> None:
        notification = config.global_.notification
        self.active = _any_set(config)
        """False while no smtp_alert key is set: every event passes."""
        vrrp_default = _first(notification.smtp_alert_vrrp, notification.smtp_alert, default=False)
        checker = (notification.smtp_alert_checker, notification.smtp_alert)
        self.vrrp_default = vrrp_default
        self.service_default = _first(*checker, default=False)
        self.real_server_default = _first(*checker, default=True)
        group_of = {
            member: group for group in config.sync_groups.values() for member in group.instances
        }
        self.instances: dict[str, bool] = {}
        for name, inst in config.vrrp_instances.items():
            group = group_of.get(name)
            self.instances[name] = _first(
                inst.smtp_alert,
                None if group is None else group.smtp_alert,
                default=vrrp_default,
            )
        self.services: dict[str, bool] = {}
        self.real_servers: dict[tuple[str, str], bool] = {}
        for vs in config.virtual_servers:
            try:
                service = str(service_key(vs))
            except ValueError:
                continue  # not a service the checker runs: no event names it
            self.services[service] = _first(vs.smtp_alert, default=self.service_default)
            for rs in vs.real_servers:
                port = rs.port if rs.port is not None else (vs.port or 0)
                where = (service, host_port(str(rs.address), port))
                self.real_servers[where] = _first(rs.smtp_alert, default=self.real_server_default)

    def mails(self, event: Event) -> bool:
        if not self.active:
            return True
        return self.decides(event.type, event.fields)

    def decides(self, event_type: str, fields: Mapping[str, FieldValue]) -> bool:
        """The effective smtp_alert of what the event is about (True for lvsha's own types)."""
        if event_type == "vrrp_state":
            return self.instances.get(str(fields.get("instance")), self.vrrp_default)
        if event_type == "quorum":
            return self.services.get(str(fields.get("service")), self.service_default)
        if event_type == "real_server":
            where = (str(fields.get("service")), str(fields.get("real_server")))
            return self.real_servers.get(where, self.real_server_default)
        return True
