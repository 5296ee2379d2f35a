"""Start-up cost (issue 11): the CLI, `lvsha run` up to the VRRP child in BACKUP, a crashed
VRRP child back in BACKUP, and each process's memory.

    .venv/bin/python -m bench.startup [--runs 10]

Each figure is the median of `runs` wall-clock runs, printed beside its target:
- `lvsha --version` and `lvsha check-config conf/nat-master.yaml` (no root needed);
- spawn of `lvsha run --dry-run` to the VRRP child's "INITIALIZE -> BACKUP" line, read from
  the daemon's stderr as it is written (root: the daemon runs in a throwaway lab of network
  namespaces named su-*, removed at the end; one VRRP instance at 1 s, which stays BACKUP for
  its Master_Down_Interval, and one virtual server with a TCP check, so a checker runs);
- SIGKILL of that VRRP child, once the parent reported ready, to its successor's BACKUP line;
- VmRSS of the parent, the VRRP child and the checker child once ready (target: the VRRP
  child under 30 MiB).

Python runs with bytecode caching (in a temporary PYTHONPYCACHEPREFIX, warmed by one run
first), as an installed lvsha would; this repository's environment sets
PYTHONDONTWRITEBYTECODE, which makes every start compile lvsha's sources again. The import-time
top 10 (`python -X importtime`, cumulative) of `lvsha --version` and of the VRRP child's module
show where start-up goes. The load average is printed before and after: the machine is shared.
Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lvsha.drill.lab import Host, Lab

REPO = Path(__file__).resolve().parents[1]
LVSHA = Path(sys.executable).with_name("lvsha")
MIB = 1024 * 1024

CONFIG = """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 61
    priority: 100
    version: 3
    advert_interval: 1
    virtual_ipaddresses: ['192.0.2.100/24']
virtual_servers:
  - address: 192.0.2.100
    port: 80
    protocol: TCP
    real_servers:
      - address: 192.0.2.50
        port: 80
        checks: [{type: tcp, interval: 5, timeout: 1}]
"""

BACKUP_LINE = "INITIALIZE -> BACKUP"
READY_LINE = "lvsha.supervisor: ready"
CHILD_STARTED = re.compile(r"(vrrp|checker) child started \(pid (\d+)\)")
LINE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Target:
    what: str
    limit: float
    unit: str


VERSION = Target("lvsha --version", 0.100, "s")
CHECK_CONFIG = Target("lvsha check-config conf/nat-master.yaml", 0.250, "s")
SPAWN = Target("spawn of lvsha run to the VRRP child in BACKUP", 0.400, "s")
RESTART = Target("kill -9 of the VRRP child to its successor in BACKUP", 0.300, "s")
VRRP_RSS = Target("VmRSS of the VRRP child", 30 * MIB, "B")


def environment(pycache: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPYCACHEPREFIX=pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall(argv: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def import_top(argv: Sequence[str], env: dict[str, str], count: int = 10) -> list[str]:
    """The `count` imports with the largest cumulative time (µs) under -X importtime."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].strip()))
    return [f"{us / 1000:7.1f} ms  {name}" for us, name in sorted(rows, reverse=True)[:count]]


