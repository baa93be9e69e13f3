"""Reference distributions for drift monitoring: the manifest's `drift` key (contract.drift).

On a sample of the served fit's users, computed as the server computes them for the same users
(their bundle histories, the top ``n_candidates`` unseen items, the ranker's features and scores,
the top ``k``):

- ``history_len``: non-padding history items per user (numeric);
- ``history_category``: category of every history item (categorical, one count per code);
- ``recommendation_category``: category of every recommended item (top ``k``; categorical);
- each ranker feature (``kernels.ranking.FEATURES`` names; ``retrieval_score`` is the retrieval
  score distribution, the only one without a ranker), over every candidate (numeric);
- ``ranker_score``: the ranker's score of every candidate (numeric; with a ranker only).

Numeric features get quantile edges (`kernels.drift.quantile_edges`) so each bin holds about the
same share of training's values, and the counts of training's values in those bins.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx

from kernels.drift import bin_columns, pad_edges, quantile_edges
from kernels.ranking import FEATURES
from training.encoder import pad_histories
from training.retrieval import encoder_session
from training.stage import Stage

__all__ = ["DRIFT_FORMAT", "drift_reference"]

logger = logging.getLogger("tailor.training.drift")

DRIFT_FORMAT = 1


def _numeric(values: np.ndarray, n_bins: int) -> dict:
    edges = quantile_edges(values, n_bins)
    bins = bin_columns(np.asarray(values, np.float64).reshape(-1, 1), pad_edges([edges]))[:, 0]
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _categorical(codes: np.ndarray, n_categories: int) -> dict:
    counts = np.bincount(np.asarray(codes, np.int64), minlength=n_categories)
    return {"categorical": True, "counts": [int(c) for c in counts]}


def _ranker_scores(ranker: onnx.ModelProto | None, feats: np.ndarray) -> np.ndarray | None:
    if ranker is None:
        return None
    session = encoder_session(ranker.SerializeToString(), 1)
    width = session.get_inputs()[0].shape[1]
    if isinstance(width, int) and width > feats.shape[2]:  # context features: lift 0 (none given)
        feats = np.concatenate([feats, np.zeros(feats.shape[:2] + (width - feats.shape[2],),
                                                np.float32)], axis=2)
    u, c, f = feats.shape
    return session.run(["score"], {"features": feats.reshape(u * c, f)})[0].reshape(u, c)


def drift_reference(stage: Stage, ranker: onnx.ModelProto | None, n_users: int = 2000,
                    n_candidates: int = 100, k: int = 10, n_bins: int = 10, seed: int = 0) -> dict:
    """The manifest's `drift` value for `stage` (the served fit) and its `ranker`.

    Parameters
    ----------
    stage : Stage
        The served fit (its histories are the bundle's `users.npz`).
    ranker : onnx.ModelProto or None
        The bundle's ranker, over all of `kernels.ranking.FEATURES`.
    n_users : int
        Users sampled (without replacement, `seed`) among those with a history.
    n_candidates, k : int
        Candidates per user the ranker scores, and items recommended per user.
    n_bins : int
        Bins per numeric feature (fewer where quantiles tie).

    Returns
    -------
    dict
        ``{"format": 1, "n_users", "k", "features": {name: {"edges", "counts"} or
        {"categorical": true, "counts"}}}``; ``{}`` when no user has a history.
    """
    indptr = stage.hist[0]
    warm = np.flatnonzero(np.diff(indptr) > 0)
    if not len(warm) or n_users < 1:
        return {}
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(warm, min(n_users, len(warm)), replace=False))
    items, weights = pad_histories(*stage.hist, users, stage.params.history_len)
    mask = weights > 0
    table = stage.table
    cand, scores = stage.candidates(users, n_candidates)
    valid = cand >= 0
    feats = stage.features(users, cand, scores)
    final = _ranker_scores(ranker, feats)
    order = np.argsort(-np.where(valid, scores if final is None else final, -np.inf), axis=1,
                       kind="stable")[:, :k]
    top = np.take_along_axis(cand, order, axis=1)
    out = {"history_len": _numeric(mask.sum(axis=1), n_bins),
           "history_category": _categorical(table.category[items[mask]], table.n_categories),
           "recommendation_category": _categorical(table.category[top[top >= 0]],
                                                   table.n_categories)}
    for f, name in enumerate(FEATURES if final is not None else FEATURES[:1]):
        out[name] = _numeric(feats[..., f][valid], n_bins)  # without a ranker: retrieval_score
    if final is not None:
        out["ranker_score"] = _numeric(final[valid], n_bins)
    logger.info("drift reference from %d users, %d candidates", len(users), int(valid.sum()))
    return {"format": DRIFT_FORMAT, "n_users": int(len(users)), "k": int(k), "features": out}
