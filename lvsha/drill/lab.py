"""Build throwaway labs of network namespaces: hosts on one switch (or more), and tear them down.

Every namespace and link name starts with the lab's prefix, links are created inside the
namespaces (never in the caller's), and `close()` kills the processes the lab started (by
PID) and deletes its namespaces, which removes their links with them. Used by `lvsha drill`
and by the tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and what it printed."""


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass
class Host:
    """One namespace with an `eth0` on a lab switch (the lab's first unless `switch` names
    another), and any further interfaces `attach` gives it."""

    lab: Lab
    name: str
    namespace: str
    switch_port: str
    addresses: list[str] = field(default_factory=list)
    switch: str = ""
    """The namespace of the switch `eth0` is plugged into; "" for the lab's first."""

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command]

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(command), capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise LabError(
                f"{self.name}: {' '.join(command)} exited {done.returncode}: {done.stderr.strip()}"
            )
        return done

    def popen(self, *command: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a process in this host; the lab ends it (by PID) on close."""
        process = subprocess.Popen(self.argv(command), **kwargs)  # type: ignore[call-overload]
        self.lab.processes.append(process)
        assert isinstance(process, subprocess.Popen)
        return process

    def ip(self, *args: str) -> str:
        return ip("-n", self.namespace, *args)

    def link_up(self, up: bool) -> None:
        """Cut or restore this host's cable: its eth0 sees carrier go down or up."""
        switch = self.switch or self.lab.switch
        ip("-n", switch, "link", "set", self.switch_port, "up" if up else "down")

    def attach(self, switch: str, interface: str, *addresses: str) -> None:
        """Plug a further interface `interface` ("eth1") into `switch` (Lab.add_switch),
        carrying `addresses`, and bring it up."""
        self.lab.plug(self.namespace, switch, f"p-{self.name}-{interface}"[:15], interface)
        self.lab.address(self.namespace, interface, addresses)

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` in a thread that has joined this host's namespace."""
        return in_namespace(self.namespace, function)


class Lab:
    """Hosts on one bridge, in namespaces named `<prefix>-<host>`."""

    def __init__(self, prefix: str | None = None) -> None:
        # Interface names are at most 15 bytes: keep the prefix short.
        self.prefix = prefix or f"lv{secrets.token_hex(3)}"
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []
        self.switch = self.add_switch("sw")

    def add_switch(self, name: str) -> str:
        """A bridge in a namespace of its own, `<prefix>-<name>`, for one more L2 segment;
        returns that namespace's name, for `add_host(switch=...)` and `Host.attach`."""
        switch = f"{self.prefix}-{name}"
        self._add_namespace(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        # Without this the bridge floods multicast (VRRP) only after a querier shows up.
        ip("-n", switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", switch, "link", "set", "br0", "up")
        return switch

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, *addresses: str, switch: str | None = None) -> Host:
        """A namespace with `eth0` on the switch (the first, or `switch` from add_switch)
        carrying `addresses` ("192.0.2.1/24")."""
        namespace = f"{self.prefix}-{name}"
        port = f"p-{name}"[:15]
        self._add_namespace(namespace)
        self.plug(namespace, switch or self.switch, port, "eth0")
        self.address(namespace, "eth0", addresses)
        host = Host(self, name, namespace, port, list(addresses), switch or "")
        self.hosts[name] = host
        return host

    def plug(self, namespace: str, switch: str, port: str, interface: str) -> None:
        """A veth pair: `port` on `switch`'s bridge, `interface` in `namespace`."""
        ip(
            "-n", switch, "link", "add", port, "type", "veth",
            "peer", "name", interface, "netns", namespace,
        )  # fmt: skip
        ip("-n", switch, "link", "set", port, "master", "br0", "up")

    @staticmethod
    def address(namespace: str, interface: str, addresses: Sequence[str]) -> None:
        """Put `addresses` on `interface` in `namespace` and bring it up."""
        for address in addresses:
            family = "-6" if ":" in address else "-4"
            extra = ["nodad"] if family == "-6" else []
            ip("-n", namespace, family, "addr", "add", address, "dev", interface, *extra)
        ip("-n", namespace, "link", "set", interface, "up")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        errors = []
        for name in reversed(self._namespaces):
            done = subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            if done.returncode != 0 and os.path.exists(f"/run/netns/{name}"):
                errors.append(name)
        self._namespaces.clear()
        if errors:
            raise LabError(f"could not delete namespaces {errors}")

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def lab(prefix: str | None = None) -> Iterator[Lab]:
    built = Lab(prefix)
    try:
        yield built
    finally:
        built.close()


def in_namespace(namespace: str, function: Callable[[], T]) -> T:
    """Call `function` in a new thread that has entered `namespace`, and return its result.

    setns() moves only the calling thread, so the caller's own namespace is untouched;
    sockets opened inside `function` stay in `namespace` for their whole life.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            with open(f"/run/netns/{namespace}", "rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({namespace}) failed")
            outcome.append(function())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.01, what: str = ""
) -> None:
    """Poll `predicate` until it holds; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout} s: {what or predicate}")
        time.sleep(interval)
