"""The impression log: every Recommend answer, buffered on the serving path and written in groups.

`record` is all the Recommend path pays: one tuple appended to a list (no hashing, no encoding,
no I/O). A background task (`run`) takes the buffer every `flush_seconds`, or as soon as
`flush_records` are waiting, turns it into a few columns (`group.group_of`: arrays and joined
strings, a few hundred µs of the event loop's time per 300 answers) and sends them to the
impressions writer process (`server.batching.WriterProcess`), which does everything else with
its own GIL: keyed hashes of the user ids, record bytes, counters, the tombstone check and one
write transaction (`writer.ImpressionWriter`). Writes lag rather than block: past `buffer_max`
waiting impressions (buffered, or in groups sent and not answered yet: a writer that lags, its
store slow or its process stopped, was sent a new group every flush, each held in memory until
answered, without bound), new ones are dropped and counted. If the writer process dies, the groups
it held are lost (logged) and the next flush starts a new one; serving goes on.

The tuple names its bundle by `id` (`_bundles` maps it back until the flush takes it), so it
holds no object the garbage collector tracks: CPython untracks it at its first young
collection. A tuple holding the Bundle stayed tracked while buffered, and those alive at a young
collection were promoted toward the oldest generation, whose growth starts the full collections
that stop every thread (docs/performance.md, "Tail latency").

Ordering: groups are taken and sent on the event loop only, and the child commits them in the
order sent, so `flushed()` returns once every impression buffered before it is committed (or its
group has failed). `join.ImpressionJoin`, the access export and GetModelStats call it (`flush`
from their threads) before they read, so they see this worker's latest answers.
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from itertools import chain, islice

import numpy as np

from .. import metrics
from ..batching import WriterProcess
from ..errors import TailorError
from ..security.pii import PiiPolicy, mask_value
from ..security.secrets import Keyring
from ..store import Store, keys, scan, sweep
from ..store.damaged import (
    DAMAGED,
    EXPORT,
    IMPRESSION,
    LOG_EXPORT,
    UNREADABLE,
    decode_each,
    report_damaged,
)
from .errors import ImpressionDamaged
from .group import Group, group_of
from .logging import logger
from .records import decode
from .writer import ImpressionWriter, user_hash

__all__ = ["ImpressionLog", "user_hash"]

WRITER = "server.impressions.writer:writer_functions"
"""The batch functions of the impressions writer process."""
EXPORT_CHUNK = 10_000
"""Keys an export reads per read snapshot (`ImpressionLog.export`)."""


class ImpressionLog:
    """The `impressions` table: buffered writes, erasure, retention, export."""

    def __init__(self, store: Store, ring: Keyring, *, flush_seconds: float = 0.5,
                 flush_records: int = 2048, buffer_max: int = 100_000,
                 erasure: Keyring | None = None, writer_nice: int = 0,
                 pii: PiiPolicy | None = None, repeat_seconds: float = 0.0):
        """`ring`: the `user-id` keyring impressions are filed under; `erasure`: the keyring of
        the tombstones (None: no tombstone check), so the impressions a user was shown before
        their erasure are never written; `writer_nice`: the writer process's added niceness;
        `pii`: the PII keys (`Settings.pii_keys`) whose context values are masked before they
        are buffered (None: none); `repeat_seconds`: how long a caller's request id is
        remembered, so that a repeat of its answer is not logged twice (`repeats.Repeats`)."""
        self.store, self.ring, self.pii = store, ring, pii
        self.erasure_keys = erasure.keys if erasure is not None else ()
        self.flush_seconds, self.flush_records, self.buffer_max = (flush_seconds, flush_records,
                                                                   buffer_max)
        self.writer_nice, self.repeat_seconds = writer_nice, repeat_seconds
        self._t = store.table("impressions")
        self._buf: list[tuple] = []
        """Answers waiting to be written; appended and taken on the event loop only."""
        self._wake: asyncio.Event | None = None
        self._bundles: dict[int, object] = {}
        """Each bundle a buffered answer names, by `id` (a catalog update makes a new bundle of
        the same version); taken with the buffer. Held here, an id cannot be reused meanwhile."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writer: WriterProcess | None = None
        """The writer process (started by `start`); without it `flushed` writes in-process."""
        self._local = ImpressionWriter(store)
        self._sent: set[asyncio.Future] = set()
        """Groups sent to the writer process and not answered yet."""
        self._held = 0
        """The answers in those groups: with the buffer's, what `buffer_max` bounds."""

    # -- the serving path ----------------------------------------------------------------------
    def record(self, request_id: str, query, result, at: float = 0.0, given: bool = False
               ) -> None:
        """Buffer one answer (`RecQuery`, `RecResult`) of request `request_id` (on the loop),
        dated `at` (0: now; a message's, when its `recommend()` asked); `given`: the caller
        named the request (`x-request-id`), so a retry may repeat it (`repeats.Repeats`)."""
        buf = self._buf
        if len(buf) + self._held >= self.buffer_max:
            metrics.IMPRESSIONS_DROPPED.inc()
            return
        bundle, context = result.bundle, query.context
        if self._bundles.get(ref := id(bundle)) is not bundle:
            self._bundles[ref] = bundle
        if context:  # flat: CPython untracks a tuple of tuples a collection later than its pairs
            context = tuple(chain.from_iterable(self._masked(context)))
        buf.append((at or time.time(), request_id, query.user_id, query.channel, context,
                    ref, result.rows, result.scores, result.cold_start, given))
        if len(buf) == self.flush_records and self._wake is not None:
            self._wake.set()

    def _masked(self, context):
        """The (key, value) pairs of a request context, the values of PII keys masked: the
        impressions table is not sealed (docs/privacy.md), so a value written there (an email
        or an IP address given as context) would stay readable on freed pages after the user's
        erasure."""
        pii = self.pii
        if pii is None:
            return context
        return [(k, mask_value(v)) if pii.is_pii(k) else (k, v) for k, v in context]

    # -- writing -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer process (on the event loop that records and flushes) and wait
        until it has opened the store (raises if it cannot)."""
        self.loop = asyncio.get_running_loop()
        self.writer = WriterProcess(WRITER, self.store, name="impressions", nice=self.writer_nice)
        await self.writer.ready()

    def user_prefix(self, user_id: str, kid: str | None = None) -> bytes:
        kid = kid or self.ring.kid
        key = self.ring.key_of(kid)
        return keys.impression_user_prefix(kid, user_hash(key, user_id))

    def kids_in_use(self) -> list[tuple[str, bytes]]:
        """The (kid, key) pairs of the ring that some stored impression is filed under (one
        seek each)."""
        with self.store.read() as txn:
            return [(kid, key) for kid, key in self.ring.keys
                    if (first := self._t.first_key(txn, kid.encode() + keys.SEP)) is not None
                    and first.startswith(kid.encode() + keys.SEP)]

    def _take(self) -> Group | None:
        """Every buffered answer, as one `Group` (on the loop: nothing is recorded meanwhile)."""
        if not self._buf:
            return None
        answers, self._buf = self._buf, []
        bundles, self._bundles = self._bundles, {}
        return group_of(answers, bundles, _item_codes, self.ring.kid, self.ring.key,
                        self.erasure_keys, self.repeat_seconds)

    async def flushed(self) -> int:
        """Write every buffered impression; return, once it and every group sent before it are
        committed, how many were written (raises if its group failed). On the event loop."""
        group = self._take()
        if self.writer is None:  # no writer process: in a thread of this one
            return await asyncio.to_thread(self._write_here, group)
        mine = self._send(group) if group is not None else None
        if self._sent:
            await asyncio.wait(set(self._sent))  # not cancelled with the caller
        return mine.result() if mine is not None else 0

    def _write_here(self, group: Group | None) -> int:
        try:
            n = self._local.write([group])[0] if group is not None else 0
        except Exception:
            metrics.IMPRESSIONS_DROPPED.inc(group.size)
            raise
        metrics.IMPRESSIONS_WRITTEN.inc(n)
        return n

    def _send(self, group: Group) -> asyncio.Future:
        sent = self.loop.create_future()
        self._sent.add(sent)
        self._held += group.size

        def done(results) -> None:
            self._sent.discard(sent)
            self._held -= group.size
            (result,) = results
            if isinstance(result, BaseException):  # a full store, the writer killed: lost
                metrics.IMPRESSIONS_DROPPED.inc(group.size)
                sent.set_exception(result)
                sent.exception()  # retrieved: the caller raises it, or `run` logs it
            else:
                metrics.IMPRESSIONS_WRITTEN.inc(result)
                sent.set_result(result)
        self.writer.start(self.loop, "impressions", [group], done)
        return sent

    def flush(self) -> int:
        """`flushed` from another thread (joins, exports, tests): blocks until committed."""
        if self.loop is None:  # no writer process (nor, then, an event loop of the log's)
            return self._write_here(self._take())
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("ImpressionLog.flush blocks: on the event loop, await flushed()")
        return asyncio.run_coroutine_threadsafe(self.flushed(), self.loop).result()

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
                    await self.flushed()
                except TailorError as err:  # the store full, the writer dead: keep serving
                    logger.error("writing impressions failed, the answers of this flush are "
                                 "lost (tailor_impressions_dropped): %s", err)
                except Exception:  # a bug: its traceback
                    logger.exception("writing impressions failed")

    # -- erasure, retention, export ------------------------------------------------------------
    ERASE_CHUNK = 10_000
    """Impressions deleted per transaction before the erasure's last one (`erase_ahead`)."""

    def erase_ahead(self, user_id: str) -> int:
        """`UserEraser.erase_ahead`: the user's impressions, `ERASE_CHUNK` per write transaction,
        before the erasure's last one (`erase_user`, which deletes those written since): a
        shared id such as "anonymous" holds millions, more pages than one LMDB transaction may
        dirty, and one transaction would hold the store's write lock for all of them."""
        removed, most = 0, self.ERASE_CHUNK
        for kid, _ in self.ring.keys:
            prefix = self.user_prefix(user_id, kid)
            with self.store.read() as txn:  # none (most users, most keys): no write at all
                first = self._t.first_key(txn, prefix)
            n = most if first is not None and first.startswith(prefix) else 0
            drop = functools.partial(self._t.delete_prefix, prefix=prefix, most=most)
            while n == most:
                n = self.store.write(drop, erasure=True)
                removed += n
        return removed

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's impressions under every key of the ring (in `txn`, with the
        tombstone; those older than the erasure's start went ahead: `erase_ahead`). Those
        still buffered are never written: the writer finds the tombstone."""
        return sum(self._t.delete_prefix(txn, self.user_prefix(user_id, kid))
                   for kid, _ in self.ring.keys)

    def drop_before(self, cutoff: float, batch: int | None = None) -> int:
        """Retention: delete impressions shown before `cutoff`, and the buckets of showing time
        that ended before it (keys only are read; the counters, whose keys start with the
        separator, stay; the callers' request ids of `repeats` older than the cutoff go too),
        walked in read snapshots of `batch` keys (None: the store's `sweep_pace`), each
        one's picks deleted in
        short write transactions (`store.sweep`). Returns how many impressions went."""
        cut, table = keys.millis(cutoff), self._t
        bucket_cut = int(cutoff) - keys.IMPRESSION_BUCKET_SECONDS

        def expired(txn, key: bytes) -> bytes | None:
            if key.startswith(keys.IMPRESSION_BUCKET_PREFIX):
                return key if int(key.rsplit(keys.SEP, 1)[1]) < bucket_cut else None
            if key.startswith(keys.REQUEST_PREFIX):  # callers' ids left once new ones stopped
                start = len(keys.REQUEST_PREFIX)
                return key if int(key[start:start + keys.MS_DIGITS]) < cut else None
            return key if not key.startswith(keys.SEP) and keys.impression_ms(key) < cut else None

        def drop(txn, doomed: list[bytes]) -> int:  # impressions, not buckets, are counted
            return sum(table.delete(txn, key) and not key.startswith(keys.SEP) for key in doomed)

        return sweep(self.store, table, expired, drop, chunk=batch)

    def of_user(self, user_id: str) -> list[tuple[str, object]]:
        """(request id, `records.Impression`) of every impression of one user held under any key
        of the ring, oldest first per key, from one read snapshot (what was buffered is written
        first). All at once, unbounded (tests and small users): the access export reads a page
        at a time (`page_of_user`)."""
        self.flush()
        with self.store.read() as txn:
            found = [kv for kid, _ in self.ring.keys
                     for kv in self._t.scan_prefix(txn, self.user_prefix(user_id, kid))]
        return [(keys.split_key(k)[-1], decode(bytes(v))) for k, v in found]

    def page_of_user(self, user_id: str, offset: int = 0, max_bytes: int = 0,
                     measure: Callable[[str, object], tuple[object, int]] | None = None
                     ) -> tuple[list, int | None]:
        """The user's impressions from `offset`, newest first (under the current key of the
        ring, then the older keys), from one read snapshot, as many as hold at most `max_bytes`
        (> 0; one at least); and the next page's offset (None: this page holds the oldest).
        `measure(request id, records.Impression)` gives each impression's row in the page and
        the bytes it counts (what it will weigh in the answer); None: the (request id,
        Impression) pair and its stored bytes. Keys only are read past the offset. What was
        buffered is written first. An impression of the page that does not decode refuses it
        (`ImpressionDamaged`)."""
        self.flush()
        kids = [self.ring.kid] + [kid for kid, _ in self.ring.keys if kid != self.ring.kid]
        page, size = [], 0
        with self.store.read() as txn:
            walk = chain.from_iterable(self._t.keys_back(txn, self.user_prefix(user_id, kid))
                                       for kid in kids)
            for key in islice(walk, offset, None):
                raw = self._t.get(txn, key)
                found = _exported(keys.split_key(key)[-1], raw)
                row, cost = measure(*found) if measure is not None else (found, len(raw))
                size += cost
                if page and max_bytes and size > max_bytes:
                    return page, offset + len(page)
                page.append(row)
        return page, None

    def export(self, start: float = 0.0, end: float = 0.0
               ) -> Iterator[list[tuple[str, str, object]]]:
        """(user hash `kid:digest`, request id, `records.Impression`) of every impression shown
        in [start, end] (0: open), user by user, one list per read snapshot of `EXPORT_CHUNK`
        keys (`store.scan`: none held open between two; empty lists too; only the records in
        the range are read): take each list in a thread. One that does not decode (damaged) is
        left out, counted and logged (`store.damaged.report_damaged`): the others go on."""
        table = self._t

        def in_range(txn, key: bytes) -> tuple[bytes, list[str]] | None:
            if key.startswith(keys.SEP):  # counters, buckets
                return None
            parts = keys.split_key(key)  # kid, user digest, ms, request id
            ms = int(parts[2])
            return None if (start and ms < start * 1000) or (end and ms > end * 1000) \
                else (key, parts)

        def rows(txn, picked: list[tuple[bytes, list[str]]]) -> list[tuple[str, str, object]]:
            found = [(parts, raw) for (_, parts), raw in
                     zip(picked, table.get_many(txn, [key for key, _ in picked]))
                     if raw is not None]
            imps = decode_each([raw for _, raw in found], lambda raws: list(map(decode, raws)),
                               decode)
            report_damaged(sum(imp is DAMAGED for imp in imps), IMPRESSION, LOG_EXPORT,
                           "left out of ExportImpressions")
            return [(f"{kid}:{dig}", rid, imp)
                    for ((kid, dig, _, rid), _), imp in zip(found, imps) if imp is not DAMAGED]
        return scan(self.store, table, in_range, chunk=EXPORT_CHUNK, finish=rows)

    async def close(self) -> None:
        """Write what is buffered, then stop the writer process."""
        try:
            await self.flushed()
        except Exception:
            logger.exception("writing impressions failed")
        if self.writer is not None:
            await self.writer.close()


def _exported(request_id: str, raw: bytes) -> tuple[str, object]:
    """(request id, `records.Impression`) of one of a user's impressions in their access
    export; `ImpressionDamaged` (counted and logged) for one that does not decode: the export
    may leave nothing out."""
    try:
        return request_id, decode(bytes(raw))
    except UNREADABLE:
        report_damaged(1, IMPRESSION, EXPORT, "an access export refused")
        raise ImpressionDamaged(request_id) from None


def _item_codes(bundle) -> np.ndarray:
    """A bundle's item codes (made once, when it was loaded: never on the event loop here)."""
    return bundle.item_codes
