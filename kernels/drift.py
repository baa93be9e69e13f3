"""Population stability: fixed-edge histograms and the PSI between two of them.

Shared by training (which writes reference histograms into the bundle) and the server (which
bins live values with the same edges), so both sides put a value in the same bin. Plain numpy,
vectorised over features: no kernel of ours is faster than one comparison per edge here.

A numeric feature is binned by interior edges ``e_0 < e_1 < ... < e_{m-2}`` into m bins: bin j
holds the values v with ``e_{j-1} <= v < e_j`` (the outer bins are open-ended), i.e. bin j =
the number of edges <= v, ``np.searchsorted(edges, v, side="right")``. A categorical feature's
bin is its code.

PSI (population stability index) of a live histogram q against a reference p, both as shares:
``sum_j (q_j - p_j) * ln(q_j / p_j)``, each share first raised to at least `floor` so an empty
bin on one side gives a large but finite term. It is 0 for equal shares, symmetric in p and q,
and reads (by convention) < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a major one.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PSI_FLOOR", "quantile_edges", "pad_edges", "bin_columns", "psi"]

PSI_FLOOR = 1e-4
"""Least share a bin counts with in `psi` (an empty bin on either side)."""


def quantile_edges(values, n_bins: int = 10) -> np.ndarray:
    """Interior edges at the quantiles of `values`: up to `n_bins` bins of equal mass.

    Parameters
    ----------
    values : array_like of float
        Finite samples (training's); non-finite ones are ignored.
    n_bins : int
        Bins wanted (>= 1); tied quantiles merge, so discrete features get fewer.

    Returns
    -------
    ndarray of float64, shape (m - 1,)
        Strictly increasing edges of m <= n_bins bins (empty for no finite values).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if not len(v) or n_bins == 1:
        return np.zeros(0, np.float64)
    return np.unique(np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))


def pad_edges(edge_lists) -> np.ndarray:
    """Stack per-feature edge lists into ``[F, E]`` float64, padded with +inf (never <= v)."""
    edge_lists = [np.asarray(e, np.float64).ravel() for e in edge_lists]
    width = max((len(e) for e in edge_lists), default=0)
    out = np.full((len(edge_lists), width), np.inf)
    for f, e in enumerate(edge_lists):
        out[f, :len(e)] = e
    return out


def bin_columns(values, edges: np.ndarray) -> np.ndarray:
    """Bin of every value of every feature: ``out[n, f] = #{j : edges[f, j] <= values[n, f]}``.

    Parameters
    ----------
    values : array_like of float, shape (N, F)
    edges : ndarray of float64, shape (F, E)
        From `pad_edges`.

    Returns
    -------
    ndarray of int64, shape (N, F)
        Equal to ``np.searchsorted(edges[f], values[:, f], side="right")`` per feature (NaN goes
        to bin 0). Time and scratch O(N * F * E).
    """
    v = np.asarray(values)
    if v.ndim != 2 or edges.ndim != 2 or v.shape[1] != edges.shape[0]:
        raise ValueError(f"values [N, F] and edges [F, E] must agree, got {v.shape} and {edges.shape}")
    # [E, N, F] planes summed over the leading axis: E vector adds, not N * F short reductions
    return (v[None, :, :] >= edges.T[:, :, None].transpose(0, 2, 1)).sum(axis=0, dtype=np.int64)


def psi(expected, actual, floor: float = PSI_FLOOR) -> np.ndarray:
    """PSI of histogram counts `actual` against `expected`, over the last axis.

    Parameters
    ----------
    expected, actual : array_like of float, shape (..., m)
        Non-negative counts per bin (any scale: each is divided by its own total).
    floor : float
        Least share per bin (> 0).

    Returns
    -------
    ndarray of float64, shape (...)
        >= 0; NaN where either histogram is empty (nothing to compare).
    """
    p, q = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if p.shape != q.shape or p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"expected and actual must have the same shape (..., m), "
                         f"got {p.shape} and {q.shape}")
    if np.any(p < 0) or np.any(q < 0) or not floor > 0:
        raise ValueError("counts must be >= 0 and floor > 0")
    tp, tq = p.sum(axis=-1, keepdims=True), q.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.maximum(p / tp, floor)
        q = np.maximum(q / tq, floor)
        out = ((q - p) * np.log(q / p)).sum(axis=-1)
    return np.where((tp[..., 0] > 0) & (tq[..., 0] > 0), out, np.nan)
