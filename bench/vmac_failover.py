"""Probes lost per failover with and without VMAC (use_vmac), as the client sees them.

Run as root: `.venv/bin/python -m bench.vmac_failover [--failovers N] [--interval S]`. Two lvsha
directors and a client in a namespace lab; the client sends an ICMP echo to the VIP every 10 ms
(the drill's VipProber). N times, the master dies as a host does (the whole `lvsha run` killed,
its VIP and its VMAC gone with it) half an advert interval after one of its adverts reaches the
client, so every fault falls at the same point of the interval; the backup takes over; the dead
director comes back as a backup (preempt: false on both). The same is done without VMAC (the
VIP on eth0, the client following the new master's gratuitous ARP) and with it (the VIP on
vrrp.42 with the virtual MAC: the client's neighbour entry never changes).

Printed: probes lost at each failover and in total, the longest outage, and a verdict: VMAC
loses no more probes than without it, within one probe per failover (the takeover's own timing
moves by a few milliseconds from one failover to the next).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from lvsha.drill.capture import Capture
from lvsha.drill.lab import Host, Lab, LabError, wait_until
from lvsha.drill.probe import VipProber, measure_outage
from tests.netns.director import Director, vrrp_config

VRID = 42
VIP = "192.0.2.100/24"
VIP_IP = "192.0.2.100"
VMAC = "vrrp.42"
PROBE_INTERVAL = 0.01
REPLY_TIMEOUT = 0.5
RECOVERED_FOR = 0.3
"""Seconds of answered probes after the takeover that end one failover's window."""
NOISE_PER_FAILOVER = 1
"""Probes per failover by which VMAC may exceed the plain figure and still hold."""


@dataclass
class Figures:
    mode: str
    lost: list[int] = field(default_factory=list)
    outages: list[float] = field(default_factory=list)
    neighbour_macs: set[str] = field(default_factory=set)


def config(priority: int, interval: float, vmac: bool) -> str:
    text = vrrp_config(vrid=VRID, priority=priority, vip=VIP, interval=interval, preempt=False)
    return text + ("    use_vmac: true\n" if vmac else "")


def holds(host: Host, vmac: bool) -> bool:
    try:
        shown = host.ip("-o", "addr", "show", "dev", VMAC if vmac else "eth0")
    except LabError:
        return False
    return f" {VIP_IP}/" in shown


def neighbour_mac(client: Host) -> str:
    shown = client.ip("neigh", "show", VIP_IP, "dev", "eth0").split()
    return shown[shown.index("lladdr") + 1] if "lladdr" in shown else "none"


def answered_since(prober: VipProber, since: float) -> bool:
    probes = [p for p in prober.probes_since(since) if p.sent_at < time.monotonic() - 0.05]
    return bool(probes) and all(p.answered_at is not None for p in probes)


def run(mode: str, vmac: bool, failovers: int, interval: float) -> Figures:
    figures = Figures(mode)
    with Lab() as lab:
        hosts = {name: lab.add_host(name, f"192.0.2.{n}/24") for name, n in (("a", 11), ("b", 12))}
        client = lab.add_host("client", "192.0.2.50/24")
        client.run("sysctl", "-qw", "net.ipv4.neigh.eth0.base_reachable_time_ms=600000")
        priorities = {"a": 150, "b": 100}
        directors = {
            name: Director(host, config(priorities[name], interval, vmac), VIP)
            for name, host in hosts.items()
        }
        directors["a"].start()
        wait_until(lambda: holds(hosts["a"], vmac), 15, what="a master")
        directors["b"].start()
        wait_until(lambda: "-> BACKUP" in directors["b"].log(), 15, what="b backup")
        with (
            VipProber(client, IPv4Address(VIP_IP), PROBE_INTERVAL) as prober,
            Capture(client) as capture,
        ):
            started = time.monotonic()
            wait_until(lambda: answered_since(prober, started + 0.2), 10, what="probes answered")
            for number in range(failovers):
                master = next(name for name in hosts if holds(hosts[name], vmac))
                backup = "b" if master == "a" else "a"
                # Half an interval after one of the master's adverts reaches the client.
                heard_from = time.monotonic()
                wait_until(
                    lambda since=heard_from: bool(capture.adverts_since(since)),  # type: ignore[misc]
                    5,
                    what="an advert",
                )
                advert_at = capture.adverts_since(heard_from)[0].at
                time.sleep(max(0.0, advert_at + interval / 2 - time.monotonic()))
                fault_at = time.monotonic()
                directors[master].crash()
                if vmac:
                    hosts[master].ip("link", "del", VMAC)  # the host is gone, its VMAC too
                wait_until(
                    lambda new=hosts[backup]: holds(new, vmac),  # type: ignore[misc]
                    15,
                    what=f"{backup} takes over",
                )

                def recovered(since: float = fault_at) -> bool:
                    late = [p for p in prober.probes_since(since) if p.answered_at is not None]
                    return bool(late) and answered_since(prober, late[-1].sent_at - RECOVERED_FOR)

                wait_until(recovered, 15, interval=0.05, what="probes answered again")
                window_end = time.monotonic() - RECOVERED_FOR
                outage = measure_outage(
                    prober.probes_since(fault_at - 1.0), fault_at, window_end, REPLY_TIMEOUT
                )
                figures.lost.append(outage.lost)
                figures.outages.append(outage.outage)
                figures.neighbour_macs.add(neighbour_mac(client))
                print(
                    f"  {mode}: failover {number + 1} ({master} -> {backup}): "
                    f"{outage.lost} probes lost, outage {outage.outage * 1000:.0f} ms",
                    flush=True,
                )
                # The dead director comes back, as a backup.
                directors[master] = Director(
                    hosts[master], config(priorities[master], interval, vmac), VIP
                )
                directors[master].start()
                wait_until(
                    lambda name=master: "-> BACKUP" in directors[name].log(),  # type: ignore[misc]
                    15,
                    what=f"{master} back as backup",
                )
        for director in directors.values():
            if director.running():
                director.crash()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=10, help="failovers per mode")
    parser.add_argument("--interval", type=float, default=0.1, help="advert interval, s (v3)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: it builds network namespaces", file=sys.stderr)
        return 2
    print(
        f"{args.failovers} failovers per mode (kill the master host), VRRPv3 every "
        f"{args.interval:g} s, a probe every {PROBE_INTERVAL * 1000:.0f} ms",
        flush=True,
    )
    results = [
        run("without VMAC", False, args.failovers, args.interval),
        run("with VMAC", True, args.failovers, args.interval),
    ]
    print()
    for figures in results:
        print(
            f"{figures.mode:>12}: lost per failover {figures.lost}; total {sum(figures.lost)}, "
            f"median {statistics.median(figures.lost):g}, max {max(figures.lost)}; longest "
            f"outage {max(figures.outages) * 1000:.0f} ms; client's MAC for the VIP after the "
            f"failovers: {', '.join(sorted(figures.neighbour_macs))}"
        )
    plain, vmac = results
    allowed = sum(plain.lost) + NOISE_PER_FAILOVER * args.failovers
    verdict = "HOLDS" if sum(vmac.lost) <= allowed else "FAILS"
    print(
        f"verdict: VMAC loses no more probes than without it: {verdict} "
        f"({sum(vmac.lost)} against {sum(plain.lost)}, allowance {allowed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
