"""The checker's side of issue 12: `SetOverrides` (drain, maint) reaches the pool and the IPVS
table before its answer, and a reload's new real servers follow the overrides; `StatusRequest`
gets every virtual server as lvsha/api/schemas/status.json says, answered even while a reload
runs, with one counter read shared by the requests that wait for it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from lvsha.checks.verdict import Health, RealServerId
from lvsha.config import load_text
from lvsha.daemon.checker_process import Checker, follow_parent
from lvsha.daemon.overrides import Mode, Override, Selector, encode
from lvsha.ipvs.model import (
    AddressKey,
    Connections,
    DestinationKey,
    Family,
    FwmarkKey,
    IpvsTable,
    TransportProtocol,
)
from lvsha.ipvs.plan import AddDestination, Operation
from lvsha.ipvs.port import IpvsError
from lvsha.ipvs.status import _reason as status_reason
from lvsha.ipvs.syncd import MemorySyncDaemons
from lvsha.messages import (
    ApplyConfig,
    CheckerStatus,
    ConfigApplied,
    Message,
    OverridesApplied,
    SetOverrides,
    StatusRequest,
)
from tests.tools import api_schema
from tests.unit.daemon.test_checker_reload import message
from tests.unit.ipvs.test_syncer import RecordingPort

WEB = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 80)
MARK = FwmarkKey(7, Family.INET)
WEB_ID = "192.0.2.10:80/tcp"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def config_text(port: int, extra: Sequence[str] = ()) -> str:
    check = (
        f"{{type: tcp, address: 127.0.0.1, port: {port}, interval: 0.05, warmup: 0, "
        "timeout: 1, retries: 0}"
    )
    servers = [
        f"{{address: 10.0.0.1, weight: 3, checks: [{check}]}}",
        "{address: 10.0.0.2, weight: 2}",
        "{address: 10.0.0.3, forwarding: DR}",
        *extra,
    ]
    return (
        "virtual_servers:\n"
        "  - {name: web, address: 192.0.2.10, port: 80, protocol: TCP, forwarding: NAT,\n"
        f"     scheduler: wrr, real_servers: [{', '.join(servers)}]}}\n"
        "  - {fwmark: 7, family: ipv4, real_servers: [\n"
        "      {address: 10.0.0.4, port: 80, forwarding: TUN}]}\n"
    )


class CountingPort(RecordingPort):
    """Counts counter reads; `gate`, when set, holds operations and counter reads until set."""

    def __init__(self, services: IpvsTable | None = None) -> None:
        super().__init__(services)
        self.counter_reads = 0
        self.operations_gate: asyncio.Event | None = None
        self.counters_gate: asyncio.Event | None = None

    async def destination_counters(self) -> dict[Any, dict[DestinationKey, Connections]]:
        self.counter_reads += 1
        if self.counters_gate is not None:
            await self.counters_gate.wait()
        return await super().destination_counters()

    async def apply_operations(self, operations: Sequence[Operation]) -> list[IpvsError | None]:
        if self.operations_gate is not None:
            await self.operations_gate.wait()
        return await super().apply_operations(operations)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.table = CountingPort()
        self.daemons = MemorySyncDaemons({"eth0": 1500, "lo": 65536})
        self.maintenance = tmp_path / "maintenance"
        self.maintenance.mkdir()
        self.port = closed_port()
        self.text = config_text(self.port)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
async def checker(setup: Setup) -> AsyncIterator[Checker]:
    checker = Checker(load_text(setup.text), setup.table, setup.daemons, setup.maintenance)
    await checker.start()
    # 10.0.0.1's check fails (a closed port): let it, so no test races with it.
    failed = rs("10.0.0.1")
    await wait_for(lambda: checker.pool.verdicts()[failed].health is Health.UNHEALTHY, "its fall")
    await checker.syncer.sync_now()
    yield checker
    await checker.stop()


def rs(address: str, port: int = 80, service: str = WEB_ID) -> RealServerId:
    return RealServerId(service, address, port)


def override(mode: Mode, address: str, reason: str = "", **selector: Any) -> Override:
    return Override(mode, Selector(address, **selector), reason, "alice (uid 1000)", 1.0e9)


def weights(table: RecordingPort, key: AddressKey | FwmarkKey = WEB) -> dict[str, int]:
    service = table.snapshot().get(key)
    if service is None:
        return {}
    return {str(d.address): d.weight for d in service.destinations}


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


async def status_of(checker: Checker, serial: int = 1) -> list[dict[str, Any]]:
    answer = await checker.on_message(StatusRequest(serial))
    assert answer.serial == serial
    body = json.loads(answer.body)
    assert list(body) == ["virtual_servers"]
    items: list[dict[str, Any]] = body["virtual_servers"]
    for item in items:
        api_schema.check_def("status", "virtual_server", item)
    return items


async def test_set_overrides_reach_the_table_before_the_answer(
    setup: Setup, checker: Checker
) -> None:
    assert weights(setup.table) == {"10.0.0.2": 2, "10.0.0.3": 1}
    body = encode([override(Mode.DRAIN, "10.0.0.2", "slow disk"), override(Mode.MAINT, "10.0.0.3")])
    assert await checker.on_message(SetOverrides(4, body)) == OverridesApplied(4, ())
    assert weights(setup.table) == {"10.0.0.2": 0}
    pool = checker.pool
    assert pool.verdicts()[rs("10.0.0.3")].health is Health.MAINTENANCE
    assert pool.verdicts()[rs("10.0.0.2")].health is Health.DISABLED
    # Maint wins over drain; ready (no override) puts them back at their weights.
    body = encode([override(Mode.DRAIN, "10.0.0.3"), override(Mode.MAINT, "10.0.0.3", port=80)])
    assert await checker.on_message(SetOverrides(5, body)) == OverridesApplied(5, ())
    assert weights(setup.table) == {"10.0.0.2": 2}
    assert await checker.on_message(SetOverrides(6, "[]")) == OverridesApplied(6, ())
    assert weights(setup.table) == {"10.0.0.2": 2, "10.0.0.3": 1}


async def test_overrides_given_at_start_hold_from_the_first_pass(setup: Setup) -> None:
    checker = Checker(load_text(setup.text), setup.table, setup.daemons, setup.maintenance)
    await checker.start([override(Mode.MAINT, "10.0.0.3"), override(Mode.DRAIN, "10.0.0.2")])
    try:
        added = {
            (str(op.destination.address), op.destination.weight)
            for op in setup.table.log
            if isinstance(op, AddDestination)
        }
        assert ("10.0.0.2", 0) in added
        assert not any(address == "10.0.0.3" for address, _ in added)
        assert checker.pool.verdicts()[rs("10.0.0.3")].health is Health.MAINTENANCE
        # A parent whose first message is SetOverrides gets its answer.
        answer = await checker.start_sync_daemon(SetOverrides(9, "[]"))
        assert answer == OverridesApplied(9, ())
        assert weights(setup.table)["10.0.0.3"] == 1
    finally:
        await checker.stop()


async def test_a_malformed_set_of_overrides_is_answered_with_errors_and_changes_nothing(
    setup: Setup, checker: Checker
) -> None:
    await checker.on_message(SetOverrides(1, encode([override(Mode.DRAIN, "10.0.0.2")])))
    for serial, body in enumerate(["{", '{"mode": "drain"}', '[{"mode": "off"}]', "[" * 5000]):
        answer = await checker.on_message(SetOverrides(serial + 10, body))
        assert answer.serial == serial + 10
        assert len(answer.errors) == 1 and answer.errors[0].startswith("overrides refused: ")
    assert weights(setup.table)["10.0.0.2"] == 0


async def test_a_kernel_refusal_of_an_override_is_in_the_answer(
    setup: Setup, checker: Checker
) -> None:
    def refuse(operation: Operation) -> IpvsError | None:
        return IpvsError("refused for the test") if operation else None

    setup.table.refuse = refuse
    answer = await checker.on_message(SetOverrides(3, encode([override(Mode.MAINT, "10.0.0.2")])))
    assert answer.serial == 3
    assert answer.errors == (
        "IPVS: delete destination 10.0.0.2:80 of service TCP 192.0.2.10:80: refused for the test",
    )


async def test_a_reload_adds_a_real_server_an_override_selects_as_it_says(
    setup: Setup, checker: Checker
) -> None:
    overrides = encode([override(Mode.MAINT, "10.0.0.9"), override(Mode.DRAIN, "10.0.0.8")])
    assert await checker.on_message(SetOverrides(1, overrides)) == OverridesApplied(1, ())
    setup.table.log.clear()
    extra = ["{address: 10.0.0.9, weight: 5}", "{address: 10.0.0.8, weight: 5}"]
    answer = await checker.on_message(message(2, config_text(setup.port, extra)))
    assert answer == ConfigApplied(2, True)
    added = [op for op in setup.table.log if isinstance(op, AddDestination)]
    # The maintained one never reaches the table; the drained one enters at weight 0.
    assert [(str(op.destination.address), op.destination.weight) for op in added] == [
        ("10.0.0.8", 0)
    ]
    assert checker.pool.verdicts()[rs("10.0.0.9")].health is Health.MAINTENANCE


async def test_the_status_says_what_the_checker_holds(setup: Setup, checker: Checker) -> None:
    (setup.maintenance / "10.0.0.2").write_text("new disk\n")
    await checker.watcher.refresh()
    body = encode([override(Mode.MAINT, "10.0.0.3", "rack move")])
    await checker.on_message(SetOverrides(1, body))
    await checker.syncer.sync_now()
    setup.table.set_connections(WEB, DestinationKey(ip_address("10.0.0.2"), 80), 5, 9)
    web, mark = await status_of(checker, serial=8)
    assert {k: v for k, v in web.items() if k != "real_servers"} == {
        "name": "web",
        "service": WEB_ID,
        "scheduler": "wrr",
        "quorum_up": False,  # only 10.0.0.2 is up, drained: no healthy weight
        "sorry_server_active": False,
        "in_kernel": True,
        "group": None,
    }
    first, second, third = web["real_servers"]
    assert (first["address"], first["port"], first["forwarding"]) == ("10.0.0.1", 80, "nat")
    assert (first["health"], first["admin"], first["admin_source"]) == ("unhealthy", "ready", None)
    assert first["reason"].startswith("tcp") and isinstance(first["since"], float)
    (check,) = first["checks"]
    assert check["check"] == f"tcp 127.0.0.1:{setup.port}"
    assert (check["status"], check["ok"]) == ("down", False)
    assert check["latency"] >= 0 and abs(check["at"] - first["since"]) < 60
    assert (first["configured_weight"], first["kernel_weight"]) == (3, None)
    assert (first["active_connections"], first["inactive_connections"]) == (None, None)
    assert (second["health"], second["admin"], second["admin_source"]) == (
        "disabled",
        "drain",
        "file",
    )
    assert second["admin_reason"].endswith(": new disk")
    assert (second["configured_weight"], second["kernel_weight"]) == (2, 0)
    assert (second["active_connections"], second["inactive_connections"]) == (5, 9)
    assert second["checks"] == []
    assert (third["health"], third["admin"], third["admin_source"]) == (
        "maintenance",
        "maint",
        "api",
    )
    assert third["admin_reason"] == "rack move (by alice (uid 1000))"
    assert (third["forwarding"], third["kernel_weight"], third["active_connections"]) == (
        "dr",
        None,
        None,
    )
    assert mark["service"] == "fwmark 7/ipv4" and mark["name"] is None
    (tunnelled,) = mark["real_servers"]
    assert (tunnelled["forwarding"], tunnelled["kernel_weight"]) == ("tun", 1)
    assert (tunnelled["active_connections"], tunnelled["inactive_connections"]) == (0, 0)
    assert mark["quorum_up"] is True and mark["in_kernel"] is True
    # The paused check of a maintained real server says so.
    await checker.on_message(SetOverrides(2, encode([override(Mode.MAINT, "10.0.0.1")])))
    web, _ = await status_of(checker)
    assert web["real_servers"][0]["checks"][0]["status"] == "paused"
    assert web["real_servers"][0]["checks"][0]["ok"] is False  # its last probe, kept


async def test_a_failed_counter_read_leaves_the_counts_null(setup: Setup, checker: Checker) -> None:
    async def broken() -> dict[Any, Any]:
        raise IpvsError("no counters for the test")

    setup.table.destination_counters = broken  # type: ignore[method-assign]
    web, _ = await status_of(checker)
    assert {r["active_connections"] for r in web["real_servers"]} == {None}
    assert [r["kernel_weight"] for r in web["real_servers"]] == [None, 2, 1]


async def test_status_requests_waiting_for_a_counter_read_share_it(
    setup: Setup, checker: Checker
) -> None:
    setup.table.counters_gate = asyncio.Event()
    waiting = [asyncio.create_task(status_of(checker, serial)) for serial in (1, 2, 3)]
    await wait_for(lambda: setup.table.counter_reads == 1, "the first read")
    await asyncio.sleep(0.01)
    setup.table.counters_gate.set()
    answers = await asyncio.gather(*waiting)
    assert setup.table.counter_reads == 1
    for web, _ in answers:
        assert [r["inactive_connections"] for r in web["real_servers"]] == [None, 0, 0]
    await status_of(checker, 4)
    assert setup.table.counter_reads == 2  # a later request reads afresh


async def test_a_status_request_is_answered_while_a_reload_waits_on_the_kernel(
    setup: Setup, checker: Checker
) -> None:
    inbox: asyncio.Queue[Message | None] = asyncio.Queue()
    sent: list[Message] = []
    following = asyncio.create_task(follow_parent(checker, inbox, sent.append))
    gate = setup.table.operations_gate = asyncio.Event()
    reload: ApplyConfig = message(2, config_text(setup.port, ["{address: 10.0.0.7}"]))
    for queued in (
        reload,
        SetOverrides(3, encode([override(Mode.DRAIN, "10.0.0.7")])),
        StatusRequest(4),
    ):
        inbox.put_nowait(queued)
    await wait_for(lambda: len(sent) == 1, "the status answer")
    (status,) = sent
    assert isinstance(status, CheckerStatus) and status.serial == 4
    gate.set()
    await wait_for(lambda: len(sent) == 3, "the reload's and the overrides' answers")
    assert sent[1:] == [ConfigApplied(2, True), OverridesApplied(3, ())]
    assert weights(setup.table)["10.0.0.7"] == 0
    inbox.put_nowait(None)
    await asyncio.wait_for(following, 5.0)


def test_the_reason_is_the_checks_once_they_have_spoken() -> None:
    def check(name: str, status: str, ok: bool | None, reason: str, at: float | None) -> Any:
        return {"check": name, "status": status, "ok": ok, "reason": reason, "at": at}

    up = check("tcp 10.0.0.1:80", "up", True, "tcp connect ok", 2.0)
    down = check("http 10.0.0.1:80", "down", False, "http status 503", 1.0)
    silent = check("tcp 10.0.0.1:81", "unknown", None, "no probe yet", None)
    healthy = {"health": "healthy", "reason": "no probe yet", "checks": [up, silent]}
    assert status_reason(healthy) == "tcp 10.0.0.1:80: tcp connect ok"
    unhealthy = {"health": "unhealthy", "reason": "no probe yet", "checks": [up, down]}
    assert status_reason(unhealthy) == "http 10.0.0.1:80: http status 503"
    drained = {"health": "disabled", "reason": "lvsha drain (by root)", "checks": [up]}
    assert status_reason(drained) == "lvsha drain (by root)"
    quiet = {"health": "healthy", "reason": "no probe yet", "checks": [silent]}
    assert status_reason(quiet) == "no probe yet"
