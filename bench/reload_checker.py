"""How long the checker takes to apply a reload at 10,000 real servers, and how long it stalls
its event loop meanwhile.

    .venv/bin/python -m bench.reload_checker [--services 1000] [--per-service 10]

Runs the daemon's own `Checker` (check pool, maintenance watcher, IPVS syncer on the in-memory
table, sync daemon follower) on a configuration of `services` x `per-service` real servers with
one TCP check each (to 127.x.y.z, where one listener accepts them all: probes are cheap but
real, 2,000 a second at 10,000, first rounds spread over a 20 s warm-up). Then it applies,
as `ApplyConfig` messages from the parent would:

- `unchanged`: the same configuration again;
- `edit`: a virtual server inserted first (every index shifts), 1% of the weights changed,
  100 real servers removed and 100 added, one check's interval changed;
- `back`: the first configuration again (what a rollback does: stopped checks are revived).

For each it prints the whole apply (what the parent waits for), its parts (deriving the plan in
a thread, the pool's reconfigure on the loop, the IPVS pass), the IPVS operations issued, and
the event loop's largest lag during the apply, sampled every millisecond. Parsing and pickling
are the parent's work and are printed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

from lvsha.config import load_text
from lvsha.daemon import checker_process
from lvsha.daemon.checker_process import Checker
from lvsha.ipvs.memory import MemoryIpvsTable
from lvsha.ipvs.syncd import MemorySyncDaemons
from lvsha.messages import ApplyConfig

LISTENER = """
import socket
server = socket.socket()
server.bind(("0.0.0.0", 0))
server.listen(4096)
print(server.getsockname()[1], flush=True)
while True:
    server.accept()[0].close()
"""

P = ParamSpec("P")
R = TypeVar("R")


def real_server(
    service: int, index: int, check_port: int, weight: int = 1, interval: str | None = None
) -> str:
    address = f"127.{1 + service // 250}.{service % 250}.{1 + index}"
    timing = "" if interval is None else f", interval: {interval}"
    check = f"{{type: tcp, port: {check_port}{timing}}}"
    return f"      - {{address: {address}, port: 80, weight: {weight}, checks: [{check}]}}\n"


def virtual_server(service: int, body: str) -> str:
    return (
        f"  - name: vs{service}\n"
        f"    address: 192.0.2.{1 + service // 250}\n"
        f"    port: {1000 + service % 250}\n"
        "    protocol: TCP\n"
        "    forwarding: NAT\n"
        "    check_defaults: {interval: 5s, timeout: 1s, warmup: 20s}\n"
        "    real_servers:\n" + body
    )


def config_text(services: int, per_service: int, check_port: int, *, edited: bool = False) -> str:
    parts = ["virtual_servers:\n"]
    if edited:
        parts.append(virtual_server(services, real_server(services, 0, check_port)))
    for service in range(services):
        body = []
        for index in range(per_service):
            weight, interval = 1, None
            if edited:
                if service % 10 == 0 and index == 0:
                    weight = 2  # 1% of the weights
                if service == 1 and index == 1:
                    interval = "6s"  # one check's timing
                if service < 100 and index == per_service - 1:
                    continue  # 100 removed
            body.append(real_server(service, index, check_port, weight, interval))
        if edited and service < 100:
            body.append(real_server(service, per_service, check_port))  # 100 added
        parts.append(virtual_server(service, "".join(body)))
    return "".join(parts)


class Timed:
    """Wraps a callable, keeping the duration of its last call (awaited, if it returns an
    awaitable: see `atimed`)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Callable[P, R]) -> Callable[P, R]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds = time.perf_counter() - began

        return timed

    def wrap_async(
        self, function: Callable[P, Coroutine[None, None, R]]
    ) -> Callable[P, Coroutine[None, None, R]]:
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            began = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                self.seconds = time.perf_counter() - began

        return timed


async def max_lag(stop: asyncio.Event, period: float = 0.001) -> float:
    """The event loop's largest lateness on a `period` s timer until `stop` is set."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    while not stop.is_set():
        due = loop.time() + period
        await asyncio.sleep(period)
        worst = max(worst, loop.time() - due)
    return worst


async def run(services: int, per_service: int) -> None:
    # One listener on every loopback address answers every check (in a process of its own, so
    # it takes no time from the checker's): verdicts stay put, so every IPVS operation counted
    # during an apply is the reload's.
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert listener.stdout is not None
    check_port = int(listener.stdout.readline())
    began = time.perf_counter()
    first_text = config_text(services, per_service, check_port)
    first = load_text(first_text, max_size=len(first_text) + 1)
    print(f"configuration: {services} services x {per_service} real servers, one TCP check each")
    print(f"  parse and validate (the parent's work): {time.perf_counter() - began:.2f} s")
    table = MemoryIpvsTable()
    with tempfile.TemporaryDirectory() as directory:
        checker = Checker(first, table, MemorySyncDaemons(), Path(directory))
        began = time.perf_counter()
        await checker.start()
        print(f"  start (pool, first IPVS pass): {time.perf_counter() - began:.2f} s")
        gc.collect()
        gc.freeze()  # as the checker does once started
        reconfigure, derive = Timed(), Timed()
        checker.pool.reconfigure = reconfigure.wrap(checker.pool.reconfigure)  # type: ignore[method-assign]
        checker_process._derive_paced = derive.wrap_async(checker_process._derive_paced)
        edited_text = config_text(services, per_service, check_port, edited=True)
        edited = load_text(edited_text, max_size=len(edited_text) + 1)
        scenarios = [("unchanged", first_text, first), ("edit", edited_text, edited)]
        scenarios.append(("back", first_text, first))
        for generation, (name, text, config) in enumerate(scenarios, start=2):
            began = time.perf_counter()
            digest = hashlib.sha256(text.encode()).hexdigest()
            message = ApplyConfig.of(generation, digest, config)
            pickled = time.perf_counter() - began
            began = time.perf_counter()
            message.config()
            unpickled = time.perf_counter() - began
            before = dict(checker.syncer.operations)
            stop = asyncio.Event()
            lag = asyncio.create_task(max_lag(stop))
            await asyncio.sleep(0.01)
            began = time.perf_counter()
            answer = await checker.apply(message)
            applied = time.perf_counter() - began
            stop.set()
            worst = await lag
            operations = {
                kind: count - before.get(kind, 0)
                for kind, count in checker.syncer.operations.items()
                if count != before.get(kind, 0)
            }
            assert answer.ok, answer
            print(
                f"{name}: apply {applied * 1000:.0f} ms (unpickle {unpickled * 1000:.0f} ms, "
                f"derive in slices {derive.seconds * 1000:.0f} ms, pool reconfigure "
                f"{reconfigure.seconds * 1000:.0f} ms); largest event loop lag "
                f"{worst * 1000:.0f} ms; pickle (the parent's) {pickled * 1000:.0f} ms; "
                f"IPVS operations {operations or 'none'}"
            )
        await checker.stop()
    listener.kill()
    listener.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.reload_checker")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--per-service", type=int, default=10)
    args = parser.parse_args(argv)
    asyncio.run(run(args.services, args.per_service))


if __name__ == "__main__":
    main()
