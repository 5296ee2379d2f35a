"""The FRR harness against real FRR: a router and a director FRR in two lab hosts.

One lean test (FRR start-up costs time): the director's `network` reaches the router and
`no network` withdraws it, the GRACEFUL_SHUTDOWN community set by a route-map shows at the
router, and with BFD at 100 ms x 3 a crashed director (link cut, daemons killed) leaves the
router's table in under 500 ms. Everything the harness made is gone at the end.
"""

from __future__ import annotations

import time

import pytest

from lvsha.drill.lab import Lab, wait_until
from tests.netns import frr as harness
from tests.netns.frr import FrrPool

pytestmark = pytest.mark.netns
frrs = harness.frrs

VIP = "192.0.2.100/32"
ROUTER, DIRECTOR = "10.99.0.1", "10.99.0.11"
ROUTER_AS, DIRECTOR_AS = 65000, 65001


def test_announce_withdraw_graceful_shutdown_and_bfd_failover(lab: Lab, frrs: FrrPool) -> None:
    router = frrs.start(lab.add_host("r", f"{ROUTER}/24"))
    director = frrs.start(lab.add_host("d1", f"{DIRECTOR}/24"))
    assert director.vtysh_argv == ["vtysh", "-N", director.name]
    router.router(ROUTER_AS, ROUTER, {DIRECTOR: DIRECTOR_AS}, bfd=True)
    # The director by hand, as lvsha's announcer would drive it through vtysh.
    director.configure(
        "bfd", "profile fast",
        "transmit-interval 100", "receive-interval 100", "detect-multiplier 3",
    )  # fmt: skip
    director.configure(
        f"router bgp {DIRECTOR_AS}",
        f"bgp router-id {DIRECTOR}",
        "no bgp ebgp-requires-policy",
        "no bgp network import-check",
        "timers bgp 1 3",
        f"neighbor {ROUTER} remote-as {ROUTER_AS}",
        f"neighbor {ROUTER} timers connect 1",
        f"neighbor {ROUTER} bfd profile fast",
        "address-family ipv4 unicast",
        f"network {VIP}",
    )
    configured = time.monotonic()
    wait_until(lambda: router.bgp_established(DIRECTOR), 10, what="BGP session established")
    print(f"BGP session established {(time.monotonic() - configured) * 1000:.0f} ms after config")
    wait_until(lambda: router.bfd_up(DIRECTOR), 5, what="BFD session up")
    wait_until(lambda: router.nexthops(VIP) == {DIRECTOR}, 5, what="VIP announced")
    # zebra hands the route to the kernel asynchronously.
    wait_until(lambda: router.kernel_nexthops(VIP) == {DIRECTOR}, 5, what="VIP in the kernel")
    assert director.bgp_established(ROUTER)
    assert router.communities(VIP) == [[]]

    director.configure(
        f"router bgp {DIRECTOR_AS}", "address-family ipv4 unicast", f"no network {VIP}"
    )
    wait_until(lambda: router.routes(VIP) == [], 5, what="VIP withdrawn")
    assert router.communities(VIP) == []

    director.configure("route-map GSHUT permit 10", "set community graceful-shutdown additive")
    director.configure(
        f"router bgp {DIRECTOR_AS}", "address-family ipv4 unicast", f"network {VIP} route-map GSHUT"
    )
    wait_until(
        lambda: router.communities(VIP) == [["gracefulShutdown"]], 5, what="graceful shutdown"
    )
    # bgpd holds the path a moment before zebra has installed it.
    wait_until(lambda: router.nexthops(VIP) == {DIRECTOR}, 5, what="VIP announced again")
    # FRR honours RFC 8326 on receipt by itself: the path's local preference drops to 0.
    assert [path.get("locPrf") for path in router.bgp_paths(VIP)] == [0]

    # A crashed director: its cable cut first, so no FIN or BGP notification gets out, only
    # BFD can tell the router.
    director.host.link_up(False)
    cut = time.monotonic()
    director.kill()
    wait_until(lambda: router.routes(VIP) == [], 3, interval=0.005, what="crashed director's VIP")
    rib = time.monotonic() - cut
    wait_until(lambda: router.kernel_nexthops(VIP) == set(), 3, interval=0.005, what="kernel")
    fib = time.monotonic() - cut
    print(
        f"router dropped the crashed director's route {rib * 1000:.0f} ms (zebra), "
        f"{fib * 1000:.0f} ms (kernel) after the link cut"
    )
    assert fib < 0.5
    assert not router.bfd_up(DIRECTOR)

    instances = list(frrs.started)
    started = time.monotonic()
    frrs.close()
    print(f"stopping both FRR instances took {(time.monotonic() - started) * 1000:.0f} ms")
    for instance in instances:
        assert not instance.running()
        assert not instance.run_dir.exists()
