"""DNS probe against a tiny authoritative server on a loopback UDP port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast, get_args

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from lvsha.checks.dns import DnsParams, RecordType, probe_dns

LATE_MARGIN = 0.05

RECORDS: dict[str, str] = {
    "A": "192.0.2.10",
    "AAAA": "2001:db8::10",
    "NS": "ns1.lvsha.test.",
    "MX": "10 mail.lvsha.test.",
    "SOA": "ns1.lvsha.test. admin.lvsha.test. 1 3600 600 86400 60",
    "TXT": '"ok"',
    "CNAME": "svc.lvsha.test.",
    "PTR": "svc.lvsha.test.",
    "SRV": "10 5 80 svc.lvsha.test.",
}


class TinyDnsServer(asyncio.DatagramProtocol):
    """Answers by query name; unknown names get NXDOMAIN."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        reply = dns.message.make_response(query)
        if name == "every.lvsha.test.":
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, RECORDS[rdtype]))
        elif name == "svc.lvsha.test." and rdtype == "A":
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", RECORDS["A"]))
        elif name == "svc.lvsha.test.":
            pass  # the name exists without this type: NOERROR, empty answer
        elif name == "alias.lvsha.test.":
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "svc.lvsha.test."))
            reply.answer.append(dns.rrset.from_text("svc.lvsha.test.", 60, "IN", "A", "192.0.2.10"))
        elif name == "spoofed.lvsha.test.":
            forged = dns.message.make_response(query)
            forged.id = (query.id + 1) & 0xFFFF
            forged.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "203.0.113.66"))
            self.transport.sendto(forged.to_wire(), addr)
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif name == "garbled.lvsha.test.":
            self.transport.sendto(b"\x00\x01not dns", addr)
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", RECORDS["A"]))
        elif name == "big.lvsha.test.":
            reply.flags |= dns.flags.TC
        elif name == "cut.lvsha.test.":
            reply.flags |= dns.flags.TC
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", '"first"', '"second"'))
            wire = reply.to_wire()
            self.transport.sendto(wire[: len(wire) - 4], addr)  # cut inside the last record
            return
        elif name == "silent.lvsha.test.":
            return
        elif name == "broken.lvsha.test.":
            reply.set_rcode(dns.rcode.SERVFAIL)
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(reply.to_wire(), addr)


@dataclass
class Served:
    address: str
    port: int


@pytest.fixture(params=["127.0.0.1", "::1"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(TinyDnsServer, local_addr=(request.param, 0))
    yield Served(request.param, transport.get_extra_info("sockname")[1])
    transport.close()


def _params(server: Served, name: str, record_type: RecordType = "A") -> DnsParams:
    return DnsParams(server.address, server.port, 1.0, name, record_type)


async def test_an_answer_of_the_type_is_healthy(server: Served) -> None:
    result = await probe_dns(_params(server, "svc.lvsha.test"))

    assert result.ok, result.reason
    assert result.reason == "dns answer for svc.lvsha.test/A"


@pytest.mark.parametrize("record_type", get_args(RecordType))
async def test_every_record_type(server: Served, record_type: RecordType) -> None:
    result = await probe_dns(_params(server, "every.lvsha.test.", record_type))

    assert result.ok, result.reason


async def test_an_answer_through_a_cname_is_healthy(server: Served) -> None:
    assert (await probe_dns(_params(server, "alias.lvsha.test"))).ok


async def test_nxdomain(server: Served) -> None:
    result = await probe_dns(_params(server, "nowhere.lvsha.test"))

    assert not result.ok
    assert result.reason == "dns rcode NXDOMAIN"


async def test_servfail(server: Served) -> None:
    assert (await probe_dns(_params(server, "broken.lvsha.test"))).reason == "dns rcode SERVFAIL"


async def test_no_record_of_the_type(server: Served) -> None:
    result = await probe_dns(_params(server, "svc.lvsha.test", "AAAA"))

    assert result.reason == "dns no answer for svc.lvsha.test/AAAA"


async def test_a_reply_with_another_id_is_ignored(server: Served) -> None:
    result = await probe_dns(_params(server, "spoofed.lvsha.test"))

    assert result.reason == "dns rcode NXDOMAIN"


async def test_a_datagram_that_is_not_dns_is_ignored(server: Served) -> None:
    result = await probe_dns(_params(server, "garbled.lvsha.test"))

    assert result.ok, result.reason


async def test_a_truncated_reply_without_answer_fails(server: Served) -> None:
    result = await probe_dns(_params(server, "big.lvsha.test", "TXT"))

    assert result.reason == "dns reply truncated, no answer for big.lvsha.test/TXT"


async def test_a_truncated_reply_cut_mid_record_is_judged_on_what_arrived(server: Served) -> None:
    result = await probe_dns(_params(server, "cut.lvsha.test", "TXT"))

    # The first TXT record arrived whole before the cut: the server is up and answering.
    assert result.ok, result.reason


async def test_no_reply_times_out_at_the_timeout(server: Served) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await probe_dns(DnsParams(server.address, server.port, 0.2, "silent.lvsha.test"))

    assert result.reason == "timeout after 0.2 s"
    assert 0.2 <= loop.time() - started < 0.2 + LATE_MARGIN


async def test_a_bad_name_fails_without_raising(server: Served) -> None:
    result = await probe_dns(_params(server, "a" * 64 + ".lvsha.test"))

    assert not result.ok
    assert result.reason.startswith("dns bad query name")
