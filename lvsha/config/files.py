"""Read a configuration file's bytes without ever blocking, hanging or reading without bound.

`check-config` and the daemon's reload read whatever path they are given. A FIFO would make
`open()` wait for a writer, `/dev/zero` would be read until memory runs out, and a huge file
would be parsed for minutes; each of these is a located error here instead.
"""

from __future__ import annotations

import os
import stat

from lvsha.config.limits import DEFAULT_MAX_SIZE as DEFAULT_MAX_SIZE  # noqa: PLC0414 - re-exported
from lvsha.config.limits import describe_size
from lvsha.config.source import ConfigError, Location, Problem


def too_large(file: str, size: int | None, max_size: int) -> ConfigError:
    what = f"{size} bytes" if size is not None else f"more than {max_size} bytes"
    return ConfigError(
        [
            Problem(
                Location(file, 1, 1),
                (),
                f"the file is {what}, more than the limit of {describe_size(max_size)}: a "
                "configuration is far smaller, so check that this is the right file; if it "
                "is, use --max-config-size BYTES to raise the limit",
            )
        ]
    )


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _problem(file: str, message: str) -> ConfigError:
    return ConfigError([Problem(Location(file, 1, 1), (), message)])


def _check_kind(file: str, mode: int) -> None:
    kind = _kind(mode)
    if kind is not None:
        raise _problem(
            file, f"cannot read the file: it is {kind}; give the path of a regular YAML file"
        )


def _cannot_read(file: str, exc: OSError) -> ConfigError:
    return _problem(file, f"cannot read the file: {exc.strerror or exc}")


def read_bounded(path: str | os.PathLike[str], max_size: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_size` of them, or ConfigError."""
    file = os.fspath(path)
    try:
        before = os.stat(file)
    except OSError as exc:
        raise _cannot_read(file, exc) from None
    _check_kind(file, before.st_mode)
    if before.st_size > max_size:
        raise too_large(file, before.st_size, max_size)
    try:
        # O_NONBLOCK: if a FIFO replaced the file since stat(), open() must not wait for a
        # writer; O_NOCTTY: a terminal swapped in must not become ours.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _cannot_read(file, exc) from None
    try:
        after = os.fstat(fd)
        _check_kind(file, after.st_mode)
        if after.st_size > max_size:
            raise too_large(file, after.st_size, max_size)
        chunks: list[bytes] = []
        total = 0
        # One byte past the limit tells a file that grew since fstat() from one that did not.
        while total <= max_size:
            chunk = os.read(fd, max_size + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _cannot_read(file, exc) from None
    finally:
        os.close(fd)
    if total > max_size:
        raise too_large(file, None, max_size)
    return b"".join(chunks)


def decode_utf8(file: str, data: bytes) -> str:
    """`data` as text, or ConfigError at the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(
            [
                Problem(
                    Location(file, line, column),
                    (),
                    f"the file is not UTF-8 text (byte {data[exc.start]:#04x} here): save it "
                    "as UTF-8",
                )
            ]
        ) from None


def read_config_text(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE) -> str:
    """The text of the configuration file at `path`, read as `load_file` reads it."""
    return decode_utf8(os.fspath(path), read_bounded(path, max_size))
