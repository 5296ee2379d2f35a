"""IPVS: desired-table model, pure plan, kernel and in-memory ports."""
