"""Catalog errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import ResourceExhausted

__all__ = ["CatalogFull"]


class CatalogFull(ResourceExhausted):
    def __init__(self, held: int, adding: int, most: int):
        super().__init__(f"the catalog holds updates for {held} items and this call adds {adding}: "
                         f"at most {most} (limits.catalog_items); an update makes room once "
                         f"every stored bundle (the last bundles_kept versions) was trained with it")

