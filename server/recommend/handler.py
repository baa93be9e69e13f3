"""Transport-agnostic Recommend handler: validation, micro-batching, the pipeline.

While a canary runs, a batch runs once per version group (`_run_split`) and every call is
counted per version (`tally`: requests, server-side errors, latency) for the guardrails.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import faiss
import numpy as np

from ..batching import AdaptiveBatcher, ThreadRunner, exempt
from ..config import Settings
from ..errors import Internal, InvalidArgument, TailorError
from ..interfaces import ImpressionSink
from ..models import Bundle, ModelRegistry, UnknownCategory
from ..models.canary import Canary
from ..models.tally import Tally
from ..profiles.schema import CHANNELS
from ..profiles.seen import SeenSet
from ..validation import (
    check_context,
    check_count,
    check_id,
    check_known,
    check_range,
    check_stored_id,
    has_c0_control,
    has_control,
)
from . import smoke
from .exclusion import SeenPolicy
from .pipeline import BatchValues, History, RecQuery, RecResult, recommend_batch
from .user_cache import UserCache

__all__ = ["Recommender", "bundle_histories", "decay_clock", "CLOCK_PHASES", "ON_LOOP_ROWS"]

logger = logging.getLogger("tailor.recommend")

ON_LOOP_ROWS = 20_000
"""Most items a category-filtered `recommend(on_loop=True)` may score exactly on the event loop
(a gather and a dot product of about 1 ms at 64 factors); a larger pool goes to the batch
thread, where that work does not stop the loop."""


def _fits_on_loop(bundle: Bundle, query: RecQuery) -> bool:
    """Whether the query's category filter (if any) scores at most `ON_LOOP_ROWS` items."""
    return not query.categories or sum(
        len(bundle.category_items[bundle.category_code[c]]) for c in query.categories) <= ON_LOOP_ROWS


def bundle_histories(bundle: Bundle, user_ids: Sequence[str], now=None, states=None
                     ) -> list[History | None]:
    """Histories known to the bundle itself (training-time, undecayed: `now` is not read), None
    for unknown users (a server without profiles: no live `states`)."""
    return [bundle.history(u) for u in user_ids]


CLOCK_PHASES = 16
"""Groups of users whose decay clock steps at times of their own (`decay_clock`): a step's end
refreshes one group's user cache entries at a time, every `history_clock_seconds / 16`, not
every user's at once."""


def decay_clock(now: float, step: int, user_id: str) -> float:
    """The time `user_id`'s history decays to at `now` (`Settings.history_clock_seconds`):
    `now` floored to the user's step, which starts at a multiple of `step` seconds since the
    epoch plus the user's phase (one of `CLOCK_PHASES`, from a CRC of the id: the same in every
    process). Every worker and path of a step gives a stored history the same weights, so the
    same vector: the encoder and FAISS answer a row bit for bit alike in any batch and with any
    thread count (docs/bundle.md, "The same answer everywhere"); the user cache's entries are
    then exact."""
    phase = zlib.crc32(user_id.encode()) % CLOCK_PHASES * step / CLOCK_PHASES
    return (now - phase) // step * step + phase


def _reworded(err: InvalidArgument, where: str = "", note: str = "") -> InvalidArgument:
    """`err` with `where` before its field (a batch entry's `requests[i].`) and `note` after
    its problem."""
    problem, logged = str(err)[len(err.field) + 2:], err.logged_problem
    return InvalidArgument(where + err.field, problem + note,
                           None if logged is None else logged + note)


class _LiveRead:
    """One batch's profile reads: its users' states and live seen-sets read together, once
    (`live_of`), when the pipeline first asks for either (its "history" stage, which times
    it), or taken from a caller's read (`given`); each user's history decays to their
    `decay_clock` at `now`."""

    def __init__(self, history_of, live_of, given: list[tuple] | None, now: float, step: int):
        self._history_of, self._live_of, self._live = history_of, live_of, given
        self._now, self._step = now, step

    def _read(self, user_ids: Sequence[str]) -> list[tuple]:
        if self._live is None:
            self._live = self._live_of(user_ids)
        return self._live

    def history_of(self, bundle: Bundle, user_ids: Sequence[str]) -> list[History | None]:
        return self._history_of(bundle, user_ids,
                                now=[decay_clock(self._now, self._step, u) for u in user_ids],
                                states=[s for s, _ in self._read(user_ids)],
                                session_now=self._now)

    def seen_of(self, user_ids: Sequence[str]) -> list[SeenSet | None]:
        return [seen for _, seen in self._read(user_ids)]


