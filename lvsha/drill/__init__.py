"""The failover drill: namespace labs, traffic probes, scenarios and their report."""
