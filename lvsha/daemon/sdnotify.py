"""systemd's readiness protocol: one datagram to $NOTIFY_SOCKET, no library needed."""

from __future__ import annotations

import os
import socket


def sd_notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd; False when not run under Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True
