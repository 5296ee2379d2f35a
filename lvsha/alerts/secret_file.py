"""Secrets the sinks read from files at each sending (an SMTP password, a webhook key), so a
new secret takes effect without a reload and never sits in the configuration."""

from __future__ import annotations

from lvsha.alerts.delivery import DeliveryError


def read_secret(path: str, what: str, sink: str) -> bytes:
    """The content of `path` without its trailing line end (\\n or \\r\\n); DeliveryError
    naming the sink, the file and `what` it holds when it cannot be read or is empty."""
    try:
        with open(path, "rb") as file:
            content = file.read().rstrip(b"\r\n")
    except OSError as exc:
        raise DeliveryError(
            f"cannot read the {what} of alert sink {sink} from {path}: {exc.strerror or exc}"
        ) from exc
    if not content:
        raise DeliveryError(f"the {what} file of alert sink {sink}, {path}, is empty")
    return content
