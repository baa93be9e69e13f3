"""The impression log: every Recommend answer, buffered on the serving path and written in groups.

`record` is all the Recommend path pays: one tuple appended to a list (no hashing, no encoding,
no I/O). A background task (`run`) takes the buffer every `flush_seconds`, or as soon as
`flush_records` are waiting, and writes the whole group in one write transaction: each
impression under its user's keyed hash (`store.keys.impression_key`), and the counters of each
(model version, channel) it touched (`records.C`), so GetModelStats always agrees with the log.
Writes lag rather than block: past `buffer_max` waiting impressions, new ones are dropped and
counted.

The group's encoding (keys, records, counters: Python, ~10-20 µs an answer) runs on the event
loop, `slice_records` answers at a time with the loop free between slices; only the write
(sealing-free LMDB puts and the commit's fsync, C that mostly releases the GIL) runs in a
thread. Encoded by a thread, a group of 300 held the GIL ~5 ms in all, and the event loop,
which takes the GIL again after every gRPC and LMDB call, waited a switch interval each time:
+3 ms on Recommend's p99 at half max load (docs/performance.md, "Tail latency"). A slice delays
the answers that arrive during it by at most its own length (< 1 ms).

The tuple names its bundle by `id` (`_bundles` maps it back), so it holds no object the garbage
collector tracks: CPython untracks it at its first young collection. A tuple holding the Bundle
stayed tracked while buffered, and those alive at a young collection were promoted toward the
oldest generation, whose growth starts the full collections that stop every thread
(docs/performance.md, "Tail latency").

Transactions: `flush` and the joins (`join.ImpressionJoin`) run under one lock, a join after
flushing what this worker buffered, so an event never misses an impression of its own worker.
The group `run` is encoding on the loop stays `_pending` until its thread writes it (under the
lock): a flush meanwhile (a join, an export, `close` after `run` was stopped) takes it over and
writes it with the buffer, so it is never missed, never written twice, and the loop never waits
for the lock.
"""
from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import chain

import numpy as np

from contract.erasure import digest

from .. import metrics
from ..ids import RandomIds
from ..security.secrets import Keyring
from ..store import Store, keys
from .counters import add_counters, count_group, merge_counts
from .logging import logger
from .records import decode, encode, encode_many, item_codes_of

__all__ = ["ImpressionLog", "user_hash"]

_DIGEST_CHARS = 32
SLICE_RECORDS = 32
"""Answers `run` encodes on the event loop before letting it serve again (~0.5 ms)."""
_cached_digest = functools.lru_cache(maxsize=1 << 16)(digest)
_new_id = RandomIds(8)


def user_hash(key: bytes, user_id: str) -> str:
    """The user's part of impression keys under `key`: 32 hex characters of HMAC-SHA256."""
    return _cached_digest(key, user_id)[:_DIGEST_CHARS]


