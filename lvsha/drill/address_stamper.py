"""Stamp a namespace's address notifications the moment they arrive, in a process of its own.

    python -m lvsha.drill.address_stamper

Run inside a director's namespace by `AddressWatcher`. It hears the kernel's rtnetlink IPv4
address notifications and writes one line per datagram, ``<monotonic seconds> <hex bytes>``,
to stdout. Netlink has no kernel receive timestamps, so the stamp is taken here, right after
the receive returns; a process that does nothing else, at a real-time priority above the
daemon's, is not kept from that by the drill's other threads (the GIL) or by the director it
watches. CLOCK_MONOTONIC is one clock for every process, so the drill compares the stamps with
its own. Ends when killed or when its stdout closes.
"""

from __future__ import annotations

import os
import sys
import time

from lvsha.drill.capture import open_address_socket

REALTIME_PRIORITY = 90
"""Above any priority lvsha's VRRP process is given (keepalived's default is 99 only as a
maximum; the lab configs use 50)."""


def main() -> None:
    listener = open_address_socket()
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except OSError as error:
        print(f"address stamper: no real-time priority ({error}); stamps may be late",
              file=sys.stderr)  # fmt: skip
    out = sys.stdout.fileno()
    os.write(out, b"ready\n")
    while True:
        data = listener.recv(65535)
        at = time.monotonic()
        try:
            os.write(out, f"{at!r} {data.hex()}\n".encode())
        except BrokenPipeError:
            return


if __name__ == "__main__":
    main()
