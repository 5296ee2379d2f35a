"""Capture keepalived's VRRP adverts on a veth pair and write them as golden JSON fixtures.

Run as root:  .venv/bin/python -m tests.tools.capture_keepalived_adverts [--out DIR]

For each scenario it builds two network namespaces joined by a veth pair, runs keepalived
(VRRP subsystem only, foreground, temp config and pid files) in one, captures with tcpdump in
the other, and decodes the captured advert with scapy's VRRP layers, never with lvsha, so the
fixtures check lvsha's codec against an independent reading. Namespaces are removed and the
processes it started are stopped by PID even when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scapy
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.utils import rdpcap

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "unit" / "vrrp" / "fixtures"
ADVERTS_PER_CAPTURE = 3
# Fixed MACs give the IPv6 side a stable link-local source address across runs.
KEEPALIVED_MAC = "02:00:00:00:5e:01"
CAPTURE_MAC = "02:00:00:00:5e:02"
KEEPALIVED_IPV4 = "192.0.2.1/24"
CAPTURE_IPV4 = "192.0.2.2/24"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    instance_body: str
    """The vrrp_instance lines after `interface`, indented by four spaces."""
    timeout: float


SCENARIOS = (
    Scenario(
        name="v2_ipv4",
        description="VRRPv2 over IPv4, no authentication, three VIPs, priority 150, 2 s interval",
        instance_body="""\
    state MASTER
    virtual_router_id 51
    priority 150
    advert_int 2
    version 2
    virtual_ipaddress {
        192.0.2.10/24
        192.0.2.11/24
        192.0.2.12/24
    }
""",
        timeout=30.0,
    ),
    Scenario(
        name="v2_ipv4_auth_pass",
        description="VRRPv2 over IPv4, auth_type PASS (6-character password), two VIPs",
        instance_body="""\
    state MASTER
    virtual_router_id 52
    priority 200
    advert_int 1
    version 2
    authentication {
        auth_type PASS
        auth_pass s3cret
    }
    virtual_ipaddress {
        192.0.2.20/24
        192.0.2.21/24
    }
""",
        timeout=20.0,
    ),
    Scenario(
        name="v3_ipv4",
        description="VRRPv3 over IPv4, four VIPs, priority 120, 0.5 s interval",
        instance_body="""\
    state MASTER
    virtual_router_id 53
    priority 120
    advert_int 0.5
    version 3
    virtual_ipaddress {
        192.0.2.30/24
        192.0.2.31/24
        192.0.2.32/24
        192.0.2.33/24
    }
""",
        timeout=20.0,
    ),
    Scenario(
        name="v3_ipv6",
        description="VRRPv3 over IPv6, three VIPs, priority 90, 0.75 s interval",
        instance_body="""\
    state MASTER
    virtual_router_id 54
    priority 90
    advert_int 0.75
    version 3
    virtual_ipaddress {
        2001:db8:0:1::10/64
        2001:db8:0:1::11/64
        2001:db8:0:1::12/64
    }
""",
        timeout=20.0,
    ),
)


def run(*command: str) -> str:
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return result.stdout


def tool_version(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).splitlines()[0].strip()


def wait_for(condition: Any, deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a process this tool started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def kill_vrrp_child(pidfile: Path) -> None:
    """keepalived's VRRP child should exit with its parent; make sure, by the PID it wrote."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return
    if comm == "keepalived":
        os.kill(pid, signal.SIGKILL)


def decode_with_scapy(frame: bytes) -> dict[str, Any]:
    """Read an Ethernet frame's IP and VRRP fields with scapy's layers (independent of lvsha)."""
    ethernet: Any = Ether(frame)
    # Slice by the IP length fields so Ethernet padding never reaches the VRRP layer.
    if IP in ethernet:
        ip_bytes = frame[14 : 14 + ethernet[IP].len]
        ip_layer: Any = IP(ip_bytes)
        rebuilt: Any = IP(ip_bytes)
        hop_limit = ip_layer.ttl
    else:
        ip_bytes = frame[14 : 14 + 40 + ethernet[IPv6].plen]
        ip_layer = IPv6(ip_bytes)
        rebuilt = IPv6(ip_bytes)
        hop_limit = ip_layer.hlim
    vrrp: Any = ip_layer[VRRPv3] if VRRPv3 in ip_layer else ip_layer[VRRP]
    payload = bytes(vrrp)
    if not ip_bytes.endswith(payload):
        raise RuntimeError("scapy's VRRP layer is not the tail of the IP packet")
    # Have scapy recompute the checksum on a copy and confirm it equals what keepalived sent.
    copy: Any = rebuilt[VRRPv3] if VRRPv3 in rebuilt else rebuilt[VRRP]
    copy.chksum = None
    recomputed = int.from_bytes(bytes(rebuilt)[-len(payload) :][6:8], "big")
    if recomputed != vrrp.chksum:
        raise RuntimeError(
            f"scapy recomputes checksum {recomputed:#06x}, wire has {vrrp.chksum:#06x}"
        )
    fields: dict[str, Any] = {
        "version": vrrp.version,
        "type": vrrp.type,
        "vrid": vrrp.vrid,
        "priority": vrrp.priority,
        "address_count": vrrp.ipcount,
        "checksum": vrrp.chksum,
        "addresses": [str(address) for address in vrrp.addrlist],
    }
    if vrrp.version == 2:
        fields["auth_type"] = vrrp.authtype
        fields["advert_interval"] = vrrp.adv
        fields["advert_interval_seconds"] = float(vrrp.adv)
        fields["auth_data_hex"] = (
            vrrp.auth1.to_bytes(4, "big") + vrrp.auth2.to_bytes(4, "big")
        ).hex()
    else:
        fields["reserved"] = vrrp.res
        fields["advert_interval"] = vrrp.adv
        fields["advert_interval_seconds"] = vrrp.adv / 100
    return {
        "family": 4 if IP in ethernet else 6,
        "source": str(ip_layer.src),
        "destination": str(ip_layer.dst),
        "ttl": hop_limit,
        "payload_hex": payload.hex(),
        "fields": fields,
    }


