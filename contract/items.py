"""Stable item codes: one 53-bit integer per item id, the same in every process and bundle.

Stored records (profiles' recent items and seen-sets, the impression log) hold items by code, so
a record outlives the bundle whose catalog it was written against; a loaded bundle maps its rows
to codes once (`server.models.bundle.Bundle.item_codes`).
"""
from __future__ import annotations

import hashlib

__all__ = ["item_code"]

_CODE_MASK = (1 << 53) - 1


def item_code(item_id: str) -> int:
    """A stable 53-bit code for an item id (exact in float64; same in every process/bundle)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big") & _CODE_MASK
