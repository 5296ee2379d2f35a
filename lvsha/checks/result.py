"""The outcome of one probe of one real server, as every probe type reports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict.

    `reason` is short and specific ("tcp connect refused", "http status 503, want 200-299",
    "timeout after 3.0 s") because it ends up in logs and transition events verbatim.
    """

    ok: bool
    reason: str
    latency: float
    """Seconds from the start of the probe to its verdict."""
    weight: int | None = None
    """A dynamic weight (script checks' exit codes 2-255); None keeps the configured weight."""
    refused: bool = False
    """The probe never ran: its script was refused (script security, not found, unknown
    user, exec failed). A failed result all the same; the pool also tells the operator, once
    while the refusals last (`lvsha.checks.pool.ScriptRefusal`)."""
