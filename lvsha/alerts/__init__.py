"""Alerts: the events operators should hear about, sent to SMTP, webhook and Alertmanager
sinks from the parent process (never from the VRRP process).

`events` lists the events and their severities; `dispatch.Alerts` holds the sinks of a
configuration (`submit`, `update`, `samples`); `delivery` is one sink's bounded queue and
sender task; `digest` writes several events as one message; `smtp`, `webhook` and
`alertmanager` speak the protocols."""
