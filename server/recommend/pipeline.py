"""One batch of Recommend queries against one bundle: the hot path, numpy-vectorised.

histories and seen-sets → excluded rows per user (`exclusion`) → encoder (one ONNX run) →
FAISS (one search, deeper by the exclusions; category-filtered queries score their
categories' vectors exactly) → drop seen/excluded → ranker (one ONNX run over every candidate of
the batch) → top-k. Users without history get popularity (within the requested categories).
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from kernels import ranking

from .. import metrics
from ..errors import InvalidArgument
from ..models import Bundle, UnknownCategory
from ..profiles.seen import SeenSet
from .context import RequestContext, request_context, with_context
from .exclusion import SeenPolicy, excluded_rows
from .user_cache import CachedUser, UserCache

__all__ = ["BatchValues", "RecQuery", "RecResult", "History", "recommend_batch"]

History = tuple[np.ndarray, np.ndarray]
"""(item rows oldest first, weights) — the encoder's input for one user."""


@dataclass(frozen=True, slots=True)
class RecQuery:
    user_id: str
    k: int
    channel: str = ""
    categories: tuple[str, ...] = ()
    exclude_item_ids: tuple[str, ...] = ()
    context: tuple[tuple[str, str], ...] = ()
    """The request's context entries (recorded by the impression log, not used for ranking)."""


@dataclass(slots=True)
class RecResult:
    rows: np.ndarray
    scores: np.ndarray
    retrieval_scores: np.ndarray
    cold_start: bool
    bundle: Bundle


@dataclass(frozen=True, slots=True)
class BatchValues:
    """What one batch computed for its warm queries, handed to `recommend_batch`'s `observe`
    (read-only: drift histograms, `server.drift`)."""

    bundle: Bundle
    hist: tuple[np.ndarray, np.ndarray]
    """The encoder's input: item rows and weights [W, L] (weight 0 = padding)."""
    cands: list[tuple[np.ndarray, np.ndarray]]
    """Per warm query whose list was ranked in this batch (not taken from the user cache) and
    that asked for no category: candidate rows and retrieval scores, best first."""
    feats: np.ndarray | None
    """Ranker features [len(cands), width, F] (`kernels.ranking.FEATURES` order; rows past a
    query's candidates are padding), None without a ranker or when no list was ranked."""
    scores: list[np.ndarray]
    """Per list of `cands`: the ranker's (or retrieval) score of each candidate."""
    results: list[RecResult]
    """The answers of the warm queries that asked for no category."""


class _Stage:
    """Times one stage into its histogram. Batches may run in several threads at once (the
    batch threads, and the event loop for `recommend(on_loop=True)`): the start is per thread."""

    def __init__(self, name: str):
        self.hist = metrics.STAGE_LATENCY.labels(name)
        self.started = threading.local()

    def __enter__(self):
        self.started.t = time.perf_counter()

    def __exit__(self, *exc):
        self.hist.observe(time.perf_counter() - self.started.t)


_STAGES = {n: _Stage(n) for n in ("history", "exclude", "encode", "retrieve", "rank", "assemble")}


def _category_codes(bundle: Bundle, names: tuple[str, ...]) -> np.ndarray | None:
    if not names:
        return None
    codes = []
    for name in names:
        code = bundle.category_code.get(name)
        if code is None:
            raise UnknownCategory("categories", name, bundle.category_code)
        codes.append(code)
    return np.unique(np.asarray(codes, np.int32))


def _requested(bundle: Bundle, q: RecQuery) -> np.ndarray:
    rows = np.asarray([bundle.item_row[i] for i in q.exclude_item_ids if i in bundle.item_row],
                      np.int64)
    # items removed between trainings (`server.catalog`) are excluded for everyone
    return np.concatenate([rows, bundle.removed]) if len(bundle.removed) else rows


_SKIPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per bundle with removed items: (search parameters, the selectors they point to)."""


def _skip_removed(bundle: Bundle):
    """FAISS search parameters that leave the bundle's removed rows out of the search itself
    (with the index's own efSearch or nprobe), so that removals do not deepen every search; None
    when nothing is removed, or for an index of another kind (its search goes deeper by the
    removals instead)."""
    if not len(bundle.removed):
        return None
    held = _SKIPS.get(bundle)
    if held is None:
        index = faiss.downcast_index(bundle.index)
        chosen = faiss.IDSelectorBatch(np.ascontiguousarray(bundle.removed, np.int64))
        skip = faiss.IDSelectorNot(chosen)
        if isinstance(index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=skip, efSearch=index.hnsw.efSearch)
        elif isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=skip, nprobe=index.nprobe,
                                               max_codes=index.max_codes)
        elif isinstance(index, faiss.IndexFlat):
            params = faiss.SearchParameters(sel=skip)
        else:
            params = None
        held = _SKIPS.setdefault(bundle, (params, chosen, skip))  # SWIG keeps no references
    return held[0]


def _popular(bundle: Bundle, cats: np.ndarray | None, k: int, blocked: np.ndarray,
             taken: np.ndarray | None = None) -> np.ndarray:
    """The k most popular rows (within `cats`) that are neither blocked nor taken."""
    pool = bundle.popular if cats is None else np.concatenate([bundle.category_items[c] for c in cats])
    if cats is not None and len(cats) > 1:
        pool = pool[np.argsort(-bundle.popularity_score[pool], kind="stable")]
    taken = np.zeros(0, np.int64) if taken is None else taken
    head = pool[: k + len(blocked) + len(taken)]  # enough to hold k allowed rows if there are k
    keep = ~(_member(head, blocked) | _member(head, np.sort(taken)))
    return head[keep][:k].astype(np.int64)


def _member(rows: np.ndarray, sorted_ban: np.ndarray) -> np.ndarray:
    """rows ∈ sorted_ban, elementwise: one binary search per row."""
    if not len(sorted_ban) or not len(rows):
        return np.zeros(len(rows), bool)
    pos = np.minimum(np.searchsorted(sorted_ban, rows), len(sorted_ban) - 1)
    return sorted_ban[pos] == rows


def _unblocked(cand: tuple[np.ndarray, np.ndarray], blocked: np.ndarray, n: int):
    """The first `n` candidates (rows, scores) that are not blocked (sorted rows), order kept."""
    rows, scores = cand
    if len(blocked) and len(rows):
        keep = ~_member(rows, blocked)
        rows, scores = rows[keep], scores[keep]
    return rows[:n], scores[:n]


def _history_arrays(bundle: Bundle, histories: list[History]) -> tuple[np.ndarray, np.ndarray]:
    """Pad histories to the encoder's [B, L] items/weights (weight 0 = padding)."""
    L = bundle.history_len
    items = np.zeros((len(histories), L), np.int64)
    weights = np.zeros((len(histories), L), np.float32)
    for i, (rows, w) in enumerate(histories):
        n = min(len(rows), L)
        items[i, :n] = rows[-n:]
        weights[i, :n] = w[-n:]
    return items, weights


def _encode(bundle: Bundle, hist: tuple[np.ndarray, np.ndarray], user_ids: list[str],
            cache: UserCache | None, since: int | None = None
            ) -> tuple[np.ndarray, list[CachedUser | None]]:
    """User vectors [B, d] (the cached ones where the input still matches) and cache entries
    (new ones stored unless their user was erased after `since`, `UserCache.store`)."""
    entries = cache.lookup(bundle, user_ids, *hist) if cache is not None else [None] * len(user_ids)
    miss = [j for j, e in enumerate(entries) if e is None]
    if not miss:
        return np.stack([e.vector for e in entries]), entries
    if len(miss) == len(user_ids):
        users = bundle.encoder.run(["user_vec"], {"items": hist[0], "weights": hist[1]})[0]
    else:
        users = np.empty((len(user_ids), bundle.dim), np.float32)
        users[[j for j, e in enumerate(entries) if e is not None]] = \
            np.stack([e.vector for e in entries if e is not None])
        users[miss] = bundle.encoder.run(["user_vec"], {"items": hist[0][miss],
                                                        "weights": hist[1][miss]})[0]
    if cache is not None:
        for j in miss:
            entries[j] = cache.store(bundle, user_ids[j], hist[0][j], hist[1][j], users[j], since)
    return users, entries


def _retrieve(bundle: Bundle, users: np.ndarray, cats: list[np.ndarray | None], depth: list[int],
              entries: list[CachedUser | None] | None = None, params=None):
    """Candidate rows and inner-product scores per warm query, best first; free searches come
    from (and go to) the users' cache `entries` when given, and search with `params`
    (`_skip_removed`) when given."""
    out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(users)  # type: ignore[list-item]
    entries = entries or [None] * len(users)
    free = []
    for i, c in enumerate(cats):
        if c is None:
            hit = entries[i].candidates(depth[i]) if entries[i] is not None else None
            if hit is None:
                free.append(i)
            else:
                out[i] = hit
    if free:
        kk = min(bundle.n_items, max(depth[i] for i in free))
        query = np.ascontiguousarray(users[free])
        scores, rows = (bundle.index.search(query, kk) if params is None
                        else bundle.index.search(query, kk, params=params))
        for j, i in enumerate(free):
            ok = rows[j, :depth[i]] >= 0
            out[i] = (rows[j, :depth[i]][ok].astype(np.int64), scores[j, :depth[i]][ok])
            if entries[i] is not None:
                entries[i].keep(depth[i], out[i])
    for i, c in enumerate(cats):
        if c is None:
            continue
        pool = np.concatenate([bundle.category_items[x] for x in c])
        s = bundle.vectors[pool] @ users[i] if len(pool) < 50_000 else _dot_blocks(bundle, pool, users[i])
        kk = min(len(pool), depth[i])
        top = np.argpartition(-s, kk - 1)[:kk] if kk < len(pool) else np.arange(len(pool))
        top = top[np.argsort(-s[top], kind="stable")]
        out[i] = (pool[top], s[top].astype(np.float32))
    return out


def _dot_blocks(bundle: Bundle, pool: np.ndarray, user: np.ndarray) -> np.ndarray:
    return np.concatenate([bundle.vectors[pool[s:s + 50_000]] @ user
                           for s in range(0, len(pool), 50_000)])


def _rank(bundle: Bundle, hist: tuple[np.ndarray, np.ndarray], cands: list[tuple[np.ndarray, np.ndarray]],
          entries: list[CachedUser | None] | None = None, ctx: RequestContext | None = None):
    """Ranker scores per candidate list (or the retrieval scores when there is no ranker); the
    users' cache `entries` give (and keep) the scores of a list ranked before (in the same
    request context `ctx`, for a bundle that reads one). Also returns the
    indices of the lists the ranker ran on and their feature tensor [len, width, F] (None
    without a ranker, or when every list came from the cache)."""
    if bundle.ranker is None or not cands:
        return [s for _, s in cands], None, list(range(len(cands)))
    entries = entries or [None] * len(cands)
    keys = ctx.keys if ctx is not None else (None,) * len(cands)
    out = [e.scores_for(c[0], key) if e is not None else None
           for e, c, key in zip(entries, cands, keys)]
    todo = [j for j, s in enumerate(out) if s is None]
    feats = None
    if todo:
        part = hist if len(todo) == len(cands) else (hist[0][todo], hist[1][todo])
        part_ctx = None if ctx is None else ctx if len(todo) == len(cands) else ctx.take(todo)
        scores, feats = _run_ranker(bundle, part, [cands[j] for j in todo], part_ctx)
        for j, s in zip(todo, scores):
            out[j] = s
            if entries[j] is not None:
                entries[j].keep_scores(cands[j][0], s, keys[j])
    return out, feats, todo


def _run_ranker(bundle: Bundle, hist: tuple[np.ndarray, np.ndarray],
                cands: list[tuple[np.ndarray, np.ndarray]], ctx: RequestContext | None = None,
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """One ranker run over every candidate list (histories `hist` row by row, request context
    `ctx` when the bundle reads one): the scores per list and the `FEATURES` tensor
    [B, width, F] they came from."""
    lengths = [len(r) for r, _ in cands]
    width = max(max(lengths), 1)
    rows = np.full((len(cands), width), -1, np.int64)
    scores = np.zeros((len(cands), width), np.float32)
    for i, (r, s) in enumerate(cands):
        rows[i, :len(r)], scores[i, :len(s)] = r, s
    feats = ranking.features(hist[0], hist[1], rows, scores, bundle.item_table)
    full = feats if ctx is None else with_context(bundle, feats, rows, ctx)
    out = bundle.ranker.run(["score"], {"features": bundle.ranker_input(full)})[0]
    out = out.reshape(len(cands), width)
    return [out[i, :n] for i, n in enumerate(lengths)], feats


def recommend_batch(bundle: Bundle, queries: Sequence[RecQuery],
                    history_of: Callable[[Bundle, Sequence[str]], list[History | None]], *,
                    ranker_candidates: int = 100, policy: SeenPolicy | None = None,
                    seen_of: Callable[[Sequence[str]], list[SeenSet | None]] | None = None,
                    overfetch_max: int = 50, now: float | None = None,
                    cache: UserCache | None = None,
                    observe: Callable[[BatchValues], None] | None = None,
                    since: int | None = None) -> list[RecResult | BaseException]:
    """Answer every query of the batch with `bundle`; a bad query yields its own exception.

    With a `policy`, items the users have seen (bundle seen-set and `seen_of`'s live sets)
    are excluded as it says at `now` (default: the current time); without one, only each
    query's `exclude_item_ids` are. With a `cache`, users whose encoder input has not changed
    reuse their vector, free-search candidates and, for an unchanged candidate list, the
    ranker's scores (`user_cache`).
    `observe` receives the warm queries' values (drift; lists ranked from the cache are left
    out of its candidates, and the answers and candidates of queries with a category filter
    out of both). `since`: the cache's `since()` from before `history_of`'s read, when its
    caller read the profiles earlier (None: taken here, before they are read).
    """
    results: list[RecResult | BaseException] = [None] * len(queries)  # type: ignore[list-item]
    cats: list[np.ndarray | None] = [None] * len(queries)
    for i, q in enumerate(queries):
        try:
            cats[i] = _category_codes(bundle, q.categories)
        except InvalidArgument as err:
            results[i] = err
    user_ids = [q.user_id for q in queries]
    if since is None and cache is not None:
        since = cache.since()  # before the histories are read
    with _STAGES["history"]:
        histories = history_of(bundle, user_ids)
        live = seen_of(user_ids) if policy is not None and seen_of is not None else [None] * len(queries)
    with _STAGES["exclude"]:
        requested = [_requested(bundle, q) for q in queries]
        blocked = excluded_rows(policy, bundle, user_ids, live, requested,
                                time.time() if now is None else now)
    warm = [i for i, h in enumerate(histories)
            if results[i] is None and h is not None and len(h[0]) > 0]
    if cache is not None and len(warm) < len(queries):  # e.g. erased: keep nothing of them
        cache.forget([user_ids[i] for i, h in enumerate(histories) if h is None or not len(h[0])])
    if warm:
        with _STAGES["encode"]:
            hist = _history_arrays(bundle, [histories[i] for i in warm])
            users, entries = _encode(bundle, hist, [user_ids[i] for i in warm], cache, since)
        # deeper by every requested exclusion and by at most `overfetch_max` seen items; not by
        # the removed items where the search leaves them out (category pools never hold them)
        skip = _skip_removed(bundle)
        removed = len(bundle.removed)
        depth = []
        for i in warm:
            gone = removed if skip is not None or cats[i] is not None else 0
            depth.append(max(queries[i].k, ranker_candidates)
                         + min(len(blocked[i]) - gone, len(requested[i]) - gone + overfetch_max))
        with _STAGES["retrieve"]:
            found = _retrieve(bundle, users, [cats[i] for i in warm], depth, entries, skip)
        keep = max(ranker_candidates, 1)  # over-fetched for the exclusions, not to rank more
        cands = [_unblocked(found[j], blocked[i], max(queries[i].k, keep)) for j, i in enumerate(warm)]
        with _STAGES["rank"]:
            ctx = (request_context(bundle, [queries[i].channel for i in warm],
                                   time.time() if now is None else now)
                   if bundle.context is not None else None)
            final, feats, ranked = _rank(bundle, hist, cands, entries, ctx)
        with _STAGES["assemble"]:
            for j, i in enumerate(warm):
                results[i] = _top_k(bundle, queries[i], cats[i], blocked[i], cands[j], final[j])
        if observe is not None:
            observe(_observed(bundle, hist, cands, feats, final, ranked,
                              [results[i] for i in warm], [cats[i] is None for i in warm]))
    for i, q in enumerate(queries):
        if results[i] is None:
            rows = _popular(bundle, cats[i], q.k, blocked[i])
            pop = bundle.popularity_score[rows].astype(np.float32)
            results[i] = RecResult(rows, pop, np.zeros_like(pop), True, bundle)
    return results


def _observed(bundle: Bundle, hist, cands, feats, final, ranked: list[int], results: list,
              free: list[bool]) -> BatchValues:
    """The batch's values for drift: every warm query's history, but the answers and the
    candidates of those without a category filter only (`free`, per warm query): a filtered
    answer shows what the filter asked for, not the model's distribution, which training's
    reference is of."""
    if all(free):
        return BatchValues(bundle, hist, [cands[j] for j in ranked], feats,
                           [final[j] for j in ranked], results)
    keep = [n for n, j in enumerate(ranked) if free[j]]
    return BatchValues(bundle, hist, [cands[ranked[n]] for n in keep],
                       feats[keep] if feats is not None and keep else None,
                       [final[ranked[n]] for n in keep],
                       [r for r, f in zip(results, free) if f])


def _top_k(bundle: Bundle, q: RecQuery, cats, blocked: np.ndarray, cand, final) -> RecResult:
    rows, retrieval = cand
    order = np.argsort(-final, kind="stable")[: q.k]
    rows, scores, retrieval = rows[order], final[order].astype(np.float32), retrieval[order]
    if len(rows) < q.k:  # tiny catalog or heavy exclusions: fill with popular unseen items
        extra = _popular(bundle, cats, q.k - len(rows), blocked, rows)
        floor = float(scores.min()) if len(scores) else 0.0
        rows = np.concatenate([rows, extra])
        scores = np.concatenate([scores, np.full(len(extra), floor, np.float32)])
        retrieval = np.concatenate([retrieval, np.zeros(len(extra), np.float32)])
    return RecResult(rows, scores, retrieval, False, bundle)
