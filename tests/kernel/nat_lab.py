"""A NAT director between a client subnet and a real-server subnet, on one lab switch."""

from __future__ import annotations

from collections.abc import Mapping

from lvsha.drill.lab import Lab

CLIENT = "192.0.2.50"
DIRECTOR_FRONT = "192.0.2.11"
DIRECTOR_BACK = "10.0.0.1"


def build_nat_lab(lab: Lab, real_servers: Mapping[str, str], *director_extra: str) -> Lab:
    """Hosts "dir" (with `director_extra` addresses besides its two), "client" and one per
    real server (name -> address), each real server routing through the director."""
    director = lab.add_host("dir", f"{DIRECTOR_FRONT}/24", f"{DIRECTOR_BACK}/24", *director_extra)
    director.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    # One switch carries both subnets: an ICMP redirect would send the real servers' replies
    # straight to the client, past the NAT that must rewrite their source to the VIP.
    for conf in ("all", "default", "eth0"):
        director.run("sysctl", "-qw", f"net.ipv4.conf.{conf}.send_redirects=0")
    for name, address in real_servers.items():
        server = lab.add_host(name, f"{address}/24")
        server.ip("route", "add", "default", "via", DIRECTOR_BACK)
        server.run("sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0")
    lab.add_host("client", f"{CLIENT}/24")
    return lab
