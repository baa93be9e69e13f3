"""Cold-item recall: how well items that arrive between trainings are recommended.

Protocol (`run_cold_items`): a seeded share of the items with interactions is held out; ALS,
histories and the encoder are fitted on every other row (`training.stage.fit_stage`), and the
content map on the warm items (`training.content.fit_content`, as `train` does). The held-out
items are then embedded from their content exactly as the server's UpsertItems does and as
`train` embeds the catalog items its fit saw no interaction with
(`training.content.content_vectors`: the ridge map; also rescaled to their category's median
norm, for comparison). Every user with training history and at least one interaction with a
held-out item is scored:

- ``cold``: the held-out items ranked among themselves, recall@k of the user's held-out items,
  against random order, category popularity (held-out items ranked by their category's
  training interactions: all a popularity ranking knows of a new item), and the user's
  category affinity (share of the user's training history in the item's category);
- ``catalog``: the held-out items added to the whole catalog (retrieval only, the user's
  training items excluded), recall@k and @5k of the user's held-out items in that list, and
  the share of the top 5k slots the held-out items take (beside their share of the users' rows: a
  method that floods lists with new items has a high recall and a high share).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from training.als import ALSParams
from training.content import ContentParams, content_vectors, fit_content
from training.events import DEFAULT_EVENT_WEIGHTS, Catalog, Interactions
from training.metrics import ranking_metrics
from training.pipeline import positive_rows
from training.split import distinct_items
from training.stage import fit_stage

__all__ = ["ColdConfig", "format_cold", "run_cold_items"]

logger = logging.getLogger("tailor.training.cold_items")


@dataclass(frozen=True)
class ColdConfig:
    holdout: float = 0.1
    """Share of the items with interactions held out of training."""
    k: int = 10
    seed: int = 0
    als: ALSParams = ALSParams()
    content: ContentParams = ContentParams()


def _category_norms(vectors: np.ndarray, category: np.ndarray, warm: np.ndarray,
                    n_categories: int) -> np.ndarray:
    """[n_categories] median vector norm of each category's warm items."""
    norms = np.linalg.norm(vectors, axis=1)
    out = np.full(n_categories, np.median(norms[warm]))
    for c in np.unique(category[warm]):
        out[c] = np.median(norms[warm & (category == c)])
    return out