class Recommender:
    def __init__(self, settings: Settings, registry: ModelRegistry,
                 history_of: Callable[[Bundle, Sequence[str]], list[History | None]] = bundle_histories,
                 live_of: Callable[[Sequence[str]], list[tuple[np.ndarray | None, SeenSet | None]]]
                 | None = None,
                 impressions: ImpressionSink | None = None,
                 observe: Callable[[BatchValues], None] | None = None):
        self.settings = settings
        self.impressions = impressions
        """Where every answer is recorded (`record(request_id, query, result)`), if anywhere."""
        self.limits = settings.limits
        self.registry = registry
        self.history_of = history_of
        """Encoder inputs per user (`history_of(bundle, user_ids, now=None, states=None)`; `now`:
        the time each user's history decays to, `decay_clock`; `states`: the users' feature
        states as a caller read them, else read there)."""
        self.live_of = live_of
        """(feature state, live seen-set) per user from one read (None: no profiles; only the
        bundle's histories and seen-sets count)."""
        self.observe = observe
        """Receives each batch's values (drift histograms, `server.drift`), if given."""
        self.policy = SeenPolicy.from_settings(settings) if settings.exclude_history else None
        self.tally = Tally()
        """Counts per version while a canary runs (read by `models.monitor.CanaryMonitor`)."""
        self.cache = UserCache(settings.user_cache_size) if settings.user_cache_size else None
        """Recent users' encoder output and candidates (None: off)."""
        self._loop_ready: int | None = None
        """The thread `_on_loop` set FAISS's thread count in (the event loop's)."""
        self.batcher: AdaptiveBatcher[RecQuery, RecResult] = AdaptiveBatcher(
            ThreadRunner(self._run_batch, concurrency=settings.batch_concurrency, name="recommend",
                         thread_init=self._init_compute_thread),
            max_size=settings.batch_max_size, max_wait=settings.batch_max_wait_ms / 1000.0,
            shed_after=settings.limits.batch_queue_seconds)

    def _init_compute_thread(self) -> None:
        # OpenMP thread counts are per calling thread: set FAISS's in each batch thread. Its
        # default (one spinning thread per core) fights the event loop and the other slot.
        faiss.omp_set_num_threads(self.settings.compute_threads)

    def validate(self, q: RecQuery, where: str = "") -> RecQuery:
        """Check one query against the limits; `where` prefixes the field names (batches)."""
        lim, uid = self.limits, q.user_id
        # The hot path: compare inline (check_id's own fast test), and let the shared checks
        # decide and word the rare refusal.
        if not uid or len(uid) > lim.id_bytes >> 2 or has_control(uid):
            check_id("user_id", uid, lim.id_bytes, where)
        if not 1 <= q.k <= lim.recommend_k:
            check_range("k", q.k, 1, lim.recommend_k, where)
        if q.channel and q.channel not in CHANNELS:  # empty: no channel given
            check_known("channel", q.channel, CHANNELS, where)
        if q.context:
            check_context(q.context, lim.recommend_context_bytes, where)
        if q.exclude_item_ids:
            self._check_excluded(q.exclude_item_ids, where)
        if q.categories:
            bundle = self.registry.active
            if bundle is not None and len(q.categories) > len(bundle.category_code):
                raise InvalidArgument(f"{where}categories", f"{len(q.categories)} entries, at "
                                      f"most {len(bundle.category_code)} (the served bundle's "
                                      "categories, each named once)")
            for name in q.categories:
                if not name or (bundle is not None and name not in bundle.category_code):
                    raise UnknownCategory(f"{where}categories", name,
                                          bundle.category_code if bundle else ())
        return q

    def _check_excluded(self, item_ids: Sequence[str], where: str) -> None:
        """At most `exclude_items` ids, each one a served item's id could be: an item upserted
        before C1 and bidirectional controls were refused is still served, and a client hands
        back what it was served (`check_stored_id`: the C0 rule alone). An exclude id is a
        look-up only, never stored, logged or echoed, which is what the rest of the id rule
        guards; a look-up of the known items instead would refuse an item removed meanwhile."""
        lim = self.limits
        if len(item_ids) > lim.exclude_items:
            check_count("exclude_item_ids", len(item_ids), lim.exclude_items, where)
        most = lim.id_bytes >> 2
        for j, item_id in enumerate(item_ids):  # its fast test inline, as for user_id
            if not item_id or len(item_id) > most or has_c0_control(item_id):
                check_stored_id(f"exclude_item_ids[{j}]", item_id, lim.id_bytes, where)

    def _run_batch(self, queries: Sequence[RecQuery], read: tuple | None = None
                   ) -> list[RecResult | BaseException]:
        bundle = self.registry.current()  # one version for the whole batch (or per group)
        canary = self.registry.canary
        if canary is not None:
            return self._run_split(bundle, canary, queries, read)
        return self._run(bundle, queries, read)

    def _run(self, bundle: Bundle, queries: Sequence[RecQuery], read: tuple | None = None
             ) -> list[RecResult | BaseException]:
        """`read`: (user id, feature state, live seen-set, cache `since()` before the read) of a
        batch of one query's user, as its caller read them (`recommend(read=...)`); ignored for
        any other batch, whose users' states and seen-sets are read here in one snapshot
        (`live_of`)."""
        history_of, seen_of = self.history_of, None
        taken = (self.live_of is not None and read is not None and len(queries) == 1
                 and queries[0].user_id == read[0])
        if self.live_of is not None:
            live = _LiveRead(self.history_of, self.live_of, [read[1:3]] if taken else None,
                             time.time(), self.settings.history_clock_seconds)
            history_of, seen_of = live.history_of, live.seen_of
        cache = self.cache
        with cache.reading([q.user_id for q in queries]) if cache is not None else nullcontext():
            return recommend_batch(bundle, queries, history_of,
                                   ranker_candidates=self.candidates(bundle),
                                   policy=self.policy, seen_of=seen_of,
                                   overfetch_max=self.settings.seen_overfetch_max,
                                   cache=self.cache, observe=self.observe,
                                   since=read[3] if taken else None)

    def _run_split(self, stable: Bundle, canary: Canary, queries: Sequence[RecQuery],
                   read: tuple | None = None) -> list[RecResult | BaseException]:
        """One pipeline run per version group; a group that fails fails only its queries."""
        mask = canary.split.mask([q.user_id for q in queries])
        results: list[RecResult | BaseException] = [None] * len(queries)  # type: ignore[list-item]
        for bundle, rows in ((stable, np.flatnonzero(~mask)), (canary.bundle, np.flatnonzero(mask))):
            if not len(rows):
                continue
            try:
                out = self._run(bundle, [queries[i] for i in rows], read)
            except Exception as err:  # the batcher would fail every query of the batch
                out = [err] * len(rows)
            for i, res in zip(rows.tolist(), out):
                results[i] = res
        return results

    async def recommend(self, query: RecQuery, request_id: str = "", on_loop: bool = False,
                        read: tuple | None = None, record: bool = True) -> RecResult:
        """Top-k for one query; the answer is recorded as request `request_id`'s impression
        (`record` False: not here; the caller records it with `record` once it is shown: a
        message's items, once the message stands).

        `on_loop`: compute it here, on the event loop, as a batch of one, rather than in the
        batch thread, if its category filter scores at most `ON_LOOP_ROWS` items exactly. For
        a caller that holds the loop for its own work around one call (ComposeMessage: its
        decision and rendering): the batch thread would then wait for the GIL after each ONNX
        Runtime, FAISS and LMDB call, and the loop for it. ComposeMessage at half max
        (docs/performance.md, stop 36): p99 lower in 12 rounds of 16, CPU per call 2-8% lower.
        Not for many calls at once: they share the batch thread's batches.

        `read`: (user id, feature state, live seen-set, `since()` taken before) from the
        caller's own read of the profile (ComposeMessage's decision read them for the contact
        policy), used on the loop instead of reading them again: the user's cache entry is
        stored only if they were not erased since that read."""
        bundle = self.registry.current()  # fail fast with FAILED_PRECONDITION when nothing is loaded
        query = self.validate(query)
        if on_loop and _fits_on_loop(bundle, query):
            submit = functools.partial(self._on_loop, read=read)
        else:
            submit = self.batcher.submit
        if self.registry.canary is None:
            result = await submit(query)
        else:
            result = await self._counted(query, submit)
        if record:
            self.record(request_id, query, result)
        return result

    def since(self) -> int | None:
        """What a caller that reads a profile itself, for `recommend(read=...)`, takes before
        that read (`UserCache.since`)."""
        return self.cache.since() if self.cache is not None else None

    def unavailable(self, item_ids: Sequence[str]) -> set[str]:
        """Those of `item_ids` the active bundle would not recommend now: removed from the
        catalog (`server.catalog`), or not in it."""
        bundle = self.registry.active
        if bundle is None:
            return set()
        rows = {i: bundle.item_row.get(i) for i in item_ids}
        removed = bundle.removed  # sorted: a binary search per item (it may hold 100,000)
        if len(removed):
            known = np.asarray([r for r in rows.values() if r is not None], np.int64)
            at = np.minimum(np.searchsorted(removed, known), len(removed) - 1)
            gone = set(known[removed[at] == known].tolist())
        else:
            gone = set()
        return {i for i, r in rows.items() if r is None or r in gone}

    def record(self, request_id: str, query: RecQuery, result: RecResult, at: float = 0.0,
               given: bool = False) -> None:
        """Log `result` as request `request_id`'s impression (the impression log, if on),
        dated `at` (0: now); `given`: the caller named the request (a retry may repeat it)."""
        if self.impressions is not None:
            self.impressions.record(request_id, query, result, at, given)

    async def _on_loop(self, query: RecQuery, read: tuple | None = None) -> RecResult:
        if self._loop_ready != threading.get_ident():  # FAISS's OpenMP threads, as a batch thread's
            self._init_compute_thread()
            self._loop_ready = threading.get_ident()
        result = self._run_batch([query], read)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _counted(self, query: RecQuery, submit=None) -> RecResult:
        """Submit (to the batcher unless `submit` says where) and count the call for its
        version; bad input is no error of the model, except the canary's refusal of a query
        the active version accepted (`validate`: a category the canary lacks)."""
        canary = self.registry.canary
        started = time.perf_counter()
        try:
            result = await (submit or self.batcher.submit)(query)
        except InvalidArgument as err:
            if canary is None or not canary.split.in_canary(query.user_id):
                raise
            self._observe(canary, canary.bundle.version, time.perf_counter() - started, True)
            raise _reworded(err, note=f"; canary version {canary.bundle.version!r} serves this "
                            "user and refuses it (the active version accepts it)") from None
        except TailorError:
            raise
        except Exception:
            if canary is not None:
                version = (canary.bundle.version if canary.split.in_canary(query.user_id)
                           else self.registry.current().version)
                self._observe(canary, version, time.perf_counter() - started, True)
            raise
        if canary is not None:
            self._observe(canary, result.bundle.version, time.perf_counter() - started, False)
        return result

    def _observe(self, canary: Canary, version: str, seconds: float, failed: bool) -> None:
        if self.tally.canary_id != canary.split.id:
            self.tally.reset(canary.split.id)
        self.tally.observe(version, seconds, failed)

    async def recommend_many(self, queries: Sequence[RecQuery], request_ids: Sequence[str] = (),
                             partial: bool = False, record: bool = True
                             ) -> list[RecResult | TailorError]:
        """Answers in query order; answer i is recorded as request `request_ids[i]`'s (`record`
        False: not here; the caller records them with `record_many` once they are sent).

        The first entry that fails fails the call, naming it (`requests[i].`); with `partial`
        it is answered with its error instead (a `TailorError` worded as the call's would be;
        INTERNAL for an unexpected failure, logged here) and the others are answered."""
        if not queries:
            raise InvalidArgument("requests", "must not be empty")
        check_count("requests", len(queries), self.limits.batch_users)
        results: list = [None] * len(queries)
        for i, q in enumerate(queries):
            try:
                self.validate(q, f"requests[{i}].")
            except InvalidArgument as err:
                if not partial:
                    raise
                results[i] = err
        asked = sum(q.k for q, res in zip(queries, results) if res is None)
        if asked > self.limits.batch_items:
            raise InvalidArgument("requests[].k", f"{asked} items asked for in all, at most "
                                  f"{self.limits.batch_items} a batch (its answer is one message)")
        self.registry.current()
        submit = self.batcher.submit if self.registry.canary is None else self._counted
        todo = [i for i, res in enumerate(results) if res is None]
        if todo:
            self.batcher.admit()  # overloaded: refused whole, before any entry is queued
        with exempt():  # admitted: no entry is refused after others were queued
            done = await asyncio.gather(*(submit(queries[i]) for i in todo),
                                        return_exceptions=True)
        unexpected = []
        for i, res in zip(todo, done):  # the first failure fails the batch, naming its entry
            if isinstance(res, InvalidArgument):
                res = _reworded(res, where=f"requests[{i}].")
            elif isinstance(res, BaseException) and not isinstance(res, TailorError) and partial:
                if not isinstance(res, Exception):
                    raise res
                unexpected.append((i, res))
                res = Internal("RecommendBatch")
            if isinstance(res, BaseException) and not partial:
                raise res from None
            results[i] = res
        if unexpected:  # one traceback a call (a failing version group shares one error)
            logger.error("RecommendBatch: %d entries failed, requests[%d] first", len(unexpected),
                         unexpected[0][0], exc_info=unexpected[0][1])
        if record:
            self.record_many(queries, request_ids, results)
        return results

    def record_many(self, queries: Sequence[RecQuery], request_ids: Sequence[str],
                    results: Sequence[RecResult | TailorError], given: bool = False) -> None:
        """`record` each answer of `recommend_many` (not its entries' errors)."""
        if self.impressions is not None:
            for q, rid, res in zip(queries, request_ids or [""] * len(queries), results):
                if not isinstance(res, TailorError):
                    self.impressions.record(rid, q, res, 0.0, given)

    def check_answer(self, size: int, field: str) -> None:
        """Refuse an answer of `size` serialized bytes that cannot be sent as one message
        (`grpc_max_message_bytes`) before it is recorded: a shown item takes 100 bytes or
        4 KiB by its title and URL (`limits.item_text_chars`), so `batch_items` alone cannot
        promise it fits. `field`: what to ask less of."""
        most = self.settings.grpc_max_message_bytes
        if size > most:
            raise InvalidArgument(field, f"the answer takes {size} bytes, past the {most}-byte "
                                  "message limit (grpc_max_message_bytes): ask for fewer items")

    def check_bundle(self, bundle: Bundle) -> None:
        """`ModelRegistry.add_check`: refuse a bundle whose trained candidate count this server
        would serve with is out of bounds (`candidates`), or that fails Recommend for its own
        users (`smoke.check_bundle`)."""
        candidates = self.candidates(bundle)
        self._init_compute_thread()  # the loading thread's FAISS threads, as a batch thread's
        smoke.check_bundle(bundle, self.settings.bundle_smoke_users, candidates)

    def candidates(self, bundle: Bundle) -> int:
        """The candidates a request's ranker re-scores with `bundle`: the server's
        `ranker_candidates` when set, else the bundle's trained count (BundleInvalid when out
        of bounds: `check_bundle` refuses such a bundle before it serves)."""
        return self.settings.ranker_candidates or bundle.ranker_candidates

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's cached history rows, vector and candidates go (the user
        cache holds them by user id), now and once the erasure has committed
        (`after_erasure`)."""
        self.after_erasure(user_id)
        return 0

    def after_erasure(self, user_id: str) -> None:
        """`UserEraser.after_erasure`: after the commit, as well as in the transaction: a batch
        that read the user before the commit (its `since` taken after the erase in the
        transaction) stores nothing of them."""
        if self.cache is not None:
            self.cache.erase([user_id])

    def forget_erased(self, erased: Callable[[Sequence[str]], list[str]]) -> None:
        """`Tombstones.watch`: drop the cached users that tombstones new to this worker name
        (erased in another worker: `erase_user` ran there, not here), and keep the batches
        under way from storing them (`UserCache.erase`)."""
        held = self.cache.user_ids() if self.cache is not None else []
        gone = erased(held) if held else []
        if gone:
            self.cache.erase(gone)

    async def close(self) -> None:
        await self.batcher.close()
