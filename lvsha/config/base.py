"""Building blocks shared by every part of the configuration model."""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer


class Model(BaseModel):
    """Strict and frozen: no unknown keys, no quiet type coercion ("5" is not 5), and no
    infinity or NaN (`.inf`, `1e400`), which no duration or count can mean.

    Validators are built on first use (`defer_build`): the VRRP and checker children receive
    finished models from the parent and never validate, so they never pay for building them."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True
    )


@dataclass(frozen=True, slots=True)
class TypeDoc:
    """How the config reference names a value type whose Python type says too little."""

    text: str


def _seconds(value: object) -> object:
    """Accept seconds as a number, or a string with a unit: "100ms", "1.5s", "2m", "1h"."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '100ms'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)\s*", value)
        if match is None:
            raise ValueError(
                f"'{value}' is not a duration: write seconds as a number (1.5) "
                "or with a unit: 100ms, 1.5s, 2m, 1h"
            )
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
        return round(float(match.group(1)) * scale, 9)
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), TypeDoc("duration")]
"""A duration in seconds; in YAML a number (seconds) or a string with a unit."""


def _ip(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise ValueError(f"an IP address must be a string, got {value!r}")
    text = value.strip()
    try:
        # one family tried, not both: a file of bad addresses is checked twice as fast
        return ipaddress.IPv6Address(text) if ":" in text else ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 or IPv6 address") from None


def _ip_interface(value: object) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(value, str):
        raise ValueError(f"an address must be a string like '192.0.2.10/24', got {value!r}")
    try:
        return ipaddress.ip_interface(value.strip())
    except ValueError:
        raise ValueError(
            f"'{value}' is not an address with optional prefix (192.0.2.10/24, 2001:db8::10/64)"
        ) from None


IPAddress = Annotated[
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    BeforeValidator(_ip),
    PlainSerializer(str),
    TypeDoc("IP address"),
]
IPInterface = Annotated[
    ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    BeforeValidator(_ip_interface),
    PlainSerializer(str),
    TypeDoc("address[/prefix]"),
]


def _name(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}", value):
        raise ValueError(
            f"'{value}' is not a valid name: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    return value


Name = Annotated[str, BeforeValidator(_name), TypeDoc("name")]


def valid_interface(value: object) -> object:
    """The value, unless it is a string that cannot name a Linux interface (ValueError)."""
    # The kernel's dev_valid_name(): at most 15 bytes, no '/', ':' or white space.
    if isinstance(value, str) and (
        not re.fullmatch(r"[^/:\s]{1,15}", value) or value in (".", "..")
    ):
        raise ValueError(
            f"'{value}' is not a valid interface name: 1-15 characters, no '/', ':' or spaces"
        )
    return value


InterfaceName = Annotated[str, BeforeValidator(valid_interface), TypeDoc("interface name")]


def _command(value: object) -> object:
    """A command is a list of arguments, or one string split as a shell would (no shell runs)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command line: {exc}") from None
    if isinstance(value, list):
        if not value:
            raise ValueError("the command is empty")
        if not all(isinstance(arg, str) for arg in value):
            raise ValueError("every argument of a command must be a string: quote numbers")
        return tuple(value)
    return value


Command = Annotated[tuple[str, ...], BeforeValidator(_command), TypeDoc("command (string or list)")]


def shorthand(key: str) -> Any:
    """Let a bare scalar stand for a mapping with one key: `- eth0` means `- {interface: eth0}`."""

    def expand(value: object) -> object:
        return {key: value} if isinstance(value, str | int) else value

    return BeforeValidator(expand)
