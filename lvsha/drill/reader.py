"""A socket read by a background thread for as long as a drill measures."""

from __future__ import annotations

import threading
from typing import Protocol, Self


class Closeable(Protocol):
    def close(self) -> None: ...


class ReaderThread:
    """Start, stop and context management of one reading thread.

    The sockets (or pipes) are opened by the subclass (in the right namespace, by `Host.call`)
    and handed to `__init__`, which closes them on `stop`; `_run` reads until `self._stopping`
    is set. An exception in `_run` ends the thread and is raised again, wrapped, by
    `_raise_if_failed`.
    """

    what = "reader"

    def __init__(self, name: str, *sockets: Closeable) -> None:
        self._sockets = sockets
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run_logged, name=name, daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise RuntimeError(f"the {self.what} stopped: {self.failure!r}") from self.failure

    def _run_logged(self) -> None:
        try:
            self._run()
        except Exception as exc:
            self.failure = exc

    def _run(self) -> None:
        raise NotImplementedError
