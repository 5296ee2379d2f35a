"""The IPVS syncer on the real kernel table (netlink port), read back independently with ipvsadm.

Drift made with ipvsadm is corrected; after a syncer process is killed with SIGKILL, a new one
started on the same table adopts it without deleting or re-adding anything; quorum swaps the
sorry server in and out. Detection-to-kernel latency figures are printed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_address
from pathlib import Path

import pytest

from lvsha.checks.verdict import Health, RealServerVerdict
from lvsha.config import load_text
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Forwarding,
    Service,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
)
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.specs import configured_services
from lvsha.ipvs.syncer import IpvsSyncer
from tests.kernel.ipvsadm import as_ipvsadm_shows, ipvsadm, ipvsadm_rules, ipvsadm_table

pytestmark = pytest.mark.kernel

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: TCP
    scheduler: wrr
    forwarding: DR
    real_servers:
      - address: 10.0.0.1
        weight: 2
        checks: [{type: tcp, alpha: true, rise: 2, interval: 5s}]
      - address: 10.0.0.2
        weight: 1
        checks: [{type: tcp, alpha: true, rise: 2, interval: 5s}]
  - name: dns
    address: 192.0.2.10
    port: 53
    protocol: UDP
    scheduler: rr
    inhibit_on_failure: true
    real_servers:
      - {address: 10.0.0.11, weight: 3, checks: [{type: udp, alpha: true}]}
      - {address: 10.0.0.12, weight: 3, checks: [{type: udp, alpha: true}]}
  - name: mail
    address: 192.0.2.10
    port: 25
    protocol: TCP
    quorum: 2
    sorry_server: {address: 10.0.9.9, port: 2525}
    real_servers:
      - {address: 10.0.0.21, weight: 1, checks: [{type: tcp, alpha: true}]}
      - {address: 10.0.0.22, weight: 1, checks: [{type: tcp, alpha: true}]}
"""

SERVICES = configured_services(load_text(CONFIG))
IDS = {str(rs.id).split(" ", 1)[1]: rs.id for s in SERVICES for rs in s.real_servers}
VIP = ip_address("192.0.2.10")
WEB = AddressKey(TransportProtocol.TCP, VIP, 80)
DNS = AddressKey(TransportProtocol.UDP, VIP, 53)
MAIL = AddressKey(TransportProtocol.TCP, VIP, 25)
DR, NAT = Forwarding.DIRECT_ROUTE, Forwarding.MASQUERADE


def dest(address: str, port: int, weight: int, forwarding: Forwarding = NAT) -> Destination:
    return Destination(ip_address(address), port, weight=weight, forwarding=forwarding)


HEALTHY: dict[ServiceKey, Service] = {
    WEB: Service(
        WEB, ServiceOptions("wrr"), (dest("10.0.0.1", 80, 2, DR), dest("10.0.0.2", 80, 1, DR))
    ),
    DNS: Service(DNS, ServiceOptions("rr"), (dest("10.0.0.11", 53, 3), dest("10.0.0.12", 53, 3))),
    MAIL: Service(
        MAIL, ServiceOptions("wlc"), (dest("10.0.0.21", 25, 1), dest("10.0.0.22", 25, 1))
    ),
}


def verdict(name: str, health: Health, *, probed: bool = True) -> RealServerVerdict:
    return RealServerVerdict(IDS[name], health, None, "test", "tcp" if probed else None, 0.0)


def healthy_verdicts() -> list[RealServerVerdict]:
    return [verdict(name, Health.HEALTHY) for name in IDS]


def kernel_table() -> dict[ServiceKey, Service]:
    return ipvsadm_table()


def shows(table: dict[ServiceKey, Service]) -> dict[ServiceKey, Service]:
    return as_ipvsadm_shows(table)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}")
        await asyncio.sleep(0.02)


