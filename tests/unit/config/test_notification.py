"""Alert sinks and the metrics endpoint in the configuration: what check-config refuses, with
the key and the reason, and that the keys keepalived users know keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsha.config import ConfigError, load_text
from lvsha.config.model import AlertmanagerSink, SmtpSink, WebhookSink

INSTANCE = """\
vrrp_instances:
  VI_1: {interface: eth0, virtual_router_id: 51, virtual_ipaddresses: [192.0.2.10/24]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_text(text + INSTANCE, "t.yaml")
    return [str(p) for p in raised.value.problems]


def test_the_keepalived_style_keys_and_every_sink_type_load() -> None:
    config = load_text(
        """\
global:
  router_id: lb1
  notification:
    email: [ops@example.com]
    email_from: lvsha@lb1.example.com
    smtp_server: 192.0.2.25
    webhook_url: https://hooks.example.com/lvsha
    sinks:
      - {type: smtp, server: relay, from: a@example.com, to: [b@example.com], tls: starttls}
      - {type: webhook, name: pager, url: "http://127.0.0.1:8080/x", events: [vrrp]}
      - {type: alertmanager, url: "http://127.0.0.1:9093", labels: {team: lb}}
  metrics: {listen: "[::1]:9650", keepalived_names: true}
"""
        + INSTANCE,
        "t.yaml",
    )
    sinks = config.global_.notification.sinks
    assert [type(s) for s in sinks] == [SmtpSink, WebhookSink, AlertmanagerSink]
    assert isinstance(sinks[0], SmtpSink) and sinks[0].sender == "a@example.com"
    assert config.global_.metrics.listen == "[::1]:9650"


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("9650", "'9650' is not host:port"),
        ("::1:9650", "put an IPv6 address in brackets"),
        ("[127.0.0.1]:9650", "only an IPv6 address goes in brackets"),
        ("127.0.0.1:70000", "is not host:port"),
    ],
)
def test_a_bad_listen_address_says_what_it_should_be(listen: str, problem: str) -> None:
    (found,) = problems(f'global: {{metrics: {{listen: "{listen}"}}}}\n')
    assert "global.metrics.listen" in found and problem in found


def test_sink_names_are_unique_counting_the_legacy_and_default_names() -> None:
    found = problems(
        """\
global:
  notification:
    webhook_url: "http://127.0.0.1:1/"
    sinks:
      - {type: webhook, name: webhook, url: "http://127.0.0.1:2/"}
      - {type: webhook, url: "http://127.0.0.1:3/"}
      - {type: webhook, name: webhook-2, url: "http://127.0.0.1:4/"}
"""
    )
    assert found == [
        "t.yaml:5:31: global.notification.sinks[0].name: sink name 'webhook' is taken (by "
        "webhook_url): give each sink its own name",
        "t.yaml:7:31: global.notification.sinks[2].name: sink name 'webhook-2' is taken (by "
        "sinks[1]): give each sink its own name",
    ]


def test_login_needs_both_keys_and_secret_files_must_be_readable(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    found = problems(
        f"""\
global:
  notification:
    sinks:
      - {{type: smtp, server: relay, from: a@example.com, to: [b@example.com], username: u}}
      - {{type: smtp, server: relay, from: a@example.com, to: [b@example.com],
          username: u, password_file: {tmp_path / "missing"}}}
      - {{type: webhook, url: "http://127.0.0.1:1/", secret_file: {empty}}}
"""
    )
    assert len(found) == 3, found
    assert "sinks[0].password_file: username and password_file go together" in found[0]
    assert f"sinks[1].password_file: cannot read {tmp_path / 'missing'}: No such file" in found[1]
    assert f"sinks[2].secret_file: {empty} is empty" in found[2]


def test_alertmanager_labels_are_label_names_and_leave_lvshas_own_alone() -> None:
    found = problems(
        """\
global:
  notification:
    sinks:
      - {type: alertmanager, url: "http://127.0.0.1:9093",
         labels: {team: lb, "bad-key": x, severity: low, __meta: y}}
"""
    )
    assert len(found) == 3, found
    assert "labels.bad-key: 'bad-key' is not a Prometheus label name" in found[0]
    assert "labels.severity: label 'severity' is lvsha's to set" in found[1]
    assert "labels.__meta: label '__meta' is lvsha's to set" in found[2]


def test_an_unknown_event_type_or_severity_is_named() -> None:
    found = problems(
        """\
global:
  notification:
    sinks:
      - {type: webhook, url: "http://127.0.0.1:1/", events: [vrrp_stat], min_severity: high}
"""
    )
    assert len(found) == 2, found
    assert "events[0]" in found[0] and "vrrp_state" in found[0]
    assert "min_severity" in found[1] and "critical" in found[1]


def test_local_recipients_as_keepalived_files_have_them_are_accepted() -> None:
    config = load_text(
        "global:\n  notification:\n    email: [root, root@localhost, ops@example.com]\n"
        "    smtp_server: 127.0.0.1\n" + INSTANCE,
        "t.yaml",
    )
    assert config.global_.notification.email == ["root", "root@localhost", "ops@example.com"]
    (found,) = problems("global:\n  notification:\n    email: ['two words']\n")
    assert "'two words' is not an email address (user@domain, or a local user)" in found
