"""What an item is everywhere: a stable code per item id, and the links it may carry.

Stable item codes: one 53-bit integer per item id, the same in every process and bundle.

Stored records (profiles' recent items and seen-sets, the impression log) hold items by code, so
a record outlives the bundle whose catalog it was written against; a loaded bundle maps its rows
to codes once (`server.models.bundle.Bundle.item_codes`).
"""
from __future__ import annotations

import hashlib

__all__ = ["item_code", "SCRIPT_SCHEMES", "SCRIPT_LINK", "script_scheme_problem"]

_CODE_MASK = (1 << 53) - 1


def item_code(item_id: str) -> int:
    """A stable 53-bit code for an item id (exact in float64; same in every process/bundle)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big") & _CODE_MASK


SCRIPT_SCHEMES = ("javascript", "vbscript", "data")
"""Schemes whose link can run script where a page or an email puts it (href, src): an item's
url or image with one is refused by UpsertItems, training's catalog reader and the bundle
check alike. Any other link passes (http(s), a path, an app's deep link, tel:, mailto:)."""
SCRIPT_LINK = r"(?i)^ *(javascript|vbscript|data):"
"""A link with one of them, after the leading spaces a browser strips (Python `re` and RE2)."""


def script_scheme_problem(scheme: str) -> str:
    """Why a link with the script scheme `scheme` is refused."""
    return (f"scheme {scheme!r} can run script where a page or an email puts the link "
            "(javascript:, vbscript: and data: are refused)")
