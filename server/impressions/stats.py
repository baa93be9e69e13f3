"""Online metrics per model version and channel, from the counters the log and the join keep.

Per (version, channel): impressions, CTR@k (impressions whose first joined click was at a
position < k, over impressions) and conversion rate (impressions with a joined purchase, over
impressions), each with a Wilson score interval; revenue per 1,000 impressions with a normal
interval from the per-impression revenue's mean and sample variance ([0, inf) while the data
give no variance: no purchase, one impression). A row with channel "all" sums a
version's channels; "unspecified" is Recommend without a channel.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from .. import metrics
from ..store import Store, keys
from .records import POSITIONS, C

__all__ = ["ModelStats", "ModelStatsRow", "Rate", "wilson", "ALL", "UNSPECIFIED", "DEFAULT_KS"]

ALL, UNSPECIFIED = "all", "unspecified"
DEFAULT_KS = (1, 5, 10)


def _z(confidence: float) -> float:
    """The two-sided normal quantile (the standard library's, the same as scipy's to 1e-15).
    Not scipy: the first gauge report imported scipy.stats into every worker after start, ~570
    modules and 40,000 objects left out of `gc.freeze` (server/app.py), so every later full
    collection walked them (15-100 ms with every thread stopped: docs/performance.md)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    value: float
    low: float
    high: float
    k: int = 0
    """The cut-off of a CTR@k (0 for other rates)."""


@dataclass(frozen=True)
class ModelStatsRow:
    model_version: str
    channel: str
    impressions: int
    cold_start: int
    clicked: int
    """Impressions with at least one joined click."""
    clicks: int
    carted: int
    conversions: int
    """Impressions with at least one joined purchase."""
    revenue: float
    ctr: list[Rate] = field(default_factory=list)
    conversion_rate: Rate = Rate(0.0, 0.0, 1.0)
    revenue_per_mille: Rate = Rate(0.0, 0.0, math.inf)
    first_seen: float = 0.0
    last_seen: float = 0.0


def _revenue_per_mille(n: int, conversions: int, revenue: float, revenue_sq: float,
                       confidence: float) -> Rate:
    """Revenue per 1,000 impressions with a normal interval from the per-impression revenue's
    sample variance (`n - 1`). Without a purchase, with one impression, or with no spread
    (every impression bought for the same value) the data give no variance to go on: a purchase
    may be worth any amount, so the interval is [0, inf), never a zero-width one that would
    claim certainty from no data (the conversion rate's Wilson interval still bounds how often
    a purchase happens)."""
    mean = revenue / n if n else 0.0
    var = (revenue_sq - n * mean * mean) / (n - 1) if n > 1 else 0.0
    if conversions == 0 or var <= 1e-12 * mean * mean:
        return Rate(1000 * mean, 0.0, math.inf)
    half = _z(confidence) * math.sqrt(var / n)
    return Rate(1000 * mean, 1000 * max(mean - half, 0.0), 1000 * (mean + half))


def _row(version: str, channel: str, c: np.ndarray, ks: Sequence[int], confidence: float
         ) -> ModelStatsRow:
    n = int(c[C.IMPRESSIONS])
    hist = np.cumsum(c[C.HIST:C.HIST + POSITIONS])
    ctr = []
    for k in ks:
        hits = int(hist[min(k, POSITIONS - 1) - 1])
        ctr.append(Rate(hits / n if n else 0.0, *wilson(hits, n, confidence), k=k))
    conv = int(c[C.CONVERTED])
    rpm = _revenue_per_mille(n, conv, float(c[C.REVENUE]), float(c[C.REVENUE_SQ]), confidence)
    return ModelStatsRow(version, channel, n, int(c[C.COLD_START]), int(c[C.CLICKED]),
                         int(c[C.CLICKS]), int(c[C.CARTED]), conv, float(c[C.REVENUE]), ctr,
                         Rate(conv / n if n else 0.0, *wilson(conv, n, confidence)), rpm,
                         float(c[C.FIRST]), float(c[C.LAST]))


