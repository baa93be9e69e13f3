"""Request-context ranker features: the request's channel and hour of week, for bundles that use them.

A bundle whose manifest lists a `kernels.context.CONTEXT_FEATURES` name among its ranker features
carries the context tables (``context.npz``, `Bundle.context`). For such a bundle only, the
pipeline asks `request_context` for each warm query's channel code and daypart, and
`with_context` appends the two context columns to the `kernels.ranking.FEATURES` tensor before
the ranker reads the columns its manifest lists (`Bundle.ranker_input`). Every other bundle never
reaches this module (`Bundle.context` is None): it is served exactly as before, at no cost.

The channel is the request's ``channel`` (a name outside `kernels.context.CHANNELS`, or none,
gives lift 0). The daypart is that of the request time's UTC hour of week (weekday/weekend x
6-hour block): the tables are fitted on UTC event times, and a request's time zone is not used.

A ranked list's scores now depend on the context, so the user cache keeps them with the context
`key` they were computed for (`user_cache.CachedUser.scores_for`); the key holds only the
context features the bundle reads, so a bundle reading the channel alone still shares its
cached scores across hours.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernels.context import context_features, request_codes

from ..models import Bundle

__all__ = ["RequestContext", "request_context", "with_context"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Per query of a batch: channel code and UTC daypart, and the cache keys they make."""

    channel: np.ndarray  # int64 [B], -1 = unknown channel
    part: np.ndarray     # int64 [B]
    keys: tuple          # [B] hashable cache keys (only the features the bundle reads)

    def take(self, idx: Sequence[int]) -> RequestContext:
        """The context of queries `idx` (in that order)."""
        return RequestContext(self.channel[idx], self.part[idx], tuple(self.keys[j] for j in idx))


def request_context(bundle: Bundle, channels: Sequence[str], now: float) -> RequestContext | None:
    """The context of queries on `channels` at unix time `now`; None for a bundle whose ranker
    reads no context feature."""
    if bundle.context is None:
        return None
    channel, part = request_codes(channels, now)
    used = bundle.manifest.ranker_features
    ch = channel.tolist() if "channel_lift" in used else [None] * len(channel)
    dp = part.tolist() if "daypart_lift" in used else [None] * len(part)
    return RequestContext(channel, part, tuple(zip(ch, dp)))


def with_context(bundle: Bundle, feats: np.ndarray, rows: np.ndarray,
                 ctx: RequestContext) -> np.ndarray:
    """`feats` [B, W, F] with the context columns appended ([B, W, F + 2]) for candidate `rows`
    [B, W] (< 0 = padding, any category will do)."""
    cat = bundle.item_table.category[np.maximum(rows, 0)]
    extra = context_features(bundle.context, cat, ctx.channel, ctx.part)
    return np.concatenate([feats, extra], axis=2)
