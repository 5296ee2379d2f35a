"""IPVS table changes through lvsha against ipvsadm -R, and detection-to-kernel latency.

    python3 tests/vm/run_in_vm.py -- .venv/bin/python -m bench.ipvs   # real IPVS, inside the VM
    .venv/bin/python -m bench.ipvs --memory                           # in-memory port, on the host

Kernel mode moves the whole process into a fresh network namespace first, so the IPVS table it
fills is empty and private (IPVS tables are per namespace) and vanishes with the process. It
prints, for a table of 1,000 services x 10 destinations:

- lvsha from empty: read the (empty) table, `plan`, and the whole plan as one batch through
  `NetlinkIpvsTable.apply_operations`; beside it `ipvsadm -R` of the same table as -A/-a rules,
  after `ipvsadm -C`;
- lvsha converging after 10% of the destinations change weight: `plan` against the table as the
  syncer knows it, and the edits as one batch; beside it `ipvsadm -R` of the same changes as -e
  rules; and the full re-read that the syncer's periodic resync costs at this size;
- the lvsha/ipvsadm ratio of medians (target: within 2x).

Both modes then run `IpvsSyncer` on a smaller, realistic table and feed it verdict flips one at
a time, printing its own detection-to-kernel latency figures (`syncer.latency`: a verdict's
arrival to the kernel's acknowledgement of the change). Every figure printed is as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from lvsha.checks.verdict import Health, RealServerVerdict
from lvsha.config import load_text
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    Forwarding,
    Service,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
)
from lvsha.ipvs.netlink import NetlinkIpvsTable
from lvsha.ipvs.plan import plan
from lvsha.ipvs.port import IpvsError, IpvsTablePort
from lvsha.ipvs.specs import ConfiguredService, configured_services
from lvsha.ipvs.syncer import DEFAULT_RESYNC_INTERVAL, IpvsSyncer

SERVICES = 1000
DESTINATIONS = 10
CHANGED_FRACTION = 0.1
WEIGHT = 100
CHANGED_WEIGHT = 50
RATIO_TARGET = 2.0
LATENCY_P99_TARGET = 0.020
"""Seconds; the target for the in-memory port."""
LATENCY_SERVICES = 100
LATENCY_REAL_SERVERS = 10
NO_RESYNC = 3600.0
"""A resync interval longer than any run: no periodic re-read happens."""
_CLONE_NEWNET = 0x40000000


# The tables.


def bulk_table(services: int, destinations: int) -> dict[ServiceKey, Service]:
    """`services` TCP services on port 80, each with `destinations` NAT destinations."""
    table: dict[ServiceKey, Service] = {}
    for index in range(services):
        key = AddressKey(TransportProtocol.TCP, _vip(index), 80)
        table[key] = Service(
            key,
            ServiceOptions("wlc"),
            tuple(
                Destination(_real_server(index, n), 8080, weight=WEIGHT)
                for n in range(destinations)
            ),
        )
    return table


def _vip(index: int) -> IPv4Address:
    return IPv4Address(f"198.18.{index // 250}.{1 + index % 250}")


def _real_server(service: int, n: int) -> IPv4Address:
    return IPv4Address(f"10.{1 + service // 250}.{service % 250}.{1 + n}")


def reweighted(
    table: Mapping[ServiceKey, Service], fraction: float, rng: random.Random
) -> tuple[dict[ServiceKey, Service], list[tuple[ServiceKey, Destination]]]:
    """`table` with `fraction` of its destinations, chosen at random, at another weight; and
    those changed destinations."""
    everyone = [(key, d) for key, service in table.items() for d in service.destinations]
    chosen = rng.sample(everyone, round(len(everyone) * fraction))
    changed = [(key, replace(d, weight=CHANGED_WEIGHT)) for key, d in chosen]
    result = dict(table)
    for key, destination in changed:
        service = result[key]
        kept = tuple(d for d in service.destinations if d.key != destination.key)
        result[key] = Service(key, service.options, (*kept, destination))
    return result, changed


def restore_rules(table: Mapping[ServiceKey, Service]) -> str:
    """The table as `ipvsadm -R` input: an -A line per service, an -a line per destination."""
    lines = []
    for key, service in table.items():
        assert isinstance(key, AddressKey)
        lines.append(f"-A -t {key.address}:{key.port} -s {service.options.scheduler}")
        lines.extend(
            f"-a -t {key.address}:{key.port} {_destination_words(d)}" for d in service.destinations
        )
    return "\n".join(lines) + "\n"


def edit_rules(changed: Sequence[tuple[ServiceKey, Destination]]) -> str:
    """The weight changes as `ipvsadm -R` input: one -e line each."""
    lines = []
    for key, destination in changed:
        assert isinstance(key, AddressKey)
        lines.append(f"-e -t {key.address}:{key.port} {_destination_words(destination)}")
    return "\n".join(lines) + "\n"


def _destination_words(destination: Destination) -> str:
    assert destination.forwarding is Forwarding.MASQUERADE
    return f"-r {destination.address}:{destination.port} -m -w {destination.weight}"


# lvsha's side and ipvsadm's side of one comparison.


@dataclass(frozen=True, slots=True)
class Phases:
    read: float
    plan: float
    apply: float
    operations: int

    @property
    def total(self) -> float:
        return self.read + self.plan + self.apply


async def lvsha_from_empty(port: NetlinkIpvsTable, desired: Mapping[ServiceKey, Service]) -> Phases:
    """What the syncer does at start on an empty kernel table: read, plan, apply."""
    started = time.perf_counter()
    observed = await port.list_services()
    read_done = time.perf_counter()
    operations = plan(desired, observed, managed=desired.keys())
    planned = time.perf_counter()
    results = await port.apply_operations(operations)
    applied = time.perf_counter()
    expect_no_refusals(results, "from empty")
    return Phases(read_done - started, planned - read_done, applied - planned, len(operations))


async def lvsha_converge(
    port: NetlinkIpvsTable,
    believed: Mapping[ServiceKey, Service],
    desired: Mapping[ServiceKey, Service],
) -> Phases:
    """What the syncer does on a burst of verdicts: plan against the table as it knows it (no
    re-read; that is the periodic resync, timed on its own), then apply."""
    started = time.perf_counter()
    operations = plan(desired, believed, managed=desired.keys())
    planned = time.perf_counter()
    results = await port.apply_operations(operations)
    applied = time.perf_counter()
    expect_no_refusals(results, "the weight changes")
    return Phases(0.0, planned - started, applied - planned, len(operations))


def expect_no_refusals(results: Sequence[IpvsError | None], what: str) -> None:
    refusals = [result for result in results if result is not None]
    if refusals:
        raise SystemExit(
            f"bench.ipvs: {len(refusals)} of {len(results)} operations of {what} failed, "
            f"e.g. {refusals[0]}"
        )


def ipvsadm(*args: str, rules: str | None = None) -> None:
    subprocess.run(["ipvsadm", *args], input=rules, text=True, check=True, capture_output=True)


def timed_ipvsadm_restore(rules: str) -> float:
    started = time.perf_counter()
    ipvsadm("-R", rules=rules)
    return time.perf_counter() - started


def expect_rules(want: Mapping[ServiceKey, Service], after: str) -> None:
    """Fail unless `ipvsadm -S -n` shows exactly `want` (it prints the rules format we feed)."""
    found = sorted(
        subprocess.run(
            ["ipvsadm", "-S", "-n"], text=True, check=True, capture_output=True
        ).stdout.splitlines()
    )
    expected = sorted(restore_rules(want).splitlines())
    if found != expected:
        extra, missing = set(found) - set(expected), set(expected) - set(found)
        raise SystemExit(
            f"bench.ipvs: after {after} ipvsadm -S shows {len(extra)} unexpected and lacks "
            f"{len(missing)} rules, e.g. {sorted(extra)[:2]} {sorted(missing)[:2]}"
        )


async def expect_table(
    port: NetlinkIpvsTable, want: Mapping[ServiceKey, Service], after: str
) -> float:
    """Read the whole table back, fail unless it is `want`; return the read's duration."""
    started = time.perf_counter()
    found = await port.list_services()
    duration = time.perf_counter() - started
    if found != want:
        missing = len(want.keys() - found.keys())
        differing = sum(1 for key in want if key in found and found[key] != want[key])
        raise SystemExit(
            f"bench.ipvs: after {after} the kernel table is not the desired one: "
            f"{missing} services missing, {differing} differ, {len(found)} present"
        )
    return duration


