"""A VIP's broadcast and scope (keepalived's brd and scope): what is accepted, what each
resolves to, and every mistake named."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from lvsha.config import ConfigError, load_text
from lvsha.vrrp.params import HeldAddress, held_addresses

CONFIG = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [%s]
"""


def held(vip: str) -> HeldAddress:
    config = load_text(CONFIG % vip)
    (found,) = held_addresses(config.vrrp_instances["VI_1"])
    return found


@pytest.mark.parametrize(
    ("vip", "broadcast", "scope"),
    [
        ("192.0.2.10/24", None, 0),
        ("{address: 192.0.2.10/24, broadcast: '+'}", "192.0.2.255", 0),
        ("{address: 192.0.2.10/24, broadcast: '-'}", "192.0.2.0", 0),
        ("{address: 192.0.2.10/30, broadcast: '+'}", "192.0.2.11", 0),
        ("{address: 192.0.2.10/24, broadcast: 192.0.2.127}", "192.0.2.127", 0),
        ("{address: 192.0.2.10/32, broadcast: 192.0.2.255}", "192.0.2.255", 0),
        ("{address: 192.0.2.10/24, scope: global}", None, 0),
        ("{address: 192.0.2.10/24, scope: site}", None, 200),
        ("{address: 192.0.2.10/24, scope: link}", None, 253),
        ("{address: 192.0.2.10/24, scope: host}", None, 254),
        ("{address: 192.0.2.10/24, scope: nowhere}", None, 255),
        ("{address: 192.0.2.10/24, scope: 100}", None, 100),
        ("{address: 192.0.2.10/24, scope: '253'}", None, 253),
    ],
)
def test_broadcast_and_scope_resolve_as_keepalived(
    vip: str, broadcast: str | None, scope: int
) -> None:
    found = held(vip)
    assert found.broadcast == (None if broadcast is None else IPv4Address(broadcast))
    assert found.scope == scope
    assert (found.attributes.broadcast, found.attributes.scope) == (found.broadcast, scope)


@pytest.mark.parametrize(
    ("vip", "message"),
    [
        (
            "{address: 192.0.2.10/24, broadcast: 192.0.2}",
            "'192.0.2' is not an IPv4 address, nor + (host bits set) or - (host bits clear)",
        ),
        (
            "{address: 192.0.2.10/31, broadcast: '+'}",
            "a /31 has no broadcast address to derive: write the address, or remove broadcast",
        ),
        (
            "{address: 192.0.2.10/24, scope: universe}",
            "'universe' is not a scope: use global, site, link, host, nowhere or a number 0-255",
        ),
        ("{address: 192.0.2.10/24, scope: 256}", "scope 256 is not a number 0-255"),
        ("{address: 192.0.2.10/24, scope: true}", "expected a scope name or a number 0-255"),
        (
            "{address: '2001:db8::10/64', broadcast: '+'}",
            "broadcast applies to IPv4 VIPs only",
        ),
        ("{address: '2001:db8::10/64', scope: link}", "scope applies to IPv4 VIPs only"),
    ],
)
def test_mistakes_are_named(vip: str, message: str) -> None:
    text = CONFIG % vip
    if "2001:" in vip:
        text += "    family: ipv6\n    version: 3\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    assert message in str(caught.value)
