"""The client's capture records adverts and gratuitous ARPs sent by hand, fields and times."""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address

import pytest

from lvsha.drill.capture import Capture
from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.vrrp.wire import VrrpVersion
from tests.netns.standin_director import (
    advert_bytes,
    garp_frame,
    open_arp_socket,
    open_vrrp_socket,
    send_advert,
)

pytestmark = pytest.mark.netns

A = IPv4Address("192.0.2.11")
B = IPv4Address("192.0.2.12")
VIP = IPv4Address("192.0.2.100")


def mac_of(host: Host) -> str:
    mac: str = json.loads(host.ip("-j", "link", "show", "dev", "eth0"))[0]["address"]
    return mac


def advertise(host: Host, source: IPv4Address, version: VrrpVersion, **fields: object) -> None:
    payload = advert_bytes(version, source=source, vips=(VIP,), **fields)  # type: ignore[arg-type]

    def send() -> None:
        with open_vrrp_socket("eth0", source) as sock:
            send_advert(sock, payload)

    host.call(send)


def announce(host: Host, address: IPv4Address) -> None:
    def send() -> None:
        sock, mac = open_arp_socket("eth0")
        with sock:
            sock.send(garp_frame(mac, address))

    host.call(send)


def test_adverts_and_garps_are_recorded_with_their_fields(lab: Lab) -> None:
    client = lab.add_host("client", "192.0.2.1/24")
    a = lab.add_host("a", f"{A}/24")
    b = lab.add_host("b", f"{B}/24")
    with Capture(client) as capture:
        sent_at = time.monotonic()
        advertise(a, A, VrrpVersion.V3, vrid=42, priority=150, interval=0.1)
        advertise(b, B, VrrpVersion.V2, vrid=7, priority=100, interval=1.0)
        announce(b, VIP)
        wait_until(
            lambda: len(capture.adverts_since(sent_at)) >= 2 and bool(capture.garps_since(sent_at)),
            5,
            what="two adverts and a GARP captured",
        )
        seen_by = time.monotonic()
        adverts = {advert.source: advert for advert in capture.adverts_since(sent_at)}
        (garp,) = capture.garps_since(sent_at)

    v3, v2 = adverts[A], adverts[B]
    assert (v3.vrid, v3.priority, v3.version, v3.source_mac) == (
        42, 150, VrrpVersion.V3, mac_of(a),
    )  # fmt: skip
    assert v3.advert_interval == pytest.approx(0.1)
    assert (v2.vrid, v2.priority, v2.version, v2.advert_interval) == (7, 100, VrrpVersion.V2, 1.0)
    assert v2.source_mac == mac_of(b)
    assert (garp.address, garp.sender_mac, garp.operation) == (VIP, mac_of(b), 1)
    for record in (v3, v2, garp):
        assert sent_at <= record.at <= seen_by
    assert v3.at <= v2.at <= garp.at  # receipt order is send order


def test_the_clients_own_frames_are_not_recorded(lab: Lab) -> None:
    client = lab.add_host("client", "192.0.2.1/24")
    other = lab.add_host("other", "192.0.2.2/24")
    with Capture(client) as capture:
        sent_at = time.monotonic()
        announce(client, IPv4Address("192.0.2.1"))
        announce(other, IPv4Address("192.0.2.2"))
        wait_until(lambda: bool(capture.garps_since(sent_at)), 5, what="the other host's GARP")
        # Both were sent before `other`'s arrived; the client's own is not among them.
        addresses = [garp.address for garp in capture.garps_since(sent_at)]
    assert addresses == [IPv4Address("192.0.2.2")]
