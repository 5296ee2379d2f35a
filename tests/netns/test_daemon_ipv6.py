"""IPv6 end to end: two `lvsha run` directors with a VRRPv3 instance over IPv6, and a client
whose neighbour cache must follow the VIP to the new master through the unsolicited neighbour
advertisement of the takeover path (issue 11: the NA goes out in the same callback as the add).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns.director import Director, vrrp_config

pytestmark = pytest.mark.netns

VIP6 = "2001:db8::100/64"
VIP6_ADDRESS = VIP6.split("/", maxsplit=1)[0]


def mac_of(host: Host) -> str:
    (link,) = json.loads(host.ip("-j", "link", "show", "dev", "eth0"))
    return str(link["address"])


def cached_mac(client: Host, address: str) -> str | None:
    """The link-layer address the client's neighbour cache has for `address`, if any."""
    for entry in json.loads(client.ip("-6", "-j", "neigh", "show", "dev", "eth0")):
        if entry.get("dst") == address and "lladdr" in entry:
            return str(entry["lladdr"])
    return None


@pytest.fixture
def pair(lab: Lab) -> Iterator[tuple[Director, Director, Host]]:
    client = lab.add_host("c", "2001:db8::1/64")
    directors = []
    for name, number, priority in (("a", 11, 150), ("b", 12, 100)):
        host = lab.add_host(name, f"2001:db8::{number}/64")
        directors.append(Director(host, vrrp_config(vrid=46, priority=priority, vip=VIP6), VIP6))
    yield directors[0], directors[1], client
    for director in directors:
        if director.running():
            director.crash()


def test_the_clients_neighbour_cache_follows_the_vip_to_the_new_master(
    pair: tuple[Director, Director, Host],
) -> None:
    a, b, client = pair
    a.start()
    b.start()
    # Link-local addresses pass duplicate address detection first (about a second).
    wait_until(lambda: a.holds_vip() and not b.holds_vip(), 20, what="a master of the IPv6 VIP")
    client.run("ping", "-6", "-c", "1", "-W", "2", VIP6_ADDRESS)
    assert cached_mac(client, VIP6_ADDRESS) == mac_of(a.host)
    a.crash()
    wait_until(b.holds_vip, 5, what="b takes the IPv6 VIP over")
    # No traffic from the client meanwhile: only b's unsolicited NA (override flag set) can
    # have moved the cached entry to b's MAC address.
    wait_until(
        lambda: cached_mac(client, VIP6_ADDRESS) == mac_of(b.host),
        5,
        what="the client's neighbour cache pointing at b",
    )
    assert "nodad" in b.host.ip("-6", "-o", "addr", "show", "dev", "eth0")  # usable at once
    client.run("ping", "-6", "-c", "1", "-W", "2", VIP6_ADDRESS)
