"""The training pipeline: split, retrieval, ranker, evaluation, refit, index (not bundle writing).

Rows whose event weight is 0 (``email_sent`` by default) express no preference of the user and
are dropped before splitting, so they neither count as training items nor as test items.

Evaluate, then refit: the evaluation fit sees every user's rows minus their most recent
``test_frac`` (the temporal hold-out its metrics are computed on). The served fit (ALS, histories,
seen sets, item statistics, index) is then refitted with the same parameters on all rows given,
so the bundle knows every user's latest interactions. The ranker is trained once, on the
evaluation fit's rows (its features are computed from whichever stage serves). ``refit=False``
serves the evaluation fit itself (the behaviour before issue 21, for experiments).

Every fit (the ranker's inner stage, the evaluation fit, the served fit) gives the catalog items
it saw no interaction with their content vector (`training.content.embed_cold`, as UpsertItems
embeds a new item) before anything retrieves from it: the index serves them and the evaluation
scores what is served. ``content.enabled=False`` leaves them at ALS's zero vectors.

Context features (``context_features``) are fitted from the impression log when ``train`` is
given one (`training.context_impressions`), else from the events' channel and time
(`training.context_ranker`); the evaluation fit sees only impressions shown before each user's
hold-out, the served tables every impression.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import onnx

from training import context_impressions
from training.als import ALSParams
from training.content import ContentParams, embed_cold
from training.context_ranker import evaluate_requests, fit_table, train_context_ranker
from training.drift import drift_reference
from training.evaluate import evaluate, measured
from training.events import DEFAULT_EVENT_WEIGHTS, EVENTS, Catalog, Interactions, event_weights
from training.impression_log import ImpressionRows, user_cutoffs
from training.index import IndexParams, build_index
from training.progress import progress
from training.ranker import RankerParams, to_onnx, train_ranker
from training.retrieval import encoder_session
from training.segments import user_segments
from training.split import temporal_split
from training.stage import Stage, fit_stage

__all__ = ["TrainConfig", "TrainResult", "positive_rows", "train"]

logger = logging.getLogger("tailor.training.pipeline")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (all of it lands in ``manifest.params``)."""

    als: ALSParams = ALSParams()
    ranker: RankerParams = RankerParams()
    index: IndexParams = IndexParams()
    content: ContentParams = ContentParams()
    event_weights: dict = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    test_frac: float = 0.2
    use_ranker: bool = True
    context_features: bool = False
    """Train the ranker with the request-context features too (`training.context_ranker`: needs
    a ``channel`` per row); the bundle then carries context.npz. Off: bundles as before."""
    impression_groups: bool = False
    """With an impression log: also train the ranker on its requests' shown candidates (taken
    vs shown and not taken; `training.context_impressions`)."""
    refit: bool = True
    drift_users: int = 2000
    """Users sampled for the manifest's drift reference (`training.drift`); 0 writes none."""
    eval_users: int = 20_000
    """Users scored on the hold-out: a uniform sample of this many users with a test item (seed
    ``als.seed``; 0 = all). 20,000 keeps the bootstrap SE of NDCG@10 near 0.002 on the demo
    world (recorded in ``metrics.se``) and bounds the evaluation's cost on big catalogs."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What the bundle writer needs."""

    config: TrainConfig
    train_rows: Interactions       # the rows the served fit saw
    catalog: Catalog
    stage: Stage
    ranker: onnx.ModelProto | None
    ranker_info: dict
    metrics: dict
    index: object
    index_info: dict
    timings: dict
    fits: dict = field(default_factory=dict)
    content: tuple | None = None
    """(kernels.content.ContentSpace, manifest entry) of the served fit, or None."""
    drift: dict = field(default_factory=dict)
    context: object | None = None
    """The served fit's `kernels.context.ContextTable` (``context_features``), or None."""
    context_source: dict = field(default_factory=dict)
    """Where the context tables and the ranker's context columns came from (the manifest's
    ``context.source``): ``{"source": "events", ...}`` or ``{"source": "impressions", ...}``."""


def _context_table(rows: Interactions, imps: ImpressionRows | None, catalog: Catalog):
    """(ContextTable, source info) from the impressions if given, else from the events' rows."""
    if imps is None:
        return fit_table(rows, catalog), {"source": "events", "rows": len(rows)}
    table = context_impressions.fit_rates(imps, catalog.category, len(catalog.category_names))
    return table, {"source": "impressions", "requests": len(imps),
                   "shown": int(imps.item.shape[0]), "taken": int(imps.positive.sum()),
                   "prior_shows": context_impressions.PRIOR_SHOWS,
                   "rate": "clicked, carted or purchased over shown (server join)"}