def _calibrate(vectors: np.ndarray, categories: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """`vectors` rescaled to their category's median norm: a variant the server does not use
    (ridge predictions shrink towards the mean; rescaled, new items flood the lists)."""
    length = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return (vectors / length * norms[categories][:, None]).astype(np.float32)


def _hold_out(rows: Interactions, cfg: ColdConfig) -> np.ndarray:
    items = np.unique(rows.item)
    n = max(1, int(round(cfg.holdout * len(items))))
    return np.sort(np.random.default_rng(cfg.seed).choice(items, n, replace=False))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _affinity(stage, users: np.ndarray, category: np.ndarray, n_cat: int) -> np.ndarray:
    """[U, n_cat] share of each user's training items per category."""
    indptr, items = stage.seen
    owner = np.repeat(np.arange(len(users)), indptr[users + 1] - indptr[users])
    rows = np.concatenate([items[indptr[u]:indptr[u + 1]] for u in users])
    counts = np.zeros((len(users), n_cat))
    np.add.at(counts, (owner, category[rows]), 1.0)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def _scores(stage, catalog: Catalog, cold: np.ndarray, users: np.ndarray, vecs: dict,
            cfg: ColdConfig) -> dict[str, np.ndarray]:
    """[U, n_cold] scores of the held-out items per method."""
    rng = np.random.default_rng(cfg.seed + 1)
    n_cat = len(catalog.category_names)
    cat_pop = np.bincount(catalog.category, weights=stage.popularity, minlength=n_cat)
    cold_cat = catalog.category[cold]
    uvec = stage.user_vectors(users)
    tie = cat_pop[cold_cat] / max(cat_pop.max(), 1.0) * 1e-3
    out = {"random": rng.random((len(users), len(cold))),
           "category popularity": np.broadcast_to(cat_pop[cold_cat], (len(users), len(cold))),
           "category affinity": _affinity(stage, users, catalog.category, n_cat)[:, cold_cat] + tie}
    out.update({name: uvec @ v.T for name, v in vecs.items()})
    return out


def _vectors(stage, catalog: Catalog, cold: np.ndarray, cfg: ColdConfig) -> dict[str, np.ndarray]:
    """The held-out items' vectors per embedding method (what UpsertItems would serve)."""
    warm = stage.popularity > 0
    n_cat = len(catalog.category_names)
    norms = _category_norms(stage.item_factors, catalog.category, warm, n_cat)
    cats = catalog.category[cold]
    means = np.stack([stage.item_factors[warm & (catalog.category == c)].mean(0)
                      if (warm & (catalog.category == c)).any() else stage.item_factors[warm].mean(0)
                      for c in range(n_cat)])
    out = {"category mean vector": means[cats]}
    fitted = fit_content(catalog, stage.item_factors, stage.popularity, cfg.content)
    if fitted is not None:
        ridge = content_vectors(fitted[0], catalog, cold)
        out["content map (ridge)"] = ridge
        out["content map, rescaled"] = _calibrate(ridge, cats, norms)
    return out


def _catalog_recall(stage, cold, users, vecs, test_csr, ks, batch: int = 4096) -> dict:
    """Recall@k (each k of `ks`) of the held-out items when they join the whole catalog
    (retrieval only), and the share of the top max(ks) slots they take."""
    indptr, items = stage.seen
    uvec = stage.user_vectors(users)
    out = {}
    for name, v in vecs.items():
        table = stage.item_factors.copy()
        table[cold] = v
        recs = []
        for lo in range(0, len(users), batch):
            part = users[lo:lo + batch]
            s = uvec[lo:lo + batch] @ table.T
            owner = np.repeat(np.arange(len(part)), indptr[part + 1] - indptr[part])
            seen = np.concatenate([items[indptr[u]:indptr[u + 1]] for u in part])
            s[owner, seen] = -np.inf
            recs.append(_top(s, max(ks)))
        recs = np.concatenate(recs)
        out[name] = {f"recall@{k}": round(ranking_metrics(recs, *test_csr, users, table.shape[0],
                                                          k)[f"recall@{k}"], 4) for k in ks}
        out[name]["cold_share"] = round(float(np.isin(recs, cold).mean()), 4)
    return out


def run_cold_items(inter: Interactions, catalog: Catalog, cfg: ColdConfig = ColdConfig()) -> dict:
    """The report: sizes, ``cold`` (recall@k, ndcg@k per method) and ``catalog`` recall@k."""
    rows = positive_rows(inter, DEFAULT_EVENT_WEIGHTS)   # none: a ValueError saying so
    cold = _hold_out(rows, cfg)
    is_cold = np.isin(rows.item, cold)
    train_rows, test = rows.subset(~is_cold), rows.subset(is_cold)
    stage = fit_stage(train_rows, catalog, cfg.als, dict(DEFAULT_EVENT_WEIGHTS))
    has_hist = np.diff(stage.seen[0]) > 0
    indptr, items = distinct_items(test.user, test.item, test.n_users)
    users = np.flatnonzero((np.diff(indptr) > 0) & has_hist)
    vecs = _vectors(stage, catalog, cold, cfg)
    position = np.full(rows.n_items, -1)
    position[cold] = np.arange(len(cold))
    report = {"n_items": int(rows.n_items), "n_cold_items": int(len(cold)),
              "cold_row_share": round(float(is_cold[np.isin(rows.user, users)].mean()), 4),
              "n_eval_users": int(len(users)), "k": cfg.k, "cold": {}}
    for name, s in _scores(stage, catalog, cold, users, vecs, cfg).items():
        recs = cold[_top(np.asarray(s, np.float64), cfg.k)]
        m = ranking_metrics(recs, indptr, items, users, rows.n_items, cfg.k)
        report["cold"][name] = {f"recall@{cfg.k}": round(m[f"recall@{cfg.k}"], 4),
                                f"ndcg@{cfg.k}": round(m[f"ndcg@{cfg.k}"], 4)}
    report["catalog"] = _catalog_recall(stage, cold, users, vecs, (indptr, items),
                                        (cfg.k, 5 * cfg.k))
    return report


def format_cold(report: dict) -> str:
    k = report["k"]
    lines = [f"{report['n_cold_items']} of {report['n_items']} items held out of training, "
             f"{report['n_eval_users']} users scored",
             "held-out items ranked among themselves:",
             f"  {'method':<28}{'recall@' + str(k):>11}{'ndcg@' + str(k):>11}"]
    for name, m in report["cold"].items():
        lines.append(f"  {name:<28}{m[f'recall@{k}']:>11.4f}{m[f'ndcg@{k}']:>11.4f}")
    lines.append("held-out items added to the whole catalog (retrieval only):")
    lines.append(f"  {'method':<28}{'recall@' + str(k):>11}{'recall@' + str(5 * k):>11}"
                 f"{'held-out share of top ' + str(5 * k):>28}")
    for name, r in report["catalog"].items():
        lines.append(f"  {name:<28}{r[f'recall@{k}']:>11.4f}{r[f'recall@{5 * k}']:>11.4f}"
                     f"{r['cold_share']:>28.4f}")
    lines.append(f"  (held-out items' share of the scored users' held-out and training rows: "
                 f"{report['cold_row_share']:.4f})")
    return "\n".join(lines)
