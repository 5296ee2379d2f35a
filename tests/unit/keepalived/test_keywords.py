"""The mapping of each keepalived keyword issue 14 lists: what lands in the document, and what
the report says. The import's output passing check-config is the golden tests' job
(tests/unit/keepalived/test_golden.py) and the daemon's effect is the netns tests'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvsha.keepalived.mapping import Imported, map_config
from lvsha.keepalived.syntax import parse_file

INSTANCE = """\
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {{
        192.0.2.10/24
    }}
{body}
}}
"""

SERVER = """\
virtual_server 192.0.2.10 80 {{
    protocol TCP
    lb_algo wlc
    lb_kind DR
{body}
}}
"""


def imported(tmp_path: Path, text: str) -> Imported:
    source = tmp_path / "keepalived.conf"
    source.write_text(text)
    return map_config(parse_file(source))


def instance(tmp_path: Path, body: str, before: str = "") -> tuple[dict[str, Any], Imported]:
    result = imported(tmp_path, before + INSTANCE.format(body=body))
    return result.document["vrrp_instances"]["VI_1"], result


def server(tmp_path: Path, body: str, before: str = "") -> tuple[dict[str, Any], Imported]:
    result = imported(tmp_path, before + SERVER.format(body=body))
    return result.document["virtual_servers"][0], result


def notes(result: Imported) -> list[tuple[str, str]]:
    return [(note.keyword, note.kind) for note in result.notes]


def test_vrrp_skip_check_adv_addr_globally_and_per_instance(tmp_path: Path) -> None:
    vi, result = instance(
        tmp_path,
        "    skip_check_adv_addr off",
        "global_defs {\n    enable_script_security\n    vrrp_skip_check_adv_addr\n}\n",
    )
    assert result.document["global"]["vrrp"]["skip_check_adv_addr"] is True
    assert vi["skip_check_adv_addr"] is False
    assert result.complete


def test_vrrp_strict_writes_accept_false_where_no_instance_says_accept(tmp_path: Path) -> None:
    text = (
        "global_defs {\n    enable_script_security\n    vrrp_strict\n}\n"
        + INSTANCE.format(body="")
        + INSTANCE.format(body="    accept\n    version 3").replace("VI_1", "VI_2")
        + INSTANCE.format(body="    accept").replace("VI_1", "VI_3")
    )
    result = imported(tmp_path, text)
    assert result.document["global"]["vrrp"]["strict"] is True
    instances = result.document["vrrp_instances"]
    assert instances["VI_1"]["accept"] is False
    assert instances["VI_2"]["accept"] is True  # VRRPv3: keepalived keeps the accept
    assert instances["VI_3"]["accept"] is False  # VRRPv2 non-owner: forced off
    (note,) = [n for n in result.notes if n.keyword == "vrrp_strict"]
    assert note.kind == "changed" and "VI_1" in note.text and "VI_2" not in note.text
    assert note.where.line == 3
    (forced,) = [n for n in result.notes if n.keyword == "vrrp_instance"]
    assert "accept is forced off" in forced.text


def test_vrrp_strict_changes_what_keepalived_changes_and_drops_unicast(tmp_path: Path) -> None:
    body = (
        "    state MASTER\n    preempt_delay 5\n"
        "    authentication {\n        auth_type PASS\n        auth_pass secret\n    }"
    )
    text = (
        "global_defs {\n    enable_script_security\n    vrrp_strict\n}\n"
        "vrrp_sync_group G {\n    group {\n        VI_2\n    }\n}\n"
        + INSTANCE.format(body=body).replace("    state BACKUP\n", "")
        + INSTANCE.format(body="    unicast_peer {\n        192.0.2.2\n    }").replace(
            "VI_1", "VI_2"
        )
    )
    result = imported(tmp_path, text)
    vi = result.document["vrrp_instances"]["VI_1"]
    assert vi["state"] == "BACKUP"
    assert "authentication" not in vi and "preempt_delay" not in vi
    assert "VI_2" not in result.document["vrrp_instances"]
    assert "sync_groups" not in result.document  # its only instance is gone
    dropped = [n for n in result.notes if n.kind == "dropped"]
    assert [n.keyword for n in dropped] == ["vrrp_instance"]
    assert "unicast peers" in dropped[0].text


def test_dont_track_primary(tmp_path: Path) -> None:
    vi, result = instance(tmp_path, "    dont_track_primary")
    assert vi["dont_track_primary"] is True
    assert result.complete


def test_accept_and_no_accept(tmp_path: Path) -> None:
    assert instance(tmp_path, "    accept")[0]["accept"] is True
    assert instance(tmp_path, "    no_accept")[0]["accept"] is False
    assert "accept" not in instance(tmp_path, "")[0]


def test_vrrp_mcast_groups_and_default_interface(tmp_path: Path) -> None:
    text = (
        "global_defs {\n    vrrp_mcast_group4 224.0.0.100\n    vrrp_mcast_group6 ff02::100\n"
        "    default_interface eth1\n}\n"
    )
    _, result = instance(tmp_path, "", text)
    assert result.document["global"]["vrrp"] == {
        "mcast_group4": "224.0.0.100",
        "mcast_group6": "ff02::100",
    }
    # keepalived 2.2.7 uses default_interface only for static addresses and routes (an
    # instance without interface is refused: "(VI_1) Unknown interface!"), so it moves nothing.
    (note,) = [n for n in result.notes if n.keyword == "default_interface"]
    assert note.kind == "ignored" and "static addresses" in note.text
    assert result.complete


def test_smtp_alert_global_instance_group_server_and_real_server(tmp_path: Path) -> None:
    text = (
        "global_defs {\n    smtp_alert\n    smtp_alert_vrrp off\n    smtp_alert_checker yes\n}\n"
        "vrrp_sync_group G {\n    group {\n        VI_1\n    }\n    smtp_alert false\n}\n"
        + INSTANCE.format(body="    smtp_alert")
        + SERVER.format(
            body="    smtp_alert\n    real_server 10.0.0.2 80 {\n        smtp_alert off\n    }"
        )
    )
    result = imported(tmp_path, text)
    assert result.document["global"]["notification"] == {
        "smtp_alert": True,
        "smtp_alert_vrrp": False,
        "smtp_alert_checker": True,
    }
    assert result.document["sync_groups"]["G"]["smtp_alert"] is False
    assert result.document["vrrp_instances"]["VI_1"]["smtp_alert"] is True
    vs = result.document["virtual_servers"][0]
    assert vs["smtp_alert"] is True and vs["real_servers"][0]["smtp_alert"] is False
    assert result.complete


def test_a_switch_with_a_word_that_is_not_one_is_reported(tmp_path: Path) -> None:
    vi, result = instance(tmp_path, "    smtp_alert maybe")
    assert "smtp_alert" not in vi
    assert ("smtp_alert", "dropped") in notes(result)


def test_vip_brd_scope_dev_label(tmp_path: Path) -> None:
    body = (
        "    virtual_ipaddress_excluded {\n"
        "        198.51.100.7/24 brd 198.51.100.255 dev eth1 scope link label eth1:ex\n"
        "    }"
    )
    vi, result = instance(tmp_path, body)
    assert vi["virtual_ipaddresses_excluded"] == [
        {
            "address": "198.51.100.7/24",
            "broadcast": "198.51.100.255",
            "device": "eth1",
            "scope": "link",
            "label": "eth1:ex",
        }
    ]
    assert result.complete


def test_real_server_notify_up_and_down(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 80 {\n"
        '        notify_up "/usr/local/bin/rs up"\n'
        '        notify_down "/usr/local/bin/rs down >> /var/log/rs"\n'
        "    }"
    )
    vs, result = server(tmp_path, body)
    real = vs["real_servers"][0]
    assert real["notify_up"] == "/usr/local/bin/rs up"
    assert real["notify_down"] == ["sh", "-c", "/usr/local/bin/rs down >> /var/log/rs"]
    assert ("notify_down", "changed") in notes(result)


def test_instance_debug_is_ignored_with_a_note(tmp_path: Path) -> None:
    vi, result = instance(tmp_path, "    debug 2")
    assert "debug" not in vi
    assert sorted(notes(result)) == [("debug", "ignored"), ("enable_script_security", "changed")]
    assert result.complete


def test_track_file_and_its_use(tmp_path: Path) -> None:
    before = (
        "vrrp_track_file weight_file {\n    file /run/lvs/weight\n    weight -3 reverse\n"
        "    init_file 5 overwrite\n}\n"
        "vrrp_track_file plain {\n    file /run/lvs/plain\n    init_file\n}\n"
    )
    vi, result = instance(
        tmp_path, "    track_file {\n        weight_file weight 2\n        plain\n    }", before
    )
    assert result.document["vrrp_track_files"] == {
        "weight_file": {
            "file": "/run/lvs/weight",
            "weight": -3,
            "reverse": True,
            "init_overwrite": True,
            "init": 5,
        },
        "plain": {"file": "/run/lvs/plain", "init": 0},
    }
    assert vi["track_files"] == [{"file": "weight_file", "weight": 2}, "plain"]
    assert result.complete


def test_shell_syntax_runs_under_sh_and_an_explicit_shell_is_split(tmp_path: Path) -> None:
    text = (
        'vrrp_script a {\n    script "pidof haproxy || exit 1"\n}\n'
        "vrrp_script b {\n    script \"/bin/sh -c 'test $(cat /run/n) -lt 5'\"\n}\n"
        'vrrp_script c {\n    script "/usr/local/bin/check --fast"\n}\n'
    )
    result = imported(tmp_path, text)
    scripts = result.document["vrrp_scripts"]
    assert scripts["a"]["command"] == ["sh", "-c", "pidof haproxy || exit 1"]
    assert scripts["b"]["command"] == ["/bin/sh", "-c", "test $(cat /run/n) -lt 5"]
    assert scripts["c"]["command"] == "/usr/local/bin/check --fast"
    (note,) = [n for n in result.notes if n.keyword == "script"]
    assert note.where.line == 2 and "without a shell" in note.text


def test_a_duplicate_vip_says_what_of_it_was_left_out(tmp_path: Path) -> None:
    body = (
        "    virtual_ipaddress {\n        192.0.2.10/24\n"
        "        192.0.2.10/24 label eth0:two\n    }"
    )
    text = INSTANCE.format(body="").replace(
        "    virtual_ipaddress {\n        192.0.2.10/24\n    }\n", ""
    )
    result = imported(tmp_path, text.replace("\n\n}", "\n" + body + "\n}"))
    vi = result.document["vrrp_instances"]["VI_1"]
    assert vi["virtual_ipaddresses"] == ["192.0.2.10/24"]
    (note,) = [n for n in result.notes if n.keyword == "192.0.2.10/24"]
    assert "'label eth0:two' of this one left out" in note.text


def test_a_track_file_without_file_is_left_out(tmp_path: Path) -> None:
    result = imported(tmp_path, "vrrp_track_file t {\n    weight 3\n}\n")
    assert "vrrp_track_files" not in result.document
    assert ("vrrp_track_file", "dropped") in notes(result)


def test_virtual_server_group_members_and_its_server(tmp_path: Path) -> None:
    text = (
        "virtual_server_group web {\n    192.0.2.10 80\n    192.0.2.20-29 80\n"
        "    2001:db8::10 443\n    fwmark 7\n}\n"
        "virtual_server group web {\n    protocol TCP\n    lb_algo rr\n"
        "    real_server 10.0.0.2 80 {\n    }\n}\n"
    )
    result = imported(tmp_path, text)
    assert result.document["virtual_server_groups"] == {
        "web": {
            "members": [
                {"address": "192.0.2.10", "port": 80},
                {"address": "192.0.2.20-29", "port": 80},
                {"address": "2001:db8::10", "port": 443},
                {"fwmark": 7},
            ]
        }
    }
    vs = result.document["virtual_servers"][0]
    assert vs["group"] == "web" and vs["protocol"] == "TCP" and vs["scheduler"] == "rr"
    assert result.complete


def test_groups_unused_or_served_twice_and_fwmark_families(tmp_path: Path) -> None:
    text = (
        "virtual_server_group dns {\n    192.0.2.53 53\n    fwmark 9 inet6\n}\n"
        "virtual_server_group spare {\n    192.0.2.99 80\n}\n"
        "virtual_server group dns {\n    protocol TCP\n}\n"
        "virtual_server group dns {\n    protocol UDP\n}\n"
    )
    result = imported(tmp_path, text)
    groups = result.document["virtual_server_groups"]
    assert groups == {
        "dns": {
            "members": [{"address": "192.0.2.53", "port": 53}, {"fwmark": 9, "family": "ipv6"}]
        },
        "dns_2": {
            "members": [{"address": "192.0.2.53", "port": 53}, {"fwmark": 9, "family": "ipv6"}]
        },
    }
    assert [vs["group"] for vs in result.document["virtual_servers"]] == ["dns", "dns_2"]
    assert sorted(
        (n.where.line, n.kind) for n in result.notes if n.keyword == "virtual_server_group"
    ) == [(1, "changed"), (5, "ignored")]


def test_a_group_server_without_protocol_is_udp_unless_its_members_are_marks(
    tmp_path: Path,
) -> None:
    text = (
        "virtual_server group marks {\n    lb_algo rr\n}\n"
        "virtual_server group vips {\n    lb_algo rr\n}\n"
        "virtual_server_group marks {\n    fwmark 7\n    fwmark 8\n}\n"
        "virtual_server_group vips {\n    192.0.2.10 53\n}\n"
    )
    result = imported(tmp_path, text)
    marks, vips = result.document["virtual_servers"]
    assert "protocol" not in marks
    assert vips["protocol"] == "UDP"
    assert [n.where.line for n in result.notes if "assumes UDP" in n.text] == [4]


def test_ssl_get_maps_to_https_with_each_url(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 443 {\n        SSL_GET {\n"
        "            url {\n                path /a\n                status_code 200\n"
        "            }\n            url {\n                path /b\n"
        "                digest 9B3A0C85A887A256D6939DA88AABD8CD\n            }\n"
        "            connect_timeout 2\n        }\n    }"
    )
    vs, result = server(tmp_path, body)
    assert vs["real_servers"][0]["checks"] == [
        {"type": "https", "timeout": 2, "path": "/a", "status": [200]},
        {
            "type": "https",
            "timeout": 2,
            "path": "/b",
            "digest": "md5:" + "9b3a0c85a887a256d6939da88aabd8cd",
        },
    ]
    assert result.complete


def test_misc_check_with_misc_dynamic_and_user(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 80 {\n        MISC_CHECK {\n"
        '            misc_path "/usr/local/bin/weigh 10.0.0.2"\n            misc_timeout 4\n'
        "            misc_dynamic\n            user nobody\n        }\n    }"
    )
    vs, result = server(tmp_path, body)
    assert vs["real_servers"][0]["checks"] == [
        {
            "type": "script",
            "command": "/usr/local/bin/weigh 10.0.0.2",
            "timeout": 4,
            "dynamic_weight": True,
            "user": "nobody",
        }
    ]
    assert result.complete


def test_dns_check_type_and_name(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 53 {\n        DNS_CHECK {\n            type a\n"
        "            name www.example.com\n            retry 2\n        }\n    }"
    )
    vs, result = server(tmp_path, body)
    assert vs["real_servers"][0]["checks"] == [
        {"type": "dns", "query_type": "A", "name": "www.example.com", "retries": 2}
    ]
    assert result.complete


def test_smtp_check_with_helo_name_and_host_blocks(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 25 {\n        SMTP_CHECK {\n"
        "            helo_name lb.example.com\n            retry 2\n"
        "            host {\n                connect_ip 10.0.0.2\n                connect_port 25\n"
        "            }\n            host {\n                connect_ip 10.0.1.2\n"
        "                connect_port 587\n                bindto 10.0.1.1\n            }\n"
        "        }\n    }"
    )
    vs, result = server(tmp_path, body)
    common = {"type": "smtp", "helo_name": "lb.example.com", "retries": 2}
    assert vs["real_servers"][0]["checks"] == [
        {**common, "address": "10.0.0.2", "port": 25},
        {**common, "address": "10.0.1.2", "port": 587, "bind_address": "10.0.1.1"},
    ]
    assert result.complete


def test_smtp_check_with_its_own_connection_and_a_host_is_two_checks(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 25 {\n        SMTP_CHECK {\n            connect_timeout 6\n"
        "            host {\n                connect_ip 10.0.1.2\n            }\n"
        "        }\n    }"
    )
    vs, _ = server(tmp_path, body)
    assert vs["real_servers"][0]["checks"] == [
        {"type": "smtp", "timeout": 6},
        {"type": "smtp", "address": "10.0.1.2"},
    ]


def test_smtp_check_without_host_blocks_checks_the_real_server(tmp_path: Path) -> None:
    body = "    real_server 10.0.0.2 25 {\n        SMTP_CHECK {\n        }\n    }"
    vs, _ = server(tmp_path, body)
    assert vs["real_servers"][0]["checks"] == [{"type": "smtp"}]


def test_udp_check_payload_and_reply(tmp_path: Path) -> None:
    body = (
        "    real_server 10.0.0.2 53 {\n        UDP_CHECK {\n            payload 0a0b\n"
        "        }\n        UDP_CHECK {\n            require_reply 0c\n        }\n    }"
    )
    vs, result = server(tmp_path, body)
    assert vs["real_servers"][0]["checks"] == [
        {"type": "udp", "payload_hex": "0a0b", "require_reply": False},
        {"type": "udp", "require_reply": True},
    ]
    assert [n.keyword for n in result.notes if n.kind == "dropped"] == ["require_reply"]


def test_delay_loop_retry_and_nb_get_retry(tmp_path: Path) -> None:
    body = (
        "    delay_loop 3\n    real_server 10.0.0.2 80 {\n        TCP_CHECK {\n"
        "            retry 4\n        }\n        HTTP_GET {\n            nb_get_retry 2\n"
        "            delay_loop 9\n        }\n    }"
    )
    vs, result = server(tmp_path, body)
    assert vs["check_defaults"] == {"interval": 3}
    assert vs["real_servers"][0]["checks"] == [
        {"type": "tcp", "retries": 4},
        {"type": "http", "retries": 2, "interval": 9},
    ]
    assert result.complete


def test_lvs_sync_daemon_in_its_1x_form(tmp_path: Path) -> None:
    _, result = instance(tmp_path, "    lvs_sync_daemon_interface eth1")
    assert result.document["global"]["lvs_sync_daemon"] == {
        "interface": "eth1",
        "vrrp_instance": "VI_1",
    }


def test_lvs_sync_daemon_in_its_2x_form(tmp_path: Path) -> None:
    _, result = instance(
        tmp_path, "", "global_defs {\n    lvs_sync_daemon eth1 VI_1 id 9 maxlen 1400\n}\n"
    )
    assert result.document["global"]["lvs_sync_daemon"] == {
        "interface": "eth1",
        "vrrp_instance": "VI_1",
        "sync_id": 9,
    }
    (note,) = [n for n in result.notes if n.keyword == "lvs_sync_daemon"]
    assert note.kind == "dropped" and "maxlen 1400" in note.text


def test_omega_quorum_up_and_quorum_down(tmp_path: Path) -> None:
    body = (
        "    quorum 2\n    omega\n    quorum_up /usr/local/bin/quorum-up\n"
        '    quorum_down "/usr/local/bin/page ops"'
    )
    vs, result = server(tmp_path, body)
    assert vs["quorum"] == 2 and vs["omega"] is True
    assert vs["quorum_up"] == "/usr/local/bin/quorum-up"
    assert vs["quorum_down"] == "/usr/local/bin/page ops"
    assert result.complete


def test_use_vmac_with_a_name_and_vmac_xmit_base(tmp_path: Path) -> None:
    vi, result = instance(tmp_path, "    use_vmac vrrp.51\n    vmac_xmit_base")
    assert vi["use_vmac"] is True
    assert vi["vmac_interface"] == "vrrp.51"
    assert vi["vmac_xmit_base"] is True
    assert result.complete
    vi, _ = instance(tmp_path, "    use_vmac")
    assert vi["use_vmac"] is True and "vmac_interface" not in vi


def test_tracking_on_a_sync_group_is_reported_not_called_a_typo(tmp_path: Path) -> None:
    text = (
        "vrrp_sync_group G {\n    group {\n        VI_1\n    }\n    track_interface {\n"
        "        eth1\n    }\n}\n" + INSTANCE.format(body="")
    )
    result = imported(tmp_path, text)
    (note,) = [n for n in result.notes if n.keyword == "track_interface"]
    assert "each of its instances" in note.text


def test_clashing_vmac_names_are_numbered_as_keepalived_does(tmp_path: Path) -> None:
    v6 = INSTANCE.format(body="    use_vmac\n    vmac_xmit_base").replace(
        "192.0.2.10/24", "fe80::10/64"
    )
    text = (
        INSTANCE.format(body="    use_vmac")
        + INSTANCE.format(body="    use_vmac").replace("VI_1", "VI_2").replace("eth0", "eth1")
        + v6.replace("VI_1", "VI_3").replace("eth0", "eth2")
    )
    result = imported(tmp_path, text)
    instances = result.document["vrrp_instances"]
    assert "vmac_interface" not in instances["VI_1"]
    assert instances["VI_2"]["vmac_interface"] == "vrrp1.51"
    assert instances["VI_3"]["vmac_interface"] == "vrrp6.51"
    assert "vmac_xmit_base" not in instances["VI_3"]
    assert [n.kind for n in result.notes if n.keyword == "vrrp_instance"] == [
        "changed",
        "dropped",
        "changed",
    ]
