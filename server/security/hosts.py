"""Which bind addresses stay on this machine (the secure-by-default rules key on it)."""
from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses; any other name or address (0.0.0.0, ::,
    a hostname) may be reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
