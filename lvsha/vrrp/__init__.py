"""VRRP (RFC 3768 v2, RFC 5798 v3): wire codec, pure state machine, I/O edges."""
