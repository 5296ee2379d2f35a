"""`lvsha run` as a director in a lab host, for the daemon and interop tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

from lvsha.drill.lab import Host

REPO = Path(__file__).resolve().parents[2]


def vrrp_config(
    *,
    vrid: int,
    priority: int,
    vip: str,
    version: int = 3,
    interval: float = 0.1,
    preempt: bool = True,
    source: str | None = None,
    password: str | None = None,
) -> str:
    lines = [
        "vrrp_instances:",
        "  VI:",
        "    interface: eth0",
        f"    virtual_router_id: {vrid}",
        f"    priority: {priority}",
        f"    version: {version}",
        f"    advert_interval: {interval}",
        f"    preempt: {'true' if preempt else 'false'}",
        f"    virtual_ipaddresses: ['{vip}']",
        "    garp: {delay: 0}",
    ]
    if source is not None:
        lines.append(f"    mcast_src_ip: {source}")
    if password is not None:
        lines.append(f"    authentication: {{type: PASS, password: {password}}}")
    return "\n".join(lines) + "\n"


class Director:
    """One `lvsha run` in `host`, its log in a temp file; stopped by PID (group) on close."""

    def __init__(self, host: Host, config: str, vip: str) -> None:
        self.host = host
        self.vip = vip
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lvsha-director-{host.name}-"))
        # Gone with the Director, at the latest when the test session ends.
        weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        self.config_path = self.workdir / "lvsha.yaml"
        self.config_path.write_text(config)
        self.log_path = self.workdir / "lvsha.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = self.host.popen(
                sys.executable,
                "-m",
                "lvsha",
                "run",
                str(self.config_path),
                "--run-dir",
                str(self.workdir / "run"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )

    def holds_vip(self) -> bool:
        ip = self.vip.split("/")[0]
        return f" {ip}/" in self.host.ip("-o", "addr", "show", "dev", "eth0")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (graceful release) and wait; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def crash(self) -> None:
        """The whole director dies at once; its VIP goes with the 'host'."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.holds_vip():
            self.host.ip("addr", "del", self.vip, "dev", "eth0")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def child_pid(self, module: str) -> int | None:
        """The pid of the running child of this director's parent that runs `module`
        (e.g. lvsha.daemon.vrrp_process), or None."""
        assert self.process is not None
        parent = str(self.process.pid)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = stat[stat.rfind(")") + 2 :].split()[1]
            if ppid == parent and module.encode() in cmdline:
                return int(entry.name)
        return None

    def holds(self, address: str) -> bool:
        """Whether `address` (no prefix length) is on this director's eth0."""
        return f" {address}/" in self.host.ip("-o", "addr", "show", "dev", "eth0")


def start(
    directors: list[Director], host: Host, text: str, vip: str = "192.0.2.100/24"
) -> Director:
    """A director started on `host` with `text`, recorded in `directors` (the `directors`
    fixture kills each at the end and prints its log)."""
    director = Director(host, text, vip)
    directors.append(director)
    director.start()
    return director


def metric(director: Director, name: str, **labels: str) -> float:
    """One sample from the VRRP process's metrics file; 0 until it has been written."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    path = director.workdir / "run" / "metrics-vrrp.prom"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0
