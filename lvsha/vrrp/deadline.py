"""A timer for VRRP's deadlines that fires within microseconds of them, without real-time priority.

asyncio wakes for its own timers through epoll_wait, whose timeout is in whole milliseconds
(rounded up) and which the kernel may run later still by its timer slack (0.1% of the
timeout): a Master_Down timer would fire up to a millisecond or more late, and a takeover with
it. A timerfd on CLOCK_MONOTONIC (the loop's clock) set to the absolute deadline fires on a
high-resolution kernel timer; the loop watches it like any socket. Where no timerfd can be had
(not Linux), the loop's own timer stands in.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import math
import os
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Libc:
    """timerfd_create / timerfd_settime from the C library, looked up once."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.create = libc.timerfd_create
        self.create.argtypes = [ctypes.c_int, ctypes.c_int]
        self.create.restype = ctypes.c_int
        self.settime = libc.timerfd_settime
        self.settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
        self.settime.restype = ctypes.c_int


_libc: _Libc | None = None


def _get_libc() -> _Libc:
    global _libc  # noqa: PLW0603 - looked up on first use, then shared
    if _libc is None:
        _libc = _Libc()
    return _libc


class DeadlineTimer(Protocol):
    def arm(self, when: float) -> None:
        """Call back at `when` (the loop's clock); replaces any earlier arming."""
        ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class TimerfdTimer:
    """`DeadlineTimer` on a timerfd the loop watches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._libc = _get_libc()
        fd = self._libc.create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_create: {os.strerror(code)}")
        self._fd = fd
        self._loop = loop
        self._callback = callback
        self._spec = _Itimerspec()
        self._armed = False
        loop.add_reader(fd, self._fired)

    def _set(self, when: float) -> None:
        fraction, seconds = math.modf(when)
        value = self._spec.it_value
        value.tv_sec = int(seconds)
        value.tv_nsec = int(fraction * 1e9)
        if self._libc.settime(self._fd, TFD_TIMER_ABSTIME, self._spec, None) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_settime: {os.strerror(code)}")

    def arm(self, when: float) -> None:
        # A time of 0 disarms a timerfd: a deadline at or before the clock's start is due now.
        self._set(max(when, 1e-9))
        self._armed = True

    def cancel(self) -> None:
        if self._armed:
            self._set(0.0)
            self._armed = False

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed or cancelled after it expired: nothing is due
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            return
        self._armed = False
        self._callback()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class LoopTimer:
    """`DeadlineTimer` on the loop's own timers (millisecond wake-ups), where timerfd is not."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, when: float) -> None:
        self.cancel()
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.cancel()


def deadline_timer(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> TimerfdTimer | LoopTimer:
    """A timerfd timer when the system has one, else the loop's."""
    try:
        return TimerfdTimer(loop, callback)
    except (OSError, AttributeError, NotImplementedError) as exc:
        log.warning("no timerfd (%s): VRRP timers may fire up to a millisecond late", exc)
        return LoopTimer(loop, callback)
