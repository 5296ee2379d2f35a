"""What the syncer reports besides the table: quorum changes (for the operator's events), the
drift corrections it made and the connection counters of its re-reads (for the metrics)."""

from __future__ import annotations

import pytest

from lvsha.checks.verdict import Health
from lvsha.ipvs.model import Connections, Destination, DestinationKey, Service, ServiceOptions
from lvsha.ipvs.plan import plan
from lvsha.ipvs.syncer import (
    DriftRepair,
    IpvsSyncer,
    QuorumChange,
    find_drift,
    operation_target,
)
from tests.unit.ipvs.test_syncer import (
    DNS,
    HEALTHY_TABLE,
    MAIL,
    MAIL_A,
    MAIL_B,
    MAIL_C,
    NAT,
    WEB,
    WEB_A,
    WEB_B,
    RecordingPort,
    dest,
    eventually,
    port,
    restart_verdicts,
    start,
    syncers,
    verdict,
)

__all__ = ["port", "syncers"]  # fixtures, imported for pytest


def heard(syncer: IpvsSyncer) -> list[QuorumChange]:
    changes: list[QuorumChange] = []
    syncer.subscribe_quorum(changes.append)
    return changes


def said(changes: list[QuorumChange]) -> list[tuple[str, bool, int, bool]]:
    return [
        (c.service.name or "", c.quorum.up, c.quorum.live_weight, c.sorry_active) for c in changes
    ]