def capture(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    prefix = f"lvcap{tag}"
    keepalived_ns, capture_ns = f"{prefix}-ka", f"{prefix}-cap"
    keepalived_link, capture_link = f"{prefix}k", f"{prefix}c"
    config_path = workdir / f"{scenario.name}.conf"
    pcap_path = workdir / f"{scenario.name}.pcap"
    log_path = workdir / f"{scenario.name}.keepalived.log"
    tcpdump_err = workdir / f"{scenario.name}.tcpdump.err"
    pidfiles = {flag: workdir / f"{scenario.name}.{flag[1]}.pid" for flag in ("-p", "-r", "-c")}
    config = (
        "global_defs {\n"
        "    router_id lvsha_capture\n"
        "}\n\n"
        f"vrrp_instance {scenario.name} {{\n"
        f"    interface {keepalived_link}\n" + scenario.instance_body + "}\n"
    )
    config_path.write_text(config)
    keepalived_command = [
        "keepalived",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
        "--dont-respawn",
        "-f",
        str(config_path),
        *(item for flag, path in pidfiles.items() for item in (flag, str(path))),
    ]
    tcpdump: subprocess.Popen[bytes] | None = None
    keepalived: subprocess.Popen[bytes] | None = None
    namespaces: list[str] = []
    try:
        for namespace in (keepalived_ns, capture_ns):
            run("ip", "netns", "add", namespace)
            namespaces.append(namespace)
        run(
            "ip",
            "link",
            "add",
            keepalived_link,
            "netns",
            keepalived_ns,
            "address",
            KEEPALIVED_MAC,
            "type",
            "veth",
            "peer",
            "name",
            capture_link,
            "netns",
            capture_ns,
            "address",
            CAPTURE_MAC,
        )
        for namespace, link, address in (
            (keepalived_ns, keepalived_link, KEEPALIVED_IPV4),
            (capture_ns, capture_link, CAPTURE_IPV4),
        ):
            # No duplicate address detection: keepalived needs the link-local address at once.
            run(
                "ip",
                "netns",
                "exec",
                namespace,
                "sysctl",
                "-qw",
                f"net.ipv6.conf.{link}.accept_dad=0",
            )
            run("ip", "-n", namespace, "address", "add", address, "dev", link)
            run("ip", "-n", namespace, "link", "set", link, "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")

        with tcpdump_err.open("wb") as err:
            tcpdump = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    capture_ns,
                    "tcpdump",
                    "-i",
                    capture_link,
                    "-n",
                    "-U",
                    "-c",
                    str(ADVERTS_PER_CAPTURE),
                    "-w",
                    str(pcap_path),
                    "ip proto 112 or ip6 proto 112",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 10
        wait_for(lambda: b"listening on" in tcpdump_err.read_bytes(), deadline, "tcpdump")

        with log_path.open("wb") as log:
            keepalived = subprocess.Popen(
                ["ip", "netns", "exec", keepalived_ns, *keepalived_command],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            tcpdump.wait(timeout=scenario.timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{scenario.name}: fewer than {ADVERTS_PER_CAPTURE} adverts in "
                f"{scenario.timeout} s; keepalived log:\n{log_path.read_text()}"
            ) from None
        if tcpdump.returncode != 0:
            raise RuntimeError(f"tcpdump failed: {tcpdump_err.read_text()}")
    finally:
        stop(keepalived)
        kill_vrrp_child(pidfiles["-r"])
        stop(tcpdump)
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "del", namespace], check=False)

    tcpdump_lines = run("tcpdump", "-n", "-v", "-r", str(pcap_path)).splitlines()
    frames = [bytes(frame) for frame in rdpcap(str(pcap_path))]
    captured = [decode_with_scapy(frame) for frame in frames]
    last = captured[-1]
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "keepalived_version": tool_version("keepalived", "--version"),
        "keepalived_command": ["ip", "netns", "exec", "<namespace>", *keepalived_command],
        "keepalived_config": config,
        "decoded_with": f"scapy {_scapy_version()} (scapy.layers.vrrp)",
        "captured_with": tool_version("tcpdump", "--version"),
        "adverts_captured": len(frames),
        "identical_payloads": len({item["payload_hex"] for item in captured}) == 1,
        "family": last["family"],
        "source": last["source"],
        "destination": last["destination"],
        "ttl": last["ttl"],
        "vrrp_payload_hex": last["payload_hex"],
        "fields": last["fields"],
        "tcpdump_lines": tcpdump_lines,
        "keepalived_log": log_path.read_text(errors="replace").splitlines(),
    }


def _scapy_version() -> str:
    return str(scapy.VERSION)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR, help="fixture directory")
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("capture_keepalived_adverts: needs root (network namespaces)", file=sys.stderr)
        return 2
    arguments.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lvsha-capture-") as temp:
        for scenario in SCENARIOS:
            if arguments.only and scenario.name not in arguments.only:
                continue
            fixture = capture(scenario, Path(temp))
            target = arguments.out / f"{scenario.name}.json"
            target.write_text(json.dumps(fixture, indent=2) + "\n")
            print(f"{target}: {fixture['tcpdump_lines'][-2:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
