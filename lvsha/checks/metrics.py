"""The checker process's metric families (lvsha.daemon.metrics)."""

from __future__ import annotations

from lvsha.daemon.metrics import LOOP_FAMILIES, Family, catalog

FAMILIES = catalog(
    *LOOP_FAMILIES,
    Family(
        "lvsha_check_lateness_seconds",
        "gauge",
        "How late checks start after they are due, by quantile.",
    ),
    Family(
        "lvsha_ipvs_detection_to_kernel_seconds",
        "gauge",
        "From a verdict change to the kernel's IPVS table holding it, by quantile.",
    ),
    Family("lvsha_checks_distinct", "gauge", "Distinct checks run (shared checks count once)."),
    Family("lvsha_checks_in_flight", "gauge", "Checks running now."),
    Family("lvsha_real_servers", "gauge", "Real servers (with health=healthy: those healthy)."),
    Family("lvsha_ipvs_operations_total", "counter", "IPVS changes made, by operation."),
    Family("lvsha_ipvs_errors_total", "counter", "IPVS changes the kernel refused."),
    Family(
        "lvsha_ipvs_drift_total",
        "counter",
        "Differences found between the kernel and the wanted table.",
    ),
)
