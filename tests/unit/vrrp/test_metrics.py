"""The VRRP process's metrics: the counters the engine keeps, the samples it exports, and the
text it writes, as Prometheus' parser and `promtool check metrics` read it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lvsha.daemon.metrics import LoopLag, Sample, render
from lvsha.net.announce import AnnounceError
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.keepalived_names import keepalived_samples
from lvsha.vrrp.metrics import FAMILIES, process_samples, rx_errors, vrrp_samples
from lvsha.vrrp.socket import SocketDropReason
from lvsha.vrrp.wire import DropReason
from tests.tools.exposition import promtool_accepts
from tests.unit.vrrp.engine_harness import Harness, config, instance, vip, wait_for

M, B, R = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.RELEASING
VI_1 = {"instance": "VI_1", "interface": "eth0", "vrid": "1", "family": "ipv4"}


def table(samples: Iterable[Sample]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for name, labels, value in samples:
        key = (name, frozenset(labels.items()))
        assert key not in found, f"{name} {labels} exported twice"
        found[key] = value
    return found


def value(lab: Harness, name: str, **labels: str) -> float | None:
    assert lab.engine is not None
    return table(vrrp_samples(lab.engine)).get((name, frozenset({**VI_1, **labels}.items())))


async def test_a_takeover_and_a_step_down_are_counted(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10), vip(11))}))
    assert value(lab, "lvsha_vrrp_state", state="BACKUP") == 1.0
    assert value(lab, "lvsha_vrrp_state", state="MASTER") == 0.0
    await wait_for(lambda: lab.state("VI_1") is M)
    await wait_for(lambda: len(lab.announced()) == 2)
    sock = lab.socket("VI_1")
    assert value(lab, "lvsha_vrrp_state", state="MASTER") == 1.0
    assert value(lab, "lvsha_vrrp_state", state="BACKUP") == 0.0
    assert value(lab, "lvsha_vrrp_transitions_total", **{"from": "INITIALIZE", "to": "BACKUP"}) == 1
    assert value(lab, "lvsha_vrrp_transitions_total", **{"from": "BACKUP", "to": "MASTER"}) == 1
    assert value(lab, "lvsha_vrrp_transitions_total", **{"from": "MASTER", "to": "BACKUP"}) is None
    assert value(lab, "lvsha_vrrp_adverts_sent_total") == len(sock.sent) >= 1
    assert value(lab, "lvsha_garp_sent_total") == 2.0  # one frame per VIP (burst 1, no delay)
    assert value(lab, "lvsha_vrrp_adverts_received_total") == 0.0

    sock.hear(1, 200, [vip(10), vip(11)])  # a higher priority master
    assert lab.state("VI_1") is B
    assert value(lab, "lvsha_vrrp_transitions_total", **{"from": "MASTER", "to": "BACKUP"}) == 1
    assert value(lab, "lvsha_vrrp_adverts_received_total") == 1.0
    assert value(lab, "lvsha_vrrp_priority_zero_received_total") == 0.0
    sock.hear(1, 0, [vip(10), vip(11)])  # ... which leaves
    assert value(lab, "lvsha_vrrp_adverts_received_total") == 2.0
    assert value(lab, "lvsha_vrrp_priority_zero_received_total") == 1.0
    assert value(lab, "lvsha_vrrp_priority_zero_sent_total") == 0.0
    await wait_for(lambda: lab.state("VI_1") is M)  # after Skew_Time
    assert value(lab, "lvsha_vrrp_transitions_total", **{"from": "BACKUP", "to": "MASTER"}) == 2


async def test_leaving_mastership_counts_the_priority_zero_sent(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    await wait_for(lambda: lab.state("VI_1") is M)
    engine.set_handover(["VI_1"])
    assert lab.state("VI_1") is R
    assert value(lab, "lvsha_vrrp_priority_zero_sent_total") == 1.0
    assert value(lab, "lvsha_vrrp_transitions_total", **{"from": "MASTER", "to": "RELEASING"}) == 1
    assert value(lab, "lvsha_vrrp_state", state="RELEASING") == 1.0
    sent = len(lab.socket("VI_1").sent)
    assert value(lab, "lvsha_vrrp_adverts_sent_total") == sent


async def test_priorities_configured_and_effective(lab: Harness) -> None:
    await lab.start(
        config(
            {
                "VI_1": instance(
                    1, vip(10), priority=120, track_interfaces=[{"interface": "eth1", "weight": 7}]
                )
            }
        )
    )
    assert value(lab, "lvsha_vrrp_configured_priority") == 120.0
    assert value(lab, "lvsha_vrrp_effective_priority") == 127.0


async def test_a_tracked_files_number_is_exported(lab: Harness, tmp_path: Path) -> None:
    prio = tmp_path / "prio"
    prio.write_text("-3\n")
    settings = instance(1, vip(10), priority=120, track_files=["prio"])
    engine = await lab.start(
        config({"VI_1": settings}, vrrp_track_files={"prio": {"file": str(prio), "weight": 2}})
    )
    samples = table(vrrp_samples(engine))
    assert samples["lvsha_vrrp_track_file_value", frozenset({("file", "prio")})] == -3.0
    assert value(lab, "lvsha_vrrp_effective_priority") == 114.0
    promtool_accepts(render(vrrp_samples(engine), FAMILIES))


async def test_receive_errors_by_reason_with_a_stable_label_set(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    sock = lab.socket("VI_1")
    sock.drops.record(DropReason.VRID_MISMATCH)
    sock.drops.record(DropReason.VRID_MISMATCH)
    sock.drops.record(DropReason.OWN_ADVERT)
    sock.drops.record(DropReason.ADDRESS_LIST_MISMATCH)
    sock.ignored[SocketDropReason.OWN_ADVERT] += 1
    sock.ignored[SocketDropReason.NOT_A_UNICAST_PEER] += 3
    assert value(lab, "lvsha_vrrp_rx_errors_total", reason="vrid_mismatch") == 2.0
    assert value(lab, "lvsha_vrrp_rx_errors_total", reason="own_advert") == 2.0
    assert value(lab, "lvsha_vrrp_rx_errors_total", reason="not_a_unicast_peer") == 3.0
    assert value(lab, "lvsha_vrrp_rx_errors_total", reason="bad_checksum") == 0.0
    # Taken all the same: counted apart, not as an error.
    assert value(lab, "lvsha_vrrp_rx_errors_total", reason="address_list_mismatch") is None
    assert value(lab, "lvsha_vrrp_address_list_mismatch_total") == 1.0
    reasons = rx_errors(sock.drops.snapshot(), sock.ignored)
    expected = {r.value for r in DropReason} - {"address_list_mismatch"}
    assert set(reasons) == expected | {r.value for r in SocketDropReason}


async def test_failed_announcements_are_counted_and_their_frames_not(lab: Harness) -> None:
    def refuse(interface: str, addresses: object) -> list[object]:
        raise AnnounceError(19, f"interface {interface!r} does not exist")

    lab.announcer.announce_now = refuse  # type: ignore[method-assign,assignment]
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    await wait_for(lambda: lab.state("VI_1") is M)
    # The takeover's frames sent at once, then the round that tries them again.
    await wait_for(lambda: value(lab, "lvsha_garp_send_errors_total") == 2.0)
    assert value(lab, "lvsha_garp_sent_total") == 0.0


async def test_a_renamed_instance_keeps_its_counts_under_the_new_name(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    await wait_for(lambda: lab.state("VI_1") is M)
    outcome = await engine.apply(config({"VI_new": instance(1, vip(10))}))
    assert outcome.ok
    found = table(vrrp_samples(engine))
    renamed = frozenset({**VI_1, "instance": "VI_new", "from": "BACKUP", "to": "MASTER"}.items())
    assert found[("lvsha_vrrp_transitions_total", renamed)] == 1.0
    assert not any(dict(labels).get("instance") == "VI_1" for _, labels in found)


def keepalived_config(enabled: bool) -> object:
    return config(
        {
            "VI_1": instance(1, vip(10), state="MASTER"),
            "VI_2": instance(2, "198.51.100.20/24", interface="eth1"),
        },
        **{"global": {"metrics": {"keepalived_names": enabled}}},
    )


async def test_the_file_parses_and_passes_promtool(lab: Harness) -> None:
    engine = await lab.start(keepalived_config(True))  # type: ignore[arg-type]
    await wait_for(lambda: lab.state("VI_1") is M)
    lab.socket("VI_2").drops.record(DropReason.AUTH_PASSWORD_MISMATCH)
    lag = LoopLag()
    lag.lag.record(0.001)
    text = render(process_samples(engine, lag), FAMILIES)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The parser names counters without _total.
    assert families["lvsha_vrrp_adverts_sent"].type == "counter"
    assert families["lvsha_vrrp_state"].type == "gauge"
    assert families["keepalived_vrrp_state"].type == "gauge"
    assert families["lvsha_event_loop_lag_seconds"].type == "summary"
    states = {
        (s.labels["instance"], s.labels["state"]): s.value
        for s in families["lvsha_vrrp_state"].samples
    }
    assert states["VI_1", "MASTER"] == 1.0 and states["VI_2", "MASTER"] == 0.0
    assert {s.labels["interface"] for s in families["lvsha_vrrp_state"].samples} == {
        "eth0",
        "eth1",
    }
    # lvsha.daemon.metrics.LOOP_FAMILIES (not the VRRP process's) are checked apart below.
    promtool_accepts(render(vrrp_samples(engine), FAMILIES))
    promtool_accepts(render(keepalived_samples(engine), FAMILIES))


async def test_the_whole_file_passes_promtool(lab: Harness) -> None:
    engine = await lab.start(keepalived_config(True))  # type: ignore[arg-type]
    promtool_accepts(render(process_samples(engine, LoopLag()), FAMILIES))


async def test_keepalived_names_follow_reloads(lab: Harness) -> None:
    engine = await lab.start(keepalived_config(False))  # type: ignore[arg-type]
    lag = LoopLag()
    names = {name for name, _, _ in process_samples(engine, lag)}
    assert "lvsha_vrrp_state" in names and "keepalived_up" not in names
    assert (await engine.apply(keepalived_config(True))).ok  # type: ignore[arg-type]
    names = {name for name, _, _ in process_samples(engine, lag)}
    assert {"keepalived_up", "keepalived_vrrp_state", "lvsha_vrrp_state"} <= names
    assert (await engine.apply(keepalived_config(False))).ok  # type: ignore[arg-type]
    assert not any(n.startswith("keepalived_") for n, _, _ in process_samples(engine, lag))
