"""Whether a run directory can hold what lvsha puts there, decided before anything starts.

A run directory whose socket paths do not fit `sockaddr_un` makes every bind fail, so the child
that binds would crash at every restart; a regular file in its place fails the first mkdir.
Both are the operator's to fix, so they are reported once, in words, instead.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SOCKET_NAMES = ("events.sock", "control.sock")
"""Every Unix socket lvsha binds in its run directory."""

MAX_SOCKET_PATH = 107
"""sizeof(sun_path) is 108 on Linux; one byte stays for the NUL that C clients (socat, ss)
expect after the path."""


def run_dir_problem(run_dir: str) -> str | None:
    """Why `run_dir` cannot serve as lvsha's run directory, or None if it can.

    Reads the file system (stat only) and changes nothing.
    """
    longest = max(SOCKET_NAMES, key=len)
    socket_path = os.fsencode(Path(run_dir) / longest)
    if len(socket_path) > MAX_SOCKET_PATH:
        room = MAX_SOCKET_PATH - len(longest) - 1  # the directory, '/', the name
        return (
            f"run directory '{run_dir}' is too long: {longest} in it would be a "
            f"{len(socket_path)}-byte socket path, and Unix sockets take at most "
            f"{MAX_SOCKET_PATH} bytes; use a run directory of at most {room} bytes"
        )
    # The directory, or the nearest part of its path that exists, must be a directory.
    path = Path(run_dir)
    for candidate in (path, *path.parents):
        try:
            mode = os.stat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # look further up
        except OSError as exc:
            return f"run directory '{run_dir}': cannot examine {candidate}: {exc.strerror}"
        if stat.S_ISDIR(mode):
            return None
        what = "it" if candidate == path else str(candidate)
        return f"run directory '{run_dir}': {what} exists and is not a directory"
    return None
