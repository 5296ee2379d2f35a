"""The checker applies `ApplyConfig` live (issue 10): the same `Checker` the daemon runs, on the
in-memory IPVS table and sync daemons.

Checks: only changed IPVS entries get operations; the answer and the log line; a kernel refusal
halfway puts everything back (or `left` says what could not be); the sync daemon follows a
changed setting and a renamed instance; a bad snapshot changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsha.checks.verdict import Health
from lvsha.config import LvshaConfig, load_text
from lvsha.daemon.checker_process import Checker, VrrpRoleBook
from lvsha.ipvs.plan import AddDestination, AddService, DeleteDestination, EditDestination
from lvsha.ipvs.port import InvalidRequestError, IpvsError
from lvsha.ipvs.syncd import MemorySyncDaemons, SyncState
from lvsha.messages import (
    ApplyConfig,
    ChildReady,
    ConfigApplied,
    VrrpRoles,
    VrrpStateChanged,
    decode,
    encode,
)
from lvsha.vrrp.events import VrrpState
from tests.unit.daemon.checker_child import start_checker
from tests.unit.ipvs.test_syncer import RecordingPort

INSTANCE = """
vrrp_instances:
  {name}:
    interface: eth0
    virtual_router_id: 51
    priority: 150
    virtual_ipaddresses: [192.0.2.10/24]
