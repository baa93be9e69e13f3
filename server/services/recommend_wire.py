"""RecommendResponse bytes assembled from each item's pre-serialized message.

An item's catalog fields (id, category, title, price, url) are the same in every answer: each
row's `ScoredItem` with those fields is serialized once per bundle, on first use, with its
field-1 tag and length in front. A response is then those bytes with the two per-call floats
(score, retrieval_score) appended to each item, followed by the response's own fields: the
protobuf wire format lets a message's fields come in any order, and a parser reads the bytes
as the message `RecommendConverter.from_result` builds (the score fields are written even when
0.0). The servicer returns the bytes; `registration` passes bytes through the serializer.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

from protos.tailor.v1 import recommendation_pb2 as pb

from ..models import Bundle
from ..recommend import RecResult

__all__ = ["response_bytes", "batch_bytes"]

_SCORES = np.dtype([("t2", "u1"), ("score", "<f4"), ("t3", "u1"), ("retrieval", "<f4")])
"""Fields 2 and 3 of ScoredItem (fixed32 floats): tag byte, then 4 bytes little-endian."""
_TAIL_BYTES = _SCORES.itemsize
_MAX_ROWS = 500_000
"""Rows whose bytes each bundle keeps (the most recommended ones come first); others are
serialized per answer."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, varint length, payload."""
    return bytes((tag,)) + _varint(len(payload)) + payload


class _ItemBytes:
    """Per bundle: row -> the row's item as field 1 of RecommendResponse, minus the scores."""

    def __init__(self, bundle: Bundle):
        items = bundle.items
        self.ids, self.cats, self.names = items["item_ids"], items["category"], items["category_names"]
        self.titles, self.prices, self.urls = items["titles"], items["price"], items["urls"]
        self.heads: dict[int, bytes] = {}

    def head(self, row: int) -> bytes:
        head = self.heads.get(row)
        if head is None:
            body = pb.ScoredItem(item_id=str(self.ids[row]), category=str(self.names[self.cats[row]]),
                                 title=str(self.titles[row]), price=float(self.prices[row]),
                                 url=str(self.urls[row])).SerializeToString()
            # the scores follow the catalog fields inside the item: count them in its length
            head = b"\x0a" + _varint(len(body) + _TAIL_BYTES) + body
            if len(self.heads) < _MAX_ROWS:
                self.heads[row] = head
        return head


_tables: weakref.WeakKeyDictionary[Bundle, _ItemBytes] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _item_bytes(bundle: Bundle) -> _ItemBytes:
    table = _tables.get(bundle)
    if table is None:
        with _lock:
            table = _tables.get(bundle) or _tables.setdefault(bundle, _ItemBytes(bundle))
    return table


def response_bytes(res: RecResult, request_id: str = "") -> bytes:
    """The serialized RecommendResponse of `res` (as `RecommendConverter.from_result` builds it)."""
    table = _item_bytes(res.bundle)
    scores = np.empty(len(res.rows), _SCORES)
    scores["t2"], scores["t3"] = 0x15, 0x1D
    scores["score"], scores["retrieval"] = res.scores, res.retrieval_scores
    tails = scores.tobytes()
    head = table.head
    parts = []
    for j, row in enumerate(res.rows.tolist()):
        parts.append(head(row))
        parts.append(tails[j * _TAIL_BYTES:(j + 1) * _TAIL_BYTES])
    parts.append(_field(0x12, res.bundle.version.encode()))
    if request_id:
        parts.append(_field(0x1A, request_id.encode()))
    if res.cold_start:
        parts.append(b"\x20\x01")
    return b"".join(parts)


def batch_bytes(responses: list[bytes]) -> bytes:
    """The serialized RecommendBatchResponse holding each serialized RecommendResponse."""
    return b"".join(_field(0x0A, r) for r in responses)
