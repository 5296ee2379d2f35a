"""Listening Unix sockets in the run directory: bound with their mode set before anyone can
connect, replacing only a stale socket (one nobody answers on) left by a crashed run."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat


class SocketPathError(RuntimeError):
    """The socket path is taken by something that is not a stale socket."""


def remove_stale_socket(path: str, what: str, log: logging.Logger) -> None:
    """Remove a socket at `path` that nobody listens on; raise SocketPathError when the path
    is not a socket, or a running process listens on it (`what` names the socket)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(status.st_mode):
        raise SocketPathError(
            f"{path} exists and is not a socket: move it away or choose another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("replacing stale %s %s", what, path)
        os.unlink(path)
        return
    except OSError as error:
        raise SocketPathError(f"cannot check {path}: {error}") from None
    finally:
        probe.close()
    raise SocketPathError(
        f"{path} is in use by another running process: stop it or choose another path"
    )


def listen_unix(
    path: str, mode: int, gid: int | None, backlog: int, *, what: str, log: logging.Logger
) -> socket.socket:
    """A non-blocking socket listening on `path` with `mode` (and group `gid`), set before
    listen(): until then nobody can connect through looser permissions."""
    remove_stale_socket(path, what, log)
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, mode)
        if gid is not None:
            os.chown(path, -1, gid)
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return listener


def unlink_if_ours(path: str, inode: int | None) -> None:
    """Remove the socket file only if it is still ours: a newer process may have replaced it."""
    with contextlib.suppress(FileNotFoundError):
        if inode is not None and os.stat(path).st_ino == inode:
            os.unlink(path)
