"""The lvsha daemon: processes, notify hooks, event stream and the other long-running edges."""
