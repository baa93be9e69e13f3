"""Transport-agnostic Recommend handler: validation, micro-batching, the pipeline."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import faiss

from ..batching import AdaptiveBatcher, ThreadRunner
from ..config import Settings
from ..errors import InvalidArgument
from ..models import Bundle, ModelRegistry
from ..profiles.seen import SeenSet
from .exclusion import SeenPolicy
from .pipeline import History, RecQuery, RecResult, recommend_batch

__all__ = ["Recommender", "bundle_histories"]

MAX_K = 1000


def bundle_histories(bundle: Bundle, user_ids: Sequence[str]) -> list[History | None]:
    """Histories known to the bundle itself (training-time), None for unknown users."""
    return [bundle.history(u) for u in user_ids]


class Recommender:
    def __init__(self, settings: Settings, registry: ModelRegistry,
                 history_of: Callable[[Bundle, Sequence[str]], list[History | None]] = bundle_histories,
                 seen_of: Callable[[Sequence[str]], list[SeenSet | None]] | None = None):
        self.settings = settings
        self.registry = registry
        self.history_of = history_of
        self.seen_of = seen_of
        """Live seen-sets per user (None: only the bundle's seen-sets count)."""
        self.policy = SeenPolicy.from_settings(settings) if settings.exclude_history else None
        self.batcher: AdaptiveBatcher[RecQuery, RecResult] = AdaptiveBatcher(
            ThreadRunner(self._run_batch, concurrency=settings.batch_concurrency, name="recommend",
                         thread_init=self._init_compute_thread),
            max_size=settings.batch_max_size, max_wait=settings.batch_max_wait_ms / 1000.0)

    def _init_compute_thread(self) -> None:
        # OpenMP thread counts are per calling thread: set FAISS's in each batch thread. Its
        # default (one spinning thread per core) fights the event loop and the other slot.
        faiss.omp_set_num_threads(self.settings.compute_threads)

    def validate(self, q: RecQuery, field: str = "") -> RecQuery:
        s = self.settings
        uid = q.user_id.encode()
        if not q.user_id.strip():
            raise InvalidArgument(f"{field}user_id", "must not be empty")
        if len(uid) > s.max_user_id_bytes:
            raise InvalidArgument(f"{field}user_id", f"{len(uid)} bytes, at most {s.max_user_id_bytes}")
        if not 1 <= q.k <= MAX_K:
            raise InvalidArgument(f"{field}k", f"{q.k} is outside 1..{MAX_K}")
        if len(q.exclude_item_ids) > s.max_exclude_items:
            raise InvalidArgument(f"{field}exclude_item_ids",
                                  f"{len(q.exclude_item_ids)} ids, at most {s.max_exclude_items}")
        bundle = self.registry.active
        for name in q.categories:
            if not name or (bundle is not None and name not in bundle.category_code):
                known = ", ".join(sorted(bundle.category_code)[:20]) if bundle else ""
                raise InvalidArgument(f"{field}categories", f"unknown category {name!r} (known: {known})")
        return q

    def _run_batch(self, queries: Sequence[RecQuery]) -> list[RecResult | BaseException]:
        bundle = self.registry.current()  # one version for the whole batch
        return recommend_batch(bundle, queries, self.history_of,
                               ranker_candidates=self.settings.ranker_candidates,
                               policy=self.policy, seen_of=self.seen_of,
                               overfetch_max=self.settings.seen_overfetch_max)

    async def recommend(self, query: RecQuery) -> RecResult:
        self.registry.current()  # fail fast with FAILED_PRECONDITION when nothing is loaded
        return await self.batcher.submit(self.validate(query))

    async def recommend_many(self, queries: Sequence[RecQuery]) -> list[RecResult]:
        if not queries:
            raise InvalidArgument("requests", "must not be empty")
        if len(queries) > self.settings.max_batch_users:
            raise InvalidArgument("requests", f"{len(queries)} requests, at most {self.settings.max_batch_users}")
        for i, q in enumerate(queries):
            self.validate(q, f"requests[{i}].")
        self.registry.current()
        return list(await asyncio.gather(*(self.batcher.submit(q) for q in queries)))

    async def close(self) -> None:
        await self.batcher.close()
