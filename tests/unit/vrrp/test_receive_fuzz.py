"""Fuzz the whole receive path: decoder, instance check and state machine.

Packets are built for the instance under test (its VRID, version and VIPs) with random
priorities, intervals, sources and auth, then mutated, so that many get past the decoder
and reach the machine. Nothing but a counted drop or machine actions may come out.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest

from lvsha.config import load_text
from lvsha.vrrp.events import Startup, TimerFired
from lvsha.vrrp.machine import VrrpMachine
from lvsha.vrrp.params import instance_params
from lvsha.vrrp.receive import advert_event, receiving_instance
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    VRRP_MULTICAST_IPV6,
    Advert,
    AuthType,
    DropCounter,
    IpAddress,
    VrrpDatagram,
    VrrpVersion,
    encode_advert,
    receive_advert,
)

PACKETS = 12_000

CONFIGS = {
    "v2": """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    advert_interval: 1
    virtual_ipaddresses: [192.0.2.10/24, 192.0.2.11/24]
    authentication: {type: PASS, password: secret}
""",
    "v3": """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    version: 3
    advert_interval: 20ms
    virtual_ipaddresses: [192.0.2.10/24, 192.0.2.11/24]
""",
    "v3-ipv6": """\
vrrp_instances:
  VI:
    interface: eth0
    virtual_router_id: 7
    priority: 120
    advert_interval: 100ms
    virtual_ipaddresses: ['fe80::10/64', '2001:db8::10/64']
""",
}


def datagram_for(rng: random.Random, vips: list[IpAddress], version: VrrpVersion) -> VrrpDatagram:
    family = vips[0].version
    source: IpAddress
    if family == 4:
        source = IPv4Address(rng.choice([0xC0000201, 0xC00002FE, rng.getrandbits(32)]))
        destination: IpAddress = VRRP_MULTICAST_IPV4
    else:
        source = IPv6Address(rng.choice([0xFE80 << 112 | 1, rng.getrandbits(128)]))
        destination = VRRP_MULTICAST_IPV6
    addresses = list(vips) if rng.random() < 0.8 else list(vips[:1])
    password = rng.choice([b"secret", b"wrong", b""])
    v2 = version is VrrpVersion.V2
    advert = Advert(
        version=version,
        vrid=7 if rng.random() < 0.9 else rng.randrange(1, 256),
        priority=rng.choice([0, 1, 100, 119, 120, 121, 254, 255, rng.randrange(256)]),
        advert_interval=rng.choice([1, 1, 2, rng.randrange(1, 256)])
        if v2
        else rng.choice([2, 10, 100, rng.randrange(1, 4096)]),
        addresses=tuple(addresses),
        auth_type=AuthType.SIMPLE_PASSWORD if v2 and password else AuthType.NONE,
        auth_data=password if v2 else b"",
    )
    payload = encode_advert(advert, source, destination)
    if rng.random() < 0.3:
        mutated = bytearray(payload)
        for _ in range(rng.randrange(1, 3)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        payload = bytes(mutated)
    if rng.random() < 0.05:
        payload = payload[: rng.randrange(len(payload))]
    ttl = 255 if rng.random() < 0.97 else rng.randrange(255)
    return VrrpDatagram(source, destination, ttl, payload)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_packet_is_dropped_or_becomes_machine_actions(name: str) -> None:
    config = load_text(CONFIGS[name])
    inst = config.vrrp_instances["VI"]
    own = inst.virtual_ipaddresses[0].address.ip  # any address of ours' family will do
    params = instance_params(config, "VI", own)
    machine = VrrpMachine(params)
    receiving = receiving_instance(inst)
    rng = random.Random(f"lvsha-{name}")
    drops = DropCounter()
    vips = [vip.address.ip for vip in inst.virtual_ipaddresses]
    now = 0.0
    machine.handle(Startup(), now)
    fed = delivered = 0
    states = set()
    for _ in range(PACKETS):
        now += rng.choice([0.0, 0.001, 0.01, 0.05, 0.5])
        deadline = machine.next_deadline()
        if deadline is not None and deadline <= now:
            machine.handle(TimerFired(), now)
        datagram = datagram_for(rng, vips, receiving.version)
        fed += 1
        received = receive_advert(datagram, drops)
        if received is None:
            continue
        event = advert_event(received, receiving, frozenset({own}), drops)
        if event is None:
            continue
        delivered += 1
        machine.handle(event, now)
        states.add(machine.state)
    assert fed == drops.total + delivered
    # the generator is aimed well enough that the machine really is exercised
    assert delivered > PACKETS // 20
    assert len(states) >= 2
