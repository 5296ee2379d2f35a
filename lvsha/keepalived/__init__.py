"""Reading keepalived's configuration, for the move from keepalived to lvsha."""