"""


def service(port: int, *real_servers: str) -> str:
    lines = [
        f"  - {{name: vs{port}, address: 192.0.2.10, port: {port}, protocol: TCP,",
        "     forwarding: DR, real_servers: [",
        *(f"       {rs}," for rs in real_servers),
        "     ]}",
    ]
    return "\n".join(lines) + "\n"


def config_text(
    services: list[str], *, instance: str = "VI_1", sync_id: int | None = None, drain: str = "0s"
) -> str:
    sync = "" if sync_id is None else f", sync_id: {sync_id}"
    return (
        "global:\n"
        f"  lvs_sync_daemon: {{interface: eth0, vrrp_instance: {instance}{sync}}}\n"
        f"  ipvs: {{drain_removed: {drain}}}\n"
        + INSTANCE.format(name=instance)
        + "virtual_servers:\n"
        + "".join(services)
    )


def servers(count: int, first: int = 1, weight: int = 1) -> list[str]:
    return [f"{{address: 10.0.0.{n}, weight: {weight}}}" for n in range(first, first + count)]


SERVICES = [service(port, *servers(3)) for port in (80, 81, 82)]
BEFORE = config_text(SERVICES)


def message(generation: int, text: str) -> ApplyConfig:
    return ApplyConfig.of(generation, hashlib.sha256(text.encode()).hexdigest(), load_text(text))


class Parts:
    def __init__(self, tmp_path: Path) -> None:
        self.table = RecordingPort()
        self.daemons = MemorySyncDaemons({"eth0": 1500, "lo": 65536})
        self.maintenance = tmp_path / "maintenance"
        self.maintenance.mkdir()

    def checker(self, config: LvshaConfig) -> Checker:
        return Checker(config, self.table, self.daemons, self.maintenance)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    yield Parts(tmp_path)


@pytest.fixture
async def checker(parts: Parts) -> AsyncIterator[Checker]:
    checker = parts.checker(load_text(BEFORE))
    await checker.start()
    await checker.start_sync_daemon(VrrpRoles((("VI_1", "MASTER"),)))
    parts.table.log.clear()
    yield checker
    await checker.stop()


async def test_an_applied_configuration_changes_only_its_changed_entries(
    parts: Parts, checker: Checker, caplog: pytest.LogCaptureFixture
) -> None:
    before = parts.table.snapshot()
    # vs80: one weight changed; vs81: one server removed, one added; vs82 unchanged; and a
    # new virtual server inserted first (every index shifts).
    changed = [
        service(79, *servers(1, 50)),
        service(80, "{address: 10.0.0.1, weight: 7}", *servers(2, 2)),
        service(81, *servers(2), "{address: 10.0.0.9, weight: 1}"),
        SERVICES[2],
    ]
    text = config_text(changed)
    with caplog.at_level(logging.INFO, logger="lvsha.checker"):
        answer = await checker.on_message(message(2, text))
    assert answer == ConfigApplied(2, True)
    kinds = sorted(type(op).__name__ for op in parts.table.log)
    assert kinds == [
        "AddDestination",
        "AddDestination",
        "AddService",
        "DeleteDestination",
        "EditDestination",
    ]
    touched = {str(getattr(op, "service", getattr(op, "key", ""))) for op in parts.table.log}
    assert "TCP 192.0.2.10:82" not in touched
    after = parts.table.snapshot()
    assert [k for k in before if before[k] == after[k]] == [k for k in before if "82" in str(k)]
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    [line] = [r.getMessage() for r in caplog.records if "applied" in r.getMessage()]
    assert line.startswith(f"configuration generation 2 (sha256 {digest}) applied: checks:")
    assert "IPVS operations: 2 AddDestination, 1 AddService, 1 DeleteDestination" in line
    assert checker.generation == 2
    assert all(v.health is Health.HEALTHY for v in checker.pool.verdicts().values())


async def test_a_kernel_refusal_halfway_puts_everything_back(
    parts: Parts, checker: Checker
) -> None:
    before = parts.table.snapshot()
    plan = checker.pool.plan

    def refuse(operation: object) -> IpvsError | None:
        if isinstance(operation, AddDestination) and str(operation.destination.address).endswith(
            ".9"
        ):
            return InvalidRequestError("refused for the test")
        return None

    parts.table.refuse = refuse
    changed = [
        service(80, "{address: 10.0.0.1, weight: 7}", *servers(2, 2)),
        service(81, *servers(2), "{address: 10.0.0.9, weight: 1}"),
        SERVICES[2],
    ]
    answer = await checker.on_message(message(2, config_text(changed)))
    assert answer is not None and not answer.ok and answer.left == ""
    assert answer.errors == (
        "IPVS: add destination 10.0.0.9:81 to service TCP 192.0.2.10:81 (weight 1, "
        "direct_route): refused for the test",
    )
    # The edit of vs80 and the removal from vs81 went through first, and were put back.
    assert any(isinstance(op, EditDestination) for op in parts.table.log)
    assert any(isinstance(op, DeleteDestination) for op in parts.table.log)
    assert parts.table.snapshot() == before
    assert checker.pool.plan == plan
    assert checker.generation is None
    assert all(v.health is Health.HEALTHY for v in checker.pool.verdicts().values())


async def test_a_refused_rollback_says_what_it_left(parts: Parts, checker: Checker) -> None:
    def refuse(operation: object) -> IpvsError | None:
        if isinstance(operation, AddService | AddDestination):
            return InvalidRequestError("refused for the test")
        return None

    parts.table.refuse = refuse
    # vs82 removed (allowed), a server added to vs80 (refused): going back must add vs82 again.
    changed = [service(80, *servers(4)), SERVICES[1]]
    answer = await checker.on_message(message(2, config_text(changed)))
    assert answer is not None and not answer.ok
    assert answer.errors[0].startswith("IPVS: add destination 10.0.0.4:80")
    assert answer.left.startswith("IPVS: add service TCP 192.0.2.10:82")


async def test_the_sync_daemon_follows_a_changed_setting_and_a_renamed_instance(
    parts: Parts, checker: Checker
) -> None:
    [daemon] = await parts.daemons.list_daemons()
    assert (daemon.state, daemon.sync_id) == (SyncState.MASTER, 51)
    # Renamed (same interface, VRID, family): still the master it follows, nothing restarted.
    renamed = config_text(SERVICES, instance="VI_WEB")
    assert await checker.on_message(message(2, renamed)) == ConfigApplied(2, True)
    assert await parts.daemons.list_daemons() == [daemon]
    # The VRRP child reports under the new name, or still under the old one: both count.
    await checker.on_message(VrrpStateChanged("VI_WEB", "MASTER", "BACKUP", "test", 100))
    assert [d.state for d in await parts.daemons.list_daemons()] == [SyncState.BACKUP]
    await checker.on_message(VrrpStateChanged("VI_1", "BACKUP", "MASTER", "test", 100))
    assert [d.state for d in await parts.daemons.list_daemons()] == [SyncState.MASTER]
    # A changed sync id restarts the daemon with it, in the same role.
    other_id = config_text(SERVICES, instance="VI_WEB", sync_id=7)
    assert await checker.on_message(message(3, other_id)) == ConfigApplied(3, True)
    [daemon] = await parts.daemons.list_daemons()
    assert (daemon.state, daemon.sync_id) == (SyncState.MASTER, 7)
    assert parts.table.log == []  # none of this touched IPVS


async def test_a_snapshot_that_is_no_configuration_changes_nothing(
    parts: Parts, checker: Checker
) -> None:
    before = parts.table.snapshot()
    answer = await checker.on_message(ApplyConfig(2, "0" * 64, "bm90IGEgcGlja2xl"))
    assert answer is not None and not answer.ok and "unpickle" in answer.errors[0]
    assert parts.table.snapshot() == before and parts.table.log == []


async def test_the_role_book_keys_roles_by_identity_and_ignores_unknown_states(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = VrrpRoleBook(load_text(BEFORE))
    with caplog.at_level(logging.ERROR, logger="lvsha.checker"):
        assert book.take(VrrpStateChanged("VI_1", "BACKUP", "PRIMARY", "test", 100)) == []
    assert [r.getMessage() for r in caplog.records] == [
        "VI_1: ignoring unknown VRRP state 'PRIMARY' from the parent"
    ]
    assert book.take(VrrpRoles((("VI_9", "MASTER"), ("VI_1", "MASTER")))) == [("eth0", 51, "ipv4")]
    book.reconfigure(load_text(config_text(SERVICES, instance="VI_WEB")))
    assert book.role_of("VI_WEB") is book.role_of("VI_1") is VrrpState.MASTER


def test_the_checker_process_answers_apply_config_on_its_channel(tmp_path: Path) -> None:
    """The wiring around `Checker.apply`: `python -m lvsha.daemon.checker_process` (dry run)
    takes ApplyConfig from its parent channel in order and answers each with ConfigApplied."""
    config = tmp_path / "lvsha.yaml"
    text = "virtual_servers:\n" + "".join(SERVICES)
    config.write_text(text)
    child = start_checker(config, tmp_path)
    parent_end, lines = child.channel, child.lines
    try:
        assert decode(lines.readline()) == ChildReady()
        changed = "virtual_servers:\n" + service(80, *servers(4)) + SERVICES[2]
        parent_end.sendall(
            encode(message(2, changed)) + encode(ApplyConfig(3, "0" * 64, "bm90IGEgcGlja2xl"))
        )
        assert decode(lines.readline()) == ConfigApplied(2, True)
        refused = decode(lines.readline())
        assert isinstance(refused, ConfigApplied) and (refused.generation, refused.ok) == (3, False)
    finally:
        child.stop()
    log = child.log
    assert "configuration generation 2 (sha256 " in log and ") applied: checks: 0 kept" in log
    assert child.process.returncode == 0, log
