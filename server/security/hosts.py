"""Bind addresses: which stay on this machine (the secure-by-default rules key on it:
`contract.hosts.is_loopback`, the client's rule too), and how one is written beside a port."""
from __future__ import annotations

from contract.hosts import is_loopback

__all__ = ["is_loopback", "with_port"]


def with_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets ("[::1]:50051"), as gRPC and URLs take it."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{host}:{port}"
