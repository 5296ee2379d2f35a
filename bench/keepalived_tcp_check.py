"""keepalived's TCP_CHECK against lvsha's check pool: CPU per 1,000 checks, in the same VM.

    .venv/bin/python -m bench.keepalived_tcp_check [--real-servers 100 --ports 1 --duration 30]

keepalived's checker needs ip_vs, which this machine's kernel lacks, so this boots the test VM
(`tests/vm/run_in_vm.py`: Debian's kernel, the host's files, no network device) and runs itself
there with `--in-vm`. Inside, one `bench.check_servers` process listens on the ports, and every
127.1.0.x address reaches it over loopback. Then, one after the other on those same targets:

* keepalived 2.2.7 with `--checkers` only: one virtual server per port, one real server per
  address, TCP_CHECK at delay_loop 1. Its checker process's CPU comes from /proc/<pid>/stat.
* lvsha's pool (`bench.check_runner`) on the equivalent config, interval 1 s.

keepalived reports no check count: its checks are the connections the target server accepted
in the measured period. lvsha's are the probes its pool completed in its period. The VM is
emulated (TCG): every figure is several times the host's, which is why both are measured in the
same VM and only their ratio carries over. The default is 100 checks: on this shared host one
emulated CPU ran lvsha's pool at 200 checks/s with about half of it to spare at best, and
saturated (probes hanging) when the host was busier; 1,000 would saturate it outright.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.check_runner import Figures

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_PORT = 20000
VIP = "10.0.0.1"
"""keepalived programs virtual servers at this address into the VM's IPVS table; nothing uses it."""
CONNECT_TIMEOUT = 2


@dataclass(frozen=True, slots=True)
class Measured:
    checks_per_second: float
    cpu_seconds: float
    seconds: float
    rss_max_kib: int

    @property
    def cpu_per_thousand(self) -> float:
        return self.cpu_seconds / (self.checks_per_second * self.seconds) * 1000


def real_server_addresses(count: int) -> list[str]:
    return [f"127.1.{index // 250}.{1 + index % 250}" for index in range(count)]


