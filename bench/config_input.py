"""How long check-config's loader takes on adversarial files just under its limits.

    .venv/bin/python -m bench.config_input

Issue 9's target: any file under the limits is checked (accepted or refused with located
errors) in under 2 s. Each case is written to a temporary file and loaded with
`lvsha.config.load_file`, as `lvsha check-config` does, in a fresh forked process so its peak
memory is its own; the best of three runs is printed (wall and CPU seconds: on a busy machine
the two differ) with the outcome (OK, or the number of problems and the first one). No root
needed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lvsha.config import DEFAULT_MAX_SIZE, ConfigError, load_file
from lvsha.config.source import MAX_DEPTH, MAX_NODES

TARGET_SECONDS = 2.0

HEADER = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [192.0.2.10/24]
"""


def _real_servers(count: int, indent: str = "      ") -> str:
    lines = []
    for n in range(count):
        lines += [
            f"{indent}- address: 10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
            f"{indent}  weight: {1 + n % 100}",
            f"{indent}  checks:",
            f"{indent}    - type: tcp",
            f"{indent}      interval: 2s",
            f"{indent}      rise: 2",
        ]
    return "\n".join(lines) + "\n"


def large_valid(real_servers: int, services: int) -> str:
    """A plausible big director: `services` virtual servers sharing `real_servers` servers."""
    per = real_servers // services
    out = [HEADER, "virtual_servers:\n"]
    for s in range(services):
        out.append(
            f"  - address: 192.0.2.10\n    port: {1000 + s}\n    protocol: TCP\n"
            "    scheduler: wrr\n    real_servers:\n"
        )
        out.append(_real_servers(per))
    return "".join(out)


def alias_bomb(budget: int) -> str:
    """The classic bomb, lists of 9 aliases of lists of 9..., under a key the model does not
    know, sized to expand to just under `budget` nodes."""
    width = 9
    sizes = [1 + width]  # nodes of b0 expanded: the list and its scalars
    while 1 + width * sizes[-1] < budget // 20:
        sizes.append(1 + width * sizes[-1])
    lines = [f"b0: &b0 [{', '.join(['x'] * width)}]"]
    for level in range(1, len(sizes)):
        lines.append(f"b{level}: &b{level} [{', '.join([f'*b{level - 1}'] * width)}]")
    spent = sum(sizes) + 2 * len(sizes) + 2 + 1
    copies = (budget - spent - 100) // sizes[-1]
    lines.append(f"top: [{', '.join([f'*b{len(sizes) - 1}'] * copies)}]")
    body = "\n".join("  " + line for line in lines)
    return f"{HEADER}bomb:\n{body}\n"


def aliased_pools(budget: int) -> str:
    """One pool of 1,000 real servers, aliased into as many virtual servers as the node
    budget allows: a small valid file whose every expanded node the model validates."""
    pool_nodes = 1 + 1000 * 14  # the list; per server its mapping, 3 keys, check list and check
    services = (budget - 100) // (pool_nodes + 9)
    out = [
        HEADER,
        "virtual_servers:\n  - address: 192.0.2.10\n    port: 1000\n    protocol: TCP\n",
        "    real_servers: &pool\n",
        _real_servers(1000),
    ]
    out += [
        f"  - {{address: 192.0.2.10, port: {1000 + s}, protocol: TCP, real_servers: *pool}}\n"
        for s in range(1, services)
    ]
    return "".join(out)


def alias_real_servers(copies: int) -> str:
    """One real server repeated by alias: every copy is validated, then reported as a
    duplicate (the model walks all of it, and each copy is a located error)."""
    lines = [HEADER, "virtual_servers:\n  - address: 192.0.2.10\n    port: 80\n    protocol: TCP\n"]
    lines.append(
        "    real_servers:\n      - &rs {address: 10.0.0.1, weight: 5, checks: "
        "[{type: tcp, interval: 2s, rise: 2}]}\n"
    )
    lines += ["      - *rs\n"] * (copies - 1)
    return "".join(lines)


