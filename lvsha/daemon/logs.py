"""Logging to stderr, one line per record, with the level where journald understands it."""

from __future__ import annotations

import logging
import os
import sys

# syslog priorities, which journald reads from a "<N>" prefix on each stderr line.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _Formatter(logging.Formatter):
    def __init__(self, process: str, journald: bool) -> None:
        super().__init__()
        self.process = process
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        line = f"{self.process} {record.levelname.lower()} {record.name}: {message}"
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        stamp = self.formatTime(record, "%H:%M:%S") + f".{int(record.msecs):03d}"
        return f"{stamp} {line}"


def setup_logging(process: str, level: int = logging.INFO) -> None:
    """Route every logger to stderr; under systemd, journald adds its own timestamps."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(process, journald="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
