"""Context features trained from the impression log (``train --context-features --impressions``).

The events-based fit (`training.context_ranker`) reads where categories are *taken*: a row's
channel and time. That mixes the user's taste in a context with what was put in front of them
there. An impression says what was shown, on which channel and when, and which of the shown
items were taken (the server's feedback join, `training.impression_log`), so the tables divide
the exposure out and the shown items that were not taken are the ranker's negatives.

Lift tables (`fit_rates`), for the channel table and the daypart table alike, with ``m`` =
``prior_shows`` (`PRIOR_SHOWS` = 50 shown items) and counts over shown items of catalog items:

- global rate ``r0 = Y / S`` (taken over shown);
- category rate ``r[c] = (Y[c] + m r0) / (S[c] + m)``;
- context rate ``r[k, c] = (y[k, c] + m r[c]) / (s[k, c] + m)``;
- ``lift[k, c] = log(r[k, c] / r[c])``: 0 for a context where the category was never shown, and
  halfway (in rate) to its own rate where it was shown ``m`` times.

The rate in a context is relative to the same category's rate over all contexts, so a category
the serving model showed more on the app than on the web gets no lift from being shown more.

The ranker (`train_context_ranker`) reads the impression tables in every row it learns from.
Its groups are the events' requests of each user's inner label period (after the inner split's
per-user cutoff; stage 1 and the tables see only what came before it), as
`training.context_ranker` builds them: a request's candidates and features are exactly those the
server computes (`training.context_ranker.request_features`, with the request's channel and UTC
daypart), 1 where the user took the candidate in that context.

``shown_groups`` (``train --impression-groups``) adds the impressions of the same period, one
group per request with the request's own channel and hour, its candidates that were shown: 1 if
taken, 0 if shown and not taken (unshown candidates carry no label and are left out; shown items
outside the candidates are ones the ranker never orders). Off by default: these groups teach
what is taken *among what was shown*, which is not what the hold-out asks (what users take of
everything they come across), and on the demo world they cost most of the context gain
(``python -m loadtests.context_ndcg``, docs/impressions.md "Training from the log").
"""
from __future__ import annotations

import logging
import time

import numpy as np

from kernels.context import CHANNELS, CONTEXT_FEATURES, N_DAYPARTS, ContextTable, daypart
from kernels.ranking import FEATURES
from training.context_ranker import request_features, request_parts, requests
from training.events import Catalog, Interactions
from training.impression_log import ImpressionRows, user_cutoffs
from training.ranker import RankerParams, fit_booster
from training.split import temporal_split

__all__ = ["PRIOR_SHOWS", "fit_rates", "before_cutoffs", "shown_dataset", "train_context_ranker"]

logger = logging.getLogger("tailor.training.context_impressions")

PRIOR_SHOWS = 50.0
"""Pseudo-shows at the category's rate added to every (context, category) cell."""


def _rate_lift(keys, n_keys, cat, taken, base, n_cat, m) -> np.ndarray:
    cell = keys * n_cat + cat
    shown = np.bincount(cell, minlength=n_keys * n_cat).reshape(n_keys, n_cat)
    took = np.bincount(cell, taken, minlength=n_keys * n_cat).reshape(n_keys, n_cat)
    return np.log((took + m * base) / (shown + m) / base).astype(np.float32)


def fit_rates(imps: ImpressionRows, category: np.ndarray, n_categories: int,
              prior_shows: float = PRIOR_SHOWS) -> ContextTable:
    """Channel and daypart lifts of the take rate of shown items (formulas in the module doc).

    Raises
    ------
    ValueError
        No shown item was taken (the rates are undefined).
    """
    cat = np.asarray(category, np.int64)[imps.item]
    taken = imps.positive.astype(np.float64)
    if not taken.any():
        raise ValueError("no shown item of the impressions was clicked, carted or purchased: "
                         "the take rates are undefined")
    m = float(prior_shows)
    r0 = taken.sum() / taken.shape[0]
    base = ((np.bincount(cat, taken, minlength=n_categories) + m * r0)
            / (np.bincount(cat, minlength=n_categories) + m))
    req = imps.request_of
    channel, part = imps.channel[req], daypart(imps.ts)[req]
    known = channel >= 0
    return ContextTable(
        _rate_lift(channel[known], len(CHANNELS), cat[known], taken[known], base, n_categories, m),
        _rate_lift(part, N_DAYPARTS, cat, taken, base, n_categories, m))


