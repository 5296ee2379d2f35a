from __future__ import annotations

import pytest

from lvsha.checks.http import BodyDigest, BodyRegex, StatusRange, TlsOptions
from lvsha.checks.state import CheckParams
from lvsha.checks.targets import (
    CheckPlan,
    CheckTarget,
    DnsProbe,
    HttpProbe,
    IcmpProbe,
    ScriptProbe,
    SmtpProbe,
    TcpProbe,
    UdpProbe,
    check_plan,
)
from lvsha.checks.udp import ReplyMatch
from lvsha.checks.verdict import RealServerId
from lvsha.config import load_text


def plan_of(text: str) -> CheckPlan:
    return check_plan(load_text(text))


def only(plan: CheckPlan, origin: str) -> CheckTarget:
    (target,) = [t for t in plan.targets if t.origin == origin]
    return target


SHARED = """
global:
  check_defaults: {interval: 3s, timeout: 2s, rise: 2}
virtual_servers:
  - name: web
    address: 192.0.2.80
    port: 80
    protocol: TCP
    check_defaults: {fall: 3}
    real_servers:
      - address: 192.0.2.21
        checks: [{type: tcp}]
      - address: 192.0.2.22
  - address: 192.0.2.80
    port: 8080
    protocol: TCP
    check_defaults: {fall: 3}
    real_servers:
      - address: 192.0.2.21
        port: 80
        checks: [{type: tcp}]
  - address: 192.0.2.81
    port: 80
    protocol: TCP
    real_servers:
      - address: 192.0.2.21
        checks: [{type: tcp}]
"""


def test_identical_checks_of_several_virtual_servers_share_one_key() -> None:
    plan = plan_of(SHARED)
    first, second, third = plan.targets
    assert first.real_server == RealServerId("192.0.2.80:80/tcp", "192.0.2.21", 80)
    assert second.real_server == RealServerId("192.0.2.80:8080/tcp", "192.0.2.21", 80)
    assert first.real_server != second.real_server
    assert first.key == second.key
    assert first.probe == TcpProbe("192.0.2.21", 80, 2.0)
    assert first.params == CheckParams(interval=3.0, timeout=2.0, rise=2, fall=3)
    # The third virtual server has fall 1 from the defaults: other timing, another check.
    assert third.probe == first.probe
    assert third.params.fall == 1
    assert third.key != first.key


def test_every_real_server_is_listed_even_without_checks() -> None:
    plan = plan_of(SHARED)
    assert RealServerId("192.0.2.80:80/tcp", "192.0.2.22", 80) in plan.real_servers
    assert len(plan.real_servers) == 4
    assert str(plan.real_servers[0]) == "web 192.0.2.21:80"
    assert str(plan.real_servers[2]) == "192.0.2.80:8080/tcp 192.0.2.21:80"


def test_warmup_defaults_to_the_interval_and_can_be_set() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 192.0.2.80
    port: 80
    protocol: TCP
    real_servers:
      - address: 192.0.2.21
        checks:
          - {type: tcp, interval: 7s}
          - {type: tcp, interval: 7s, warmup: 1s}
"""
    )
    first, second = plan.targets
    assert first.warmup == 7.0
    assert second.warmup == 1.0
    assert first.key != second.key


def test_address_and_port_of_a_check_override_the_real_servers() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 2001:db8::80
    port: 80
    protocol: TCP
    real_servers:
      - address: 2001:DB8:0::21
        checks:
          - {type: tcp, port: 8081}
          - {type: tcp, address: 2001:db8::99, bind_address: 2001:db8::1}
          - {type: icmp, address: 2001:db8::98, timeout: 1s}
"""
    )
    tcp_port, tcp_address, icmp = plan.targets
    assert tcp_port.real_server == RealServerId("[2001:db8::80]:80/tcp", "2001:db8::21", 80)
    assert tcp_port.probe == TcpProbe("2001:db8::21", 8081, 5.0)
    assert tcp_address.probe == TcpProbe("2001:db8::99", 80, 5.0, source="2001:db8::1")
    assert isinstance(icmp.probe, IcmpProbe)
    assert (icmp.probe.params.address, icmp.probe.params.timeout) == ("2001:db8::98", 1.0)
    assert tcp_port.probe.describe() == "tcp [2001:db8::21]:8081"


def test_http_virtualhost_is_inherited_and_body_rules_mapped() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 192.0.2.80
    port: 80
    protocol: TCP
    virtualhost: www.example.com
    real_servers:
      - address: 192.0.2.21
        checks:
          - type: http
            path: /health
            status: [200, "300-399"]
            digest: sha256:%s
          - type: http
            virtualhost: other.example.com
            method: GET
            regex: "^ok"
            regex_negate: true
"""
        % ("ab" * 32)
    )
    inherited, own = plan.targets
    assert isinstance(inherited.probe, HttpProbe) and isinstance(own.probe, HttpProbe)
    params = inherited.probe.params
    assert (params.address, params.port, params.path) == ("192.0.2.21", 80, "/health")
    assert params.virtualhost == "www.example.com"
    assert params.status == (StatusRange(200, 200), StatusRange(300, 399))
    assert params.digest == BodyDigest("sha256", "ab" * 32)
    assert params.tls is None
    assert own.probe.params.virtualhost == "other.example.com"
    assert own.probe.params.regex == BodyRegex("^ok", negate=True)
    assert inherited.probe.describe() == "http 192.0.2.21:80/health"


def test_https_tls_options() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 192.0.2.80
    port: 443
    protocol: TCP
    virtualhost: www.example.com
    real_servers:
      - address: 192.0.2.21
        checks:
          - type: https
            tls_verify: true
            ca_file: /etc/ssl/ca.pem
            client_cert: /etc/lvsha/client.pem
            client_key: /etc/lvsha/client.key
          - type: https
            sni: api.example.com
"""
    )
    verified, default = plan.targets
    assert isinstance(verified.probe, HttpProbe) and isinstance(default.probe, HttpProbe)
    assert verified.probe.params.tls == TlsOptions(
        verify=True,
        server_name="www.example.com",
        ca_file="/etc/ssl/ca.pem",
        client_cert_file="/etc/lvsha/client.pem",
        client_key_file="/etc/lvsha/client.key",
    )
    assert default.probe.params.tls == TlsOptions(verify=False, server_name="api.example.com")
    assert verified.probe.describe() == "https 192.0.2.21:443/"


