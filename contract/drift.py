"""The manifest's optional `drift` key: reference histograms of what training's traffic looked like.

Training bins its own served users' values with fixed edges (numeric features: quantile edges,
`kernels.drift`; categorical ones: the category code) and writes the counts; the server bins
live Recommend traffic with the same edges and reports the PSI per feature (docs/bundle.md,
docs/operations.md "Drift"). A bundle without the key is valid: its drift report says
"no reference".
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .bundle import BundleError

__all__ = ["DRIFT_FORMAT", "FeatureReference", "parse_drift"]

DRIFT_FORMAT = 1
"""`drift.format`: the layout of the key below."""

_WHERE = "manifest.json: drift"


@dataclass(frozen=True)
class FeatureReference:
    """One feature's training histogram.

    `edges` are the interior bin edges of a numeric feature (len(counts) - 1 of them, strictly
    increasing); a categorical feature has none and one count per category code.
    """

    name: str
    counts: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categorical: bool = False

    @property
    def n_bins(self) -> int:
        return len(self.counts)


def _numbers(where: str, value, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
        raise BundleError(where, f"must be a list of finite numbers ({what})")
    return tuple(float(x) for x in value)


def _feature(name: str, spec) -> FeatureReference:
    where = f"{_WHERE}.features.{name}"
    if not isinstance(spec, dict):
        raise BundleError(where, "must be an object")
    counts = _numbers(f"{where}.counts", spec.get("counts"), "counts per bin")
    if not counts or min(counts) < 0:
        raise BundleError(f"{where}.counts", "must hold at least one count, none negative")
    categorical = spec.get("categorical", False)
    if not isinstance(categorical, bool):
        raise BundleError(f"{where}.categorical", "must be true or false")
    edges = _numbers(f"{where}.edges", spec.get("edges", []), "interior bin edges")
    if categorical and edges:
        raise BundleError(f"{where}.edges", "a categorical feature has no edges")
    if not categorical and len(edges) != len(counts) - 1:
        raise BundleError(f"{where}.edges", f"{len(counts)} bins need {len(counts) - 1} edges, "
                                            f"got {len(edges)}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise BundleError(f"{where}.edges", "must be strictly increasing")
    return FeatureReference(name, counts, edges, categorical)


def parse_drift(raw: Mapping) -> Mapping[str, FeatureReference] | None:
    """The checked `drift` key of a decoded manifest (None when the bundle has none)."""
    spec = raw.get("drift")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise BundleError(_WHERE, "must be an object")
    if spec.get("format") != DRIFT_FORMAT:
        raise BundleError(f"{_WHERE}.format", f"{spec.get('format')!r:.40}, expected {DRIFT_FORMAT}")
    features = spec.get("features")
    if not isinstance(features, dict):
        raise BundleError(f"{_WHERE}.features", "must be an object of name -> histogram")
    return {str(name): _feature(str(name), f) for name, f in features.items()}
