"""One stored catalog update: an item's content, or its removal, with its sequence number."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ["CatalogItem", "decode_item", "encode_item"]


@dataclass(frozen=True)
class CatalogItem:
    """An item as UpsertItems gives it, or a removal (`removed`, content fields empty)."""

    item_id: str
    title: str = ""
    category: str = ""
    price: float = 0.0
    url: str = ""
    image: str = ""
    removed: bool = False
    seq: int = 0
    """Sequence number of the update (set when stored)."""
    at: float = 0.0
    """Unix seconds of the update (set when stored)."""


def encode_item(item: CatalogItem) -> bytes:
    """JSON of every field but the id (the key holds it)."""
    fields = asdict(item)
    del fields["item_id"]
    return json.dumps(fields, separators=(",", ":")).encode()


def decode_item(item_id: str, raw: bytes) -> CatalogItem:
    return CatalogItem(item_id=item_id, **json.loads(raw))