class ModelStats:
    """Reads the counters (one snapshot per call); `counts` is the canary guardrail's input."""

    def __init__(self, store: Store):
        self.store = store
        self._t = store.table("impressions")

    def counters(self) -> dict[tuple[str, str], np.ndarray]:
        """{(version, channel or UNSPECIFIED): counters} of every version ever logged."""
        with self.store.read() as txn:
            found = self._t.scan_prefix(txn, keys.IMPRESSION_COUNT_PREFIX)
        out = {}
        for key, raw in found:
            version, channel = keys.split_key(key[len(keys.IMPRESSION_COUNT_PREFIX):])
            out[(version, channel or UNSPECIFIED)] = np.frombuffer(raw, np.float64)
        return out

    def counts(self, model_version: str) -> tuple[int, int]:
        """(impressions, impressions with at least one click) of `model_version`, all channels
        together, as stored now (every worker's flushed impressions and joined clicks): the
        numbers of a CTR comparison between two versions. (0, 0) for a version never logged."""
        total = self._sum(model_version, self.counters())
        return int(total[C.IMPRESSIONS]), int(total[C.CLICKED])

    def shown_between(self, model_version: str, start: float, end: float) -> tuple[int, int]:
        """(impressions, impressions with at least one click) of `model_version` shown from
        `start` to `end` (unix seconds), counted per `keys.IMPRESSION_BUCKET_SECONDS` bucket of
        showing time: the buckets starting at or after `start` and before `end`; the clicks
        are every click joined to them so far, whenever it came. The canary guardrail's CTR:
        impressions shown since the canary started, once their click window has passed."""
        b = keys.IMPRESSION_BUCKET_SECONDS
        first, prefix = -(-int(math.ceil(start)) // b) * b, keys.impression_bucket_prefix(model_version)
        shown = clicked = 0.0
        with self.store.read() as txn:
            for key, raw in self._t.items(txn, prefix + b"%012d" % max(first, 0)):
                if not key.startswith(prefix) or int(key[len(prefix):]) >= end:
                    break
                n, x = np.frombuffer(raw, np.float64)
                shown, clicked = shown + n, clicked + x
        return int(shown), min(int(clicked), int(shown))

    @staticmethod
    def _sum(version: str, counters: dict) -> np.ndarray:
        parts = [c for (v, _), c in counters.items() if v == version]
        total = np.sum(parts, axis=0) if parts else np.zeros(C.HIST + POSITIONS)
        if parts:
            total[C.FIRST] = min(c[C.FIRST] for c in parts)
            total[C.LAST] = max(c[C.LAST] for c in parts)
        return total

    def rows(self, model_version: str = "", channel: str = "", ks: Sequence[int] = DEFAULT_KS,
             confidence: float = 0.95) -> list[ModelStatsRow]:
        """One row per (version, channel) and an "all" row per version, newest version first;
        `model_version`, `channel` ("" = every one) filter them."""
        counters = self.counters()
        versions = sorted({v for v, _ in counters}, key=lambda v: -self._sum(v, counters)[C.LAST])
        out = []
        for version in versions:
            if model_version and version != model_version:
                continue
            if not channel or channel == ALL:
                out.append(_row(version, ALL, self._sum(version, counters), ks, confidence))
            for (v, ch), c in sorted(counters.items()):
                if v == version and channel in ("", ch):
                    out.append(_row(version, ch, c, ks, confidence))
        return out

    def report(self, ks: Sequence[int] = DEFAULT_KS, versions: int = 10) -> None:
        """Set the Prometheus gauges of every (version, channel) row of the `versions` most
        recently served versions (older ones stay in GetModelStats only)."""
        rows = self.rows(ks=ks)
        recent = list(dict.fromkeys(r.model_version for r in rows))[:versions]
        for row in (r for r in rows if r.model_version in recent):
            metrics.report_model_stats(row.model_version, row.channel, row.impressions,
                                       {r.k: r.value for r in row.ctr}, row.conversion_rate.value,
                                       row.revenue_per_mille.value)
