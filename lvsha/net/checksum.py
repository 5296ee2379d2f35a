"""The Internet checksum (RFC 1071), shared by VRRP, the announcement frames and the ICMP probe."""

from __future__ import annotations

import struct


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's complement checksum; 0 when `data` already contains a valid checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
