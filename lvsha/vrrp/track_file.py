"""Tracked files (keepalived's track_file): a file holding a number that moves the priority.

`parse_value` reads the number as keepalived 2.2 does (trackers/track_file.c: strtol with base
0 on the first 127 bytes): leading blanks and a sign, then 0x... hexadecimal, 0... octal or
decimal digits, whatever follows ignored; no number at all reads as 0, and so does a missing,
unreadable or empty file; a number outside the 32-bit range is ignored (the last value stays).

`TrackFileWatcher` is the edge: one inotify instance (through ctypes) watching the directories
of the files, so a file written in place (close after write), replaced by a rename, or deleted
is read again at once, and `on_value(name, value)` hears each change of a file's number. As in
keepalived, symbolic links in a file's path are resolved when it is configured, and the
directory of what they lead to is watched. A directory that does not exist (yet) is looked for
again every `RETRY_INTERVAL` seconds (keepalived drops such a file); until then its files read
as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Callable, Mapping

log = logging.getLogger("lvsha.vrrp")

READ_LIMIT = 127
"""Bytes of the file read, as keepalived reads them."""
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
RETRY_INTERVAL = 1.0
"""Seconds between looks for a tracked file's directory that is not there."""

_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_IGNORED = 0x8000
_IN_ISDIR = 0x40000000
_WATCH_MASK = (
    _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF
)
_EVENT = struct.Struct("iIII")


def parse_value(data: bytes) -> int | None:
    """The number at the start of `data` as C's strtol(data, NULL, 0) reads it; 0 when there
    is none; None when it does not fit 32 bits (keepalived ignores such a read)."""
    text = data.split(b"\0", 1)[0].decode("ascii", "replace").lstrip(" \t\n\v\f\r")
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text[:2].lower() == "0x" and text[2:3] and text[2:3] in "0123456789abcdefABCDEF":
        base, digits, text = 16, "0123456789abcdef", text[2:].lower()
    elif text[:1] == "0":
        base, digits = 8, "01234567"
    else:
        base, digits = 10, "0123456789"
    end = 0
    while end < len(text) and text[end] in digits:
        end += 1
    value = sign * int(text[:end], base) if end else 0
    # keepalived accepts up to INT32_MAX + 1 (its check is off by one); so does lvsha.
    if not INT32_MIN <= value <= INT32_MAX + 1:
        return None
    return value


def read_value(path: str) -> int | None:
    """The number in the file at `path`; 0 when it is missing, unreadable or empty; None when
    what it holds is out of range (keep the last value)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        data = os.read(fd, READ_LIMIT)
    except OSError:
        return 0
    finally:
        os.close(fd)
    return parse_value(data) if data else 0


def write_initial(path: str, value: int, overwrite: bool) -> str | None:
    """Write `value` (and a newline) to the file at `path` when it does not exist, or always
    with `overwrite` (a regular file only); what went wrong, or None."""
    exists = os.path.lexists(path)
    if exists and not overwrite:
        return None
    if exists and not os.path.isfile(path):
        return f"cannot initialise {path}: it is not a regular file"
    try:
        with open(path, "w", encoding="ascii") as out:
            out.write(f"{value}\n")
    except OSError as exc:
        return f"cannot initialise {path}: {exc.strerror or exc}"
    return None


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


ValueCallback = Callable[[str, int], None]
"""on_value(track file name, number): the file's number changed."""


