"""The checker's part of `lvsha status`: every virtual server with its real servers, as the
`virtual_server` definition of lvsha/api/schemas/status.json has them.

Built from what the checker holds (the syncer's services, quorum and last table, the pool's
verdicts, admin states and checks) and a fresh read of the kernel's connection counters. The
JSON is written a virtual server (or a few hundred real servers) at a time, letting the loop
run probes between slices, so a status of 10,000 real servers never stalls the checks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from lvsha.checks.admin import AdminState
from lvsha.checks.pool import CheckReport
from lvsha.checks.verdict import RealServerId, RealServerVerdict
from lvsha.ipvs.model import ConnectionTable, Forwarding
from lvsha.ipvs.specs import service_id
from lvsha.ipvs.syncer import IpvsSyncer

SLICE = 0.005
"""Seconds of building before the loop gets to run other work."""
CHUNK = 128
"""Real servers built between two looks at the clock."""

FORWARDING = {
    Forwarding.MASQUERADE: "nat",
    Forwarding.DIRECT_ROUTE: "dr",
    Forwarding.TUNNEL: "tun",
}

NOT_JUDGED = "not judged yet (a reload in progress)"
NO_PROBE = "no probe yet"


class StatusPool(Protocol):
    """What the status needs of the check pool."""

    def verdicts(self) -> Mapping[RealServerId, RealServerVerdict]: ...

    def admin_of(self, real_server: RealServerId) -> AdminState | None: ...

    def check_reports(self, real_server: RealServerId) -> list[CheckReport]: ...


async def status_body(
    pool: StatusPool,
    syncer: IpvsSyncer,
    counters: ConnectionTable | None,
    *,
    slice_seconds: float = SLICE,
) -> str:
    """`{"virtual_servers": [...]}` as JSON text. `counters` None: not read (every real
    server's connection counts are null)."""
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()

    verdicts = pool.verdicts()
    table = syncer.table or {}
    quorum = syncer.quorum
    sorry_active = syncer.sorry_active
    parts: list[str] = []
    yield_at = loop.time() + slice_seconds
    for service in syncer.services:
        key = service.key
        present = table.get(key)
        in_kernel = present.destinations_by_key if present is not None else {}
        connections = None if counters is None else counters.get(key, {})
        held = quorum.get(key)
        real_servers: list[str] = []
        specs = service.spec.real_servers
        for start in range(0, len(specs), CHUNK):
            entries: list[dict[str, Any]] = []
            for spec, configured in zip(
                specs[start : start + CHUNK],
                service.real_servers[start : start + CHUNK],
                strict=True,
            ):
                rs = configured.id
                destination = spec.destination
                found = in_kernel.get(configured.destination)
                counted = (
                    None
                    if connections is None or found is None
                    else connections.get(configured.destination)
                )
                verdict = verdicts.get(rs)
                admin = pool.admin_of(rs)
                entry: dict[str, Any] = {
                    "address": rs.address,
                    "port": rs.port,
                    "forwarding": FORWARDING.get(destination.forwarding, "nat"),
                    "health": "unhealthy" if verdict is None else verdict.health.value,
                    "reason": NOT_JUDGED if verdict is None else verdict.reason,
                    "since": None if verdict is None else verdict.at + offset,
                    "admin": "ready" if admin is None else admin.mode.value,
                    "admin_source": None if admin is None else admin.source,
                    "admin_reason": None if admin is None else admin.reason,
                    "configured_weight": destination.weight,
                    "kernel_weight": None if found is None else found.weight,
                    "active_connections": None if counted is None else counted.active,
                    "inactive_connections": None if counted is None else counted.inactive,
                    "checks": [_check(report, offset) for report in pool.check_reports(rs)],
                }
                entry["reason"] = _reason(entry)
                entries.append(entry)
            # One dumps per chunk: a list's text without its brackets joins with the others'.
            real_servers.append(json.dumps(entries, separators=(",", ":"))[1:-1])
            if loop.time() >= yield_at:
                await asyncio.sleep(0)
                yield_at = loop.time() + slice_seconds
        head = {
            "name": service.name,
            "service": service_id(key),
            "scheduler": service.spec.options.scheduler,
            "quorum_up": held is not None and held.up,
            "sorry_server_active": key in sorry_active,
            "in_kernel": present is not None,
            "group": service.group,
        }
        text = json.dumps(head, separators=(",", ":"))
        parts.append(f'{text[:-1]},"real_servers":[{",".join(real_servers)}]}}')
    return f'{{"virtual_servers":[{",".join(parts)}]}}'


def _reason(entry: dict[str, Any]) -> str:
    """Why a real server is healthy or not, in its checks' words: the verdict's own reason
    dates from its last change, which may be its start ("no probe yet") though every check
    has spoken since. Drained and in maintenance: the verdict's reason (the operator's)."""
    reason: str = entry["reason"]
    if entry["health"] not in ("healthy", "unhealthy"):
        return reason
    spoken = [c for c in entry["checks"] if c["ok"] is not None]
    if entry["health"] == "unhealthy":
        spoken = [c for c in spoken if c["status"] == "down"] or spoken
    if not spoken:
        return reason
    latest = max(spoken, key=lambda c: c["at"] or 0.0)
    return f"{latest['check']}: {latest['reason']}"


def _check(report: CheckReport, offset: float) -> dict[str, Any]:
    last = report.last_result
    return {
        "check": report.description,
        "status": report.status,
        "ok": None if last is None else last.ok,
        "reason": NO_PROBE if last is None else last.reason,
        "latency": None if last is None else last.latency,
        "at": None if report.last_result_at is None else report.last_result_at + offset,
    }
