"""Every kind of mistake is reported at the right line, column and key.

Each case marks where its error must point with `^` inside a snippet of its own YAML: the
expected line:col is found in the text, never copied from lvsha's output.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from lvsha.config import ConfigError, load_text
from lvsha.config.source import format_path

INSTANCE = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [192.0.2.10/24]
"""

SERVICE = """\
virtual_servers:
  - address: 192.0.2.10
    port: 80
    protocol: TCP
    real_servers:
      - address: 10.0.0.1
"""


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str
    at: str  # a unique snippet of `yaml`; `^` stands just before the character pointed at
    path: str
    message: str


def vs_check(lines: str) -> str:
    """SERVICE with one check on its real server."""
    return SERVICE + "        checks:\n" + textwrap.indent(textwrap.dedent(lines), " " * 10)


CASES = [
    # --- YAML itself
    Case(
        "yaml-syntax",
        "global: router_id: lb1\n",
        "router_id^: lb1",
        "",
        "YAML: mapping values are not allowed",
    ),
    Case(
        "duplicate-key",
        INSTANCE + "    priority: 100\n    priority: 120\n",
        "    priority: 100\n    ^priority: 120",
        "vrrp_instances.VI_1.priority",
        "duplicate key 'priority' (first set at line 6)",
    ),
    Case(
        "duplicate-instance",
        INSTANCE + "  VI_1:\n    interface: eth1\n",
        "  ^VI_1:\n    interface: eth1",
        "vrrp_instances.VI_1",
        "duplicate key 'VI_1'",
    ),
    Case(
        "merge-key",
        "global:\n  <<: {router_id: lb1}\n" + INSTANCE,
        "  ^<<",
        "global",
        "merge keys (<<) are not supported",
    ),
    Case("top-level-list", "- a\n- b\n", "^- a", "", "must be a mapping of sections"),
    Case("empty-file", "# nothing\n", "^# nothing", "", "nothing to do"),
    # --- unknown keys and keepalived habits
    Case(
        "unknown-section",
        "vrrp_instance:\n  VI_1: {}\n",
        "^vrrp_instance:",
        "vrrp_instance",
        "did you mean 'vrrp_instances'?",
    ),
    Case(
        "nopreempt-keyword",
        INSTANCE + "    nopreempt: true\n",
        "    ^nopreempt",
        "vrrp_instances.VI_1.nopreempt",
        "write preempt: false",
    ),
    Case(
        "check-key-typo",
        vs_check("- type: tcp\n  timout: 3\n"),
        "^timout",
        "virtual_servers[0].real_servers[0].checks[0].timout",
        "did you mean 'timeout'?",
    ),
    Case(
        "https-key-on-http",
        vs_check("- type: http\n  tls_verify: true\n"),
        "^tls_verify",
        "virtual_servers[0].real_servers[0].checks[0].tls_verify",
        "it is a key of https checks",
    ),
    # --- types
    Case(
        "yes-is-not-a-boolean",
        INSTANCE + "    preempt: yes\n",
        "preempt: ^yes",
        "vrrp_instances.VI_1.preempt",
        "expected true or false, got the string 'yes'",
    ),
    Case(
        "on-is-not-a-boolean",
        "global:\n  enable_script_security: on\n" + INSTANCE,
        "security: ^on",
        "global.enable_script_security",
        "write true or false",
    ),
    Case(
        "quoted-number",
        INSTANCE.replace("virtual_router_id: 51", 'virtual_router_id: "51"'),
        'router_id: ^"51"',
        "vrrp_instances.VI_1.virtual_router_id",
        "remove the quotes",
    ),
    Case(
        "number-for-password",
        INSTANCE + "    authentication: {type: PASS, password: 1234}\n",
        "password: ^1234",
        "vrrp_instances.VI_1.authentication.password",
        "quote it ('1234')",
    ),
    Case(
        "version-as-string",
        INSTANCE + '    version: "3"\n',
        'version: ^"3"',
        "vrrp_instances.VI_1.version",
        "write the version as a number",
    ),
    Case(
        "bad-duration",
        INSTANCE + "    advert_interval: 5 sec\n",
        "advert_interval: ^5 sec",
        "vrrp_instances.VI_1.advert_interval",
        "'5 sec' is not a duration",
    ),
    Case(
        "mapping-expected",
        "global: lb1\n" + INSTANCE,
        "global: ^lb1",
        "global",
        "expected a mapping of keys",
    ),
    # --- ranges and required keys
    Case(
        "vrid-zero",
        INSTANCE.replace("virtual_router_id: 51", "virtual_router_id: 0"),
        "router_id: ^0",
        "vrrp_instances.VI_1.virtual_router_id",
        "must be at least 1, got 0",
    ),
    Case(
        "vrid-too-big",
        INSTANCE.replace("virtual_router_id: 51", "virtual_router_id: 256"),
        "router_id: ^256",
        "vrrp_instances.VI_1.virtual_router_id",
        "must be at most 255, got 256",
    ),
    Case(
        "priority-zero",
        INSTANCE + "    priority: 0\n",
        "priority: ^0",
        "vrrp_instances.VI_1.priority",
        "must be at least 1",
    ),
    Case(
        "missing-interface",
        "vrrp_instances:\n  VI_1:\n    virtual_router_id: 5\n"
        "    virtual_ipaddresses: [192.0.2.1]\n",
        "  VI_1:\n    ^virtual_router_id",
        "vrrp_instances.VI_1.interface",
        "missing required key 'interface'",
    ),
    Case(
        "no-vips",
        INSTANCE.replace("[192.0.2.10/24]", "[]"),
        "virtual_ipaddresses: ^[]",
        "vrrp_instances.VI_1.virtual_ipaddresses",
        "at least 1 item",
    ),
    Case(
        "interface-name-too-long",
        INSTANCE.replace("interface: eth0", "interface: averyveryverylongname0"),
        "interface: ^avery",
        "vrrp_instances.VI_1.interface",
        "not a valid interface name",
    ),
    Case(
        "bad-instance-name",
        INSTANCE.replace("VI_1:", "VI 1:"),
        "  ^VI 1:",
        "vrrp_instances.VI 1",
        "bad name: 'VI 1' is not a valid name",
    ),
    Case(
        "bad-initial-state",
        INSTANCE + "    state: ACTIVE\n",
        "state: ^ACTIVE",
        "vrrp_instances.VI_1.state",
        "the string 'ACTIVE' is not allowed: use one of 'MASTER' or 'BACKUP'",
    ),
    Case(
        "password-too-long",
        INSTANCE + "    authentication: {type: PASS, password: abcdefghij}\n",
        "password: ^abcdefghij",
        "vrrp_instances.VI_1.authentication.password",
        "at most 8 characters",
    ),
    Case(
        "bad-vip",
        INSTANCE.replace("[192.0.2.10/24]", "[192.0.2.300/24]"),
        "[^192.0.2.300/24]",
        "vrrp_instances.VI_1.virtual_ipaddresses[0]",
        "'192.0.2.300/24' is not an address",
    ),
    Case(
        "empty-command",
        "vrrp_scripts:\n  chk:\n    command: ''\n" + INSTANCE,
        "command: ^''",
        "vrrp_scripts.chk.command",
        "the command is empty",
    ),
    Case(
        "unbalanced-quote-command",
        'vrrp_scripts:\n  chk:\n    command: "/bin/check \'x"\n' + INSTANCE,
        'command: ^"/bin',
        "vrrp_scripts.chk.command",
        "cannot split the command line",
    ),
    # --- VRRP rules across keys
    Case(
        "v2-sub-second-interval",
        INSTANCE + "    advert_interval: 0.5\n",
        "advert_interval: ^0.5",
        "vrrp_instances.VI_1.advert_interval",
        "VRRPv2 adverts carry whole seconds 1-255, got 0.5",
    ),
    Case(
        "v3-interval-not-10ms-step",
        INSTANCE + "    version: 3\n    advert_interval: 15ms\n",
        "advert_interval: ^15ms",
        "vrrp_instances.VI_1.advert_interval",
        "0.01-40.95 s in steps of 10 ms, got 0.015",
    ),
    Case(
        "v3-interval-too-long",
        INSTANCE + "    version: 3\n    advert_interval: 41\n",
        "advert_interval: ^41",
        "vrrp_instances.VI_1.advert_interval",
        "got 41",
    ),
    Case(
        "ipv6-needs-v3",
        INSTANCE.replace("[192.0.2.10/24]", "['2001:db8::10/64']") + "    version: 2\n",
        "version: ^2",
        "vrrp_instances.VI_1.version",
        "use version: 3 for IPv6",
    ),
    Case(
        "mixed-families",
        INSTANCE.replace("[192.0.2.10/24]", "[192.0.2.10/24, '2001:db8::10/64']"),
        "24, ^'2001",
        "vrrp_instances.VI_1.virtual_ipaddresses[1]",
        "is ipv6 but the instance is ipv4",
    ),
    Case(
        "vip-twice",
        INSTANCE.replace("[192.0.2.10/24]", "[192.0.2.10/24, 192.0.2.10/32]"),
        "24, ^192.0.2.10/32",
        "vrrp_instances.VI_1.virtual_ipaddresses[1]",
        "192.0.2.10 is listed twice",
    ),
    Case(
        "label-without-device",
        INSTANCE.replace("[192.0.2.10/24]", "[{address: 192.0.2.10/24, label: 'vip'}]"),
        "label: ^'vip'",
        "vrrp_instances.VI_1.virtual_ipaddresses[0].label",
        "must start with the device name: 'eth0:...'",
    ),
    Case(
        "priority-255-not-owner",
        INSTANCE + "    priority: 255\n",
        "priority: ^255",
        "vrrp_instances.VI_1.priority",
        "priority 255 is reserved for the owner",
    ),
    Case(
        "nopreempt-with-master",
        INSTANCE + "    state: MASTER\n    preempt: false\n",
        "preempt: ^false",
        "vrrp_instances.VI_1.preempt",
        "keepalived silently drops nopreempt here",
    ),
    Case(
        "owner-without-preempt",
        INSTANCE.replace("[192.0.2.10/24]", "[192.0.2.10/24]\n    mcast_src_ip: 192.0.2.10")
        + "    priority: 255\n    preempt: false\n",
        "preempt: ^false",
        "vrrp_instances.VI_1.preempt",
        "the address owner (priority 255) always preempts",
    ),
    Case(
        "preempt-delay-with-master",
        INSTANCE + "    state: MASTER\n    preempt_delay: 10\n",
        "preempt_delay: ^10",
        "vrrp_instances.VI_1.preempt_delay",
        "with state: MASTER it is contradictory",
    ),
    Case(
        "preempt-delay-without-preempt",
        INSTANCE + "    preempt: false\n    preempt_delay: 10\n",
        "preempt_delay: ^10",
        "vrrp_instances.VI_1.preempt_delay",
        "does nothing with preempt: false",
    ),
    Case(
        "auth-with-v3",
        INSTANCE + "    version: 3\n    authentication: {type: PASS, password: x}\n",
        "authentication: ^{",
        "vrrp_instances.VI_1.authentication",
        "VRRPv3 has no authentication",
    ),
    Case(
        "unicast-src-without-peers",
        INSTANCE + "    unicast_src_ip: 192.0.2.2\n",
        "unicast_src_ip: ^192",
        "vrrp_instances.VI_1.unicast_src_ip",
        "unicast_src_ip without unicast_peers",
    ),
    Case(
        "unicast-peer-wrong-family",
        INSTANCE + "    unicast_peers: [192.0.2.3, '2001:db8::3']\n",
        "3, ^'2001",
        "vrrp_instances.VI_1.unicast_peers[1]",
        "is not ipv4 like the instance",
    ),
    Case(
        "same-vrid-twice",
        INSTANCE
        + "  VI_2:\n    interface: eth0\n    virtual_router_id: 51\n"
        + "    virtual_ipaddresses: [192.0.2.20/24]\n",
        "  VI_2:\n    interface: eth0\n    virtual_router_id: ^51",
        "vrrp_instances.VI_2.virtual_router_id",
        "already vrrp_instances.VI_1",
    ),
    Case(
        "unknown-track-script",
        "vrrp_scripts:\n  chk_nginx:\n    command: /bin/true\n"
        + INSTANCE
        + "    track_scripts: [chk_ngnix]\n",
        "[^chk_ngnix]",
        "vrrp_instances.VI_1.track_scripts[0]",
        "no vrrp_scripts entry named 'chk_ngnix': did you mean 'chk_nginx'?",
    ),
    Case(
        "script-timeout-over-interval",
        "vrrp_scripts:\n  chk:\n    command: /bin/true\n    interval: 2\n    timeout: 5\n"
        + INSTANCE,
        "timeout: ^5",
        "vrrp_scripts.chk.timeout",
        "runs would overlap",
    ),
    Case(
        "sync-group-unknown-instance",
        INSTANCE + "sync_groups:\n  G:\n    instances: [VI_1, VI_9]\n",
        "VI_1, ^VI_9",
        "sync_groups.G.instances[1]",
        "no vrrp_instances entry named 'VI_9'",
    ),
    Case(
        "instance-in-two-groups",
        INSTANCE + "sync_groups:\n  G1:\n    instances: [VI_1]\n  G2:\n    instances: [VI_1]\n",
        "G2:\n    instances: [^VI_1]",
        "sync_groups.G2.instances[0]",
        "already in sync group 'G1'",
    ),
    Case(
        "sync-daemon-unknown-instance",
        "global:\n  lvs_sync_daemon: {interface: eth0, vrrp_instance: VI_X}\n" + INSTANCE,
        "vrrp_instance: ^VI_X",
        "global.lvs_sync_daemon.vrrp_instance",
        "no vrrp_instances entry named 'VI_X'",
    ),
    # --- notification
    Case(
        "email-without-smtp",
        "global:\n  notification:\n    email: [ops@example.com]\n" + INSTANCE,
        "email: ^[ops",
        "global.notification.email",
        "need smtp_server",
    ),
    Case(
        "bad-webhook",
        "global:\n  notification:\n    webhook_url: ftp://x\n" + INSTANCE,
        "webhook_url: ^ftp",
        "global.notification.webhook_url",
        "not an http:// or https:// URL",
    ),
    # --- virtual servers
    Case(
        "protocol-required",
        SERVICE.replace("    protocol: TCP\n", ""),
        "  - ^address: 192.0.2.10",
        "virtual_servers[0]",
        "keepalived silently assumes UDP",
    ),
    Case(
        "fwmark-with-protocol",
        "virtual_servers:\n  - fwmark: 1\n    protocol: TCP\n",
        "protocol: ^TCP",
        "virtual_servers[0].protocol",
        "a fwmark service has no protocol",
    ),
    Case(
        "duplicate-service",
        SERVICE + "  - address: 192.0.2.10\n    port: 80\n    protocol: tcp\n",
        "  - ^address: 192.0.2.10\n    port: 80\n    protocol: tcp",
        "virtual_servers[1]",
        "the same service as virtual_servers[0]",
    ),
    Case(
        "duplicate-real-server",
        SERVICE + "      - address: 10.0.0.1\n        port: 80\n",
        "      - ^address: 10.0.0.1\n        port: 80",
        "virtual_servers[0].real_servers[1]",
        "real server 10.0.0.1 port 80 is listed twice",
    ),
    Case(
        "unknown-scheduler",
        SERVICE + "    scheduler: wrrr\n",
        "scheduler: ^wrrr",
        "virtual_servers[0].scheduler",
        "the string 'wrrr' is not allowed",
    ),
    Case(
        "flag-of-other-scheduler",
        SERVICE + "    scheduler: rr\n    scheduler_flags: [sh-port]\n",
        "[^sh-port]",
        "virtual_servers[0].scheduler_flags[0]",
        "sh-port is a flag of the sh scheduler, not of rr",
    ),
    Case(
        "ops-on-tcp",
        SERVICE + "    ops: true\n",
        "ops: ^true",
        "virtual_servers[0].ops",
        "for UDP services only",
    ),
    Case(
        "hysteresis-not-below-quorum",
        SERVICE + "    quorum: 2\n    hysteresis: 2\n",
        "hysteresis: ^2",
        "virtual_servers[0].hysteresis",
        "must be less than quorum 2",
    ),
    Case(
        "port-zero-without-persistence",
        SERVICE.replace("port: 80", "port: 0"),
        "port: ^0",
        "virtual_servers[0].port",
        "needs persistence_timeout",
    ),
    Case(
        "granularity-without-persistence",
        SERVICE + "    persistence_granularity: 24\n",
        "granularity: ^24",
        "virtual_servers[0].persistence_granularity",
        "needs persistence_timeout",
    ),
    Case(
        "dr-port-mapping",
        SERVICE.replace("    real_servers:", "    forwarding: DR\n    real_servers:")
        + "      - address: 10.0.0.2\n        port: 8080\n",
        "port: ^8080",
        "virtual_servers[0].real_servers[1].port",
        "with DR the real server port must equal the virtual server port 80",
    ),
    Case(
        "real-server-wrong-family",
        SERVICE + "      - address: '2001:db8::5'\n",
        "address: ^'2001",
        "virtual_servers[0].real_servers[1].address",
        "mixes families only with TUN",
    ),
    Case(
        "thresholds-inverted",
        SERVICE + "        upper_threshold: 10\n        lower_threshold: 20\n",
        "lower_threshold: ^20",
        "virtual_servers[0].real_servers[0].lower_threshold",
        "lower_threshold 20 is above upper_threshold 10",
    ),
    Case(
        "lower-threshold-alone",
        SERVICE + "        lower_threshold: 20\n",
        "lower_threshold: ^20",
        "virtual_servers[0].real_servers[0].lower_threshold",
        "needs an upper_threshold",
    ),
    Case(
        "weight-negative",
        SERVICE + "        weight: -1\n",
        "weight: ^-1",
        "virtual_servers[0].real_servers[0].weight",
        "must be at least 0",
    ),
    # --- checks
    Case(
        "unknown-check-type",
        vs_check("- type: htp\n"),
        "- ^type: htp",
        "virtual_servers[0].real_servers[0].checks[0]",
        "unknown check type 'htp'",
    ),
    Case(
        "check-without-type",
        vs_check("- path: /\n"),
        "- ^path: /",
        "virtual_servers[0].real_servers[0].checks[0]",
        "missing required key 'type'",
    ),
    Case(
        "bad-status-range",
        vs_check("- type: http\n  status: [2xx]\n"),
        "[^2xx]",
        "virtual_servers[0].real_servers[0].checks[0].status[0]",
        "'2xx' is not an HTTP status or range",
    ),
    Case(
        "bad-regex",
        vs_check("- type: http\n  regex: 'ok('\n"),
        "regex: ^'ok('",
        "virtual_servers[0].real_servers[0].checks[0].regex",
        "not a valid regular expression",
    ),
    Case(
        "bad-digest",
        vs_check("- type: http\n  digest: sha256:abcd\n"),
        "digest: ^sha256",
        "virtual_servers[0].real_servers[0].checks[0].digest",
        "a sha256 digest is 64 hex digits",
    ),
    Case(
        "http-path-without-slash",
        vs_check("- type: http\n  path: health\n"),
        "path: ^health",
        "virtual_servers[0].real_servers[0].checks[0].path",
        "an HTTP path starts with '/'",
    ),
    Case(
        "udp-two-payloads",
        vs_check("- type: udp\n  payload: ping\n  payload_hex: '00'\n"),
        "payload_hex: ^'00'",
        "virtual_servers[0].real_servers[0].checks[0].payload_hex",
        "set payload or payload_hex, not both",
    ),
    Case(
        "udp-expect-without-reply",
        vs_check("- type: udp\n  require_reply: false\n  expect: pong\n"),
        "expect: ^pong",
        "virtual_servers[0].real_servers[0].checks[0].expect",
        "require_reply is false",
    ),
    Case(
        "check-negative-interval",
        vs_check("- type: tcp\n  interval: -1\n"),
        "interval: ^-1",
        "virtual_servers[0].real_servers[0].checks[0].interval",
        "must be more than 0",
    ),
    Case(
        "check-needs-port-on-fwmark",
        "virtual_servers:\n  - fwmark: 7\n    real_servers:\n      - address: 10.0.0.1\n"
        "        checks:\n          - type: tcp\n",
        "          - ^type: tcp",
        "virtual_servers[0].real_servers[0].checks[0]",
        "a tcp check needs a port",
    ),
    Case(
        "client-cert-without-key",
        vs_check("- type: https\n  client_cert: /etc/c.pem\n"),
        "- ^type: https",
        "virtual_servers[0].real_servers[0].checks[0]",
        "client_cert and client_key go together: add client_key",
    ),
]


def expected_location(case: Case) -> tuple[int, int]:
    snippet = case.at.replace("^", "")
    start = case.yaml.find(snippet)
    assert start >= 0, f"{case.id}: snippet {snippet!r} is not in the YAML"
    assert case.yaml.find(snippet, start + 1) < 0, f"{case.id}: snippet {snippet!r} is not unique"
    offset = start + case.at.index("^")
    line = case.yaml.count("\n", 0, offset) + 1
    column = offset - (case.yaml.rfind("\n", 0, offset) + 1) + 1
    return line, column


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_config_is_reported_at_its_location(case: Case) -> None:
    with pytest.raises(ConfigError) as raised:
        load_text(case.yaml, "test.yaml")
    problems = raised.value.problems
    assert len(problems) == 1, "\n".join(str(p) for p in problems)
    problem = problems[0]
    line, column = expected_location(case)
    assert format_path(problem.path) == case.path
    assert (problem.location.line, problem.location.column) == (line, column), str(problem)
    assert case.message in problem.message
    prefix = f"test.yaml:{line}:{column}: {case.path or '(top level)'}: "
    assert str(problem).startswith(prefix)