@dataclass(frozen=True, slots=True)
class Round:
    lvsha_full: Phases
    lvsha_edit: Phases
    reread: float
    ipvsadm_full: float
    ipvsadm_edit: float


async def compare_round(
    port: NetlinkIpvsTable, number: int, services: int, destinations: int
) -> Round:
    desired = bulk_table(services, destinations)
    changed_table, changed = reweighted(desired, CHANGED_FRACTION, random.Random(number))
    full_rules, changes = restore_rules(desired), edit_rules(changed)

    async def lvsha_side() -> tuple[Phases, Phases, float]:
        ipvsadm("-C")
        full = await lvsha_from_empty(port, desired)
        expect_rules(desired, "lvsha's apply from empty")
        edit = await lvsha_converge(port, desired, changed_table)
        reread = await expect_table(port, changed_table, "lvsha's weight changes")
        return full, edit, reread

    async def ipvsadm_side() -> tuple[float, float]:
        ipvsadm("-C")
        full = timed_ipvsadm_restore(full_rules)
        expect_rules(desired, "ipvsadm -R of -A/-a rules")
        edit = timed_ipvsadm_restore(changes)
        expect_rules(changed_table, "ipvsadm -R of -e rules")
        return full, edit

    # Alternate which goes first, so neither always meets a freshly flushed kernel.
    if number % 2:
        lvsha_full, lvsha_edit, reread = await lvsha_side()
        ipvsadm_full, ipvsadm_edit = await ipvsadm_side()
    else:
        ipvsadm_full, ipvsadm_edit = await ipvsadm_side()
        lvsha_full, lvsha_edit, reread = await lvsha_side()
    ipvsadm("-C")
    return Round(lvsha_full, lvsha_edit, reread, ipvsadm_full, ipvsadm_edit)


