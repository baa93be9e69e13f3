"""Repeats of an answer under a caller's request id: logged once, not once per attempt.

A client that retries a Recommend whose answer it lost (gRPC's own retry of UNAVAILABLE resends
the call's metadata, the caller's `x-request-id` with it; a caller's retry after
DEADLINE_EXCEEDED does the same) has it answered again; the first answer was recorded already.
Logging both would count one showing twice: CTR and conversion halved for that answer, the
canary's counts inflated, and a click named by the request id joined to one of two records.

An answer whose request id the caller gave is a repeat when an answer showing the same user the
same items, in the same order, on the same channel and with the same context, was logged under
that id within `Settings.impression_repeat_seconds`: the writer then neither writes it nor
counts it. Two widgets of one page sharing an id show other items (another category, another
k) and are both logged; a retry answered otherwise (a bundle pushed, events tracked meanwhile)
showed the user other items and is logged too. Ids the server drew are unique: not looked up.

The digest (`digest`) is of the user's keyed hash, the request id and what was shown: no user
id. It is remembered in the `impressions` table by `campaigns.requests.RequestIds` (buckets as
wide as the window; each new entry deletes expired ones; retention drops any left), looked up
and written in the writer's one write transaction: LMDB has one writer at a time, so a repeat
answered by another worker is found as surely as one of the same worker.
"""
from __future__ import annotations

import hashlib

from ..campaigns.requests import RequestIds
from ..store import keys
from .records import shown_part

__all__ = ["Repeats", "digest"]


def digest(key: bytes, value: bytes) -> bytes:
    """The hex digest naming the answer of impression `key` (user hash and request id) and its
    record `value` (channel, context, items) as a repeat would name it."""
    user, _, request_id = key.rsplit(keys.SEP, 2)
    text = b"".join((user, keys.SEP, request_id, keys.SEP, shown_part(value)))
    return hashlib.blake2b(text, digest_size=16, person=b"tailor-shown").hexdigest().encode()


class Repeats:
    """The callers' request ids of one writer, read and written in its transactions."""

    def __init__(self, table):
        self._t = table
        self._ids: dict[float, RequestIds] = {}

    def seen(self, txn, key: bytes, value: bytes, ts: float, window: float) -> bool:
        """Whether the answer of impression (`key`, `value`), shown at `ts`, repeats one
        logged within `window` seconds; if not, it is remembered."""
        ids = self._ids.get(window)
        if ids is None:
            ids = self._ids[window] = RequestIds(self._t, window)
        name = digest(key, value)
        if ids.find(txn, name, ts) is not None:
            return True
        ids.remember(txn, name, "", ts)
        return False
