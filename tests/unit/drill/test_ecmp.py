"""The ECMP drill's pure part: the IPVS tables read from /proc, the figures of one scenario,
the targets, and the director config and options it builds."""

from __future__ import annotations

import argparse

import pytest

from lvsha.config import load_text
from lvsha.drill.ecmp import EcmpOptions, director_config, options_from_args
from lvsha.drill.ecmp_report import (
    ConnEntry,
    EcmpScenario,
    Figures,
    FlowRecord,
    ShortRecord,
    figures,
    flow_directors,
    format_table,
    hex_address,
    met,
    parse_ip_vs,
    parse_ip_vs_conn,
)
from lvsha.drill.main import add_arguments
from lvsha.drill.route_watch import parse_route_dump

# As the kernel prints them (ip_vs_conn.c, ip_vs_ctl.c): a director of the drill's lab.
IP_VS_CONN = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP CB007102 A1B2 C633640A 0050 C0000216 0050 ESTABLISHED     899
TCP CB007102 A1B3 C633640A 0050 C0000215 0050 FIN_WAIT         98
TCP C0000201 0B3F C633640A 0050 C0000216 0050 ESTABLISHED     899
TCP CB007102 A1B4 C633640B 0050 C0000216 0050 ESTABLISHED     899
"""
IP_VS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  C633640B:0050 rr
  -> C0000219:0050      Route   1      0          0
TCP  C633640A:0050 mh (mh-port)
  -> C0000215:0050      Route   1      0          0
  -> C0000216:0050      Route   0      3          0
  -> C0000217:0050      Route   1      1          0
"""
CLIENT, VIP = "203.0.113.2", "198.51.100.10"


def test_the_proc_tables_are_read_for_the_client_and_the_vip_only() -> None:
    assert hex_address(VIP) == "C633640A"
    assert parse_ip_vs_conn(IP_VS_CONN, CLIENT, VIP, 80) == [
        ConnEntry(0xA1B2, "192.0.2.22", "ESTABLISHED", 899),
        ConnEntry(0xA1B3, "192.0.2.21", "FIN_WAIT", 98),
    ]
    service = parse_ip_vs(IP_VS, VIP, 80)
    assert service is not None
    assert service.scheduler == "mh"
    assert list(service.weights.items()) == [
        ("192.0.2.21", 1),
        ("192.0.2.22", 0),
        ("192.0.2.23", 1),
    ]
    assert parse_ip_vs(IP_VS, "198.51.100.99", 80) is None


def test_a_moved_flow_belongs_to_the_director_that_refreshed_it_last() -> None:
    tables = {
        "d1": [
            ConnEntry(1000, "rs", "ESTABLISHED", 896),
            ConnEntry(1001, "rs", "ESTABLISHED", 900),
        ],
        "d2": [ConnEntry(1000, "rs", "ESTABLISHED", 900), ConnEntry(1001, "rs", "CLOSE", 10)],
        "d3": [ConnEntry(1002, "rs", "SYN_RECV", 59), ConnEntry(1000, "rs", "ESTABLISHED", 899)],
    }
    assert flow_directors(tables) == {1000: "d2", 1001: "d1", 1002: "d3"}
    # Refreshed in the same second on two directors: unknown.
    tables["d3"].append(ConnEntry(1001, "rs", "ESTABLISHED", 900))
    assert flow_directors(tables) == {1000: "d2", 1002: "d3"}


def flow(
    port: int,
    *,
    server: str = "rs1",
    ended_at: float | None = None,
    last_echo: float = 19.95,
    waits: tuple[tuple[float, float], ...] = (),
) -> FlowRecord:
    return FlowRecord(port, server, ended_at, "reset" if ended_at else None, last_echo, 100, waits)


def test_figures_count_resets_stalls_the_affected_and_the_moved() -> None:
    flows = [
        flow(1),  # d1, moved to d2, fine
        flow(2, waits=((10.1, 0.7),)),  # d1, moved, waited 700 ms: continued, not broken
        flow(3, waits=((10.1, 1.4),)),  # d1, stalled 1.4 s: broken, but continued
        flow(4, ended_at=10.5, last_echo=10.4),  # d2, reset: broken
        flow(5, ended_at=5.0, last_echo=4.9),  # broke before the fault
        flow(6, waits=((3.0, 1.5),)),  # stalled before the fault only
        flow(7, last_echo=15.0),  # d3, silent since long before the report: not continued
    ]
    before = {1: "d1", 2: "d1", 3: "d1", 4: "d2", 6: "d3", 7: "d3"}
    after = {1: "d2", 2: "d3", 3: "d1", 4: "d3", 6: "d3", 7: "d3"}
    shorts = [ShortRecord(10.2, 3.0, "timeout", None), ShortRecord(10.3, 0.01, None, "rs2")]
    result = figures(
        scheduler="mh",
        scenario=EcmpScenario.KILL,
        subject="d1",
        fault_at=10.0,
        change_at=10.4,
        route_changes=1,
        report_at=20.0,
        flows=flows,
        shorts=shorts,
        before=before,
        after=after,
        stall=1.0,
    )
    assert result.change == pytest.approx(0.4)
    assert (result.connections, result.reset, result.stalled, result.broken) == (6, 1, 1, 2)
    assert (result.affected, result.affected_continued) == (3, 3)
    assert (result.moved, result.moved_broken, result.others_broken) == (3, 1, 1)
    assert result.longest_wait == pytest.approx(1.4)
    assert (result.new_tried, result.new_failed, result.new_failures) == (2, 1, {"timeout": 1})
    assert (result.before_fault_broken, result.unmapped) == (2, 0)
    assert met(result) is True  # 3/3 of d1's continued


