"""The drift report of one bundle: PSI per feature of live traffic against training's reference."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernels.drift import psi

from .layout import DriftLayout

__all__ = ["DISABLED", "DriftReport", "FeatureDrift", "NO_REFERENCE", "build_report"]

NO_REFERENCE = "no reference"
"""Report status of a bundle trained without a drift reference."""
DISABLED = "disabled"
"""Report status of a server that counts no traffic (`drift_enabled` off)."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature: `status` is "ok", "drift" (PSI >= the threshold with enough values), "few
    values" (fewer live values than the minimum: PSI shown, never warned about), "no traffic",
    or "not computed: <why>"."""

    name: str
    psi: float
    status: str
    live_count: int
    reference_count: int
    categorical: bool
    edges: tuple[float, ...]
    reference_share: tuple[float, ...]
    live_share: tuple[float, ...]


@dataclass(frozen=True)
class DriftReport:
    """`status`: "ok", "drift" (some feature drifted), `NO_REFERENCE` or `DISABLED`."""

    version: str
    status: str
    threshold: float
    min_count: int
    window_seconds: float
    windows: int
    since: float
    features: tuple[FeatureDrift, ...] = ()


def _shares(counts: np.ndarray) -> tuple[float, ...]:
    total = counts.sum()
    return tuple((counts / total).tolist()) if total > 0 else tuple(0.0 for _ in counts)


def _status(value: float, live: int, threshold: float, min_count: int) -> str:
    if live == 0:
        return "no traffic"
    if live < min_count:
        return "few values"
    return "drift" if value >= threshold else "ok"


def build_report(version: str, layout: DriftLayout, live: np.ndarray, since: float, *,
                 threshold: float, min_count: int, window_seconds: float, windows: int
                 ) -> DriftReport:
    """PSI of every feature of `layout` with the `live` counts (the layout's flat vector)."""
    rows = []
    for slot in layout.slots:
        lo, hi = slot.start, slot.start + slot.ref.n_bins
        ref, cur = layout.reference[lo:hi], live[lo:hi]
        n = int(cur.sum())
        value = float(psi(ref, cur)) if n and not slot.skipped else math.nan
        status = (f"not computed: {slot.skipped}" if slot.skipped
                  else _status(value, n, threshold, min_count))
        rows.append(FeatureDrift(slot.ref.name, value, status, n, int(ref.sum()),
                                 slot.ref.categorical, slot.ref.edges, _shares(ref), _shares(cur)))
    drifted = any(r.status == "drift" for r in rows)
    return DriftReport(version, "drift" if drifted else "ok", threshold, min_count,
                       window_seconds, windows, since, tuple(rows))
