"""Which hosts stay on this machine: the server's secure-by-default rules (no TLS, no token,
generated secrets) and the client's refusal to send a token in the clear both key on it, so
both import this one rule."""
from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for `localhost` (any case: host names are) and loopback addresses, an IPv6 one with
    or without its brackets; any other name or address (0.0.0.0, ::, a host name) may be
    reachable from elsewhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
