"""The checker's figures about each real server and virtual service, as metric samples
(families: `lvsha.checks.metrics`).

Built from what the checker holds, without a read of the kernel of their own: the pool's
verdicts, the syncer's table (as last read, with every operation acknowledged since) and the
connection counters of the last full read (the syncer's periodic one, or a status request's).
A generator, so the textfile writer renders it in slices (`lvsha.daemon.metrics.render_sliced`):
10,000 real servers never hold the loop for long.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict, host_port
from lvsha.ipvs.model import ConnectionTable, ServiceKey
from lvsha.ipvs.syncer import IpvsSyncer

Sample = tuple[str, dict[str, str], float]
"""As `lvsha.daemon.metrics.Sample` (not imported: that layer sits above this one)."""


def real_server_samples(
    verdicts: Mapping[RealServerId, RealServerVerdict],
    syncer: IpvsSyncer,
    labels: Mapping[ServiceKey, str],
    counters: ConnectionTable | None,
) -> Iterator[Sample]:
    """`lvsha_real_server_up` for every configured real server; `lvsha_real_server_weight`
    and `lvsha_real_server_connections` for those in the kernel's table (absent while it is
    not: a real server out of the table has no weight, rather than weight 0, which drained
    ones have). `counters` None: not read yet, no connection samples."""
    table = syncer.table or {}
    for service in syncer.services:
        key = service.key
        label = labels.get(key) or str(key)
        present = table.get(key)
        in_kernel = {} if present is None else present.destinations_by_key
        counted = None if counters is None else counters.get(key)
        for configured in service.real_servers:
            real_server = configured.id
            names = {
                "virtual_server": label,
                "real_server": host_port(real_server.address, real_server.port),
            }
            verdict = verdicts.get(real_server)
            up = verdict is not None and verdict.health is Health.HEALTHY
            yield ("lvsha_real_server_up", names, 1.0 if up else 0.0)
            found = in_kernel.get(configured.destination)
            if found is None:
                continue
            yield ("lvsha_real_server_weight", names, float(found.weight))
            connections = None if counted is None else counted.get(configured.destination)
            if connections is not None:
                yield (
                    "lvsha_real_server_connections",
                    {**names, "state": "active"},
                    float(connections.active),
                )
                yield (
                    "lvsha_real_server_connections",
                    {**names, "state": "inactive"},
                    float(connections.inactive),
                )


def virtual_server_samples(
    syncer: IpvsSyncer, labels: Mapping[ServiceKey, str]
) -> Iterator[Sample]:
    """`lvsha_virtual_server_quorum` and `lvsha_virtual_server_sorry_server_active` for every
    configured service the syncer has evaluated."""
    quorum = syncer.quorum
    sorry_active = syncer.sorry_active
    for service in syncer.services:
        key = service.key
        state = quorum.get(key)
        if state is None:
            continue  # not evaluated yet
        names = {"virtual_server": labels.get(key) or str(key)}
        yield ("lvsha_virtual_server_quorum", names, 1.0 if state.up else 0.0)
        yield ("lvsha_virtual_server_live_weight", names, float(state.live_weight))
        if service.spec.sorry_server is not None:
            active = 1.0 if key in sorry_active else 0.0
            yield ("lvsha_virtual_server_sorry_server_active", names, active)
