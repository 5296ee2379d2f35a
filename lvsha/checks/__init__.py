"""Health checks: pure per-check state, probes, pool."""
