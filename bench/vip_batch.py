"""The address port's takeover and release of many VIPs (issue 11), without VRRP around it.

    .venv/bin/python -m bench.vip_batch [--vips 1,20,100] [--runs 50]

Run as root. In a lab host (a network namespace named by the lab, removed at the end) with the
address ledger on disk, as the VRRP process has it: for each VIP count, the time of one
`add_vips` (ledger line, one rtnetlink exchange) plus `announce_now` (each VIP's first GARP),
and of one `remove_vips` (one exchange, ledger line), after `prepare`, as at a takeover and at
the end of a handover grace. Medians and maxima of `--runs` rounds are printed beside the
targets: 20 VIPs added and announced within 3 ms, and released as fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Interface
from pathlib import Path

from lvsha.drill.lab import Host, lab
from lvsha.net.addresses import NetlinkAddresses, VipOutcome, VipRequest
from lvsha.net.announce import PacketAnnouncer
from lvsha.net.ledger import LEDGER_FILE, AddressLedger

FIRST = 10
MAX_VIPS = 240
TARGET = 0.003
"""Seconds for 20 VIPs, added and announced (and, separately, released)."""


def vip_counts(text: str) -> list[int]:
    """`--vips`: comma-separated counts of VIPs, each within the host's subnet."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not all(0 < count <= MAX_VIPS for count in counts):
        raise argparse.ArgumentTypeError(f"each count must be 1 to {MAX_VIPS}: {text}")
    return counts


def rounds(count: int, runs: int, ledger_dir: Path) -> tuple[list[float], list[float]]:
    """(add and announce, remove) seconds of each round, in the calling thread's namespace."""
    # In the host's subnet, so each is a secondary address of its 192.0.2.1/24: a VIP that
    # were the subnet's primary would take the others with it when removed.
    vips: list[VipRequest] = [
        ("eth0", IPv4Interface(f"192.0.2.{FIRST + n}/24"), None) for n in range(count)
    ]
    port = NetlinkAddresses(AddressLedger(ledger_dir / LEDGER_FILE))
    announcer = PacketAnnouncer()
    try:
        asyncio.run(port.reconcile())  # opens the ledger and the netlink socket, as at start
        port.prepare(vips)
        announcer.prepare("eth0", [vip for _, vip, _ in vips])
        taken, released = [], []
        for _ in range(runs):
            started = time.perf_counter()
            results = port.add_vips(vips)
            announcer.announce_now("eth0", [vip for _, vip, _ in vips])
            added = time.perf_counter()
            gone = port.remove_vips([(interface, vip) for interface, vip, _ in vips])
            done = time.perf_counter()
            if results != [VipOutcome.ADDED] * count or gone != [VipOutcome.REMOVED] * count:
                raise RuntimeError(f"not every VIP went on and off: {results} {gone}")
            taken.append(added - started)
            released.append(done - added)
        return taken, released
    finally:
        announcer.close()
        port.close()


def measure(host: Host, count: int, runs: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="lvsha-vip-batch-") as tmp:
        return host.call(lambda: rounds(count, runs, Path(tmp)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vip_batch", description=__doc__)
    parser.add_argument(
        "--vips",
        type=vip_counts,
        default=[1, 20, 100],
        help=f"VIP counts, comma-separated, each 1 to {MAX_VIPS} (default: 1,20,100)",
    )
    parser.add_argument("--runs", type=int, default=50, metavar="N")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.vip_batch needs root (network namespaces)", file=sys.stderr)
        return 2
    counts: list[int] = args.vips
    with open("/proc/loadavg", encoding="ascii") as handle:
        print(
            f"VIP batches: {args.runs} rounds each; loadavg {' '.join(handle.read().split()[:3])}"
        )
    status = 0
    with lab() as built:
        host = built.add_host("a", "192.0.2.1/24")
        for count in counts:
            taken, released = measure(host, count, args.runs)
            line = (
                f"{count:4d} VIPs: added and announced median {statistics.median(taken) * 1e3:.2f}"
                f" ms (max {max(taken) * 1e3:.2f}); released median "
                f"{statistics.median(released) * 1e3:.2f} ms (max {max(released) * 1e3:.2f})"
            )
            if count == 20:
                holds = max(statistics.median(taken), statistics.median(released)) < TARGET
                status |= 0 if holds else 1
                line += f"  target < {TARGET * 1e3:.0f} ms each: {'HOLDS' if holds else 'FAILS'}"
            print(line, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