async def test_losing_and_regaining_quorum_is_reported_with_the_sorry_server(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    changes = heard(syncer)
    # mail: quorum 2, hysteresis 1: held down to a live weight of 1, lost below.
    for real_server in (MAIL_A, MAIL_B):
        syncer.on_verdict(verdict(real_server, Health.UNHEALTHY))
    await eventually(lambda: "10.0.0.21" not in port.weights(MAIL), "two down")
    assert changes == []
    syncer.on_verdict(verdict(MAIL_C, Health.UNHEALTHY))
    await eventually(lambda: len(changes) == 1, "quorum lost")
    assert said(changes) == [("mail", False, 0, True)]
    # Regained only at quorum + hysteresis (3).
    syncer.on_verdict(verdict(MAIL_A, Health.HEALTHY))
    syncer.on_verdict(verdict(MAIL_B, Health.HEALTHY))
    await eventually(lambda: syncer.quorum[MAIL].live_weight == 2, "two back")
    assert len(changes) == 1
    syncer.on_verdict(verdict(MAIL_C, Health.HEALTHY))
    await eventually(lambda: len(changes) == 2, "quorum regained")
    assert said(changes)[1] == ("mail", True, 3, False)
    # Without a sorry server too: web's quorum is 1.
    for real_server in (WEB_A, WEB_B):
        syncer.on_verdict(verdict(real_server, Health.UNHEALTHY))
    await eventually(lambda: len(changes) == 3, "web lost quorum")
    assert said(changes)[2] == ("web", False, 0, False)


async def test_quorum_first_held_after_a_start_on_guesses_is_no_news(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    # Alpha checks: mail starts without quorum, on guesses; its real servers rise.
    syncer = await start(port, syncers, restart_verdicts())
    changes = heard(syncer)
    every: list[QuorumChange] = []
    syncer.subscribe_quorum(every.append, every_change=True)
    assert syncer.quorum[MAIL].up is False
    for real_server in (MAIL_A, MAIL_B, MAIL_C):
        syncer.on_verdict(verdict(real_server, Health.HEALTHY))
    # The listeners hear of a change in the pass that decides it, before `quorum` shows it.
    await eventually(lambda: syncer.quorum[MAIL].up, "quorum held")
    assert changes == []
    # ... except one that asks for every change (quorum hooks: keepalived's quorum_up runs)
    assert said(every) == [("mail", True, 3, False)]
    # From then on it is known: a loss and a regain are both news.
    for real_server in (MAIL_A, MAIL_B, MAIL_C):
        syncer.on_verdict(verdict(real_server, Health.UNHEALTHY))
    await eventually(lambda: len(changes) == 1, "quorum lost")
    for real_server in (MAIL_A, MAIL_B, MAIL_C):
        syncer.on_verdict(verdict(real_server, Health.HEALTHY))
    await eventually(lambda: len(changes) == 2, "quorum regained")
    assert [c.quorum.up for c in changes] == [False, True]
    assert [c.quorum.up for c in every] == [True, False, True]


async def test_quorum_lost_in_the_table_a_previous_checker_left_is_known(
    syncers: list[IpvsSyncer],
) -> None:
    # The sorry server serves alone: quorum was lost before this start.
    sorry_only = Service(MAIL, ServiceOptions("wlc"), (dest("10.0.9.9", 2525, 1, NAT),))
    port = RecordingPort({MAIL: sorry_only})
    syncer = await start(port, syncers, restart_verdicts())
    changes = heard(syncer)
    for real_server in (MAIL_A, MAIL_B, MAIL_C):
        syncer.on_verdict(verdict(real_server, Health.HEALTHY))
    await eventually(lambda: len(changes) == 1, "quorum regained")
    assert said(changes) == [("mail", True, 3, False)]


async def test_a_listener_that_raises_does_not_stop_the_syncer(
    port: RecordingPort, syncers: list[IpvsSyncer], caplog: pytest.LogCaptureFixture
) -> None:
    syncer = await start(port, syncers)

    def broken(change: QuorumChange) -> None:
        raise RuntimeError("listener bug")

    syncer.subscribe_quorum(broken)
    changes = heard(syncer)
    for real_server in (WEB_A, WEB_B):
        syncer.on_verdict(verdict(real_server, Health.UNHEALTHY))
    await eventually(lambda: len(changes) == 1, "the second listener heard it")
    await eventually(lambda: port.weights(WEB) == {}, "web emptied all the same")
    assert "quorum listener" in caplog.text


async def test_a_reread_keeps_the_connection_counters_without_a_dump_of_its_own(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    assert syncer.counters is not None  # the read at start counted them too
    started_at = syncer.counters_read_at
    assert started_at is not None
    destination = DestinationKey(dest("10.0.0.1", 80, 2).address, 80)
    port.by_hand().set_connections(WEB, destination, 12, 40)
    reads = port.reads
    syncer.request_resync()
    await eventually(lambda: syncer.counters_read_at != started_at, "the re-read")
    assert syncer.counters is not None
    assert syncer.counters[WEB][destination] == Connections(12, 40)
    assert port.reads == reads + 1  # one listing, counters and all


async def test_drift_repairs_count_the_corrections_the_kernel_acknowledged(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    hand = port.by_hand()
    await hand.delete_service(WEB)  # corrected by an add of the service and its 2 destinations
    await hand.add_destination(DNS, dest("10.0.0.99", 53, 4, NAT))  # a delete
    await hand.edit_destination(MAIL, dest("10.0.0.22", 25, 5, NAT))  # an edit
    syncer.request_resync()
    await eventually(lambda: port.snapshot() == HEALTHY_TABLE, "corrected")
    assert (syncer.drift, syncer.drift_repairs) == (3, 5)
    # A pass without drift repairs nothing.
    syncer.on_verdict(verdict(WEB_A, Health.UNHEALTHY))
    await eventually(lambda: "10.0.0.1" not in port.weights(WEB), "a verdict's operation")
    assert syncer.drift_repairs == 5


def test_only_operations_on_what_drifted_count_as_repairs() -> None:
    expected = dict(HEALTHY_TABLE)
    found = dict(HEALTHY_TABLE)
    del found[WEB]
    found[MAIL] = Service(
        MAIL, ServiceOptions("rr"), tuple(dest(f"10.0.0.2{n}", 25, 1, NAT) for n in (1, 2, 3))
    )
    repair = DriftRepair(find_drift(expected, found, {WEB, DNS, MAIL}))
    assert repair
    # The whole of web was missing: all its operations repair it.
    for operation in plan(expected, found, managed={WEB}):
        assert repair.corrects(*operation_target(operation))
    # mail's options drifted: the edit of the service repairs it; a destination's is something
    # else (a verdict's change in the same pass).
    assert repair.corrects(MAIL, None)
    some_destination: Destination = HEALTHY_TABLE[MAIL].destinations[0]
    assert not repair.corrects(MAIL, some_destination.key)
    assert not repair.corrects(DNS, None)
    assert not DriftRepair(find_drift(expected, expected, {WEB, DNS, MAIL}))
