"""The kernel's destination order, which mh hashes by, restored by the syncer on real IPVS.

Read back independently with ``ipvsadm -Ln --nosort`` (plain ``-Ln`` sorts by address). Two
services with the same real servers stand for two directors: "web" is adopted from a table
written in another order, "twin" is built from scratch; both must list the real servers alike,
in the configured order (added first to last, so listed last first), at adoption, after a
destination deleted and added again by hand, and after a real server failed and came back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import lvsha
from lvsha.checks.verdict import Health, RealServerVerdict
from lvsha.config import load_text
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.specs import configured_services
from lvsha.ipvs.syncer import IpvsSyncer
from tests.kernel.ipvsadm import ipvsadm, ipvsadm_order

pytestmark = pytest.mark.kernel

CONFIG = """
virtual_servers:
{services}
"""
SERVICE = """
  - name: {name}
    address: {address}
    port: 80
    protocol: TCP
    scheduler: mh
    scheduler_flags: [mh-port]
    forwarding: DR
    real_servers:
      - {{address: 10.0.0.1}}
      - {{address: 10.0.0.2}}
      - {{address: 10.0.0.3}}
      - {{address: 10.0.0.4}}
"""
SERVICES = configured_services(
    load_text(
        CONFIG.format(
            services=SERVICE.format(name="web", address="192.0.2.10")
            + SERVICE.format(name="twin", address="192.0.2.11")
        )
    )
)
WEB, TWIN = ("-t", "192.0.2.10:80"), ("-t", "192.0.2.11:80")
CANONICAL = ["10.0.0.4:80", "10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"]
SECOND = next(
    rs.id for rs in SERVICES[0].real_servers if str(rs.destination.address).endswith(".2")
)


def verdicts(health: Health = Health.HEALTHY) -> list[RealServerVerdict]:
    return [
        RealServerVerdict(rs.id, health, None, "test", "tcp", 0.0)
        for service in SERVICES
        for rs in service.real_servers
    ]


def verdict(health: Health) -> RealServerVerdict:
    return RealServerVerdict(SECOND, health, None, "test", "tcp", 0.0)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def syncer() -> AsyncIterator[IpvsSyncer]:
    async with NetlinkIpvsTable() as port:
        syncer = IpvsSyncer(port, SERVICES, resync_interval=3600)
        try:
            yield syncer
        finally:
            await syncer.stop()


async def test_the_syncer_keeps_the_configured_order(syncer: IpvsSyncer) -> None:
    print(f"lvsha from {lvsha.__file__}")
    # A table restored from an ipvsadm -S dump, which lists destinations sorted by address:
    # added 1, 2, 3, 4 it would be in order, so here in the other.
    ipvsadm("-A", *WEB, "-s", "mh", "-b", "mh-port")
    for n in (4, 3, 2, 1):
        ipvsadm("-a", *WEB, "-r", f"10.0.0.{n}:80", "-g", "-w", "1")
    assert ipvsadm_order(*WEB) == CANONICAL[::-1]

    started = time.monotonic()
    await syncer.start(verdicts())
    print(f"adopted in {time.monotonic() - started:.3f} s: {ipvsadm_order(*WEB)}")
    assert ipvsadm_order(*WEB) == ipvsadm_order(*TWIN) == CANONICAL
    assert syncer.order_repairs == 3  # 10.0.0.1 stayed at the tail

    # Drift: 10.0.0.2 deleted and added again by hand lands at the head.
    ipvsadm("-d", *WEB, "-r", "10.0.0.2:80")
    ipvsadm("-a", *WEB, "-r", "10.0.0.2:80", "-g", "-w", "1")
    assert ipvsadm_order(*WEB)[0] == "10.0.0.2:80"
    syncer.request_resync()
    await eventually(lambda: syncer.order_repairs == 5, "10.0.0.3 and .4 moved again")
    assert ipvsadm_order(*WEB) == CANONICAL
    assert syncer.drift == 1

    # A real server fails (removed from web only) and comes back.
    syncer.on_verdict(verdict(Health.UNHEALTHY))
    await eventually(lambda: "10.0.0.2:80" not in ipvsadm_order(*WEB), "10.0.0.2 removed")
    syncer.on_verdict(verdict(Health.HEALTHY))
    await eventually(lambda: syncer.order_repairs == 7, "10.0.0.2 back, .3 and .4 moved")
    assert ipvsadm_order(*WEB) == ipvsadm_order(*TWIN) == CANONICAL
    print(ipvsadm("-L", "-n", "--nosort"))
