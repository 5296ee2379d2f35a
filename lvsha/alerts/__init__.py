"""Alerts: the events operators should hear about, sent to SMTP, webhook and Alertmanager
sinks from the parent process (never from the VRRP process)."""
