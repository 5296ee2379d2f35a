"""`lvsha import-keepalived`: what it maps, how it keeps keepalived's behaviour where lvsha is
stricter, what it reports with FILE:LINE, its exit status, and that what it writes passes
check-config."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsha.cli import main
from lvsha.config import load_text
from lvsha.keepalived.importer import import_keepalived

DIRECTOR = """\
! written for lvsha's tests: a NAT director of the kind keepalived's samples show
global_defs {
   notification_email {
     root
     ops@example.com
   }
   notification_email_from lvs@example.com
   smtp_server 192.0.2.25
   smtp_connect_timeout 30
   router_id LVS_A
}

vrrp_script chk_proxy {
    script "pidof haproxy || exit 1"
    interval 2
    weight -20
}

vrrp_instance VI_1 {
    state MASTER
    nopreempt
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass averylongsecret
    }
    virtual_ipaddress {
        192.0.2.100/24 dev eth0 label eth0:vip
    }
    track_script {
        chk_proxy
    }
}

virtual_server 192.0.2.100 80 {
    delay_loop 6
    lb_algo rr
    lb_kind NAT
    nat_mask 255.255.255.0
    persistence_timeout 50
    real_server 10.0.0.2 8080 {
        weight 1
        HTTP_GET {
            url {
              path /health
              status_code 200
            }
            url {
              path /
              digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 3
        }
    }
    real_server 10.0.0.3 8080 {
        weight 2
        TCP_CHECK {
            connect_timeout 2
        }
    }
}
"""


def line_of(text: str, snippet: str) -> int:
    return text[: text.index(snippet)].count("\n") + 1


def run_import(tmp_path: Path, text: str) -> tuple[int, str, dict[str, object], str]:
    source = tmp_path / "keepalived.conf"
    source.write_text(text)
    out = tmp_path / "lvsha.yaml"
    err = io.StringIO()
    status = import_keepalived(str(source), str(out), "lb1", err=err)
    written = out.read_text() if out.exists() else ""
    return status, written, yaml.safe_load(written) if written else {}, err.getvalue()


def test_a_nat_director_imports_keeping_keepalived_behaviour(tmp_path: Path) -> None:
    status, text, document, report = run_import(tmp_path, DIRECTOR)
    assert status == 0, report
    config = load_text(text, "lvsha.yaml")  # passes check-config
    instance = config.vrrp_instances["VI_1"]
    # keepalived sends the first 8 characters of a longer auth_pass.
    assert instance.authentication is not None
    assert instance.authentication.password == "averylon"
    # keepalived ignores nopreempt in state MASTER.
    assert instance.preempt is True
    # keepalived's default VRRP version, and its script security default (off).
    assert instance.version == 2
    assert config.global_.enable_script_security is False
    # A local recipient, as keepalived files have.
    assert config.global_.notification.email == ["root", "ops@example.com"]
    # Shell syntax runs under sh -c.
    assert config.vrrp_scripts["chk_proxy"].command == ("sh", "-c", "pidof haproxy || exit 1")
    vip = instance.virtual_ipaddresses[0]
    assert (str(vip.address), vip.device, vip.label) == ("192.0.2.100/24", "eth0", "eth0:vip")
    (server,) = config.virtual_servers
    assert (server.scheduler, server.forwarding, server.persistence_timeout) == ("rr", "NAT", 50)
    assert server.protocol == "UDP"  # keepalived's silent default, kept and reported
    # Two url blocks: two http checks, both must pass, as keepalived's HTTP_GET.
    checks = server.real_servers[0].checks
    assert [(c.type, getattr(c, "path", None)) for c in checks] == [
        ("http", "/health"),
        ("http", "/"),
    ]
    assert getattr(checks[1], "digest", None) == "md5:9b3a0c85a887a256d6939da88aabd8cd"
    assert checks[0].retries == 3 and checks[0].timeout == 3
    assert server.check_defaults.interval == 6
    # Every behaviour kept is said, with the line it comes from.
    source = tmp_path / "keepalived.conf"
    at = {
        snippet: line_of(DIRECTOR, snippet)
        for snippet in ("pidof", "nopreempt", "auth_pass", "nat_mask", "virtual_server 1")
    }
    for line in (
        f"{source}:{at['pidof']}: script: uses shell syntax: keepalived 2 hands these words",
        f"{source}:{at['nopreempt']}: nopreempt: keepalived ignores nopreempt in state MASTER",
        f"{source}:{at['auth_pass']}: auth_pass: 15 characters: keepalived sends the first 8",
        f"{source}:{at['nat_mask']}: nat_mask: obsolete: keepalived ignores it too",
        f"{source}:{at['virtual_server 1']}: virtual_server: no protocol: keepalived silently "
        "assumes UDP",
        "enable_script_security: absent, so off as in keepalived",
        "smtp_alert: absent, so keepalived mails real server changes but no VRRP state changes",
    ):
        assert line in report, (line, report)
        assert line.split(": ", 1)[-1] in text  # and as a comment in the file
    assert document["global"] is not None


def test_what_cannot_be_mapped_is_reported_and_commented_with_exit_1(tmp_path: Path) -> None:
    text = DIRECTOR.replace(
        "    advert_int 1\n", "    advert_int 1\n    strict_mode\n    smtp_alrt\n"
    )
    status, written, _, report = run_import(tmp_path, text)
    assert status == 1
    source = tmp_path / "keepalived.conf"
    strict = line_of(text, "strict_mode")
    assert f"{source}:{strict}: strict_mode: per-instance strict mode is not supported" in report
    assert f"{source}:{strict + 1}: smtp_alrt: not a vrrp_instance keyword" in report
    assert "# Left out (not supported by lvsha, or not understood):" in written
    load_text(written, "lvsha.yaml")  # still a valid configuration without them


def test_an_unreadable_or_broken_file_exits_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert import_keepalived(str(tmp_path / "missing.conf"), None, "lb1", err=err) == 2
    assert "cannot read" in err.getvalue()
    broken = tmp_path / "broken.conf"
    broken.write_text("vrrp_instance VI_1 {\n  state MASTER\n")
    err = io.StringIO()
    assert import_keepalived(str(broken), None, "lb1", err=err) == 2
    assert f"{broken}:1: vrrp_instance: its block is not closed" in err.getvalue()


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "keepalived.conf"
    source.write_text(
        "vrrp_instance VI_1 {\n  interface eth0\n@lb2  priority 90\n@lb1  priority 110\n"
        "  virtual_router_id 7\n  virtual_ipaddress {\n    192.0.2.7/24\n  }\n}\n"
        "global_defs {\n  enable_script_security\n}\n"
    )
    assert main(["import-keepalived", str(source), "--config-id", "lb2"]) == 0
    out = capsys.readouterr()
    config = load_text(out.out, "stdout.yaml")
    assert config.vrrp_instances["VI_1"].priority == 90
    assert config.global_.enable_script_security is True
    assert "0 left out, 0 kept as keepalived behaves" in out.err


SAMPLES = sorted(Path("/usr/share/doc/keepalived/samples").glob("keepalived.conf.*"))


@pytest.mark.skipif(not SAMPLES, reason="keepalived's samples are not installed (apt: keepalived)")
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_keepalived_own_samples_import_to_files_check_config_accepts(
    sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lvsha.yaml"
    err = io.StringIO()
    status = import_keepalived(str(sample), str(out), "high", err=err)
    report = err.getvalue()
    assert "does not pass check-config" not in report, report
    load_text(out.read_text(), str(out))
    assert status in (0, 1)
    if status == 1:
        assert "left out" in report and "# Left out" in out.read_text()


KEYWORDS = [
    "global_defs",
    "vrrp_instance",
    "vrrp_script",
    "vrrp_sync_group",
    "virtual_server",
    "real_server",
    "TCP_CHECK",
    "HTTP_GET",
    "url",
    "authentication",
    "auth_pass",
    "virtual_ipaddress",
    "track_script",
    "track_interface",
    "unicast_peer",
    "group",
    "state",
    "priority",
    "advert_int",
    "interface",
    "virtual_router_id",
    "lvs_sync_daemon",
    "smtp_server",
    "sorry_server",
    "fwmark",
    "weight",
    "status_code",
    "digest",
    "script",
    "interval",
    "notification_email",
    "nopreempt",
    "protocol",
    "lb_algo",
    "delay_loop",
    "misc_path",
]


@st.composite
def keepalived_text(draw: st.DrawFn) -> str:
    words = st.one_of(
        st.sampled_from(KEYWORDS),
        st.sampled_from(["1", "0.5", "-3", "eth0", "10.0.0.1", "10.0.0.1/24", "MASTER", "inst"]),
        st.text("abc$@#!{}'\"\\ 19.:/-", min_size=1, max_size=6),
    )
    lines = []
    depth = 0
    for _ in range(draw(st.integers(1, 25))):
        line = " ".join(draw(st.lists(words, min_size=1, max_size=4)))
        if draw(st.booleans()):
            line += " {"
            depth += 1
        elif depth and draw(st.booleans()):
            line = "}"
            depth -= 1
        lines.append(line)
    lines += ["}"] * draw(st.integers(0, depth))
    return "\n".join(lines) + "\n"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=keepalived_text())
def test_any_input_is_an_exit_status_never_a_crash(tmp_path: Path, text: str) -> None:
    source = tmp_path / "fuzz.conf"
    source.write_text(text)
    err = io.StringIO()
    assert import_keepalived(str(source), str(tmp_path / "out.yaml"), "lb1", err=err) in (0, 1, 2)