class CountingPort(NetlinkIpvsTable):
    """The netlink port, counting the changes made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def add_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        self.calls["add_service"] += 1
        await super().add_service(key, options)

    async def edit_service(self, key: ServiceKey, options: ServiceOptions) -> None:
        self.calls["edit_service"] += 1
        await super().edit_service(key, options)

    async def delete_service(self, key: ServiceKey) -> None:
        self.calls["delete_service"] += 1
        await super().delete_service(key)

    async def add_destination(self, service: ServiceKey, destination: Destination) -> None:
        self.calls["add_destination"] += 1
        await super().add_destination(service, destination)

    async def edit_destination(self, service: ServiceKey, destination: Destination) -> None:
        self.calls["edit_destination"] += 1
        await super().edit_destination(service, destination)

    async def delete_destination(self, service: ServiceKey, destination: DestinationKey) -> None:
        self.calls["delete_destination"] += 1
        await super().delete_destination(service, destination)


@pytest.fixture
async def port() -> AsyncIterator[CountingPort]:
    table = CountingPort()
    async with table:
        yield table


@pytest.fixture
async def syncers() -> AsyncIterator[list[IpvsSyncer]]:
    started: list[IpvsSyncer] = []
    yield started
    for syncer in started:
        await syncer.stop()


async def start(
    port: CountingPort,
    syncers: list[IpvsSyncer],
    verdicts: list[RealServerVerdict],
    resync_interval: float = 0.2,
) -> IpvsSyncer:
    syncer = IpvsSyncer(port, SERVICES, resync_interval=resync_interval)
    syncers.append(syncer)
    await syncer.start(verdicts)
    return syncer


async def test_flush_is_drift_and_is_corrected(
    port: CountingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers, healthy_verdicts())
    assert kernel_table() == shows(HEALTHY)
    ipvsadm("-C")
    await eventually(lambda: kernel_table() == shows(HEALTHY), "the table rebuilt after -C")
    assert syncer.drift >= 3  # three services missing


async def test_hand_changes_are_corrected_and_others_left_alone(
    port: CountingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers, healthy_verdicts())
    ipvsadm("-A", "-t", "192.0.2.99:80", "-s", "rr")
    ipvsadm("-a", "-t", "192.0.2.99:80", "-r", "10.1.0.1:80", "-g", "-w", "7")
    ipvsadm("-a", "-t", "192.0.2.10:80", "-r", "10.0.0.9:80", "-g", "-w", "1")
    ipvsadm("-e", "-u", "192.0.2.10:53", "-r", "10.0.0.11:53", "-m", "-w", "5")
    unmanaged = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.99"), 80)

    def corrected() -> bool:
        table = kernel_table()
        return {key: table[key] for key in HEALTHY if key in table} == shows(HEALTHY)

    await eventually(corrected, "the hand-added destination gone, the weight back to 3")
    assert syncer.drift == 2
    assert kernel_table()[unmanaged] == Service(
        unmanaged, ServiceOptions("rr"), (dest("10.1.0.1", 80, 7, DR),)
    )
    assert "-A -t 192.0.2.99:80 -s rr" in ipvsadm_rules()


def samples(syncer: IpvsSyncer, count: int) -> Callable[[], bool]:
    return lambda: syncer.latency.count == count


async def test_verdicts_reach_the_kernel(
    port: CountingPort, syncers: list[IpvsSyncer], capsys: pytest.CaptureFixture[str]
) -> None:
    syncer = await start(port, syncers, healthy_verdicts(), resync_interval=60.0)
    rounds = 100
    for n in range(rounds):
        syncer.on_verdict(verdict("10.0.0.1:80", Health.UNHEALTHY))
        syncer.on_verdict(verdict("10.0.0.11:53", Health.UNHEALTHY))
        await eventually(samples(syncer, 4 * n + 2), "down applied")
        if n == 0:
            down = kernel_table()
            assert down[WEB].destinations == (dest("10.0.0.2", 80, 1, DR),)
            assert down[DNS].destinations == (dest("10.0.0.11", 53, 0), dest("10.0.0.12", 53, 3))
        syncer.on_verdict(verdict("10.0.0.1:80", Health.HEALTHY))
        syncer.on_verdict(verdict("10.0.0.11:53", Health.HEALTHY))
        await eventually(samples(syncer, 4 * n + 4), "up applied")
    assert kernel_table() == shows(HEALTHY)
    stats = syncer.latency
    with capsys.disabled():
        print(
            f"\nnetlink detection-to-kernel latency over {stats.count} verdicts: "
            f"p50 {stats.p50 * 1e3:.2f} ms, p99 {stats.p99 * 1e3:.2f} ms, "
            f"max {stats.max * 1e3:.2f} ms"
        )


async def test_quorum_swaps_the_sorry_server(port: CountingPort, syncers: list[IpvsSyncer]) -> None:
    syncer = await start(port, syncers, healthy_verdicts())
    syncer.on_verdict(verdict("10.0.0.21:25", Health.UNHEALTHY))
    sorry_only = (dest("10.0.9.9", 2525, 1),)
    await eventually(lambda: kernel_table()[MAIL].destinations == sorry_only, "sorry server in")
    assert syncer.sorry_active == frozenset({MAIL})
    syncer.on_verdict(verdict("10.0.0.21:25", Health.HEALTHY))
    await eventually(lambda: kernel_table() == shows(HEALTHY), "real servers back, sorry out")
    assert syncer.sorry_active == frozenset()


# Adoption after SIGKILL. The witness is the count of changes the new syncer makes: ipvsadm's
# counters cannot tell, since the kernel revives a deleted destination that still has
# connections from its trash, counters and all, when it is added back.

SYNCER_PROCESS = """
import asyncio, sys
from lvsha.checks.verdict import Health, RealServerVerdict
from lvsha.config import load_text
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.specs import configured_services
from lvsha.ipvs.syncer import IpvsSyncer

async def main():
    services = configured_services(load_text(sys.stdin.read()))
    verdicts = [
        RealServerVerdict(rs.id, Health.HEALTHY, None, "up", "tcp", 0.0)
        for service in services for rs in service.real_servers
    ]
    async with NetlinkIpvsTable() as port:
        syncer = IpvsSyncer(port, services)
        await syncer.start(verdicts)
        print("synced", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_adoption_after_kill_9_removes_and_adds_nothing(
    port: CountingPort, syncers: list[IpvsSyncer]
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SYNCER_PROCESS],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        text=True,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(CONFIG)
        process.stdin.close()
        assert process.stdout.readline().strip() == "synced"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert kernel_table() == shows(HEALTHY)

    # Restart: alpha checks have not run, so every verdict is Unhealthy and unproven.
    restart = [verdict(name, Health.UNHEALTHY, probed=False) for name in IDS]
    syncer = await start(port, syncers, restart)
    assert port.calls == Counter()
    # Then the checks prove them healthy, and re-reads find nothing to correct.
    for name in IDS:
        syncer.on_verdict(verdict(name, Health.HEALTHY))
    syncer.request_resync()
    passes = syncer.passes
    await eventually(lambda: syncer.passes >= passes + 2, "two more passes")
    assert port.calls == Counter()
    assert syncer.drift == 0
    assert kernel_table() == shows(HEALTHY)
