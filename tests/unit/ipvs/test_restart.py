"""A restarted checker starts each real server as the IPVS table shows it (issue 9, 10b).

The check pool and the syncer on the in-memory table, started in the order the checker
process uses: read the table, presume, start the pool, start the syncer. No probe completes
within a test (the warm-up is long and drawn at its end), so what reaches the table is the
presumption alone.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from ipaddress import ip_address
from typing import Protocol

import pytest

from lvsha.checks.pool import CheckPool
from lvsha.checks.state import PRESUMED_DOWN_REASON
from lvsha.checks.targets import check_plan
from lvsha.checks.verdict import Health
from lvsha.config import load_text
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.model import AddressKey, Destination, Forwarding, Service, ServiceOptions
from lvsha.ipvs.model import TransportProtocol as Proto
from lvsha.ipvs.specs import configured_services
from lvsha.ipvs.syncer import IpvsSyncer, presumptions

CONFIG = """
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: TCP
    scheduler: wrr
    forwarding: DR
    {inhibit}
    real_servers:
      - {{address: 10.0.0.1, weight: 2, checks: [{{type: tcp, {alpha}warmup: 60s}}]}}
      - {{address: 10.0.0.2, weight: 1, checks: [{{type: tcp, {alpha}warmup: 60s}}]}}
      - {{address: 10.0.0.3, weight: 3, checks: [{{type: tcp, {alpha}warmup: 60s}}]}}
"""
WEB = AddressKey(Proto.TCP, ip_address("192.0.2.10"), 80)
DR = Forwarding.DIRECT_ROUTE


class LateWarmup(random.Random):
    """Every first probe at the very end of its warm-up: none runs during a test."""

    def uniform(self, a: float, b: float) -> float:
        return b


def table(*weights: tuple[str, int]) -> Service:
    destinations = tuple(
        Destination(ip_address(address), 80, weight=weight, forwarding=DR)
        for address, weight in weights
    )
    return Service(WEB, ServiceOptions("wrr"), destinations)


Started = tuple[MemoryIpvsTable, CheckPool]


class Restart(Protocol):
    async def __call__(
        self, found: Sequence[Service], *, alpha: bool = False, inhibit: bool = False
    ) -> Started: ...


@pytest.fixture
async def restart() -> AsyncIterator[Restart]:
    running: list[tuple[CheckPool, IpvsSyncer]] = []

    async def start(
        found: Sequence[Service], *, alpha: bool = False, inhibit: bool = False
    ) -> Started:
        config = load_text(
            CONFIG.format(
                alpha="alpha: true, " if alpha else "",
                inhibit="inhibit_on_failure: true" if inhibit else "",
            )
        )
        port = MemoryIpvsTable(found)
        pool = CheckPool(check_plan(config), rng=LateWarmup())
        syncer = IpvsSyncer(port, configured_services(config))
        running.append((pool, syncer))
        observed = await syncer.read_table()
        pool.subscribe(syncer.on_verdict)
        pool.start(presumptions(syncer.services, observed))
        await syncer.start(pool.verdicts().values(), observed)
        return port, pool

    yield start
    for pool, syncer in running:
        await syncer.stop()
        await pool.close()


def weights(port: MemoryIpvsTable) -> dict[str, int]:
    return {str(d.address): d.weight for d in port.snapshot()[WEB].destinations}


async def test_a_real_server_that_was_out_stays_out_until_its_checks_speak(
    restart: Restart,
) -> None:
    # 10.0.0.2 had failed (absent); without alpha it used to come back at its weight.
    port, pool = await restart([table(("10.0.0.1", 2), ("10.0.0.3", 3))])
    assert weights(port) == {"10.0.0.1": 2, "10.0.0.3": 3}
    out = [v for v in pool.verdicts().values() if v.health is Health.UNHEALTHY]
    assert [(v.real_server.address, v.reason) for v in out] == [("10.0.0.2", PRESUMED_DOWN_REASON)]


async def test_inhibited_failures_stay_at_weight_zero_and_dynamic_weights_stay(
    restart: Restart,
) -> None:
    found = table(("10.0.0.1", 5), ("10.0.0.2", 0), ("10.0.0.3", 3))
    port, _ = await restart([found], inhibit=True)
    assert weights(port) == {"10.0.0.1": 5, "10.0.0.2": 0, "10.0.0.3": 3}


async def test_alpha_servers_that_were_serving_stay_in(restart: Restart) -> None:
    port, pool = await restart([table(("10.0.0.1", 2), ("10.0.0.3", 3))], alpha=True)
    assert weights(port) == {"10.0.0.1": 2, "10.0.0.3": 3}
    healthy = {
        v.real_server.address for v in pool.verdicts().values() if v.health is Health.HEALTHY
    }
    assert healthy == {"10.0.0.1", "10.0.0.3"}


@pytest.mark.parametrize(
    ("alpha", "expected"), [(False, {"10.0.0.1": 2, "10.0.0.2": 1, "10.0.0.3": 3}), (True, {})]
)
async def test_a_first_start_on_an_empty_table_keeps_the_alpha_semantics(
    restart: Restart, alpha: bool, expected: dict[str, int]
) -> None:
    port, _ = await restart([], alpha=alpha)
    assert weights(port) == expected
