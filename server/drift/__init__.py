"""Drift: live histograms of Recommend traffic against the bundle's training reference, PSI per
feature (docs/operations.md "Drift")."""
from .layout import DriftLayout
from .monitor import DriftMonitor
from .report import DISABLED, NO_REFERENCE, DriftReport, FeatureDrift, build_report
from .window import RollingCounts

__all__ = ["DISABLED", "NO_REFERENCE", "DriftLayout", "DriftMonitor", "DriftReport", "FeatureDrift",
           "RollingCounts", "build_report"]
