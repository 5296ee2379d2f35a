"""Configuration of real-server health checks: one schema per check type."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PlainSerializer

from lvsha.config.base import Command, IPAddress, Model, Seconds, TypeDoc


class CheckTiming(Model):
    """Scheduling and thresholds shared by every check type.

    In `global.check_defaults` and a virtual server's `check_defaults` these set defaults; a
    check's own keys win, then its virtual server's, then the global ones.
    """

    interval: Seconds = Field(5.0, gt=0, le=86400, description="Seconds between rounds.")
    timeout: Seconds = Field(5.0, gt=0, le=3600, description="Limit for one attempt.")
    retries: int = Field(
        1, ge=0, le=100, description="Extra attempts within a round before the round fails."
    )
    delay_before_retry: Seconds = Field(
        1.0, ge=0, le=3600, description="Pause between attempts of one round."
    )
    rise: int = Field(1, ge=1, le=1000, description="Good rounds in a row to go up.")
    fall: int = Field(1, ge=1, le=1000, description="Failed rounds in a row to go down.")
    warmup: Seconds | None = Field(
        None,
        ge=0,
        le=86400,
        description="The first round starts after a random delay up to this; default: interval.",
    )
    alpha: bool = Field(
        False, description="Start down until `rise` good rounds (keepalived's alpha)."
    )


class TargetedCheck(CheckTiming):
    """A check that talks to the real server over the network."""

    address: IPAddress | None = Field(
        None, description="Probe this address instead of the real server's (connect_ip)."
    )
    bind_address: IPAddress | None = Field(None, description="Source address (bindto).")


class PortCheck(TargetedCheck):
    port: int | None = Field(
        None, ge=1, le=65535, description="Probe this port instead of the real server's."
    )


class IcmpCheck(TargetedCheck):
    """ICMP / ICMPv6 echo."""

    type: Literal["icmp"]


class TcpCheck(PortCheck):
    """A TCP connection that completes within the timeout."""

    type: Literal["tcp"]


def _status_range(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value}"
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?", value)
        if match:
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if 100 <= low <= high <= 599:
                return (low, high)
        raise ValueError(
            f"'{value}' is not an HTTP status or range: write 200 or '200-299' (100-599)"
        )
    return value


StatusRange = Annotated[
    tuple[int, int],
    BeforeValidator(_status_range),
    PlainSerializer(lambda r: f"{r[0]}" if r[0] == r[1] else f"{r[0]}-{r[1]}"),
    TypeDoc("status or range"),
]


def _digest(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    algorithm, _, hexdigest = text.rpartition(":")
    algorithm = algorithm or "md5"  # keepalived's digest is a bare MD5
    lengths = {"md5": 32, "sha256": 64}
    if algorithm not in lengths:
        raise ValueError(f"unknown digest algorithm '{algorithm}': use md5:HEX or sha256:HEX")
    if not re.fullmatch(f"[0-9a-f]{{{lengths[algorithm]}}}", hexdigest):
        raise ValueError(
            f"a {algorithm} digest is {lengths[algorithm]} hex digits, got '{hexdigest}'"
        )
    return f"{algorithm}:{hexdigest}"


Digest = Annotated[str, BeforeValidator(_digest), TypeDoc("md5:HEX | sha256:HEX")]


def _regex(value: object) -> object:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Regex = Annotated[str, BeforeValidator(_regex), TypeDoc("regular expression")]


def _path(value: object) -> object:
    if isinstance(value, str) and not value.startswith("/"):
        raise ValueError(f"an HTTP path starts with '/', got '{value}'")
    return value


class HttpCheck(PortCheck):
    """An HTTP request whose status (and optionally body) must match."""

    type: Literal["http"]
    path: Annotated[str, BeforeValidator(_path)] = Field("/", description="Request path.")
    method: Literal["GET", "HEAD"] = "GET"
    status: list[StatusRange] = Field(
        default_factory=lambda: [(200, 299)],
        min_length=1,
        description="Accepted status codes and ranges, e.g. [200, '300-399'].",
    )
    digest: Digest | None = Field(None, description="Digest the body must have.")
    regex: Regex | None = Field(None, description="Pattern the body must match.")
    regex_negate: bool = Field(False, description="The body must NOT match `regex`.")
    virtualhost: str | None = Field(
        None, description="Host header; default: the virtual server's virtualhost."
    )


class HttpsCheck(HttpCheck):
    """HTTP over TLS."""

    type: Literal["https"]  # type: ignore[assignment]
    tls_verify: bool = Field(
        False, description="Verify the server certificate (keepalived does not)."
    )
    sni: str | None = Field(None, description="TLS server name; default: the virtualhost.")
    ca_file: str | None = Field(None, description="CA bundle for verification.")
    client_cert: str | None = Field(None, description="Client certificate (PEM).")
    client_key: str | None = Field(None, description="Key of the client certificate (PEM).")


class UdpCheck(PortCheck):
    """A UDP datagram that must get a matching reply, or at least no port-unreachable."""

    type: Literal["udp"]
    payload: str | None = Field(None, description="Text to send.")
    payload_hex: str | None = Field(None, description="Bytes to send, as hex.")
    require_reply: bool = Field(
        True, description="false: healthy unless ICMP port unreachable comes back."
    )
    expect: str | None = Field(None, description="The reply must equal this text.")
    expect_hex: str | None = Field(None, description="The reply must equal these bytes.")
    expect_regex: Regex | None = Field(None, description="The reply must match this pattern.")


def _dns_name(value: object) -> object:
    # RFC 1035 2.3.4: labels of 1-63 octets, 255 octets in all on the wire (253 as text);
    # anything longer makes every query fail to build, so the check could never pass.
    if isinstance(value, str) and value != ".":
        labels = value.removesuffix(".").split(".")
        if len(value.removesuffix(".").encode()) > 253 or any(
            not 1 <= len(label.encode()) <= 63 for label in labels
        ):
            raise ValueError(
                f"'{value}' is not a valid DNS name: labels of 1-63 characters, separated by "
                "single dots, 253 characters in all"
            )
    return value


class DnsCheck(PortCheck):
    """A DNS query that must get an answer of the asked type."""

    type: Literal["dns"]
    name: Annotated[str, BeforeValidator(_dns_name)] = Field(
        ".", min_length=1, description="Name to query."
    )
    query_type: Literal["A", "AAAA", "NS", "MX", "SOA", "TXT", "CNAME", "PTR", "SRV"] = "SOA"


SMTP_DEFAULT_HELO = "smtpchecker.keepalived.org"
"""The HELO name keepalived's SMTP_CHECK sends when none is configured."""