def _ranker(train, catalog, fit, config: TrainConfig, stage: Stage, test, imps=None):
    """Train the ranker; keep it only if it beats retrieval alone on NDCG@10 over its own
    validation users (`fit_booster`'s `valid_ndcg` against `valid_retrieval_ndcg`), so the
    evaluation hold-out that `metrics` reports was not used to choose what it reports on (kept
    or dropped by the hold-out, the figure was the better of two on the users it describes)."""
    if imps is not None:
        booster, info = context_impressions.train_context_ranker(
            train, imps, catalog, fit, config.ranker, shown_groups=config.impression_groups)
    elif config.context_features:
        booster, info = train_context_ranker(train, catalog, fit, config.ranker)
    else:
        booster, info = train_ranker(train, catalog, fit, config.ranker)
    model = to_onnx(booster)
    session = encoder_session(model.SerializeToString(), config.ranker.threads)
    if config.context_features:
        table = _context_table(train, imps, catalog)[0]
        metrics = evaluate_requests(stage, table, test, session, config.ranker.n_candidates,
                                    config.eval_users, config.als.seed)
    else:
        metrics = evaluate(stage, test, session, config.ranker.n_candidates,
                           segments=user_segments(train, stage.cutoff),
                           max_users=config.eval_users, seed=config.als.seed)
    scored = measured(metrics)   # else no figure to compare or copy (`unmeasured`)
    info["ndcg_gain"] = (round(metrics["model"]["ndcg@10"] - metrics["retrieval"]["ndcg@10"], 6)
                         if scored else None)
    if info["valid_ndcg"] <= info["valid_retrieval_ndcg"]:
        logger.warning("ranker dropped: NDCG@10 %.4f on its validation users does not beat "
                       "retrieval's %.4f there (on the evaluation hold-out: %s)",
                       info["valid_ndcg"], info["valid_retrieval_ndcg"],
                       f"{metrics['model']['ndcg@10']:.4f} against "
                       f"{metrics['retrieval']['ndcg@10']:.4f}" if scored else "none")
        info["dropped"] = True
        if scored:
            metrics["model"] = dict(metrics["retrieval"])
            for segment in metrics.get("segments", {}).values():
                segment["model"] = dict(segment["retrieval"])
            metrics["se"]["model"] = dict(metrics["se"]["retrieval"])
        return None, info, metrics
    return model, info, metrics


def train(inter: Interactions, catalog: Catalog, config: TrainConfig = TrainConfig(),
          impressions: ImpressionRows | None = None) -> TrainResult:
    """Run the whole pipeline on ``inter`` (with ``catalog`` aligned to its item codes);
    ``impressions`` (`training.impression_log.read_impressions` with ``inter``'s id tables):
    the source of the context features."""
    if impressions is not None and not config.context_features:
        raise ValueError("impressions train the context features: add --context-features")
    if config.context_features and (not config.use_ranker or inter.channel is None):
        raise ValueError("context features need the ranker and a `channel` column in the "
                         "interactions (e.g. `training demo-data --context-tastes 1`; the "
                         "hold-out requests are the events' contexts)")
    clock = _Clock()
    bar = progress(desc="train", total=3 + bool(config.refit), unit=" stages")
    rows = positive_rows(inter, config.event_weights)
    tr, te = temporal_split(rows, config.test_frac)
    train_rows, test = rows.subset(tr), rows.subset(te)
    imps_before = (None if impressions is None else impressions.subset(
        context_impressions.before_cutoffs(impressions, user_cutoffs(rows, te))))
    fit = partial(_fit, catalog=catalog, als=config.als, weights=config.event_weights,
                  content=config.content)
    stage = fit(train_rows)
    clock.lap("retrieval", bar)
    ranker, info = None, {"disabled": True}
    if config.use_ranker:
        ranker, info, metrics = _ranker(train_rows, catalog, fit, config, stage, test,
                                        imps_before)
    else:
        metrics = evaluate(stage, test, segments=user_segments(train_rows, stage.cutoff),
                           max_users=config.eval_users, seed=config.als.seed)
    clock.lap("ranker_and_eval", bar)
    fits = {"evaluation": _fit_info(train_rows, stage, test, config, metrics)}
    served_rows = rows if config.refit else train_rows
    if config.refit:
        stage = fit(rows)
        clock.lap("refit", bar)
    fits["served"] = {"rows": len(served_rows), "refit": bool(config.refit),
                      "cutoff": int(stage.cutoff), "first_ts": _first_ts(served_rows),
                      "ranker_fit": "evaluation", "cold_items": stage.cold_items}
    _log_cold(stage.cold_items)
    sample = stage.user_factors[np.random.default_rng(0).permutation(
        stage.user_factors.shape[0])[:config.index.n_queries]]
    index, index_info = build_index(stage.item_factors, config.index, sample,
                                    query_items=stage.popularity > 0)
    clock.lap("index", bar)
    content = stage.content
    drift = drift_reference(stage, ranker, config.drift_users, config.ranker.n_candidates)
    context, source = (_context_table(served_rows, impressions if config.refit else imps_before,
                                      catalog)
                       if config.context_features and ranker is not None else (None, {}))
    clock.lap("content_and_drift")
    timings = clock.total()
    bar.close()
    return TrainResult(config, served_rows, catalog, stage, ranker, info, metrics, index,
                       index_info, timings, fits, content, drift, context, source)


