"""A million fuzzed VRRP adverts through the receive path: none may raise, every drop counted.

Run from the repository root: `.venv/bin/python -m bench.fuzz_adverts [--packets N]`. It runs
the unit test's fuzzer (tests/unit/vrrp/advert_fuzz.py) over each of its configurations, one
instance or several with a sync group, in every machine state: the real socket reader
callback, decoder, instance checks, drop log, machines and sync groups, with simulated time.
Prints the adverts sent, the exceptions that escaped the socket callback (the target is 0),
the drops by reason, and the adverts the machines accepted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.wire import DropReason
from tests.unit.vrrp.advert_fuzz import CONFIGS, FuzzReport, run_fuzz, unexplained


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.fuzz_adverts")
    parser.add_argument("--packets", type=int, default=1_000_000, help="in all configurations")
    parser.add_argument("--seed", default="lvsha-bench")
    args = parser.parse_args(argv)
    share = args.packets // len(CONFIGS)
    total = FuzzReport()
    failed = False
    started = time.perf_counter()
    for name, text in CONFIGS.items():
        count = share + (args.packets - share * len(CONFIGS) if name == "multi" else 0)
        began = time.perf_counter()
        report = run_fuzz(text, f"{args.seed}-{name}", count)
        took = time.perf_counter() - began
        missing = sorted(
            f"{instance}:{state.name}"
            for instance, states in report.states.items()
            for state in VrrpState
            if state not in states
        )
        print(
            f"{name:8} {len(report.states)} instance(s): {report.packets:,} adverts, "
            f"{report.deliveries:,} deliveries, {report.escaped} escaped, "
            f"{report.accepted:,} accepted, {report.dropped:,} dropped, "
            f"{report.drops[DropReason.INSTANCE_NOT_RUNNING.value]:,} in Initialize, "
            f"{took:.1f} s; states not reached: {', '.join(missing) or 'none'}"
        )
        _add(total, report)
        failed |= report.escaped > 0 or report.internal_errors > 0 or unexplained(report) != 0
    print()
    print(f"adverts:                        {total.packets:,}")
    print(f"deliveries (advert x instance): {total.deliveries:,}")
    print(f"escaped exceptions:             {total.escaped}")
    print(f"caught at the edge (bugs):      {total.drops[DropReason.RECEIVE_ERROR.value]}")
    print(f"errors from the fuzzer's own events: {total.internal_errors}")
    print(f"accepted events (AdvertReceived): {total.accepted:,}")
    print(f"dropped:                        {total.dropped:,}")
    print(f"neither dropped nor accepted:   {unexplained(total)}")
    print("drops by reason:")
    for reason, count in sorted(total.drops.items(), key=lambda item: -item[1]):
        print(f"  {reason:36} {count:>10,}")
    print("machine actions:")
    for action, count in sorted(total.actions.items(), key=lambda item: -item[1]):
        print(f"  {action:36} {count:>10,}")
    print(f"re-assertions suppressed:       {total.reassertions_suppressed:,}")
    print(f"drop log lines (all levels):    {total.log_lines:,}, tracebacks {total.tracebacks}")
    print(f"time:                           {time.perf_counter() - started:.1f} s")
    failed |= total.drops[DropReason.RECEIVE_ERROR.value] > 0 or total.tracebacks > 0
    return 1 if failed else 0


def _add(total: FuzzReport, report: FuzzReport) -> None:
    total.packets += report.packets
    total.deliveries += report.deliveries
    total.escaped += report.escaped
    total.accepted += report.accepted
    total.internal_errors += report.internal_errors
    total.drops += report.drops
    total.actions += report.actions
    total.reassertions_suppressed += report.reassertions_suppressed
    total.log_lines += report.log_lines
    total.tracebacks += report.tracebacks


if __name__ == "__main__":
    sys.exit(main())
