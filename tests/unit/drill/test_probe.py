"""Outage and lost-probe arithmetic on synthetic probe timelines, and echo reply parsing."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from lvsha.drill.probe import (
    Probe,
    echo_request,
    measure_outage,
    parse_echo_reply,
)
from lvsha.net.checksum import internet_checksum

INTERVAL = 0.01
RTT = 0.0005
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


def timeline(start: float, count: int, lost: set[int], mac_after: int = 10**9) -> list[Probe]:
    """`count` probes every 10 ms from `start`; those in `lost` unanswered; B answers from
    index `mac_after` on."""
    probes = []
    for index in range(count):
        sent = start + index * INTERVAL
        if index in lost:
            probes.append(Probe(index, sent))
        else:
            mac = MAC_B if index >= mac_after else MAC_A
            probes.append(Probe(index, sent, sent + RTT, mac))
    return probes


def test_no_loss_is_no_outage() -> None:
    probes = timeline(100.0, 50, set())
    outage = measure_outage(probes, fault_at=100.2, window_end=100.49, reply_timeout=0.5)
    assert (outage.outage, outage.lost, outage.recovered) == (0.0, 0, True)


def test_outage_spans_last_answered_before_to_first_answered_after() -> None:
    # Fault at 100.205; probes 21..60 lost; 20 (sent 100.20) and 61 (sent 100.61) answered.
    probes = timeline(100.0, 100, set(range(21, 61)), mac_after=61)
    outage = measure_outage(probes, fault_at=100.205, window_end=100.99, reply_timeout=0.5)
    assert outage.lost == 40
    assert outage.outage == pytest.approx(0.41)
    assert outage.recovered


def test_probes_answered_after_the_fault_do_not_start_the_outage() -> None:
    # A graceful stop: the old master answers for 100 ms after the fault, then 5 are lost.
    probes = timeline(0.0, 80, set(range(30, 35)))
    outage = measure_outage(probes, fault_at=0.195, window_end=0.79, reply_timeout=0.5)
    assert outage.lost == 5
    assert outage.outage == pytest.approx(0.35 - 0.29)


def test_the_longest_of_two_loss_runs_is_the_outage_and_both_count_as_lost() -> None:
    probes = timeline(0.0, 100, set(range(10, 13)) | set(range(50, 60)))
    outage = measure_outage(probes, fault_at=0.0, window_end=0.99, reply_timeout=0.5)
    assert outage.lost == 13
    assert outage.outage == pytest.approx(0.60 - 0.49)


def test_a_reply_later_than_the_timeout_is_a_loss() -> None:
    probes = timeline(0.0, 30, set())
    probes[15] = Probe(15, 0.15, 0.15 + 0.6, MAC_A)
    outage = measure_outage(probes, fault_at=0.1, window_end=0.29, reply_timeout=0.5)
    assert outage.lost == 1
    assert outage.outage == pytest.approx(0.02)


def test_losses_before_the_fault_and_probes_after_the_window_are_not_counted() -> None:
    probes = timeline(0.0, 100, {5, 6, 95, 96})
    outage = measure_outage(probes, fault_at=0.1, window_end=0.9, reply_timeout=0.5)
    assert (outage.lost, outage.outage) == (0, 0.0)


def test_loss_to_the_end_of_the_window_is_not_recovered() -> None:
    probes = timeline(0.0, 50, set(range(40, 50)))
    outage = measure_outage(probes, fault_at=0.35, window_end=0.6, reply_timeout=0.5)
    assert not outage.recovered
    assert outage.lost == 10
    assert outage.outage == pytest.approx(0.6 - 0.39)


def test_without_an_answer_before_the_loss_the_outage_starts_at_the_fault() -> None:
    probes = timeline(1.0, 20, set(range(10)))
    outage = measure_outage(probes, fault_at=1.0, window_end=1.19, reply_timeout=0.5)
    assert outage.lost == 10
    assert outage.outage == pytest.approx(0.10)


VIP = IPv4Address("192.0.2.100")
CLIENT = IPv4Address("192.0.2.1")


def reply_frame(identifier: int, sequence: int, cookie: bytes, source: IPv4Address = VIP) -> bytes:
    icmp = struct.pack("!BBHHH", 0, 0, 0, identifier, sequence) + cookie
    ip_header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, source.packed, CLIENT.packed
    )
    ethernet = bytes.fromhex("020000000001") + bytes.fromhex("02000000000b") + b"\x08\x00"
    return ethernet + ip_header + icmp


def test_echo_request_checksums_to_zero() -> None:
    packet = echo_request(0x1234, 7, b"cookie!!")
    assert packet[0] == 8
    assert struct.unpack_from("!HH", packet, 4) == (0x1234, 7)
    assert internet_checksum(packet) == 0


def test_echo_reply_gives_sequence_and_source_mac() -> None:
    reply = parse_echo_reply(reply_frame(0x1234, 7, b"cookie!!"), VIP, 0x1234, b"cookie!!")
    assert reply is not None
    assert (reply.sequence, reply.source_mac) == (7, MAC_B)


@pytest.mark.parametrize(
    "frame",
    [
        reply_frame(0x4321, 7, b"cookie!!"),  # another pinger's identifier
        reply_frame(0x1234, 7, b"cookie??"),  # another cookie
        reply_frame(0x1234, 7, b"cookie!!", IPv4Address("192.0.2.11")),  # not from the VIP
        reply_frame(0x1234, 7, b"cookie!!")[:40],  # truncated
    ],
)
def test_other_replies_are_not_ours(frame: bytes) -> None:
    assert parse_echo_reply(frame, VIP, 0x1234, b"cookie!!") is None