def test_udp_payload_and_expectations() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 192.0.2.80
    port: 53
    protocol: UDP
    real_servers:
      - address: 192.0.2.21
        checks:
          - {type: udp, payload: ping, expect: pong}
          - {type: udp, payload_hex: "00ff", expect_hex: "0a 0b"}
          - {type: udp, expect_regex: "^ok"}
          - {type: udp, require_reply: false}
"""
    )
    probes = [t.probe for t in plan.targets]
    assert all(isinstance(p, UdpProbe) for p in probes)
    params = [p.params for p in probes]  # type: ignore[attr-defined]
    assert (params[0].payload, params[0].reply) == (b"ping", ReplyMatch(exact=b"pong"))
    assert (params[1].payload, params[1].reply) == (b"\x00\xff", ReplyMatch(exact=b"\x0a\x0b"))
    assert (params[2].payload, params[2].reply) == (b"", ReplyMatch(regex="^ok"))
    assert params[3].reply is None


def test_dns_name_and_type() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 192.0.2.80
    port: 53
    protocol: UDP
    real_servers:
      - address: 192.0.2.21
        checks:
          - {type: dns, name: example.com, query_type: AAAA, port: 5353}
"""
    )
    (target,) = plan.targets
    assert isinstance(target.probe, DnsProbe)
    params = target.probe.params
    assert (params.address, params.port, params.name, params.record_type) == (
        "192.0.2.21",
        5353,
        "example.com",
        "AAAA",
    )


@pytest.mark.parametrize(
    ("global_keys", "check_keys", "user", "security"),
    [
        ("{}", "", None, True),
        ("{script_user: nobody, enable_script_security: false}", "", "nobody", False),
        ("{script_user: nobody}", "user: daemon", "daemon", True),
    ],
)
def test_script_command_user_and_security(
    global_keys: str, check_keys: str, user: str | None, security: bool
) -> None:
    plan = plan_of(
        f"""
global: {global_keys}
virtual_servers:
  - name: smtp
    address: 2001:db8::80
    port: 25
    protocol: TCP
    real_servers:
      - address: 2001:db8::31
        checks:
          - type: script
            command: /usr/local/lib/lvsha/check-smtp --port 25
            dynamic_weight: true
            timeout: 3s
            {check_keys}
"""
    )
    (target,) = plan.targets
    assert isinstance(target.probe, ScriptProbe)
    command = target.probe.command
    assert command.argv == ("/usr/local/lib/lvsha/check-smtp", "--port", "25")
    assert (command.user, command.script_security, command.dynamic_weight) == (
        user,
        security,
        True,
    )
    assert target.probe.timeout == 3.0
    assert target.probe.target.real_server_address == "2001:db8::31"
    assert target.probe.target.real_server_port == 25
    assert target.probe.target.virtual_service == "[2001:db8::80]:25/tcp"
    assert target.probe.target.check_name == "[2001:db8::80]:25/tcp [2001:db8::31]:25 checks[0]"


def test_script_checks_are_not_shared_between_virtual_servers() -> None:
    # The program learns its virtual service (LVSHA_VS), so each virtual server runs its own.
    plan = plan_of(
        """
virtual_servers:
  - fwmark: 7
    real_servers:
      - address: 192.0.2.21
        port: 80
        checks: [{type: script, command: /bin/true}]
  - address: 192.0.2.80
    port: 80
    protocol: TCP
    real_servers:
      - address: 192.0.2.21
        checks: [{type: script, command: /bin/true}]
"""
    )
    fwmark, address = plan.targets
    assert isinstance(fwmark.probe, ScriptProbe) and isinstance(address.probe, ScriptProbe)
    assert fwmark.probe.target.virtual_service == "fwmark 7"
    assert address.probe.target.virtual_service == "192.0.2.80:80/tcp"
    assert fwmark.key != address.key


def test_origin_names_the_configuration_path() -> None:
    plan = plan_of(SHARED)
    target = only(plan, "virtual_servers[1].real_servers[0].checks[0]")
    assert target.real_server.virtual_service == "192.0.2.80:8080/tcp"


def test_smtp_helo_name_port_and_source() -> None:
    plan = plan_of(
        """
virtual_servers:
  - address: 192.0.2.80
    port: 25
    protocol: TCP
    real_servers:
      - address: 192.0.2.21
        checks:
          - {type: smtp}
          - {type: smtp, port: 587, helo_name: lb1.example.com, bind_address: 192.0.2.2}
"""
    )
    first, second = (target.probe for target in plan.targets)
    assert isinstance(first, SmtpProbe) and isinstance(second, SmtpProbe)
    assert first.describe() == "smtp 192.0.2.21:25"
    assert (first.params.port, first.params.helo_name, first.params.source) == (
        25,
        "smtpchecker.keepalived.org",
        None,
    )
    assert (second.params.port, second.params.helo_name, second.params.source) == (
        587,
        "lb1.example.com",
        "192.0.2.2",
    )
