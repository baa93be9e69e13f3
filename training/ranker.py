"""Second-stage LightGBM ranker over `kernels.ranking` features, trained without leakage.

Inner split: the last 20% of each user's *training* rows become labels; a stage-1 retrieval model
is fitted on the rest; its top candidates per user are featurised and labelled 1 if the user
interacted with them in the label rows. The trained booster is exported to ONNX with input
``features`` float32 [N, F] and output ``score``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx.numpy_helper

from kernels.ranking import FEATURES
from training.events import Interactions
from training.metrics import group_ndcg, hits
from training.split import distinct_items, temporal_split

if TYPE_CHECKING:
    import lightgbm as lgb

__all__ = ["RankerParams", "ranker_dataset", "fewest_trees", "fit_booster", "train_ranker", "to_onnx"]

logger = logging.getLogger("tailor.training.ranker")


@dataclass(frozen=True)
class RankerParams:
    """Ranker hyper-parameters (recorded in the manifest)."""

    n_candidates: int = 100
    max_users: int = 10_000
    objective: str = "lambdarank"
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 100
    valid_frac: float = 0.1
    early_stopping: int = 30
    tree_tolerance: float = 0.01
    """Keep the fewest trees whose validation score (NDCG@10, or AUC for `binary`) is within this
    fraction of the best: every tree costs serving time on each candidate, and a plateau's extra
    trees buy noise. 0 keeps early stopping's best round."""
    seed: int = 0
    threads: int = 2


def ranker_dataset(stage, labels: Interactions, users: np.ndarray, n_candidates: int):
    """Features [N, F], 0/1 labels [N] and group sizes for ``users`` (one group per user).

    Users without any positive candidate are dropped (they carry no ranking signal).
    """
    indptr, items = distinct_items(labels.user, labels.item, labels.n_users)
    cand, scores = stage.candidates(users, n_candidates)
    y = hits(cand, indptr, items, users)
    keep = y.any(axis=1)
    feats = stage.features(users[keep], cand[keep], scores[keep])
    valid = cand[keep] >= 0
    groups = valid.sum(axis=1)
    return feats[valid], y[keep][valid].astype(np.int32), groups


def _params(p: RankerParams) -> dict:
    return {"objective": p.objective, "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves, "min_child_samples": p.min_child_samples,
            "num_threads": p.threads, "seed": p.seed, "deterministic": True, "verbose": -1,
            "eval_at": [10], "metric": "ndcg" if p.objective == "lambdarank" else "auc"}


def fewest_trees(curve, tolerance: float) -> int:
    """The smallest number of boosting rounds whose validation score (higher is better) is
    within ``tolerance`` (a fraction) of the best score on ``curve``."""
    curve = np.asarray(curve, np.float64)
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if not len(curve):
        raise ValueError("empty validation curve")
    return int(np.argmax(curve >= curve.max() * (1.0 - tolerance))) + 1