async def compare(rounds: int, services: int, destinations: int) -> None:
    changed_count = round(services * destinations * CHANGED_FRACTION)
    print(
        f"table: {services} services x {destinations} destinations "
        f"({services * (destinations + 1)} entries); weight change: {changed_count} destinations"
    )
    results = []
    async with NetlinkIpvsTable() as port:
        for number in range(1, rounds + 1):
            result = await compare_round(port, number, services, destinations)
            results.append(result)
            full, edit = result.lvsha_full, result.lvsha_edit
            print(
                f"round {number}: from empty: lvsha {full.total:.3f} s "
                f"(read {full.read:.3f}, plan {full.plan:.3f}, apply {full.apply:.3f}; "
                f"{full.operations} operations), ipvsadm -R {result.ipvsadm_full:.3f} s | "
                f"10% weights: lvsha {edit.total:.3f} s (plan {edit.plan:.3f}, "
                f"apply {edit.apply:.3f}; {edit.operations} operations), "
                f"ipvsadm -R {result.ipvsadm_edit:.3f} s | lvsha full re-read "
                f"{result.reread:.3f} s",
                flush=True,
            )
    lvsha_full = statistics.median(r.lvsha_full.total for r in results)
    ipvsadm_full = statistics.median(r.ipvsadm_full for r in results)
    lvsha_edit = statistics.median(r.lvsha_edit.total for r in results)
    ipvsadm_edit = statistics.median(r.ipvsadm_edit for r in results)
    reread = statistics.median(r.reread for r in results)
    print(f"medians over {len(results)} rounds (target: lvsha within {RATIO_TARGET:g}x):")
    for what, ours, theirs in (
        ("from empty", lvsha_full, ipvsadm_full),
        ("10% weights", lvsha_edit, ipvsadm_edit),
    ):
        ratio = ours / theirs
        verdict = "met" if ratio <= RATIO_TARGET else "NOT met"
        print(
            f"  {what}: lvsha {ours:.3f} s, ipvsadm -R {theirs:.3f} s, "
            f"ratio {ratio:.2f}x ({verdict})"
        )
    print(f"  lvsha full re-read of the table (each periodic resync): {reread:.3f} s")


# Detection-to-kernel latency through the syncer.


def latency_config(services: int, real_servers: int) -> str:
    lines = ["virtual_servers:"]
    for index in range(services):
        lines += [
            f"  - address: {IPv4Address('198.19.0.1') + index}",
            "    port: 443",
            "    protocol: TCP",
            "    scheduler: wlc",
            "    forwarding: NAT",
            "    real_servers:",
        ]
        lines += [
            f"      - {{address: {_real_server(index, n)}, port: 8443, weight: 10, "
            "checks: [{type: tcp}]}"
            for n in range(real_servers)
        ]
    return "\n".join(lines) + "\n"