class ImpressionLog:
    """The `impressions` table: buffered writes, erasure, retention, export."""

    def __init__(self, store: Store, ring: Keyring, *, flush_seconds: float = 0.5,
                 flush_records: int = 2048, buffer_max: int = 100_000,
                 erased_at: Callable[[Sequence[str]], list[float | None]] | None = None,
                 slice_records: int = SLICE_RECORDS):
        """`erased_at`: each user's last erasure time, None if never (the tombstones): buffered
        impressions shown before their user's erasure are not written. `slice_records`: answers
        `run` encodes on the event loop at a time."""
        self.store, self.ring, self.erased_at = store, ring, erased_at
        self._erased: dict[str, float] = {}
        """Users erased by this process since its last flush began, and when."""
        self.flush_seconds, self.flush_records, self.buffer_max = (flush_seconds, flush_records,
                                                                   buffer_max)
        self.slice_records = slice_records
        self._t = store.table("impressions")
        self._buf: deque[tuple] = deque()
        """Answers waiting to be written: appended by the event loop, drained by the flush
        thread (deque append and popleft are atomic: no lock on the serving path)."""
        self.lock = threading.Lock()
        """Held by every write of the table from this process (flushes and joins)."""
        self._wake: asyncio.Event | None = None
        self._pending: list[tuple] | None = None
        """The group `run` is encoding (taken from the buffer), until written."""
        self._bundles: dict[int, object] = {}
        """Each bundle a buffered answer names, by `id` (a catalog update makes a new bundle of
        the same version): set by `record` and pruned by `_forget_bundles`, both on the event
        loop; read by `flush` under `lock`. Held here, an id cannot be reused meanwhile."""
        self._codes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        """Per bundle, the int64 codes of its items (row order)."""

    # -- the serving path ----------------------------------------------------------------------
    def record(self, request_id: str, query, result) -> None:
        """Buffer one answer (`RecQuery`, `RecResult`) of request `request_id`."""
        buf = self._buf
        if len(buf) >= self.buffer_max:
            metrics.IMPRESSIONS_DROPPED.inc()
            return
        bundle, context = result.bundle, query.context
        if self._bundles.get(ref := id(bundle)) is not bundle:
            self._bundles[ref] = bundle
        if context:  # flat: CPython untracks a tuple of tuples a collection later than its pairs
            context = tuple(chain.from_iterable(context))
        buf.append((time.time(), request_id, query.user_id, query.channel, context,
                    ref, result.rows, result.scores, result.cold_start))
        if len(buf) == self.flush_records and self._wake is not None:
            self._wake.set()

    # -- writing -------------------------------------------------------------------------------
    def user_prefix(self, user_id: str, kid: str | None = None) -> bytes:
        kid = kid or self.ring.kid
        key = self.ring.key_of(kid)
        return keys.impression_user_prefix(kid, user_hash(key, user_id))

    def _codes_of(self, bundle) -> np.ndarray:
        codes = self._codes.get(bundle)
        if codes is None:
            codes = self._codes[bundle] = item_codes_of(bundle.items["item_ids"].tolist())
        return codes

    def _encoded(self, group: list[tuple]) -> list[tuple[bytes, bytes]]:
        """(key, value) of each impression, in group order. Answers without context are packed
        together per (bundle, k) (`records.encode_many`): a few µs of CPU each."""
        kid, key, bundles = self.ring.kid, self.ring.key, self._bundles
        prefixes: dict[str, bytes] = {}
        keys_out, values = [], [b""] * len(group)
        batches: dict[tuple, list[int]] = {}
        for i, (ts, rid, uid, _, context, ref, rows, scores, cold) in enumerate(group):
            prefix = prefixes.get(uid)
            if prefix is None:
                prefix = prefixes[uid] = keys.impression_user_prefix(kid, user_hash(key, uid))
            keys_out.append(keys.impression_key(prefix, ts, rid or _new_id()))
            if context or len(rows) != len(scores):
                bundle = bundles[ref]
                values[i] = encode(ts, bundle.version, group[i][3], zip(context[::2], context[1::2]),
                                   self._codes_of(bundle)[rows], scores, cold)
            else:
                batches.setdefault((ref, len(rows)), []).append(i)
        for (ref, _), idx in batches.items():
            part, bundle = [group[i] for i in idx], bundles[ref]
            packed = encode_many(np.array([g[0] for g in part]), bundle.version,
                                 [g[3] for g in part], self._codes_of(bundle)[np.stack([g[6] for g in part])],
                                 np.stack([g[7] for g in part]), np.array([g[8] for g in part]))
            for i, raw in zip(idx, packed):
                values[i] = raw
        return list(zip(keys_out, values))

    def flush(self) -> int:
        """Write every buffered impression (one write transaction); returns how many. A group
        `run` is encoding is taken over and written here (`run` drops it)."""
        with self.lock:
            group = [*(self._pending or ()), *self._take()]
            self._pending = None
            if not group:
                return 0
            n = self._write(group, self._encoded(group), count_group(group, self._bundles))
        metrics.IMPRESSIONS_WRITTEN.inc(n)
        return n

    def _take(self) -> list[tuple]:
        take = self._buf.popleft
        return [take() for _ in range(len(self._buf))]

    def _write(self, group: list[tuple], encoded: list[tuple[bytes, bytes]],
               counts: dict[bytes, np.ndarray]) -> int:
        """Write `encoded` (the group's (key, value) pairs, in group order) and `counts` (every
        answer shown counts; erased users' go unwritten), under `lock`; returns how many."""
        erased = self._erased_before(group)
        if erased:
            encoded = [kv for g, kv in zip(group, encoded) if g[0] > erased.get(g[2], -1.0)]
            group = self._not_erased(group, erased)

        def fn(txn):  # erasures of this process that committed meanwhile win
            erased = self._erased
            items = sorted(kv for g, kv in zip(group, encoded)
                           if g[0] > erased.get(g[2], -1.0)) if erased else sorted(encoded)
            self._t.put_many(txn, items)
            add_counters(self._t, txn, counts)
            return len(items)
        n = self.store.write(fn)
        self._erased = {}
        return n

    async def _flush_sliced(self) -> None:
        """`flush` as `run` does it: the group encoded on the event loop in slices of
        `slice_records` (no thread holds the GIL against the loop meanwhile), then written by a
        thread. The group is `_pending` until written: a `flush` meanwhile (a join, an export,
        `close`) takes it over, and this one stops."""
        if not self.lock.acquire(blocking=False):
            return  # a flush is writing the buffer; what it leaves waits for the next tick
        try:
            group = self._pending = self._take() or None
        finally:
            self.lock.release()
        if group is None:
            return
        try:
            encoded, counts = await self._encoded_sliced(group)
        except Exception:  # lost, as the group of a failed write is (never retried forever)
            if self._pending is group:
                self._pending = None
            raise
        if encoded is not None:
            await asyncio.to_thread(self._write_pending, group, encoded, counts)

    async def _encoded_sliced(self, group: list[tuple]) -> tuple:
        """(`_encoded`, `_counted`) of `group`, `slice_records` answers at a time with the loop
        free between slices; (None, None) once a `flush` has taken the group over."""
        await self._prepare_codes(group)
        encoded, counts = [], {}
        for start in range(0, len(group), self.slice_records):
            if self._pending is not group:
                return None, None
            part = group[start:start + self.slice_records]
            encoded += self._encoded(part)
            merge_counts(counts, count_group(part, self._bundles))
            await asyncio.sleep(0)
        return encoded, counts

    def _write_pending(self, group, encoded, counts) -> None:
        """`_write` of `run`'s group, in the flush thread, unless a `flush` took it over."""
        with self.lock:
            if self._pending is not group:
                return
            try:
                n = self._write(group, encoded, counts)
            finally:
                self._pending = None
        metrics.IMPRESSIONS_WRITTEN.inc(n)

    async def _prepare_codes(self, group: list[tuple]) -> None:
        """The item codes of each bundle the group names, made in a thread when missing (a
        new bundle's catalog: ~1 µs an item, too long for the loop)."""
        bundles = {id(b): b for b in (self._bundles[g[5]] for g in group)}
        for bundle in bundles.values():
            if bundle not in self._codes:
                await asyncio.to_thread(self._codes_of, bundle)

    def _erased_before(self, group: list[tuple]) -> dict[str, float]:
        """{user: erasure time} of the group's users erased by any process (tombstones)."""
        if self.erased_at is None:
            return {}
        users = list({g[2] for g in group})
        return {u: at for u, at in zip(users, self.erased_at(users)) if at is not None}

    @staticmethod
    def _not_erased(group: list[tuple], erased: dict[str, float]) -> list[tuple]:
        if not erased:
            return group
        return [g for g in group if g[0] > erased.get(g[2], -1.0)]

    async def run(self) -> None:
        """Flush forever: every `flush_seconds`, or at once when `flush_records` wait."""
        self._wake = asyncio.Event()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._buf:
                try:
                    await self._flush_sliced()
                except Exception:  # the store full or gone: keep serving, say why
                    logger.exception("writing impressions failed")
            self._forget_bundles()

    def _forget_bundles(self) -> None:
        """On the event loop (where `record` runs, so the buffer cannot grow meanwhile) and
        only while no flush holds `lock`: drop the bundles no buffered answer names, so a
        replaced bundle is not kept alive."""
        if len(self._bundles) < 2 or not self.lock.acquire(blocking=False):
            return
        try:
            named = {g[5] for g in chain(self._buf, self._pending or ())}
            for ref in [r for r in self._bundles if r not in named]:
                del self._bundles[ref]
        finally:
            self.lock.release()

    # -- erasure, retention, export ------------------------------------------------------------
    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's impressions under every key of the ring (in `txn`). Those
        still buffered are never written (`flush` drops impressions shown before an erasure)."""
        self._erased[user_id] = time.time()
        return sum(self._t.delete_prefix(txn, self.user_prefix(user_id, kid))
                   for kid, _ in self.ring.keys)

    def drop_before(self, cutoff: float, batch: int = 10_000) -> int:
        """Retention: delete impressions shown before `cutoff` (keys only are read); the
        counters stay."""
        total, cut = 0, keys.millis(cutoff)
        while True:
            n = self.store.write(lambda txn: self._drop(txn, cut, batch), erasure=True)
            total += n
            if n < batch:
                return total

    def _drop(self, txn, cut_ms: int, batch: int) -> int:
        doomed = []
        for key in self._t.keys(txn):
            if key.startswith(keys.SEP):  # the counters (0x1F sorts before every kid)
                continue
            if keys.impression_ms(key) < cut_ms:
                doomed.append(key)
                if len(doomed) >= batch:
                    break
        for key in doomed:
            self._t.delete(txn, key)
        return len(doomed)

    def of_user(self, user_id: str) -> list[tuple[str, object]]:
        """(request id, `records.Impression`) of every impression of one user held under any key
        of the ring, oldest first per key, from one read snapshot (what was buffered is written
        first: the access export lists it too)."""
        self.flush()
        with self.store.read() as txn:
            found = [kv for kid, _ in self.ring.keys
                     for kv in self._t.scan_prefix(txn, self.user_prefix(user_id, kid))]
        return [(keys.split_key(k)[-1], decode(bytes(v))) for k, v in found]

    def export(self, start: float = 0.0, end: float = 0.0) -> Iterator[tuple[str, str, object]]:
        """(user hash `kid:digest`, request id, `records.Impression`) of every impression shown
        in [start, end] (0: open), from one read snapshot."""
        with self.store.read() as txn:
            for key, raw in self._t.items(txn):
                if key.startswith(keys.SEP):
                    continue
                kid, dig, ms, rid = keys.split_key(key)
                if (start and int(ms) < start * 1000) or (end and int(ms) > end * 1000):
                    continue
                yield f"{kid}:{dig}", rid, decode(raw)

    async def close(self) -> None:
        await asyncio.to_thread(self.flush)