def fit_booster(parts, feature_names, p: RankerParams) -> tuple:
    """A lambdarank booster on ``parts`` (``[(X, y, group sizes) of training, of validation]``),
    early-stopped on the validation NDCG and cut to its fewest good trees (`fewest_trees`).

    Returns
    -------
    booster : lightgbm.Booster
    info : dict
        Sizes and the validation NDCG@10 of the booster (LightGBM's, `valid_score`), and the
        validation groups' NDCG@10 (`metrics.group_ndcg`) ranked by the booster (`valid_ndcg`)
        and by retrieval's score (`valid_retrieval_ndcg`): whether the ranker is kept is decided
        on these, not on the hold-out it is reported on.
    """
    import lightgbm as lgb  # here, not with the module: every `python -m training` command
    # imports this one for its defaults, and lightgbm (with sklearn) takes seconds to load

    sizes = [int(part[0].shape[0]) for part in parts]
    if sizes[0] and not sizes[1]:
        raise ValueError(f"no validation data for the ranker: it validates on "
                         f"{p.valid_frac:g} of the users (requests) with labelled rows it samples, "
                         f"at most --ranker-users {p.max_users}, and that left none; it needs at "
                         f"least {math.ceil(1 / p.valid_frac)} (more rows, or a larger "
                         "--ranker-users), or train without it (--no-ranker)")
    if min(sizes) == 0:
        raise ValueError(f"too little data to train the ranker: {sizes[0]} training and "
                         f"{sizes[1]} validation candidate rows (users with labelled rows after "
                         "the inner split); give more rows, or train without it (--no-ranker)")
    dtrain = lgb.Dataset(parts[0][0], parts[0][1], group=parts[0][2], feature_name=list(feature_names))
    dvalid = lgb.Dataset(parts[1][0], parts[1][1], group=parts[1][2], reference=dtrain)
    record: dict = {}
    booster = lgb.train(_params(p), dtrain, p.n_estimators, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(p.early_stopping, verbose=False),
                                   lgb.record_evaluation(record)])
    curve = next(iter(record["valid_0"].values()))[:booster.best_iteration]
    keep = fewest_trees(curve, p.tree_tolerance)
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=keep))
    x_valid, y_valid, valid_groups = parts[1]
    retrieval = x_valid[:, list(feature_names).index("retrieval_score")]
    return booster, {"train_rows": int(parts[0][0].shape[0]), "train_groups": int(parts[0][2].shape[0]),
                     "positives": int(parts[0][1].sum()), "trees": int(booster.num_trees()),
                     "best_trees": int(len(curve)), "valid_score": round(float(curve[keep - 1]), 5),
                     "best_valid_score": round(float(max(curve)), 5),
                     "valid_ndcg": round(group_ndcg(booster.predict(x_valid), y_valid, valid_groups), 6),
                     "valid_retrieval_ndcg": round(group_ndcg(retrieval, y_valid, valid_groups), 6)}


def train_ranker(train: Interactions, catalog, fit_stage, p: RankerParams = RankerParams(),
                 feature_names: tuple[str, ...] = FEATURES):
    """Fit stage 1 on the inner split of ``train`` and a booster on its candidates.

    Parameters
    ----------
    train : Interactions
        The outer training rows.
    catalog : training.events.Catalog
    fit_stage : callable
        ``rows -> Stage`` with the pipeline's retrieval parameters.
    feature_names : tuple of str
        The columns of the stage's features, in order (experiments add columns).

    Returns
    -------
    booster : lightgbm.Booster
    info : dict
        Sizes and the validation NDCG@10 of the booster.
    """
    t0 = time.perf_counter()
    inner_tr, inner_lab = temporal_split(train, 0.2)
    stage1 = fit_stage(train.subset(inner_tr))
    labels = train.subset(inner_lab)
    rng = np.random.default_rng(p.seed)
    users = np.unique(labels.user)
    users = np.sort(rng.choice(users, min(p.max_users, users.shape[0]), replace=False))
    n_valid = int(users.shape[0] * p.valid_frac)
    perm = rng.permutation(users.shape[0])
    parts = [ranker_dataset(stage1, labels, np.sort(users[idx]), p.n_candidates)
             for idx in (perm[n_valid:], perm[:n_valid])]
    booster, info = fit_booster(parts, feature_names, p)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    logger.info("ranker trained: %s", info)
    return booster, info


def to_onnx(booster: lgb.Booster) -> onnx.ModelProto:
    """Convert with onnxmltools; input ``features`` float32 [N, F], output ``score`` [N, 1]."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    n_features = booster.num_feature()
    model = convert_lightgbm(booster, name="tailor_ranker",
                             initial_types=[("features", FloatTensorType([None, n_features]))],
                             target_opset=15, zipmap=False)
    graph = model.graph
    if len(graph.output) == 1:              # regression / lambdarank: one score column
        old = graph.output[0].name
        for node in graph.node:
            node.output[:] = ["score" if o == old else o for o in node.output]
        graph.output[0].name = "score"
    else:                                   # binary classifier: (label, probabilities)
        probs = graph.output[1].name
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(1, np.int64), "pos_col"))
        graph.node.append(onnx.helper.make_node("Gather", [probs, "pos_col"], ["score"], axis=1))
        del graph.output[:]
        graph.output.append(onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT,
                                                               [None]))
    onnx.checker.check_model(model)
    return model
