"""The feedback join: clicks, add-to-carts and purchases find the impression that led to them.

Rules (docs/impressions.md):

- an event with `request_id` joins the impression of that request for the same user (its key
  ends with the request id; of several answers under one id, a caller's `x-request-id` given
  to every call of a page, the latest that showed the item, else the latest); position: the
  event's `position` (1-based) if given, else the item's position in the impression, else
  unknown;
- an event without one joins the user's latest impression containing its item, shown at most
  `window_s` before the event (and not after it: a timestamp in whole seconds, what a clock of
  that resolution or an RFC 3339 time without a fraction gives, names its whole second,
  `shown_by`); position: the item's;
- anything else joins nothing (counted as unmatched).

The events of a batch are joined per user: one walk back over the user's impressions (under
every key of the ring, the current key first), reading at most `most` records in all
(`Limits.join_impressions`), serves every event of that user in the batch
(`_Shown`). A shared id such as "anonymous" holds an answer every few seconds for the whole
retention, and the join runs inside the store's one write lock: a batch of n clicks of one
user reads at most `most` records, not n times that. The walk starts at the user's newest
impression when an event of the batch names a request id, else at the latest event's time, and
stops at the earliest event's window start. A request id's answer, or an item's showing, that
the walk does not reach does not join.

With several workers, the impression an event names may still be buffered in another worker
(for up to its flush interval): the events a batch left unmatched are then tried once more
`retry_s` later, in the background, and counted as unmatched only if that fails too.

Each joined event adds its outcome to the impression record and to the counters of the
impression's model version and channel (a first click also to the impression's bucket of
showing time), in the write transaction that stores the TrackEvents batch (`in_write`, called
by `ProfileRepository`; no entry and no transaction of its own), so GetModelStats and the log
agree and the join commits with its events. Events left unmatched for the retry go into a new
outbox entry in that transaction. A batch whose join could not run there (`in_write` None,
`Impressions.before_write` False) is joined after its commit (`on_events`: `EventListener`),
in one write transaction of its own, as are replays and retries. That transaction deletes the batch's
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
from dataclasses import dataclass, field

import numpy as np

from contract.items import item_code

from .. import metrics
from ..store import keys, outbox
from ..store.damaged import IMPRESSION, JOIN, report_damaged
from ..store.outbox import Batch
from .log import ImpressionLog
from .logging import logger
from .records import (
    CART,
    CLICK,
    PURCHASE,
    UNKNOWN_POSITION,
    head_of,
    intact,
    new_counters,
    with_outcome,
)
from .writer import add_buckets, add_counters, bucket_of, user_hashes

__all__ = ["ImpressionJoin", "OUTCOME_OF"]

OUTCOME_OF = {"click": CLICK, "email_click": CLICK, "sms_click": CLICK, "push_click": CLICK,
              "add_to_cart": CART, "purchase": PURCHASE}
"""Event type -> the outcome it adds to its impression."""


def shown_by(ts: float) -> int:
    """The last millisecond an impression may be shown at and still lead to an event stamped
    `ts`: `ts` itself, or the end of its second when `ts` is whole seconds (a clock of that
    resolution, an RFC 3339 time without a fraction): the click 0.2 s after an answer shown at
    .3 s into a second is stamped with the start of that second."""
    ms = keys.millis(ts)
    return ms + 999 if float(ts).is_integer() else ms


class ImpressionJoin:
    """`EventListener` that joins tracked events to the impression log."""

    def __init__(self, log: ImpressionLog, window_s: float = 86400.0, retry_s: float = 0.0,
                 most: int = 10_000):
        """`retry_s`: how long after a batch its unmatched events are tried once more (0: never;
        the server sets it when several workers buffer answers); `most`: the user's impressions
        one batch's join reads at most per user, newest first (`Limits.join_impressions`)."""
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
        found = self._matched(txn, pairs)
        self._apply(txn, found)
        unmatched = found.unmatched
        if entry is not None and unmatched and not final:
            outbox.keep(txn, self._outbox, entry, [k for _, k in unmatched])
        return found.joined, unmatched

    def in_write(self, txn, pairs: Sequence[tuple], entry: bytes) -> tuple[int, list] | None:
        """Join (event, events key) pairs of a batch in the ingestion's own write transaction
        `txn`, which stores them (`ProfileRepository`: no outbox entry, no transaction of its
        own; this worker's answers were flushed before it began, `Impressions.before_write`):
        (events joined, pairs unmatched). With a retry to come (`retry_s`), the unmatched go
        into a new entry `entry` for it (or the replay), as `_join` keeps them. None, nothing
        written: reading the impressions failed (logged); the caller writes the batch's entry,
        so the join is tried again after the commit, as a listener's (`on_events`)."""
        try:
            found = self._matched(txn, pairs)
        except Exception:
            logger.exception("joining %d events to impressions in their write failed (tried "
                             "again after it)", len(pairs))
            return None
        self._apply(txn, found)
        if found.unmatched and self.retry_s:
            self._outbox.put(txn, entry, outbox.value([k for _, k in found.unmatched]))
        return found.joined, found.unmatched

    def after_write(self, joined: int, unmatched: list, entry: bytes) -> None:
        """Once the ingestion that joined (`in_write`) has committed: count the joins, and
        start the retry of the unmatched (with several workers) on their entry."""
        metrics.IMPRESSION_JOINS.labels("joined").inc(joined)
        if not self.retry_s:
            metrics.IMPRESSION_JOINS.labels("unmatched").inc(len(unmatched))
        elif unmatched:
            task = asyncio.create_task(self._retry(unmatched, entry))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    def _matched(self, txn, pairs: Sequence[tuple]) -> _Found:
        """What joining `pairs` changes, read in `txn` (nothing written)."""
        found = _Found()
        unmatched = []
        of_user: dict[str, list[int]] = {}
        for i, (ev, _) in enumerate(pairs):
            of_user.setdefault(ev.user_id, []).append(i)
        for user, picked in self._shown_to(txn, of_user):  # one walk a user, then dropped
            shown = _Shown(self, txn, user, [pairs[i][0] for i in picked])
            report_damaged(shown.damaged, IMPRESSION, JOIN, "passed over by a join (an event "
                           "naming one joins nothing)")
            for i in picked:
                ev = pairs[i][0]
                hit = shown.find(ev)
                if hit is None:
                    unmatched.append(i)
                    continue
                found.joined += 1
                key, raw, position = hit
                at, version, channel, _, first, *_ = head_of(raw)
                ck = keys.impression_count_key(version, channel)
                delta = found.counts.get(ck)
                if delta is None:
                    delta = found.counts[ck] = new_counters()
                outcome = OUTCOME_OF[ev.type]
                raw = with_outcome(raw, outcome, position, ev.value, delta)
                found.records[key] = shown.records[key] = raw  # the user's next events see it
                if outcome == CLICK and first < 0:  # its first click: clicked in its bucket
                    found.buckets.setdefault(bucket_of(version, at), np.zeros(2))[1] += 1
        found.unmatched = [pairs[i] for i in sorted(
            unmatched + [i for picked in of_user.values() for i in picked])]  # batch order
        return found

    def _shown_to(self, txn, of_user: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
        """The (user, their events' indices) of `of_user` that some impression under some key
        of the ring was shown to, popped from it (one seek a user and key: most users of a
        batch were never shown an answer, and a walk costs ~30 times that); those left in
        `of_user` join nothing."""
        users = list(of_user)
        for kid, key in self.log.ring.keys:
            held = self._t.holding(txn, [keys.impression_user_prefix(kid, h)
                                         for h in user_hashes(key, users)])
            users = [u for u, h in zip(users, held) if not h]
        never = set(users)
        return [(u, of_user.pop(u)) for u in list(of_user) if u not in never]

    def _apply(self, txn, found: _Found) -> None:
        """Write what `_matched` found in `txn`."""
        for key, raw in found.records.items():
            self._t.put(txn, key, raw)
        add_counters(self._t, txn, found.counts)
        add_buckets(self._t, txn, found.buckets)


@dataclass
class _Found:
    """A join's outcome before it is written: the impression records changed, the counters'
    and buckets' deltas, how many events joined and the (event, events key) pairs that did not."""

    records: dict[bytes, bytes] = field(default_factory=dict)
    counts: dict[bytes, np.ndarray] = field(default_factory=dict)
    buckets: dict[bytes, np.ndarray] = field(default_factory=dict)
    joined: int = 0
    unmatched: list = field(default_factory=list)


class _Shown:
    """What one walk back over a user's impressions found, for every event of that user in a
    batch: the records read (`records`, updated as events join), the keys by request id and,
    for the events without one, where each of their items was shown.

    The walk reads at most `join.most` records (values at the cursor, newest first; the
    current key of the ring first, then older keys with what is left). It starts at the
    user's newest impression if an event names a request id, else at the latest event's time,
    and stops at the earliest event's window start when no event names one."""

    def __init__(self, join: ImpressionJoin, txn, user_id: str, events: Sequence):
        self.window_s = join.window_s
        self.records: dict[bytes, bytes] = {}
        self.by_request: dict[bytes, list[bytes]] = {}
        self.by_item: dict[int, list[tuple[int, int, bytes, int]]] = {}
        """item code -> (ms, ring index, key, position) of each walked impression showing it."""
        self.damaged = 0
        """Records the walk passed over: damaged (`records.intact`)."""
        named = any(ev.request_id for ev in events)
        plain = [ev for ev in events if not ev.request_id]
        left = join.most
        walked: list[tuple[int, bytes, bytes]] = []  # (ring index, key, record)
        if not named:  # the walk's time range: the same under every ring key
            # (an event in whole seconds: from its second's end, `shown_by`)
            last = max(ev.timestamp + float(ev.timestamp).is_integer() for ev in events)
            latest = keys.ms_part(last) + keys.SEP + b"\xff"
            earliest = keys.ms_part(min(ev.timestamp for ev in events) - self.window_s)
        for index, (kid, _) in enumerate(join.log.ring.keys):
            prefix = join.log.user_prefix(user_id, kid)
            before = start = None
            if not named:
                before, start = prefix + latest, prefix + earliest
            for key, raw in itertools.islice(join._t.walk_back(txn, prefix, before), left):
                if start is not None and key < start:
                    break
                left -= 1
                if not intact(raw):  # damaged: its outcomes unknown, nothing joins it
                    self.damaged += 1
                    continue
                walked.append((index, key, raw))
                self.records[key] = raw
                if named:
                    self.by_request.setdefault(key.split(keys.SEP, 3)[3], []).append(key)
            if left <= 0:
                break
        if plain and walked:
            self._index_items(walked, {item_code(ev.item_id) for ev in plain})

    def _index_items(self, walked: list, codes: set[int]) -> None:
        """`by_item` of the walked records, for the item codes `codes` only."""
        items = [head_of(raw)[3] for _, _, raw in walked]
        lengths = np.fromiter((len(a) for a in items), np.int64, len(items))
        flat = np.concatenate(items) if items else np.zeros(0, np.int64)
        hits = np.flatnonzero(np.isin(flat, np.fromiter(codes, np.int64, len(codes))))
        if not len(hits):
            return
        record = np.repeat(np.arange(len(items)), lengths)[hits]
        starts = np.cumsum(lengths) - lengths
        for at, rec in zip(hits.tolist(), record.tolist()):
            index, key, _ = walked[rec]
            found = self.by_item.setdefault(int(flat[at]), [])
            if not found or found[-1][2] != key:  # the item's first position in the answer
                found.append((keys.impression_ms(key), index, key, at - int(starts[rec])))

    def find(self, ev) -> tuple[bytes, bytes, int] | None:
        """(key, record, 0-based position) of the impression `ev` joins, None if none."""
        code = item_code(ev.item_id)
        if ev.request_id:
            named = self.by_request.get(ev.request_id.encode(), ())
            if not named:
                return None
            # the latest answer of that id that showed the item, else the latest
            _, _, key, at = max((at is not None, keys.impression_ms(key), key, at) for key in named
                                for at in (_position_of(self.records[key], code),))
            position = ev.position - 1 if ev.position > 0 else at
            return key, self.records[key], UNKNOWN_POSITION if position is None else position
        # the latest showing of the item at most window_s before the event, not after it
        low, high = keys.millis(ev.timestamp - self.window_s), shown_by(ev.timestamp)
        best = max(((ms, index, key, at) for ms, index, key, at in self.by_item.get(code, ())
                    if low <= ms <= high), default=None)
        return None if best is None else (best[2], self.records[best[2]], best[3])


def _position_of(raw: bytes, code: int) -> int | None:
    items = head_of(raw)[3]
    hit = np.flatnonzero(items == code)
    return int(hit[0]) if len(hit) else None