class _Clock:
    """Wall and process CPU seconds (all threads) per stage: ``<stage>_s``, ``<stage>_cpu_s``."""

    def __init__(self):
        self.timings = {}
        self.t0 = self.last = (time.perf_counter(), time.process_time())

    def lap(self, name: str, bar=None) -> None:
        now = (time.perf_counter(), time.process_time())
        wall, cpu = now[0] - self.last[0], now[1] - self.last[1]
        self.timings[f"{name}_s"], self.timings[f"{name}_cpu_s"] = round(wall, 1), round(cpu, 1)
        logger.info("stage %s: %.1fs wall, %.1fs CPU", name, wall, cpu)
        self.last = now
        if bar is not None:
            bar.update()

    def total(self) -> dict:
        now = (time.perf_counter(), time.process_time())
        self.timings["total_s"] = round(now[0] - self.t0[0], 1)
        self.timings["total_cpu_s"] = round(now[1] - self.t0[1], 1)
        return self.timings


def positive_rows(inter: Interactions, weights: dict) -> Interactions:
    """The rows of positive event weight; a ``ValueError`` naming the events read if none is."""
    rows = inter.subset(event_weights(inter, weights) > 0)
    if not len(rows):
        read = sorted({EVENTS[e] for e in np.unique(inter.event)})
        raise ValueError(f"no row has a positive event weight: {len(inter)} rows read"
                         + (f", of events {', '.join(read)}" if read else "")
                         + " (weights: contract.events defaults, --event-weight; a rating "
                           "counts its value): nothing to train on")
    return rows


def _first_ts(rows: Interactions) -> int:
    return int(rows.ts.min()) if len(rows) else 0


def _fit_info(train_rows: Interactions, stage: Stage, test: Interactions, config: TrainConfig,
              metrics: dict) -> dict:
    """What the evaluation fit saw: its rows, last timestamp, and the hold-out it was scored on."""
    return {"rows": len(train_rows), "cutoff": int(stage.cutoff), "first_ts": _first_ts(train_rows),
            "split": "per-user temporal hold-out (training.split.temporal_split)",
            "test_frac": float(config.test_frac), "test_rows": len(test),
            "n_eval_users": int(metrics.get("n_eval_users", 0)),
            "n_test_users": int(metrics.get("n_test_users", 0)),
            "cold_items": stage.cold_items}


def _log_cold(cold: dict) -> None:
    if cold.get("content_map") == "disabled" and cold["items"]:
        logger.warning("content map disabled: %d catalog items without interactions keep zero "
                       "vectors (never retrieved)", cold["items"])
    elif cold["items"]:
        logger.info("%d of %d catalog items without interactions embedded from their content "
                    "(the others keep zero vectors)", cold["content_embedded"], cold["items"])


def _fit(rows: Interactions, catalog: Catalog, als: ALSParams, weights: dict,
         content: ContentParams) -> Stage:
    """ALS and the rest of a stage on ``rows``, its cold items embedded (`embed_cold`)."""
    stage = fit_stage(rows, catalog, als, weights)
    stage.item_factors, stage.content, stage.cold_items = embed_cold(
        catalog, stage.item_factors, stage.popularity, content)
    return stage