def _result(scheduler: str, scenario: EcmpScenario, **changes: object) -> Figures:
    values: dict[str, object] = {
        "scheduler": scheduler,
        "scenario": scenario,
        "subject": "d1",
        "change": 0.3,
        "route_changes": 1,
        "connections": 300,
        "reset": 0,
        "stalled": 0,
        "affected": 100,
        "affected_continued": 100,
        "moved": 150,
        "moved_broken": 0,
        "others_broken": 0,
        "longest_wait": 0.4,
        "new_tried": 60,
        "new_failed": 0,
    }
    values.update(changes)
    return Figures(**values)  # type: ignore[arg-type]


def test_targets_hold_for_mh_and_wlc_is_a_contrast() -> None:
    assert met(_result("mh", EcmpScenario.DRAIN)) is True
    assert met(_result("mh", EcmpScenario.DRAIN, stalled=1)) is False
    assert met(_result("mh", EcmpScenario.KILL, affected_continued=99, stalled=3)) is True
    assert met(_result("mh", EcmpScenario.KILL, affected_continued=98)) is False
    assert met(_result("mh", EcmpScenario.RETURN, reset=1)) is False
    assert met(_result("mh", EcmpScenario.REAL_SERVER, reset=75)) is True
    assert met(_result("mh", EcmpScenario.REAL_SERVER, reset=76, others_broken=1)) is False
    assert met(_result("mh", EcmpScenario.KILL, change=None)) is False
    assert met(_result("wlc", EcmpScenario.DRAIN, reset=110, moved_broken=110)) is None
    table = format_table(
        [
            _result("mh", EcmpScenario.DRAIN),
            _result(
                "wlc",
                EcmpScenario.DRAIN,
                reset=110,
                moved_broken=110,
                affected_continued=30,
                route_changes=2,
            ),
        ],
        "title",
    )
    lines = table.splitlines()
    assert lines[0] == "title"
    assert "0 established broken" in lines[3] and lines[3].endswith("met")
    assert "110/150 (73%)" in lines[4]
    assert lines[4].endswith("contrast: 70% of the affected broke")
    assert "wlc drain d1: the router's ECMP set changed 2 times" in table


def test_each_director_config_is_valid_and_wlc_drops_mh_port() -> None:
    options = EcmpOptions()
    config = load_text(director_config(options, "mh", 1, ["vtysh", "-N", "lab-d2"]))
    (web,) = config.virtual_servers
    assert (web.scheduler, web.scheduler_flags, web.forwarding) == ("mh", ["mh-port"], "DR")
    assert [str(rs.address) for rs in web.real_servers] == [
        "192.0.2.21",
        "192.0.2.22",
        "192.0.2.23",
        "192.0.2.24",
    ]
    assert config.bgp is not None
    assert (config.bgp.asn, config.bgp.router_id) == (65002, "192.0.2.12")
    assert config.bgp.vtysh == ["vtysh", "-N", "lab-d2"]
    assert config.bgp.bfd.transmit_interval == pytest.approx(0.1)
    wlc = load_text(director_config(options, "wlc", 0, ["vtysh"]))
    assert (wlc.virtual_servers[0].scheduler, wlc.virtual_servers[0].scheduler_flags) == ("wlc", [])


def test_the_command_line_reaches_the_ecmp_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--topology",
            "ecmp",
            "--scheduler",
            "mh",
            "--connections",
            "50",
            "--ecmp-scenario",
            "kill",
        ]
    )
    options = options_from_args(args)
    assert options.schedulers == ("mh",)
    assert options.scenarios == (EcmpScenario.KILL,)
    assert options.connections == 50
    assert options.start_timeout == 600.0
    defaults = options_from_args(parser.parse_args(["--topology", "ecmp"]))
    assert defaults.schedulers == ("mh", "wlc")
    assert defaults.scenarios == tuple(EcmpScenario)
    assert EcmpOptions(settle=0.5).problems() == [
        "--settle must exceed the stall limit, or stalls go unseen"
    ]


def test_a_route_dump_gives_the_gateways_of_exactly_the_prefix() -> None:
    from ipaddress import IPv4Network  # noqa: PLC0415

    # RTM_NEWROUTE for 198.51.100.10/32 (main table, unicast) with two nexthops, then DONE.
    def attribute(kind: int, data: bytes) -> bytes:
        length = 4 + len(data)
        return (
            length.to_bytes(2, "little") + kind.to_bytes(2, "little") + data + b"\0" * (-length % 4)
        )

    def nexthop(gateway: str) -> bytes:
        inner = attribute(5, bytes(int(part) for part in gateway.split(".")))
        return (8 + len(inner)).to_bytes(2, "little") + b"\0\0" + (2).to_bytes(4, "little") + inner

    rtmsg = bytes([2, 32, 0, 0, 254, 186, 0, 1]) + b"\0\0\0\0"
    payload = (
        rtmsg
        + attribute(15, (254).to_bytes(4, "little"))
        + attribute(1, bytes([198, 51, 100, 10]))
        + attribute(9, nexthop("192.0.2.11") + nexthop("192.0.2.13"))
    )
    message = (16 + len(payload)).to_bytes(4, "little") + (24).to_bytes(2, "little")
    message += b"\0" * 10 + payload
    done = (20).to_bytes(4, "little") + (3).to_bytes(2, "little") + b"\0" * 14
    found, ended = parse_route_dump(message + done, IPv4Network("198.51.100.10/32"))
    assert (found, ended) == (frozenset({"192.0.2.11", "192.0.2.13"}), True)
    found, ended = parse_route_dump(message, IPv4Network("198.51.100.11/32"))
    assert (found, ended) == (None, False)
