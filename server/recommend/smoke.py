"""The push-time check that a bundle answers Recommend for users of its own.

Loading a bundle runs each model once on inputs of zeros (`models.bundle`). A ranker that fails,
or scores NaN, only on real feature values passes that run, and a plain push of it then fails
every warm user's Recommend. `check_bundle` runs the whole pipeline (encoder, index, ranker) on
the bundle's users with the longest histories, once without a channel and once per channel,
and on an unknown user; any error, or a non-finite score, refuses the bundle
(`BundleInvalid`: the push answers FAILED_PRECONDITION, and the serving version stays).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..models.bundle import Bundle, BundleInvalid
from ..profiles.schema import CHANNELS
from .pipeline import History, RecQuery, RecResult, recommend_batch

__all__ = ["check_bundle"]

_COLD = "\x00smoke-unknown"


def check_bundle(bundle: Bundle, users: int, candidates: int) -> None:
    """Refuse `bundle` unless Recommend (k=10) answers `users` of its own users (0: no check)
    with finite scores; `candidates`: the ranker's candidates per request, as served."""
    if users <= 0:
        return
    histories = _longest_histories(bundle, users)
    queries = [RecQuery(uid, 10, channel=ch) for uid in histories for ch in ("", *CHANNELS)]
    queries.append(RecQuery(_COLD, 10))

    def history_of(_bundle: Bundle, user_ids: Sequence[str]) -> list[History | None]:
        return [histories.get(u) for u in user_ids]
    try:
        results = recommend_batch(bundle, queries, history_of, ranker_candidates=candidates)
    except Exception as err:  # noqa: BLE001 - whatever the models raise refuses the bundle
        raise _refused(len(histories), err) from None
    for query, result in zip(queries, results):
        problem = _problem(result)
        if problem is not None:
            raise _refused(len(histories), problem, query.channel)


def _longest_histories(bundle: Bundle, most: int) -> dict[str, History]:
    """{stand-in id: (items, weights)} of the `most` users with the longest training histories
    (the encoder's window of each), keyed by their rows: hashed or not, no id is needed."""
    indptr = bundle.users["indptr"]
    lengths = np.diff(indptr)
    rows = np.argsort(lengths, kind="stable")[::-1][:most]
    out = {}
    for row in rows[lengths[rows] > 0].tolist():
        lo, hi = int(indptr[row]), int(indptr[row + 1])
        lo = max(lo, hi - bundle.history_len)
        out[f"\x00smoke-row-{row}"] = (bundle.users["items"][lo:hi].astype(np.int64),
                                       bundle.users["weights"][lo:hi].astype(np.float32))
    return out


def _problem(result: RecResult | BaseException) -> BaseException | str | None:
    if isinstance(result, BaseException):
        return result
    if not np.isfinite(result.scores).all():
        return "non-finite scores"
    return None


def _refused(n_users: int, problem: BaseException | str, channel: str = "") -> BundleInvalid:
    what = f"{type(problem).__name__}: {problem}" if isinstance(problem, BaseException) else problem
    where = f" (channel {channel})" if channel else ""
    return BundleInvalid("Recommend", f"a smoke run on {n_users} of the bundle's own users and "
                         f"an unknown one failed{where}: {what}"[:1000])
