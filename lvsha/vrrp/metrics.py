"""The VRRP process's metric families (lvsha.daemon.metrics)."""

from __future__ import annotations

from lvsha.daemon.metrics import LOOP_FAMILIES, Family, catalog

FAMILIES = catalog(
    *LOOP_FAMILIES,
    Family("lvsha_vrrp_priority", "gauge", "The instance's effective priority."),
    Family("lvsha_vrrp_state", "gauge", "1 for the instance's current state, 0 for the others."),
    Family(
        "lvsha_vrrp_address_list_mismatch_total",
        "counter",
        "Adverts taken although their address list differs from ours.",
    ),
    Family("lvsha_vrrp_adverts_dropped_total", "counter", "Adverts dropped, by reason."),
    Family(
        "lvsha_vrrp_reassertions_suppressed_total",
        "counter",
        "Reassertions of mastership suppressed.",
    ),
)