def keepalived_config(addresses: Sequence[str], ports: Sequence[int]) -> str:
    """Checkers only: no VRRP, no notification, no mail; the IPVS table of the VM only."""
    lines = ["global_defs {", "    router_id lvsha_bench", "}"]
    for port in ports:
        lines += [
            f"virtual_server {VIP} {port} {{",
            "    delay_loop 1",
            "    lb_algo rr",
            "    lb_kind NAT",
            "    protocol TCP",
        ]
        for address in addresses:
            lines += [
                f"    real_server {address} {port} {{",
                "        TCP_CHECK {",
                f"            connect_timeout {CONNECT_TIMEOUT}",
                "            retry 1",
                "            delay_before_retry 1",
                "        }",
                "    }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def lvsha_config(addresses: Sequence[str], ports: Sequence[int]) -> str:
    lines = [
        "global:",
        f"  check_defaults: {{interval: 1s, timeout: {CONNECT_TIMEOUT}s, retries: 1}}",
        "virtual_servers:",
    ]
    for port in ports:
        lines += [f"  - address: {VIP}", f"    port: {port}", "    protocol: TCP"]
        lines.append("    real_servers:")
        lines += [f"      - {{address: {a}, checks: [{{type: tcp}}]}}" for a in addresses]
    return "\n".join(lines) + "\n"


class TargetServer:
    """`bench.check_servers` on the ports; `accepted()` asks it for its count."""

    def __init__(self, ports: Sequence[int]):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.check_servers",
                "--tcp-ports",
                f"{ports[0]}-{ports[-1]}",
            ],
            stdout=subprocess.PIPE,
            cwd=str(REPO_ROOT),
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the target server did not start")

    def accepted(self) -> int:
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        line = self.process.stdout.readline().decode().split()
        return int(line[1])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _ticks_to_seconds(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name, which may hold spaces: utime and stime are 14 and 15.
        fields = stat.read().rpartition(")")[2].split()
    return _ticks_to_seconds(int(fields[11]) + int(fields[12]))


def process_rss_max_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def wait_for_pid_file(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            return int(text)
        time.sleep(0.1)
    raise TimeoutError(f"no pid in {path} within {timeout} s")


def measure_keepalived(
    workdir: Path,
    targets: TargetServer,
    addresses: Sequence[str],
    ports: Sequence[int],
    *,
    warmup: float,
    duration: float,
) -> Measured:
    config = workdir / "keepalived.conf"
    config.write_text(keepalived_config(addresses, ports))
    main_pid_file, checker_pid_file = workdir / "keepalived.pid", workdir / "checkers.pid"
    with open(workdir / "keepalived.log", "wb") as log:
        keepalived = subprocess.Popen(
            [
                "keepalived", "--checkers", "--dont-fork", "--log-console",
                "--use-file", str(config),
                "--pid", str(main_pid_file), "--checkers_pid", str(checker_pid_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        checker = wait_for_pid_file(checker_pid_file, 60)
        time.sleep(warmup)
        accepted_before, cpu_before = targets.accepted(), process_cpu_seconds(checker)
        began_at = time.monotonic()
        time.sleep(duration)
        accepted_after, cpu_after = targets.accepted(), process_cpu_seconds(checker)
        seconds = time.monotonic() - began_at
        rss = process_rss_max_kib(checker)
    finally:
        keepalived.send_signal(signal.SIGTERM)
        try:
            keepalived.wait(timeout=30)
        except subprocess.TimeoutExpired:
            keepalived.kill()
            keepalived.wait()
    return Measured(
        (accepted_after - accepted_before) / seconds, cpu_after - cpu_before, seconds, rss
    )


def measure_lvsha(
    workdir: Path,
    addresses: Sequence[str],
    ports: Sequence[int],
    warmup: float,
    duration: float,
) -> tuple[Measured, Figures]:
    config = workdir / "lvsha.yaml"
    config.write_text(lvsha_config(addresses, ports))
    done = subprocess.run(
        [
            sys.executable, "-m", "bench.check_runner", str(config),
            "--warmup", str(warmup), "--duration", str(duration),
        ],
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
        check=True,
    )  # fmt: skip
    figures = Figures(**json.loads(done.stdout))
    return (
        Measured(
            figures.completed / figures.seconds,
            figures.cpu_seconds,
            figures.seconds,
            figures.rss_max_kib,
        ),
        figures,
    )


def in_vm(real_servers: int, ports: int, warmup: float, duration: float) -> int:
    subprocess.run(["modprobe", "ip_vs"], check=True)
    addresses = real_server_addresses(real_servers)
    port_list = list(range(FIRST_PORT, FIRST_PORT + ports))
    checks = len(addresses) * len(port_list)
    print(
        f"{checks} TCP checks ({ports} virtual servers x {real_servers} real servers) at 1 s, "
        f"targets on loopback; {duration:g} s measured after {warmup:g} s; "
        f"CPUs: {os.cpu_count()}; kernel {os.uname().release}",
        flush=True,
    )
    version = subprocess.run(
        ["keepalived", "--version"], check=False, capture_output=True, text=True
    )
    print((version.stdout or version.stderr).splitlines()[0], flush=True)
    with tempfile.TemporaryDirectory(prefix="lvsha-bench-") as tmp:
        workdir = Path(tmp)
        targets = TargetServer(port_list)
        try:
            keepalived = measure_keepalived(
                workdir, targets, addresses, port_list, warmup=warmup, duration=duration
            )
            lvsha, figures = measure_lvsha(workdir, addresses, port_list, warmup, duration)
        finally:
            targets.stop()
    print(f"{'':<28} {'keepalived checker':>20} {'lvsha pool':>12}")
    rows = [
        ("checks/s", f"{keepalived.checks_per_second:.1f}", f"{lvsha.checks_per_second:.1f}"),
        ("CPU s in period", f"{keepalived.cpu_seconds:.2f}", f"{lvsha.cpu_seconds:.2f}"),
        (
            "CPU s per 1,000 checks",
            f"{keepalived.cpu_per_thousand:.3f}",
            f"{lvsha.cpu_per_thousand:.3f}",
        ),
        (
            "RSS max",
            f"{keepalived.rss_max_kib / 1024:.1f} MiB",
            f"{lvsha.rss_max_kib / 1024:.1f} MiB",
        ),
    ]
    for label, theirs, ours in rows:
        print(f"{label:<28} {theirs:>20} {ours:>12}")
    print(
        f"lvsha lateness in the VM: p50 {figures.lateness_p50 * 1000:.1f} ms, "
        f"p99 {figures.lateness_p99 * 1000:.1f} ms; unhealthy at end: {figures.unhealthy_at_end}"
    )
    if keepalived.cpu_per_thousand > 0:
        ratio = lvsha.cpu_per_thousand / keepalived.cpu_per_thousand
        print(f"lvsha / keepalived CPU per check: {ratio:.1f}x")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--real-servers", type=int, default=100)
    parser.add_argument("--ports", type=int, default=1, help="virtual servers, one per port")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--in-vm", action="store_true", help="the guest side (needs ip_vs)")
    args = parser.parse_args(argv)
    if args.in_vm:
        return in_vm(args.real_servers, args.ports, args.warmup, args.duration)
    guest = [
        "env", "PYTHONDONTWRITEBYTECODE=1", sys.executable, "-m", "bench.keepalived_tcp_check",
        "--in-vm", "--real-servers", str(args.real_servers), "--ports", str(args.ports),
        "--warmup", str(args.warmup), "--duration", str(args.duration),
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "vm" / "run_in_vm.py"), "--", *guest],
        check=False,
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
