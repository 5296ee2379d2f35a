"""The checker process's metric families (lvsha.daemon.metrics), and the samples of its checks.

Real servers and virtual services: `lvsha.ipvs.metrics`. The checker process puts them
together (`lvsha.daemon.checker_process`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from lvsha.checks.durations import CheckDurations
from lvsha.daemon.metrics import LOOP_FAMILIES, Family, Sample, catalog

FAMILIES = catalog(
    *LOOP_FAMILIES,
    Family(
        "lvsha_check_lateness_seconds",
        "summary",
        "How late checks start after they are due: quantiles over the last 10,000 starts, "
        "count and sum since the start.",
    ),
    Family(
        "lvsha_check_duration_seconds",
        "histogram",
        "How long probes took, from start to verdict (a timeout counts as its timeout), by "
        "check type.",
    ),
    Family(
        "lvsha_ipvs_detection_to_kernel_seconds",
        "summary",
        "From a verdict change to the kernel's IPVS table holding it: quantiles over the "
        "last 10,000 changes, count and sum since the start.",
    ),
    Family("lvsha_checks_distinct", "gauge", "Distinct checks run (shared checks count once)."),
    Family("lvsha_checks_in_flight", "gauge", "Checks running now."),
    Family("lvsha_real_servers", "gauge", "Real servers (with health=healthy: those healthy)."),
    Family(
        "lvsha_real_server_up",
        "gauge",
        "1 while the real server is healthy (its checks pass, not drained or in maintenance), "
        "else 0.",
    ),
    Family(
        "lvsha_real_server_weight",
        "gauge",
        "The real server's weight in the kernel's IPVS table now (absent while it is not in "
        "the table).",
    ),
    Family(
        "lvsha_real_server_connections",
        "gauge",
        "The real server's connections by state (active, inactive), as the kernel counted "
        "them at the last read of the table (see lvsha_ipvs_counters_age_seconds).",
    ),
    Family(
        "lvsha_ipvs_counters_age_seconds",
        "gauge",
        "Seconds since the connection counters were read from the kernel (the syncer re-reads "
        "the table every global.ipvs.resync_interval; a status request reads them too).",
    ),
    Family(
        "lvsha_virtual_server_quorum",
        "gauge",
        "1 while the virtual service holds quorum (its healthy real servers' summed weight "
        "reaches its quorum, with hysteresis), else 0.",
    ),
    Family(
        "lvsha_virtual_server_live_weight",
        "gauge",
        "The summed weight of the virtual service's healthy real servers (what quorum is "
        "decided on).",
    ),
    Family(
        "lvsha_virtual_server_sorry_server_active",
        "gauge",
        "1 while the virtual service's sorry server is in its pool (quorum lost), else 0; "
        "only services with a sorry server.",
    ),
    Family("lvsha_ipvs_operations_total", "counter", "IPVS changes made, by operation."),
    Family("lvsha_ipvs_errors_total", "counter", "IPVS changes the kernel refused."),
    Family(
        "lvsha_ipvs_drift_repairs_total",
        "counter",
        "IPVS changes that corrected drift: a difference between the kernel's table and what "
        "lvsha last left in it (someone else's change), found by a re-read.",
    ),
    Family(
        "lvsha_ipvs_order_repairs_total",
        "counter",
        "Destinations deleted and added again to keep a hashing scheduler's table as every "
        "director with the same configuration builds it: destinations in the configured order "
        "(mh, sh, dh), and (mh) a destination at weight 0 without the weight the kernel "
        "remembers from before.",
    ),
)


def check_duration_samples(durations: CheckDurations) -> Iterator[Sample]:
    """`lvsha_check_duration_seconds` for every check type observed so far."""
    for check_type, distribution in durations.by_type().items():
        labels = {"type": check_type}
        for bound, count in distribution.cumulative():
            le = "+Inf" if math.isinf(bound) else f"{bound:g}"
            yield ("lvsha_check_duration_seconds_bucket", {**labels, "le": le}, float(count))
        yield ("lvsha_check_duration_seconds_sum", labels, distribution.total)
        yield ("lvsha_check_duration_seconds_count", labels, float(distribution.count))
