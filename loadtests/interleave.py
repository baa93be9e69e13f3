"""Tail latency of two servers compared window by window: what `bench --interleave` prints.

Separate fixed-rate runs of two servers, even alternated, differ in p99 by tens of milliseconds
on a shared VM (a few seconds of steal time land in one run and not the other), far more than a
1 ms effect. Here one open-loop schedule runs for many short windows and each window's calls go
to one server, the two in turn (A B B A ...; `loadgen.run_windows`): both meet the same load and,
within seconds, the same machine. Each server's p99 is taken over all its windows pooled, and
the difference's confidence interval comes from resampling pairs of adjacent windows
(`scipy.stats.bootstrap`, BCa): a noisy stretch of the machine lands in both servers' windows
of a pair, and the interval says how far the windows' spread leaves the difference open.

The pooled p99 is set by the slowest 1% of all calls, which a few stalled seconds of the
machine can fill; beside it comes the median over pairs of the per-window p99 difference (with
a bootstrap interval over pairs): how far the tail moves in a typical second, which a stall in
one window does not carry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["WindowedPair", "paired_windows"]


@dataclass(frozen=True)
class WindowedPair:
    """p50/p99 (ms) of B and A over their pooled windows, and B - A's p99 with its interval."""

    windows: int
    calls: tuple[int, int]
    p50_ms: tuple[float, float]
    p99_ms: tuple[float, float]
    diff_p99_ms: float
    ci_ms: tuple[float, float]
    confidence: float
    window_shift_ms: float
    """Median over pairs of (B's window p99 - A's window p99)."""
    window_ci_ms: tuple[float, float]


def _pooled_p99_diff(b: list[np.ndarray], a: list[np.ndarray], pairs: np.ndarray) -> float:
    return 1e3 * (np.percentile(np.concatenate([b[i] for i in pairs]), 99)
                  - np.percentile(np.concatenate([a[i] for i in pairs]), 99))


def paired_windows(b: list[np.ndarray], a: list[np.ndarray], *, confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> WindowedPair:
    """B against A from latencies (seconds) per window, in order (`run_windows` for two
    targets): b[i] and a[i] are the two windows of pair i, adjacent in time."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two or more pairs of windows of equal count, got {len(b)} and {len(a)}")
    pairs = np.arange(len(a))
    res = stats.bootstrap((pairs,), lambda idx: _pooled_p99_diff(b, a, idx.astype(np.intp)),
                          vectorized=False, n_resamples=resamples, confidence_level=confidence,
                          random_state=np.random.default_rng(seed))
    all_b, all_a = np.concatenate(b), np.concatenate(a)
    p50 = np.percentile(all_b, 50) * 1e3, np.percentile(all_a, 50) * 1e3
    p99 = np.percentile(all_b, 99) * 1e3, np.percentile(all_a, 99) * 1e3
    ci = res.confidence_interval
    shifts = 1e3 * np.array([np.percentile(x, 99) - np.percentile(y, 99) for x, y in zip(b, a)])
    med = stats.bootstrap((shifts,), np.median, n_resamples=resamples, confidence_level=confidence,
                          method="percentile", random_state=np.random.default_rng(seed))
    return WindowedPair(len(a), (len(all_b), len(all_a)), (float(p50[0]), float(p50[1])),
                        (float(p99[0]), float(p99[1])), float(p99[0] - p99[1]),
                        (float(ci.low), float(ci.high)), confidence, float(np.median(shifts)),
                        (float(med.confidence_interval.low), float(med.confidence_interval.high)))

