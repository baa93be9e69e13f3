"""The impression log: every Recommend answer, buffered on the serving path and written in groups.

`record` is all the Recommend path pays: one tuple appended to a list (no hashing, no encoding,
no I/O). A background task (`run`) hands the buffer to a thread every `flush_seconds`, or as soon
as `flush_records` are waiting, and the thread writes the whole group in one write transaction:
each impression under its user's keyed hash (`store.keys.impression_key`), and the counters of
each (model version, channel) it touched (`records.C`), so GetModelStats always agrees with the
log. Writes lag rather than block: past `buffer_max` waiting impressions, new ones are dropped
and counted.

The tuple names its bundle by `id` (`_bundles` maps it back), so it holds no object the garbage
collector tracks: CPython untracks it at its first young collection. A tuple holding the Bundle
stayed tracked while buffered, and those alive at a young collection were promoted toward the
oldest generation, whose growth starts the full collections that stop every thread
(docs/performance.md, "Tail latency").

Transactions: `flush` and the joins (`join.ImpressionJoin`) run under one lock, a join after
flushing what this worker buffered, so an event never misses an impression of its own worker.
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
from .logging import logger
from .records import C, decode, encode, encode_many, item_codes_of, new_counters

__all__ = ["ImpressionLog", "user_hash"]

_DIGEST_CHARS = 32
_cached_digest = functools.lru_cache(maxsize=1 << 16)(digest)
_new_id = RandomIds(8)


def user_hash(key: bytes, user_id: str) -> str:
    """The user's part of impression keys under `key`: 32 hex characters of HMAC-SHA256."""
    return _cached_digest(key, user_id)[:_DIGEST_CHARS]


class ImpressionLog:
    """The `impressions` table: buffered writes, erasure, retention, export."""

    def __init__(self, store: Store, ring: Keyring, *, flush_seconds: float = 0.5,
                 flush_records: int = 2048, buffer_max: int = 100_000,
                 erased_at: Callable[[Sequence[str]], list[float | None]] | None = None):
        """`erased_at`: each user's last erasure time, None if never (the tombstones): buffered
        impressions shown before their user's erasure are not written."""
        self.store, self.ring, self.erased_at = store, ring, erased_at
        self._erased: dict[str, float] = {}
        """Users erased by this process since its last flush began, and when."""
        self.flush_seconds, self.flush_records, self.buffer_max = (flush_seconds, flush_records,
                                                                   buffer_max)
        self._t = store.table("impressions")
        self._buf: deque[tuple] = deque()
        """Answers waiting to be written: appended by the event loop, drained by the flush
        thread (deque append and popleft are atomic: no lock on the serving path)."""
        self.lock = threading.Lock()
        """Held by every write of the table from this process (flushes and joins)."""
        self._wake: asyncio.Event | None = None
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
        """(key, value) of each impression, in group order. Keys are made together (each user
        hashed once), answers without context packed together per (bundle, k)
        (`records.encode_many`): a few µs of CPU each, with no Python call per answer (this
        thread's Python holds the GIL the event loop and the batch thread wait for)."""
        kid, key, bundles = self.ring.kid, self.ring.key, self._bundles
        prefixes = {uid: keys.impression_user_prefix(kid, user_hash(key, uid))
                    for uid in {g[2] for g in group}}
        keys_out = keys.impression_keys([prefixes[g[2]] for g in group], [g[0] for g in group],
                                        [g[1] or _new_id() for g in group])
        values = [b""] * len(group)
        batches: dict[tuple, list[int]] = {}
        for i, g in enumerate(group):
            if g[4] or len(g[6]) != len(g[7]):  # context: one at a time
                values[i] = self._encoded_one(g)
            else:
                batches.setdefault((g[5], len(g[6])), []).append(i)
        for (ref, _), idx in batches.items():
            part, bundle = [group[i] for i in idx], bundles[ref]
            packed = encode_many(np.array([g[0] for g in part]), bundle.version,
                                 [g[3] for g in part], self._codes_of(bundle)[np.stack([g[6] for g in part])],
                                 np.stack([g[7] for g in part]), np.array([g[8] for g in part]))
            for i, raw in zip(idx, packed):
                values[i] = raw
        return list(zip(keys_out, values))

    def _encoded_one(self, answer: tuple) -> bytes:
        ts, _, _, channel, context, ref, rows, scores, cold = answer
        bundle = self._bundles[ref]
        return encode(ts, bundle.version, channel, zip(context[::2], context[1::2]),
                      self._codes_of(bundle)[rows], scores, cold)

    def _counted(self, group: list[tuple]) -> dict[bytes, np.ndarray]:
        """The counter increments of the group per count key (answers taken together per
        bundle and channel: no numpy call per answer)."""
        parts: dict[tuple, list[tuple]] = {}
        for g in group:
            parts.setdefault((g[5], g[3]), []).append(g)
        counts: dict[tuple, np.ndarray] = {}
        for (ref, channel), part in parts.items():
            version = self._bundles[ref].version
            delta = counts.get((version, channel))
            if delta is None:
                delta = counts[(version, channel)] = new_counters()
                delta[C.FIRST] = part[0][0]
            delta[C.IMPRESSIONS] += len(part)
            delta[C.COLD_START] += sum([g[8] for g in part])
            delta[C.FIRST] = min(delta[C.FIRST], part[0][0])
            delta[C.LAST] = max(delta[C.LAST], part[-1][0])
        return {keys.impression_count_key(v, ch): d for (v, ch), d in counts.items()}

    def flush(self) -> int:
        """Write every buffered impression (one write transaction); returns how many."""
        with self.lock:
            take = self._buf.popleft
            group = [take() for _ in range(len(self._buf))]
            if not group:
                return 0
            counts = self._counted(group)  # every answer shown counts; erased users' go unwritten
            group = self._not_erased(group, self._erased_before(group))
            encoded = self._encoded(group)  # before the write lock: other writers wait less

            def fn(txn):  # erasures of this process that committed meanwhile win
                erased = self._erased
                items = sorted(kv for g, kv in zip(group, encoded)
                               if g[0] > erased.get(g[2], -1.0)) if erased else sorted(encoded)
                self._t.put_many(txn, items)
                add_counters(self._t, txn, counts)
                return len(items)
            n = self.store.write(fn)
            self._erased = {}
        metrics.IMPRESSIONS_WRITTEN.inc(n)
        return n

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
                    await asyncio.to_thread(self.flush)
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
            named = {g[5] for g in self._buf}
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


def add_counters(table, txn, counts: dict[bytes, np.ndarray]) -> None:
    """Add each increment to its stored counters (first and last times kept as min and max)."""
    for ck, delta in counts.items():
        raw = table.get(txn, ck)
        if raw is None:
            table.put(txn, ck, delta.tobytes())
            continue
        total = np.frombuffer(raw, np.float64).copy()
        first, last = total[C.FIRST], total[C.LAST]
        total += delta
        if delta[C.FIRST]:
            total[C.FIRST] = min(first, delta[C.FIRST]) if first else delta[C.FIRST]
        else:
            total[C.FIRST] = first
        total[C.LAST] = max(last, delta[C.LAST])
        table.put(txn, ck, total.tobytes())
