"""The feedback join: clicks, add-to-carts and purchases find the impression that led to them.

Rules (docs/impressions.md):

- an event with `request_id` joins the impression of that request for the same user (its key
  ends with the request id; of several answers under one id, a caller's `x-request-id` given
  to every call of a page, the latest that showed the item, else the latest); position: the
  event's `position` (1-based) if given, else the item's position in the impression, else
  unknown;
- an event without one joins the user's latest impression containing its item, shown at most
  `window_s` before the event (and not after it); position: the item's;
- anything else joins nothing (counted as unmatched).

Both read at most `most` of the user's impressions per key of the ring, newest first
(`Limits.join_impressions`): a shared id such as "anonymous" holds an answer every few seconds
for the whole retention, and the join runs inside the store's one write lock. A request id's
answer older than the user's newest `most` does not join, nor an item last shown further back.

With several workers, the impression an event names may still be buffered in another worker
(for up to its flush interval): the events a batch left unmatched are then tried once more
`retry_s` later, in the background, and counted as unmatched only if that fails too.

Each joined event adds its outcome to the impression record and to the counters of the
impression's model version and channel (a first click also to the impression's bucket of
showing time), in one write transaction per TrackEvents batch (after it commits:
`EventListener`), so GetModelStats and the log agree. That transaction also deletes the batch's
outbox entry (`server.profiles.outbox`) and joins only the events the entry still names, only if
it was still there: adding counts is not idempotent, so an event is joined once whether the
worker that committed it joins it or a replay after a crash does. Events left unmatched for the
retry are put back in the entry (`store.outbox.keep`), which the retry claims in its turn (a
crash or a stop before it leaves them to the replay).
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import numpy as np

from contract.items import item_code

from .. import metrics
from ..store import keys, outbox
from ..store.outbox import Batch
from .log import ImpressionLog
from .logging import logger
from .records import CART, CLICK, PURCHASE, UNKNOWN_POSITION, head_of, new_counters, with_outcome
from .writer import add_buckets, add_counters, bucket_of

__all__ = ["ImpressionJoin", "OUTCOME_OF"]

OUTCOME_OF = {"click": CLICK, "email_click": CLICK, "sms_click": CLICK, "push_click": CLICK,
              "add_to_cart": CART, "purchase": PURCHASE}
"""Event type -> the outcome it adds to its impression."""


class ImpressionJoin:
    """`EventListener` that joins tracked events to the impression log."""

    def __init__(self, log: ImpressionLog, window_s: float = 86400.0, retry_s: float = 0.0,
                 most: int = 10_000):
        """`retry_s`: how long after a batch its unmatched events are tried once more (0: never;
        the server sets it when several workers buffer answers); `most`: the user's impressions
        one event's join reads at most per key, newest first (`Limits.join_impressions`)."""
        self.log, self.window_s, self.retry_s, self.most = log, window_s, retry_s, most
        self._t = log.store.table("impressions")
        self._outbox = log.store.table("outbox")
        self._retries: set[asyncio.Task] = set()

    @staticmethod
    def follows(events: Sequence) -> list[int]:
        """The events that may join (their batch gets an outbox entry)."""
        return [i for i, ev in enumerate(events) if ev.type in OUTCOME_OF and ev.item_id]

    async def on_events(self, events: Sequence, batch: Batch | None = None) -> None:
        """Join `events` (those `follows` picks); with their batch's outbox entry (`batch`),
        those it still names."""
        keys_ = batch.event_keys if batch is not None else itertools.repeat(None)
        pairs = list(zip(events, keys_))
        entry = batch.entry if batch is not None else None
        if not pairs and entry is None:
            return
        unmatched = await self._join_off_loop(pairs, entry, final=not self.retry_s)
        if unmatched and self.retry_s:
            task = asyncio.create_task(self._retry(unmatched, entry))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _retry(self, pairs: list, entry: bytes | None) -> None:
        await asyncio.sleep(self.retry_s)
        await self._join_off_loop(pairs, entry, final=True)

    async def _join_off_loop(self, pairs: Sequence[tuple], entry: bytes | None,
                             final: bool) -> list:
        """`_join_pairs` in a thread; the (event, events key) pairs left unmatched (none when
        it failed: the entry stays for the outbox replay)."""
        try:
            return await asyncio.to_thread(self._join_pairs, pairs, entry, final)
        except Exception:  # ingestion succeeded; the outbox replays these events: say so
            logger.exception("joining %d events to impressions failed", len(pairs))
            return []

    def join(self, events: Sequence, final: bool = True) -> list:
        """Join `events` (TrackedEvent-like, no outbox entry) in one write transaction; returns
        those that joined nothing (counted as unmatched if `final`)."""
        return [ev for ev, _ in self._join_pairs([(ev, None) for ev in events], None, final)]

    def _join_pairs(self, pairs: Sequence[tuple], entry: bytes | None, final: bool) -> list:
        """Join (event, events key) pairs in one write transaction, claiming outbox `entry`
        (if any: then only the events it names, and nothing if it is gone); returns the pairs
        that joined nothing (counted as unmatched if `final`; put back in the entry if not)."""
        self.log.flush()  # returns once this worker's buffered impressions are committed
        joined, unmatched = self.log.store.write(lambda txn: self._join(txn, pairs, entry, final))
        metrics.IMPRESSION_JOINS.labels("joined").inc(joined)
        if final:
            metrics.IMPRESSION_JOINS.labels("unmatched").inc(len(unmatched))
        return unmatched

    def close(self) -> None:
        """Drop the retries still waiting (shutting down: their events stay unjoined, in their
        outbox entries for the next start's replay)."""
        for task in self._retries:
            task.cancel()

    def _join(self, txn, pairs: Sequence[tuple], entry: bytes | None,
              final: bool) -> tuple[int, list]:
        """(events joined, pairs unmatched) of `pairs` in write transaction `txn`."""
        if entry is not None:
            pairs = outbox.claim_named(txn, self._outbox, entry, pairs, at=1)
            if not pairs:
                return 0, []  # joined already (by a replay, or the worker that committed them)
        counts: dict[bytes, np.ndarray] = {}
        buckets: dict[bytes, np.ndarray] = {}
        unmatched, joined = [], 0
        for ev, event_key in pairs:
            found = self._find(txn, ev)
            if found is None:
                unmatched.append((ev, event_key))
                continue
            joined += 1
            key, raw, position = found
            shown, version, channel, _, first, *_ = head_of(raw)
            ck = keys.impression_count_key(version, channel)
            delta = counts.get(ck)
            if delta is None:
                delta = counts[ck] = new_counters()
            outcome = OUTCOME_OF[ev.type]
            self._t.put(txn, key, with_outcome(raw, outcome, position, ev.value, delta))
            if outcome == CLICK and first < 0:  # its first click: clicked in its bucket
                buckets.setdefault(bucket_of(version, shown), np.zeros(2))[1] += 1
        add_counters(self._t, txn, counts)
        add_buckets(self._t, txn, buckets)
        if entry is not None and unmatched and not final:
            outbox.keep(txn, self._outbox, entry, [k for _, k in unmatched])
        return joined, unmatched

    def _find(self, txn, ev) -> tuple[bytes, bytes, int] | None:
        """(key, record, 0-based position) of the impression `ev` joins, None if none. The
        user's impressions are looked for under every key of the `user-id` ring (those shown
        before a rotation are filed under the key of their time), the newest `most` of each."""
        code = item_code(ev.item_id)
        prefixes = [self.log.user_prefix(ev.user_id, kid) for kid, _ in self.log.ring.keys]
        table, most = self._t, self.most
        if ev.request_id:
            suffix = keys.SEP + ev.request_id.encode()
            named = [(keys.impression_ms(key), key, table.get(txn, key)) for prefix in prefixes
                     for key in itertools.islice(table.keys_back(txn, prefix), most)
                     if key.endswith(suffix)]  # keys only: the values of those named
            if not named:
                return None
            # the latest answer of that id that showed the item, else the latest
            _, _, key, raw, at = max((at is not None, ms, key, raw, at) for ms, key, raw in named
                                     for at in (_position_of(raw, code),))
            position = ev.position - 1 if ev.position > 0 else at
            return key, raw, UNKNOWN_POSITION if position is None else position
        best = None  # (ms, key, record, position) of the latest impression holding the item
        for prefix in prefixes:
            start = prefix + keys.ms_part(ev.timestamp - self.window_s)
            end = prefix + keys.ms_part(ev.timestamp) + keys.SEP + b"\xff"
            for key in itertools.islice(table.keys_back(txn, prefix, before=end), most):
                if key < start:
                    break
                raw = table.get(txn, key)
                at = _position_of(raw, code)
                if at is not None:  # time order within a prefix: the first met is the latest
                    if best is None or keys.impression_ms(key) >= best[0]:
                        best = (keys.impression_ms(key), key, raw, at)
                    break
        return None if best is None else best[1:]


def _position_of(raw: bytes, code: int) -> int | None:
    items = head_of(raw)[3]
    hit = np.flatnonzero(items == code)
    return int(hit[0]) if len(hit) else None
