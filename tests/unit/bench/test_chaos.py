"""The chaos bench's pure parts: drawing faults, judging addresses, processes and resources."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

from bench.chaos import (
    OWNED,
    Check,
    Fault,
    FaultKind,
    FaultResult,
    ProcessInfo,
    Violation,
    backup_fault_note,
    descendants,
    director_config,
    draw_faults,
    leftover_processes,
    resource_problems,
    summary_table,
    verdict_line,
    vip_problems,
)
from lvsha.config import load_text

V100, V101, V102 = (IPv4Address(f"192.0.2.{n}") for n in (100, 101, 102))
OWN = {"a": IPv4Address("192.0.2.11"), "b": IPv4Address("192.0.2.12")}


def test_faults_are_reproducible_from_the_seed() -> None:
    assert draw_faults(50, seed=7) == draw_faults(50, seed=7)
    assert draw_faults(50, seed=7) != draw_faults(50, seed=8)
    assert [f.index for f in draw_faults(5, seed=1)] == [1, 2, 3, 4, 5]


def test_every_kind_is_drawn_with_roughly_equal_weight_mostly_on_the_master() -> None:
    faults = draw_faults(7000, seed=3)
    kinds = Counter(f.kind for f in faults)
    assert set(kinds) == set(FaultKind)
    assert all(800 <= n <= 1200 for n in kinds.values()), kinds
    on_master = sum(f.on_master for f in faults) / len(faults)
    assert 0.72 <= on_master <= 0.78


def test_one_holder_per_vip_and_an_empty_backup_pass() -> None:
    holdings = {"a": frozenset({OWN["a"], V100, V101}), "b": frozenset({OWN["b"]})}
    assert vip_problems(holdings, [V100, V101], backup="b") == []


def test_a_vip_on_both_or_on_none_and_a_vip_on_the_backup_are_named() -> None:
    holdings = {"a": frozenset({V100}), "b": frozenset({V100, OWN["b"]})}
    problems = vip_problems(holdings, [V100, V101], backup="b")
    assert problems == [
        (Check.VIP_HOLDERS, "192.0.2.100 held by a and b"),
        (Check.VIP_HOLDERS, "192.0.2.101 held by no director"),
        (Check.BACKUP_HOLDS, "backup b holds 192.0.2.100"),
    ]


def test_the_third_vip_on_the_backup_counts_as_lvsha_s_address() -> None:
    holdings = {"a": frozenset({V100, V101}), "b": frozenset({V102})}
    assert V102 in OWNED
    assert vip_problems(holdings, [V100, V101], backup="b") == [
        (Check.BACKUP_HOLDS, "backup b holds 192.0.2.102")
    ]


def test_resources_within_the_bounds_pass_and_beyond_them_are_named() -> None:
    assert resource_problems("a", 50, 150_000, baseline_fds=30, baseline_rss_kib=100_000) == []
    problems = resource_problems("a", 51, 150_001, baseline_fds=30, baseline_rss_kib=100_000)
    assert [check for check, _ in problems] == [Check.FDS, Check.RSS]


def process(ppid: int, *argv: str, state: str = "S", env: str = "") -> ProcessInfo:
    return ProcessInfo(ppid, state, argv, frozenset({env} if env else ()))


def mine(info: ProcessInfo) -> bool:
    return "/run/lab/a" in " ".join(info.argv) or "LVSHA_VRRP_SCRIPT=chk_a" in info.environment


def test_a_script_under_a_current_child_is_no_leftover_but_an_orphan_is() -> None:
    processes = {
        10: process(1, "python", "-m", "lvsha", "run", "/run/lab/a/lvsha.yaml"),
        11: process(10, "python", "-m", "lvsha.daemon.vrrp_process", "--run-dir", "/run/lab/a"),
        12: process(11, "/bin/sh", "/run/lab/a/track.sh"),
        13: process(12, "sleep", "30", env="LVSHA_VRRP_SCRIPT=chk_a"),
        # A killed child's script grandchild, re-parented to init, and one to the parent.
        20: process(1, "sleep", "30", env="LVSHA_VRRP_SCRIPT=chk_a"),
        21: process(10, "sleep", "30", env="LVSHA_VRRP_SCRIPT=chk_a"),
        # An old VRRP child still running beside the new parent; a zombie; someone else's.
        22: process(1, "python", "-m", "lvsha.daemon.vrrp_process", "--run-dir", "/run/lab/a"),
        23: process(10, "sleep", "30", state="Z", env="LVSHA_VRRP_SCRIPT=chk_a"),
        24: process(1, "sleep", "30", env="LVSHA_VRRP_SCRIPT=chk_b"),
    }
    assert descendants(processes, [11]) == {11, 12, 13}
    assert leftover_processes(processes, mine, parent=10, children=[11]) == [20, 21, 22]


def test_without_a_parent_everything_of_the_director_is_left_over() -> None:
    processes = {30: process(1, "/bin/sh", "/run/lab/a/track.sh")}
    assert leftover_processes(processes, mine, parent=None, children=[]) == [30]


def result(
    index: int, kind: FaultKind, *violations: Check, lost: int = 0, on_master: bool = True
) -> FaultResult:
    return FaultResult(
        Fault(index, kind, on_master),
        "a",
        2.0,
        lost,
        0.0,
        tuple(Violation(index, kind, check, "detail") for check in violations),
    )


def test_verdict_holds_without_violations_and_lists_them_otherwise() -> None:
    clean = [result(1, FaultKind.KILL_VRRP), result(2, FaultKind.LINK_FLAP, lost=30)]
    assert verdict_line(clean) == "HOLDS  0 violations in 2 faults"
    failing = [
        *clean,
        result(3, FaultKind.KILL_PARENT, Check.VIP_HOLDERS, Check.BACKUP_HOLDS),
        result(4, FaultKind.KILL_VRRP, Check.VIP_HOLDERS),
    ]
    line = verdict_line(failing)
    assert line.startswith("FAILS  3 violations in 2 of 4 faults")
    assert "2 x each VIP on exactly one director" in line
    assert line.endswith("faults 3, 4")


def test_the_table_has_a_row_per_kind_drawn_and_a_total() -> None:
    rows = summary_table([result(1, FaultKind.KILL_VRRP, lost=3), result(2, FaultKind.KILL_VRRP)])
    assert [row.split("  ")[0] for row in rows[1:]] == [FaultKind.KILL_VRRP.value, "all"]
    assert "0 / 2 / 3" in rows[1]


def test_probes_lost_to_a_fault_on_the_backup_are_noted() -> None:
    quiet = [
        result(1, FaultKind.STOP_VRRP, lost=40),
        result(2, FaultKind.STOP_VRRP, on_master=False),
    ]
    assert backup_fault_note(quiet) is None
    costly = [*quiet, result(3, FaultKind.STOP_VRRP, lost=489, on_master=False)]
    assert backup_fault_note(costly) == (
        "NOTE   1 of 2 faults on the backup cost the client probes (max 489 lost): "
        "1 x stop vrrp child 2 s"
    )


def test_the_director_configs_are_valid_and_only_the_changed_one_has_the_third_vip() -> None:
    script = Path("/run/lab/a/track.sh")
    config = load_text(director_config("a", "chk_a", script), "a.yaml")
    (instance,) = config.vrrp_instances.values()
    assert [str(v.address.ip) for v in instance.virtual_ipaddresses] == [str(V100), str(V101)]
    assert (instance.version, instance.advert_interval, instance.priority) == (3, 0.1, 150)
    changed = load_text(director_config("a", "chk_a", script, third_vip=True), "a.yaml")
    (instance,) = changed.vrrp_instances.values()
    assert str(V102) in [str(v.address.ip) for v in instance.virtual_ipaddresses]