class TrackFileWatcher:
    """Watches the tracked files and keeps each one's number."""

    def __init__(self, on_value: ValueCallback) -> None:
        self._on_value = on_value
        self._paths: dict[str, str] = {}
        """Track file name -> absolute path, as configured (read through it)."""
        self._resolved: dict[str, str] = {}
        """Track file name -> the path with symbolic links resolved when it was configured, as
        keepalived resolves it: its directory is the one watched."""
        self._values: dict[str, int] = {}
        self._libc: ctypes.CDLL | None = None
        self._fd = -1
        self._watches: dict[int, str] = {}
        """inotify watch descriptor -> directory."""
        self._retry: asyncio.TimerHandle | None = None
        self._polling = False
        """No inotify instance: every file is polled."""
        self._warned: set[str] = set()
        """Directories whose watch the kernel refused, told once."""

    @property
    def values(self) -> Mapping[str, int]:
        """The number of each watched file, by track file name."""
        return dict(self._values)

    @property
    def paths(self) -> Mapping[str, str]:
        return dict(self._paths)

    def value(self, name: str) -> int:
        return self._values.get(name, 0)

    def set_files(self, files: Mapping[str, str]) -> None:
        """Watch exactly these files (name -> path) from now on. A new file, or one whose
        path changed, is read now (no callback: the caller takes `values`)."""
        if self._fd < 0 and files and not self._polling:
            try:
                self._open()
            except OSError as exc:
                # Degraded, not broken: every file is read every RETRY_INTERVAL instead.
                log.error(
                    "track files: no inotify (%s): reading them every %g s", exc, RETRY_INTERVAL
                )
                self._polling = True
        for name in list(self._paths):
            if name not in files:
                del self._paths[name]
                del self._resolved[name]
                self._values.pop(name, None)
        for name, path in files.items():
            if self._paths.get(name) != path:
                self._paths[name] = path
                self._resolved[name] = os.path.realpath(path)
                read = read_value(path)
                self._values[name] = read if read is not None else 0
        self._sync_watches()

    def close(self) -> None:
        self._paths.clear()
        self._resolved.clear()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._fd >= 0:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._watches.clear()

    # The inotify edge.

    def _open(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _directories(self) -> set[str]:
        return {os.path.dirname(path) for path in self._resolved.values()}

    def _sync_watches(self) -> None:
        """A watch on each directory holding a tracked file, and on no other; the files of a
        directory that cannot be watched (not there yet, or no inotify) are read again every
        RETRY_INTERVAL until it can."""
        if self._libc is None or self._fd < 0:
            if self._paths and self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(RETRY_INTERVAL, self._retry_now)
            return
        wanted = self._directories()
        for wd, directory in list(self._watches.items()):
            if directory not in wanted:
                self._libc.inotify_rm_watch(self._fd, wd)
                del self._watches[wd]
        missing = False
        for directory in sorted(wanted - set(self._watches.values())):
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _WATCH_MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code not in (errno.ENOENT, errno.ENOTDIR) and directory not in self._warned:
                    self._warned.add(directory)
                    log.warning(
                        "cannot watch %s for track files (%s): reading them every %g s",
                        directory,
                        os.strerror(code),
                        RETRY_INTERVAL,
                    )
                missing = True
                continue
            self._warned.discard(directory)
            self._watches[wd] = directory
            # Written before the watch started: read once more.
            self._reread(set(self._paths_in(directory)))
        if missing and self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(RETRY_INTERVAL, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        try:
            watched = set(self._watches.values())
            self._reread(
                {n for n, p in self._resolved.items() if os.path.dirname(p) not in watched}
            )
            self._sync_watches()
        except Exception:
            log.exception("track files: watching again failed")

    def _readable(self) -> None:
        try:
            self._drain()
        except Exception:
            log.exception("track files: reading inotify events failed")

    def _drain(self) -> None:
        changed: set[str] = set()
        lost_watch = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                directory = self._watches.get(wd)
                if directory is None:
                    continue
                if mask & (_IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF):
                    # The directory itself went: its files read 0 until it is back.
                    if mask & _IN_IGNORED:
                        self._watches.pop(wd, None)
                    lost_watch = True
                    changed.update(self._paths_in(directory))
                    continue
                if mask & _IN_ISDIR:
                    continue
                path = os.path.join(directory, os.fsdecode(raw.rstrip(b"\0")))
                changed.update(n for n, p in self._resolved.items() if p == path)
        if lost_watch and self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(RETRY_INTERVAL, self._retry_now)
        if changed:
            self._reread(changed)

    def _paths_in(self, directory: str) -> list[str]:
        """The names of the tracked files in `directory`."""
        return [n for n, p in self._resolved.items() if os.path.dirname(p) == directory]

    def _reread(self, names: set[str]) -> None:
        for name, path in list(self._paths.items()):
            if name not in names:
                continue
            read = read_value(path)
            if read is None:
                log.warning("track file %s: %s holds a number out of range: ignored", name, path)
                continue
            if read == self._values.get(name):
                continue
            self._values[name] = read
            log.info("track file %s: %s now holds %d", name, path, read)
            try:
                self._on_value(name, read)
            except Exception:
                log.exception("track file %s: on_value callback failed", name)
