"""DNS probe: one UDP query to the real server; healthy on NOERROR with an answer of the type."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from lvsha.checks.result import ProbeResult

RecordType = Literal["A", "AAAA", "NS", "MX", "SOA", "TXT", "CNAME", "PTR", "SRV"]


@dataclass(frozen=True, slots=True)
class DnsParams:
    address: str
    port: int
    timeout: float
    name: str
    record_type: RecordType = "A"


async def probe_dns(params: DnsParams) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = loop.time()
    ok, reason = await _ask(params)
    return ProbeResult(ok=ok, reason=reason, latency=loop.time() - started)


async def _ask(params: DnsParams) -> tuple[bool, str]:
    try:
        query = dns.message.make_query(params.name, params.record_type)
    except dns.exception.DNSException as error:
        return False, f"dns bad query name {params.name!r}: {error}"
    record_type = dns.rdatatype.from_text(params.record_type)
    truncated = False
    try:
        async with asyncio.timeout(params.timeout):
            # ignore_unexpected/ignore_errors: a datagram from another source, with another id or
            # that does not parse is skipped and the wait goes on, so only the real reply counts.
            reply = await dns.asyncquery.udp(
                query,
                params.address,
                port=params.port,
                ignore_unexpected=True,
                ignore_errors=True,
                raise_on_truncation=True,
            )
    except TimeoutError:
        return False, f"timeout after {float(params.timeout)} s"
    except dns.message.Truncated as error:
        # The server is up and answered; records that arrived before the cut still count.
        reply = error.message()  # type: ignore[no-untyped-call]
        truncated = True
    except (OSError, dns.exception.DNSException) as error:
        return False, f"dns query failed: {error}"
    rcode = reply.rcode()
    if rcode != dns.rcode.NOERROR:
        return False, f"dns rcode {dns.rcode.to_text(rcode)}"
    if any(rrset.rdtype == record_type and len(rrset) > 0 for rrset in reply.answer):
        return True, f"dns answer for {_question(params)}"
    if truncated:
        return False, f"dns reply truncated, no answer for {_question(params)}"
    return False, f"dns no answer for {_question(params)}"


def _question(params: DnsParams) -> str:
    return f"{params.name.rstrip('.')}/{params.record_type}"
