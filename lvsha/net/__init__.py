"""The network edges of the VRRP engine: virtual addresses, announcements and link state."""