def rss(pid: int) -> int:
    """VmRSS of `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


class Daemon:
    """One `lvsha run` in a lab host; its stderr read line by line as it comes."""

    def __init__(self, host: Host, workdir: Path, env: dict[str, str]) -> None:
        config = workdir / "lvsha.yaml"
        config.write_text(CONFIG)
        self.lines: list[str] = []
        self.started = time.perf_counter()
        self.process = host.popen(
            sys.executable, "-m", "lvsha", "run", str(config),
            "--run-dir", str(workdir / "run"), "--dry-run",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stderr, selectors.EVENT_READ)
        self._partial = b""

    def wait_for(self, wanted: Callable[[str], bool], what: str) -> float:
        """perf_counter() when the first line from now on that `wanted` accepts was read."""
        deadline = time.monotonic() + LINE_TIMEOUT
        assert self.process.stderr is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {LINE_TIMEOUT} s:\n" + "\n".join(self.lines))
            if not self._selector.select(left):
                continue
            now = time.perf_counter()
            chunk = self.process.stderr.read()
            if not chunk:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"lvsha exited waiting for {what}:\n" + "\n".join(self.lines)
                    )
                continue
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            found = False
            for raw in complete:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                found = found or wanted(line)
            if found:
                return now

    def children(self) -> dict[str, int]:
        """The last pid each child was started with."""
        found: dict[str, int] = {}
        for line in self.lines:
            match = CHILD_STARTED.search(line)
            if match:
                found[match.group(1)] = int(match.group(2))
        return found

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._selector.close()
        assert self.process.stderr is not None
        self.process.stderr.close()


@dataclass
class DaemonRun:
    spawn: float
    restart: float
    rss: dict[str, int]


def one_daemon_run(host: Host, env: dict[str, str]) -> DaemonRun:
    with tempfile.TemporaryDirectory(prefix="su-startup-") as tmp:
        daemon = Daemon(host, Path(tmp), env)
        try:
            backup = daemon.wait_for(lambda line: BACKUP_LINE in line, "BACKUP")
            spawn = backup - daemon.started
            # The parent reports ready once every child is: the VRRP child ran, and a crash
            # from now on is one of a child that was up.
            daemon.wait_for(lambda line: READY_LINE in line, "ready")
            pids = {"parent": daemon.process.pid, **daemon.children()}
            sizes = {name: rss(pid) for name, pid in pids.items()}
            killed = time.perf_counter()
            os.kill(pids["vrrp"], signal.SIGKILL)
            back = daemon.wait_for(lambda line: BACKUP_LINE in line, "BACKUP after the kill")
            return DaemonRun(spawn, back - killed, sizes)
        finally:
            daemon.stop()


def verdict(target: Target, value: float) -> bool:
    holds = value < target.limit
    if target.unit == "B":
        shown = f"{value / MIB:6.1f} MiB   target < {target.limit / MIB:g} MiB"
    else:
        shown = f"{value * 1000:6.0f} ms    target < {target.limit * 1000:g} ms"
    print(f"  {target.what:56} {shown}  {'HOLDS' if holds else 'FAILS'}")
    return holds


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="runs per figure (median)")
    args = parser.parse_args(argv)
    print(f"load average before: {load()}; {os.cpu_count()} CPUs; median of {args.runs} runs")
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="su-pycache-") as pycache:
        env = environment(pycache)
        version = [str(LVSHA), "--version"]
        check = [str(LVSHA), "check-config", "conf/nat-master.yaml"]
        wall(check, env)  # warm: write the bytecode
        wall([sys.executable, "-c", "import lvsha.daemon.vrrp_process, lvsha.daemon.run"], env)
        print("\nCLI (wall time):")
        for target, command in ((VERSION, version), (CHECK_CONFIG, check)):
            times = [wall(command, env) for _ in range(args.runs)]
            results.append(verdict(target, statistics.median(times)))
        print("\nimport time top 10, lvsha --version (cumulative):")
        for row in import_top(["-m", "lvsha", "--version"], env):
            print(f"  {row}")
        print("import time top 10, the VRRP child's module (cumulative):")
        for row in import_top(["-c", "import lvsha.daemon.vrrp_process"], env):
            print(f"  {row}")
        if os.geteuid() != 0:
            print("\nlvsha run: SKIPPED (needs root for network namespaces)")
        else:
            runs = []
            with Lab(f"su{secrets.token_hex(2)}") as lab:
                host = lab.add_host("a", "192.0.2.11/24")
                one_daemon_run(host, env)  # warm
                runs = [one_daemon_run(host, env) for _ in range(args.runs)]
            print("\nlvsha run --dry-run in a namespace (wall time, stderr lines as read):")
            results.append(verdict(SPAWN, statistics.median(r.spawn for r in runs)))
            results.append(verdict(RESTART, statistics.median(r.restart for r in runs)))
            print("\nmemory once ready (VmRSS, median):")
            for name in ("parent", "vrrp", "checker"):
                size = statistics.median(r.rss[name] for r in runs if name in r.rss)
                if name == "vrrp":
                    results.append(verdict(VRRP_RSS, size))
                else:
                    print(f"  VmRSS of the {name:48} {size / MIB:6.1f} MiB")
    print(f"\nload average after: {load()}")
    failed = results.count(False)
    print(f"{len(results) - failed} of {len(results)} targets hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
