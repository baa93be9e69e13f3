"""Transport-agnostic Recommend handler: validation, micro-batching, the pipeline."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import faiss

from ..batching import AdaptiveBatcher, ThreadRunner
from ..config import Settings
from ..errors import InvalidArgument
from ..models import Bundle, ModelRegistry
from ..profiles.schema import CHANNELS
from ..profiles.seen import SeenSet
from ..validation import SEP, check_count, check_id, check_known, check_range, shown
from .exclusion import SeenPolicy
from .pipeline import BatchValues, History, RecQuery, RecResult, recommend_batch

__all__ = ["Recommender", "bundle_histories"]


def bundle_histories(bundle: Bundle, user_ids: Sequence[str]) -> list[History | None]:
    """Histories known to the bundle itself (training-time), None for unknown users."""
    return [bundle.history(u) for u in user_ids]


class Recommender:
    def __init__(self, settings: Settings, registry: ModelRegistry,
                 history_of: Callable[[Bundle, Sequence[str]], list[History | None]] = bundle_histories,
                 seen_of: Callable[[Sequence[str]], list[SeenSet | None]] | None = None,
                 observe: Callable[[BatchValues], None] | None = None):
        self.settings = settings
        self.limits = settings.limits
        self.registry = registry
        self.history_of = history_of
        self.seen_of = seen_of
        """Live seen-sets per user (None: only the bundle's seen-sets count)."""
        self.observe = observe
        """Receives each batch's values (drift histograms, `server.drift`), if given."""
        self.policy = SeenPolicy.from_settings(settings) if settings.exclude_history else None
        self.batcher: AdaptiveBatcher[RecQuery, RecResult] = AdaptiveBatcher(
            ThreadRunner(self._run_batch, concurrency=settings.batch_concurrency, name="recommend",
                         thread_init=self._init_compute_thread),
            max_size=settings.batch_max_size, max_wait=settings.batch_max_wait_ms / 1000.0)

    def _init_compute_thread(self) -> None:
        # OpenMP thread counts are per calling thread: set FAISS's in each batch thread. Its
        # default (one spinning thread per core) fights the event loop and the other slot.
        faiss.omp_set_num_threads(self.settings.compute_threads)

    def validate(self, q: RecQuery, where: str = "") -> RecQuery:
        """Check one query against the limits; `where` prefixes the field names (batches)."""
        lim, uid = self.limits, q.user_id
        # The hot path: compare inline (check_id's own fast test), and let the shared checks
        # decide and word the rare refusal.
        if not uid or len(uid) > lim.id_bytes >> 2 or SEP in uid:
            check_id("user_id", uid, lim.id_bytes, where)
        if not 1 <= q.k <= lim.recommend_k:
            check_range("k", q.k, 1, lim.recommend_k, where)
        if q.channel and q.channel not in CHANNELS:  # empty: no channel given
            check_known("channel", q.channel, CHANNELS, where)
        if len(q.exclude_item_ids) > lim.exclude_items:
            check_count("exclude_item_ids", len(q.exclude_item_ids), lim.exclude_items, where)
        if q.categories:
            bundle = self.registry.active
            for name in q.categories:
                if not name or (bundle is not None and name not in bundle.category_code):
                    known = ", ".join(sorted(bundle.category_code)[:20]) if bundle else ""
                    raise InvalidArgument(f"{where}categories",
                                          f"unknown category {shown(name)} (known: {known})")
        return q

    def _run_batch(self, queries: Sequence[RecQuery]) -> list[RecResult | BaseException]:
        bundle = self.registry.current()  # one version for the whole batch
        return recommend_batch(bundle, queries, self.history_of,
                               ranker_candidates=self.settings.ranker_candidates,
                               policy=self.policy, seen_of=self.seen_of,
                               overfetch_max=self.settings.seen_overfetch_max,
                               observe=self.observe)

    async def recommend(self, query: RecQuery) -> RecResult:
        self.registry.current()  # fail fast with FAILED_PRECONDITION when nothing is loaded
        return await self.batcher.submit(self.validate(query))

    async def recommend_many(self, queries: Sequence[RecQuery]) -> list[RecResult]:
        if not queries:
            raise InvalidArgument("requests", "must not be empty")
        check_count("requests", len(queries), self.limits.batch_users)
        for i, q in enumerate(queries):
            self.validate(q, f"requests[{i}].")
        self.registry.current()
        return list(await asyncio.gather(*(self.batcher.submit(q) for q in queries)))

    async def close(self) -> None:
        await self.batcher.close()