def _helo_name(value: object) -> object:
    # RFC 5321 4.1.1.1: HELO takes a domain (or an address literal); a space, control character
    # or line break would end the command early or smuggle a second one.
    if isinstance(value, str) and not re.fullmatch(r"[\x21-\x7e]{1,255}", value):
        raise ValueError(
            f"'{value}' is not a HELO name: a domain or [address], 1-255 printable characters, "
            "no spaces"
        )
    return value


class SmtpCheck(PortCheck):
    """An SMTP dialogue: the 220 greeting, HELO answered with 250, then QUIT
    (keepalived's SMTP_CHECK)."""

    type: Literal["smtp"]
    helo_name: Annotated[str, BeforeValidator(_helo_name)] | None = Field(
        None, description=f"Name sent with HELO; default: {SMTP_DEFAULT_HELO} (as keepalived)."
    )


class ScriptCheck(CheckTiming):
    """A command whose exit status is the verdict (keepalived's MISC_CHECK)."""

    type: Literal["script"]
    command: Command = Field(description="Program and arguments; no shell is involved.")
    dynamic_weight: bool = Field(
        False,
        description="Exit 2-255 means healthy with weight = code - 2 (misc_dynamic).",
    )
    user: str | None = Field(None, description="Run as this user; default: global.script_user.")


Check = Annotated[
    IcmpCheck | TcpCheck | HttpCheck | HttpsCheck | UdpCheck | DnsCheck | ScriptCheck | SmtpCheck,
    Field(discriminator="type"),
]

CHECK_TYPES: dict[str, type[CheckTiming]] = {
    "icmp": IcmpCheck,
    "tcp": TcpCheck,
    "http": HttpCheck,
    "https": HttpsCheck,
    "udp": UdpCheck,
    "dns": DnsCheck,
    "script": ScriptCheck,
    "smtp": SmtpCheck,
}