async def measure_latency(
    port: IpvsTablePort,
    services: Sequence[ConfiguredService],
    verdicts: int,
    resync_interval: float,
    seed: int,
) -> IpvsSyncer:
    """Feed `verdicts` (rounded up to even) verdict changes one at a time, down then up again
    for random real servers, each once the previous one has reached the table."""
    real_servers = [rs.id for service in services for rs in service.real_servers]
    syncer = IpvsSyncer(port, services, resync_interval=resync_interval)
    await syncer.start(
        RealServerVerdict(rs, Health.HEALTHY, None, "bench", "tcp", 0.0) for rs in real_servers
    )
    rng = random.Random(seed)
    fed = 0
    try:
        while fed < verdicts:
            flipped = rng.choice(real_servers)
            for health in (Health.UNHEALTHY, Health.HEALTHY):
                syncer.on_verdict(RealServerVerdict(flipped, health, None, "bench", "tcp", 0.0))
                fed += 1
                deadline = time.monotonic() + 30.0
                while syncer.latency.count < fed:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"bench.ipvs: verdict {fed} not applied within 30 s")
                    await asyncio.sleep(0.0005)
    finally:
        await syncer.stop()
    return syncer


async def latency(
    memory: bool, verdicts: int, services: int, real_servers: int, resync_interval: float
) -> None:
    configured = configured_services(load_text(latency_config(services, real_servers)))
    where = "in-memory port, host" if memory else "netlink port, VM kernel"
    if memory:
        syncer = await measure_latency(
            MemoryIpvsTable(), configured, verdicts, resync_interval, seed=1
        )
    else:
        ipvsadm("-C")
        async with NetlinkIpvsTable() as netlink:
            syncer = await measure_latency(netlink, configured, verdicts, resync_interval, seed=1)
        ipvsadm("-C")
    stats = syncer.latency
    print(
        f"detection-to-kernel latency ({where}; {services} services x {real_servers} real "
        f"servers; resync every {resync_interval:g} s; {syncer.passes} passes): "
        f"{stats.count} verdicts, p50 {stats.p50 * 1e3:.2f} ms, p99 {stats.p99 * 1e3:.2f} ms, "
        f"max {stats.max * 1e3:.2f} ms",
        flush=True,
    )
    if memory:
        verdict = "met" if stats.p99 < LATENCY_P99_TARGET else "NOT met"
        print(f"  target p99 under {LATENCY_P99_TARGET * 1e3:g} ms: {verdict}")


def all_latencies(memory: bool, verdicts: int) -> None:
    """With lvsha's default resync interval, then with the periodic re-read out of the way,
    to show what the re-read of the whole table adds."""
    for resync_interval in (DEFAULT_RESYNC_INTERVAL, NO_RESYNC):
        asyncio.run(
            latency(memory, verdicts, LATENCY_SERVICES, LATENCY_REAL_SERVERS, resync_interval)
        )


# Entry point.


def enter_fresh_network_namespace() -> None:
    """Move this (still single-threaded) process into a new network namespace, so its IPVS
    table is empty and private; subprocesses such as ipvsadm inherit it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise SystemExit(f"bench.ipvs: unshare(CLONE_NEWNET) failed: {os.strerror(error)}")
    # The kernel refuses a NAT destination (EINVAL) whose address type it cannot look up, and
    # a new namespace has no local routing table until an address exists: loopback's will do.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.ipvs", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--memory", action="store_true", help="latency through the in-memory port only (host)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="comparison rounds (default 3)")
    parser.add_argument("--services", type=int, default=SERVICES)
    parser.add_argument("--destinations", type=int, default=DESTINATIONS)
    parser.add_argument(
        "--verdicts",
        type=int,
        help="verdict changes fed to the syncer (default 400; 1000 with --memory)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    python = sys.version.split()[0]
    print(f"bench.ipvs on {platform.release()} ({os.cpu_count()} CPU), Python {python}")
    if args.memory:
        verdicts = 1000 if args.verdicts is None else args.verdicts
        all_latencies(True, verdicts)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench.ipvs: needs root (a network namespace and the IPVS table)")
    subprocess.run(["modprobe", "-q", "ip_vs"], check=False)
    if not os.path.exists("/proc/net/ip_vs"):
        raise SystemExit(
            "bench.ipvs: no ip_vs on this kernel; run it in the VM: "
            "python3 tests/vm/run_in_vm.py -- .venv/bin/python -m bench.ipvs"
        )
    enter_fresh_network_namespace()
    print("in a fresh network namespace (its own, empty IPVS table)")
    verdicts = 400 if args.verdicts is None else args.verdicts
    asyncio.run(compare(args.rounds, args.services, args.destinations))
    all_latencies(False, verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