def comments(size: int) -> str:
    line = "# " + "x" * 77 + "\n"
    body = line * ((size - len(HEADER) - 64) // len(line))
    return HEADER + body


def deep(levels: int, chains: int) -> str:
    """`chains` chains of mappings nested exactly `levels` deep, the root counting as one."""
    chain = "{a: " * (levels - 2) + "1" + "}" * (levels - 2)
    return HEADER + "".join(f"deep{n}: {chain}\n" for n in range(chains))


def flat_numbers(size: int) -> str:
    """A flow list of numbers filling the size limit: more nodes than the budget, no alias."""
    head = HEADER + "numbers: ["
    return head + "1, " * ((size - len(head) - 8) // 3) + "1]\n"


def bad_addresses(budget: int) -> str:
    """Real servers whose addresses are all wrong, to the node budget: one error each."""
    out = [HEADER, "virtual_servers:\n  - address: 192.0.2.10\n    port: 80\n    protocol: TCP\n"]
    out.append("    real_servers:\n")
    out += [f"      - {{address: 10.0.{n % 250}.{n}.1}}\n" for n in range((budget - 100) // 3)]
    return "".join(out)


def cases() -> list[tuple[str, Callable[[], str]]]:
    return [
        ("valid, 5,000 real servers x TCP check", lambda: large_valid(5_000, 10)),
        ("valid, 10,000 real servers x TCP check", lambda: large_valid(10_000, 20)),
        ("alias bomb just under the node budget", lambda: alias_bomb(MAX_NODES)),
        ("alias bomb 9^9", lambda: alias_bomb(9**9)),
        ("valid, a 1,000-server pool aliased to the budget", lambda: aliased_pools(MAX_NODES)),
        ("one real server aliased 12,000 times", lambda: alias_real_servers(12_000)),
        ("16 MiB of comments (just under the size limit)", lambda: comments(DEFAULT_MAX_SIZE)),
        (f"depth {MAX_DEPTH} (the limit) x 5,000 chains", lambda: deep(MAX_DEPTH, 5_000)),
        ("16 MiB flow list of numbers", lambda: flat_numbers(DEFAULT_MAX_SIZE)),
        ("bad addresses, one error each, to the budget", lambda: bad_addresses(MAX_NODES)),
    ]


def _load(path: str, conn: multiprocessing.connection.Connection) -> None:
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        config = load_file(path)
        outcome = f"OK ({sum(len(vs.real_servers) for vs in config.virtual_servers)} real servers)"
    except ConfigError as exc:
        first = str(exc.problems[0]).split(": ", 1)[1][:90]
        outcome = f"{exc.total} problem(s): {first}"
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((elapsed, cpu, peak_kib, outcome))
    conn.close()


def measure(path: str) -> tuple[float, float, int, str]:
    """Load `path` in a forked child; its wall and CPU seconds, peak RSS (KiB) and outcome."""
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)
    process = context.Process(target=_load, args=(path, child_end))
    process.start()
    child_end.close()
    result: tuple[float, float, int, str] = parent_end.recv()
    process.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the best is shown")
    args = parser.parse_args()
    print(f"limits: {DEFAULT_MAX_SIZE} bytes, {MAX_NODES:,} nodes, depth {MAX_DEPTH}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'case':50} {'bytes':>10} {'wall s':>7} {'CPU s':>6} {'MiB':>5}  <2 s  outcome")
    over = 0
    with tempfile.TemporaryDirectory(prefix="lvsha-bench-") as tmp:
        for name, build in cases():
            path = Path(tmp) / "case.yaml"
            path.write_text(build())
            size = os.path.getsize(path)
            runs = [measure(str(path)) for _ in range(args.runs)]
            seconds, cpu, peak_kib, outcome = min(runs)
            ok = seconds < TARGET_SECONDS
            over += not ok
            print(
                f"{name:50} {size:>10} {seconds:>7.3f} {cpu:>6.3f} {peak_kib / 1024:>5.0f}  "
                f"{'yes' if ok else 'NO':>4}  {outcome[:70]}"
            )
    print(f"{over} case(s) over {TARGET_SECONDS:g} s")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