def before_cutoffs(imps: ImpressionRows, cutoffs: np.ndarray) -> np.ndarray:
    """Mask of the requests shown before their user's cutoff (`impression_log.user_cutoffs`);
    requests of unknown users (-1) count as before."""
    limit = np.where(imps.user >= 0, cutoffs[np.maximum(imps.user, 0)], np.iinfo(np.int64).max)
    return imps.ts < limit


def _labels(imps: ImpressionRows, cand: np.ndarray, n_items: int) -> tuple:
    """(shown, taken) masks [R, K] of the candidates ``cand`` of the requests."""
    key = imps.request_of * n_items + imps.item
    if key.shape[0] == 0:
        return np.zeros(cand.shape, bool), np.zeros(cand.shape, bool)
    uniq, inv = np.unique(key, return_inverse=True)
    took = np.zeros(uniq.shape[0], bool)
    np.logical_or.at(took, inv, imps.positive)
    ck = np.arange(cand.shape[0])[:, None] * n_items + np.maximum(cand, 0)
    at = np.minimum(np.searchsorted(uniq, ck), uniq.shape[0] - 1)
    shown = (cand >= 0) & (uniq[at] == ck)
    return shown, shown & took[at]


def shown_dataset(stage, table: ContextTable, imps: ImpressionRows, n_candidates: int,
                  context: bool = True) -> tuple:
    """Features [N, F], labels [N] and group sizes of the requests of known users whose shown
    candidates include a taken one (one group per request, its shown candidates)."""
    imps = imps.subset(imps.user >= 0)
    req = (imps.user, imps.channel, daypart(imps.ts))
    cand, feats = request_features(stage, table, req, n_candidates, context)
    shown, taken = _labels(imps, cand, stage.item_factors.shape[0])
    keep = taken.any(axis=1)
    shown, taken, feats = shown[keep], taken[keep], feats[keep]
    return feats[shown], taken[shown].astype(np.int32), shown.sum(axis=1)


def _shown_parts(stage, table, imps: ImpressionRows, p: RankerParams, context: bool) -> list:
    pick = np.random.default_rng(p.seed).permutation(len(imps))[:p.max_users]
    n_valid = int(pick.shape[0] * p.valid_frac)
    parts = []
    for idx in (pick[n_valid:], pick[:n_valid]):
        mask = np.zeros(len(imps), bool)
        mask[idx] = True
        parts.append(shown_dataset(stage, table, imps.subset(mask), p.n_candidates, context))
    return parts


def train_context_ranker(train: Interactions, imps: ImpressionRows, catalog: Catalog, fit_stage,
                         p: RankerParams | None = None, context: bool = True,
                         shown_groups: bool = False):
    """As `training.context_ranker.train_context_ranker`, with the impression tables, on the
    event groups and (``shown_groups``) the shown groups too (module doc): at most
    ``p.max_users`` requests of each kind (seeded), ``p.valid_frac`` of them for validation."""
    t0, p = time.perf_counter(), p or RankerParams()
    inner_tr, inner_lab = temporal_split(train, 0.2)
    stage1 = fit_stage(train.subset(inner_tr))
    before = before_cutoffs(imps, user_cutoffs(train, inner_lab))
    table = fit_rates(imps.subset(before), catalog.category, len(catalog.category_names))
    events = request_parts(stage1, table, requests(train.subset(inner_lab)), p, context)
    shown = (_shown_parts(stage1, table, imps.subset(~before), p, context) if shown_groups
             else [(a[0][:0], a[1][:0], a[2][:0]) for a in events])
    parts = [tuple(np.concatenate([a[k], b[k]]) for k in range(3)) for a, b in zip(events, shown)]
    names = list(FEATURES) + (list(CONTEXT_FEATURES) if context else [])
    booster, info = fit_booster(parts, names, p)
    info.update(requests=int(len(imps) - before.sum()), shown_groups=int(shown[0][2].shape[0]),
                event_groups=int(events[0][2].shape[0]), features=names, source="impressions",
                seconds=round(time.perf_counter() - t0, 1))
    logger.info("context ranker trained from impressions: %s", info)
    return booster, info
