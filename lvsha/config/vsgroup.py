"""Virtual server groups (keepalived's virtual_server_group): several IPVS services that one
virtual server serves, with one set of real servers, checks, quorum and sorry server.

A member is an address (or a range of them) with a port, or a firewall mark. Ranges are
written as keepalived writes them: the last IPv4 octet (192.0.2.10-20) or the last IPv6 group,
in hex (2001:db8::10-1f); a whole end address (192.0.2.10-192.0.2.30); or a prefix
(192.0.2.0/28, every address in it, as keepalived takes it). Each expands to at most
`MAX_RANGE` addresses: a group is a handful of services, not a subnet's worth.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from lvsha.config.base import Model
from lvsha.config.lvs import U32_MAX
from lvsha.config.vrrp import Family

MAX_RANGE = 256
"""Addresses one member may expand to."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _one_address(text: str) -> IPAddress:
    try:
        return ipaddress.IPv6Address(text) if ":" in text else ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 or IPv6 address") from None


def address_range(text: str) -> tuple[IPAddress, IPAddress]:
    """(first, last) of an address, a range or a prefix; ValueError naming the problem."""
    text = text.strip()
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"'{text}' is not a prefix with its host bits clear ({exc}): "
                "write e.g. 192.0.2.0/28"
            ) from None
        first, last = network.network_address, network.broadcast_address
    elif "-" in text:
        start_text, _, end_text = text.partition("-")
        first = _one_address(start_text)
        if (first.version == 4 and "." in end_text) or (first.version == 6 and ":" in end_text):
            last = _one_address(end_text)
        else:
            # keepalived's short form: the end replaces the last octet (IPv6: the last group).
            base = 10 if first.version == 4 else 16
            top = 255 if first.version == 4 else 0xFFFF
            try:
                end = int(end_text, base)
            except ValueError:
                raise ValueError(
                    f"'{text}': the range end '{end_text}' is not a number "
                    f"({'the last octet' if first.version == 4 else 'the last group, in hex'})"
                ) from None
            if not 0 <= end <= top:
                limit = "255" if first.version == 4 else "ffff"
                raise ValueError(f"'{text}': the range end {end_text} is above {limit}")
            mask = 0xFF if first.version == 4 else 0xFFFF
            last = type(first)((int(first) & ~mask) | end)
        if last.version != first.version:
            raise ValueError(f"'{text}': the range's ends are of different families")
        if int(last) <= int(first):
            raise ValueError(
                f"'{text}' runs backwards or ends where it starts: the end must be above "
                f"{first} (a single address needs no range)"
            )
    else:
        first = last = _one_address(text)
    count = int(last) - int(first) + 1
    if count > MAX_RANGE:
        raise ValueError(
            f"'{text}' is {count} addresses: a member may have at most {MAX_RANGE}; "
            "split it, or use a firewall mark for that many"
        )
    return first, last


def _address_range(value: object) -> object:
    if isinstance(value, str):
        address_range(value)
        return value.strip()
    return value


AddressRange = Annotated[str, BeforeValidator(_address_range)]


def _shorthand(value: object) -> object:
    """ "192.0.2.10:80", "192.0.2.10-20:80", "[2001:db8::10-1f]:443", "192.0.2.10" (all ports),
    "fwmark 7", "fwmark 7 ipv6" for the mapping each means."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    words = text.split()
    if words and words[0] == "fwmark":
        if len(words) not in (2, 3) or not words[1].isdigit():
            raise ValueError(f"'{text}' is not 'fwmark N' or 'fwmark N ipv4|ipv6'")
        member: dict[str, Any] = {"fwmark": int(words[1])}
        if len(words) == 3:
            member["family"] = words[2]
        return member
    host, port = text, None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"'{text}': write an IPv6 member as [2001:db8::10-1f]:443")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port is not None:
        if not (port.isascii() and port.isdigit()):
            raise ValueError(f"'{text}': the port '{port}' is not a number")
        return {"address": host, "port": int(port)}
    return {"address": host}


class GroupMember(Model):
    """One service of a group: an address or range with a port, or a firewall mark. A string
    stands for one: "192.0.2.10-20:80", "[2001:db8::10-1f]:443", "fwmark 7"."""

    address: AddressRange | None = Field(
        None,
        description="An address or a range: 192.0.2.10-20 (the last octet; IPv6 the last "
        f"group, hex), 192.0.2.10-192.0.2.30, or 192.0.2.0/28; at most {MAX_RANGE} addresses.",
    )
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="With address; omitted or 0: every port (needs persistence_timeout), as "
        "keepalived's port-less member.",
    )
    fwmark: int | None = Field(None, ge=1, le=U32_MAX, description="Instead of address.")
    family: Family | None = Field(
        None, description="Of a fwmark member; default: the virtual server's family."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GroupMember:
        if (self.address is None) == (self.fwmark is None):
            raise ValueError("a member has an address (with a port) or a fwmark: set one of them")
        if self.fwmark is not None and self.port is not None:
            raise ValueError("a fwmark member has no port: remove it")
        if self.address is not None and self.family is not None:
            raise ValueError("family is for fwmark members; an address has its own")
        return self

    def addresses(self) -> list[IPAddress]:
        """Every address the member stands for, in order (none for a fwmark)."""
        if self.address is None:
            return []
        first, last = address_range(self.address)
        return [type(first)(n) for n in range(int(first), int(last) + 1)]

    def describe(self) -> str:
        if self.fwmark is not None:
            return f"fwmark {self.fwmark}" + (f" {self.family}" if self.family else "")
        assert self.address is not None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port or 0}"


class VirtualServerGroup(Model):
    """Services one virtual server serves (`group` on the virtual server): its real servers are
    checked once, and each verdict, the quorum and the sorry server apply to every member."""

    members: list[Annotated[GroupMember, BeforeValidator(_shorthand)]] = Field(
        min_length=1,
        description='Each a mapping or a string: "192.0.2.10:80", "192.0.2.20-21:80", '
        '"[2001:db8::10-1f]:443", "fwmark 7".',
    )
