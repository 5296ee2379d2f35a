"""Run a command inside a throwaway qemu VM whose kernel has real IPVS.

This machine's kernel has no ``ip_vs``; Debian's ``linux-image-amd64`` does. virtme-ng
(``vng``) boots that kernel under qemu with the host's root filesystem mounted read-only
(writes to /tmp, /etc, /var, ... go to a throwaway overlay), so the project's venv runs
unchanged inside. The VM gets no network device; loopback and namespaces inside it work.

Default command: the project's pytest over ``tests/kernel`` with ``-m kernel``.
Anything after ``--`` replaces it and is run by the guest's shell, from the repository root::

    python3 tests/vm/run_in_vm.py                       # kernel tests
    python3 tests/vm/run_in_vm.py -- ipvsadm -Ln        # any command
    python3 tests/vm/run_in_vm.py --cpus 2 -- .venv/bin/pytest -m kernel tests/kernel -k ipv6

The exit code is the guest command's (vng returns it); 124 if ``--timeout`` expires.
Needs root, and on the host: qemu-system-x86, busybox-static, udev (the guest init needs
udevd to name the virtio-serial ports that carry the command's output and exit code),
linux-image-amd64, and virtme-ng in the project's venv.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
IP_VS_MODULE_DIR = Path("kernel/net/netfilter/ipvs")
TIMEOUT_EXIT_CODE = 124


def default_guest_command() -> list[str]:
    # The guest sees the checkout read-only: no cache or bytecode writes into it.
    return [
        "env",
        "PYTHONDONTWRITEBYTECODE=1",
        str(VENV_BIN / "python"),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-m",
        "kernel",
        "tests/kernel",
    ]


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Order kernel versions naturally: 6.1.0-56 after 6.1.0-9."""
    return tuple(
        (int(part), "") if part.isdigit() else (-1, part)
        for part in re.findall(r"\d+|[^\d.\-+~_]+", version)
    )


def has_ip_vs(modules_root: Path, version: str) -> bool:
    module_dir = modules_root / version / IP_VS_MODULE_DIR
    # Without modules.dep, modprobe inside the guest cannot resolve ip_vs's dependencies.
    if not (modules_root / version / "modules.dep").is_file():
        return False
    return module_dir.is_dir() and any(module_dir.glob("ip_vs.ko*"))


def find_kernel(boot: Path = Path("/boot"), modules_root: Path = Path("/lib/modules")) -> Path:
    """The newest /boot/vmlinuz-<version> whose modules include ip_vs."""
    candidates = [
        image
        for image in boot.glob("vmlinuz-*")
        if has_ip_vs(modules_root, image.name.removeprefix("vmlinuz-"))
    ]
    if not candidates:
        raise LookupError(
            f"no {boot}/vmlinuz-* with an ip_vs module under {modules_root}; "
            "install one with: apt-get install linux-image-amd64"
        )
    return max(candidates, key=lambda image: version_key(image.name.removeprefix("vmlinuz-")))


def find_vng() -> Path:
    venv_vng = VENV_BIN / "vng"
    if venv_vng.is_file():
        return venv_vng
    found = shutil.which("vng")
    if found is None:
        raise LookupError(
            f"vng not found in {VENV_BIN} nor on PATH; install it with: "
            f"{VENV_BIN / 'pip'} install virtme-ng"
        )
    return Path(found)


def vng_command(
    vng: Path, kernel: Path, guest_command: Sequence[str], cpus: int, memory: str
) -> list[str]:
    # No --network option: vng then gives qemu "-net none", so the guest has only loopback.
    # "2>&1" keeps the guest's stdout and stderr in order on one channel.
    script = shlex.join(guest_command) + " 2>&1"
    return [
        str(vng),
        "--disable-kvm",
        "--run",
        str(kernel),
        "--cpus",
        str(cpus),
        "--memory",
        memory,
        "--cwd",
        str(REPO_ROOT),
        "--exec",
        script,
    ]


def relay(source: IO[bytes], sink: BinaryIO) -> None:
    for chunk in iter(lambda: os.read(source.fileno(), 65536), b""):
        sink.write(chunk)
        sink.flush()


def run(command: Sequence[str], timeout: float) -> int:
    """Run vng with its output relayed through pipes and return its exit code.

    qemu reopens /proc/self/fd/1 and /proc/self/fd/2 for the guest's output channels; if
    those were regular files, each channel would write from offset 0 over the others.
    Pipes keep every byte, so the output is relayed from pipes even when ours is a file.
    """
    env = dict(os.environ)
    # vng starts its helpers (virtme-run) by name.
    env["PATH"] = f"{Path(command[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    relays = [
        threading.Thread(target=relay, args=(process.stdout, sys.stdout.buffer), daemon=True),
        threading.Thread(target=relay, args=(process.stderr, sys.stderr.buffer), daemon=True),
    ]
    for thread in relays:
        thread.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The session holds only vng and the qemu it started.
        os.killpg(process.pid, 9)
        process.wait()
        code = TIMEOUT_EXIT_CODE
        sys.stderr.write(f"run_in_vm: timed out after {timeout:g} s\n")
    for thread in relays:
        thread.join()
    # A signal death (negative code) becomes the shell's 128 + signal number.
    return code if code >= 0 else 128 - code


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a command (default: the kernel tests) in a VM with real IPVS."
    )
    parser.add_argument("--kernel", type=Path, help="kernel image (default: newest with ip_vs)")
    # One vCPU by default: TCG burns a host core per vCPU and the host is shared.
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--memory", default="2G")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds (default 900)")
    parser.add_argument("command", nargs="*", help="guest command, after --")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        kernel = args.kernel if args.kernel is not None else find_kernel()
        vng = find_vng()
    except LookupError as error:
        sys.stderr.write(f"run_in_vm: {error}\n")
        return 2
    guest_command = args.command or default_guest_command()
    command = vng_command(vng, kernel, guest_command, args.cpus, args.memory)
    sys.stderr.write(f"run_in_vm: booting {kernel} to run: {shlex.join(guest_command)}\n")
    sys.stderr.flush()
    return run(command, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
