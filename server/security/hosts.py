"""Bind addresses: which stay on this machine (the secure-by-default rules key on it), and how
one is written beside a port."""
from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "with_port"]


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses; any other name or address (0.0.0.0, ::,
    a hostname) may be reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def with_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets ("[::1]:50051"), as gRPC and URLs take it."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{host}:{port}"
