"""The impression log: every Recommend answer recorded off the hot path, the feedback join of
clicks, add-to-carts and purchases, and the online metrics per model version and channel."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .handler import Impressions
    from .join import ImpressionJoin
    from .log import ImpressionLog
    from .stats import ModelStats, ModelStatsRow, Rate, wilson

__all__ = ["Impressions", "ImpressionJoin", "ImpressionLog", "ModelStats", "ModelStatsRow", "Rate",
           "wilson"]

__getattr__ = exports(
    __name__,
    handler=("Impressions",),
    join=("ImpressionJoin",),
    log=("ImpressionLog",),
    stats=("ModelStats", "ModelStatsRow", "Rate", "wilson"),
)
