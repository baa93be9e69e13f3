"""Campaigns: variants chosen by bandit policies or fixed splits, logged decisions, rewards."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .handler import Campaigns, Choice, PendingChoice
    from .plan import PlanBatch, PlanRequest
    from .power import SampleSizeAnswer, SampleSizeQuery
    from .records import RewardOutcome
    from .spec import Campaign, CampaignSpec, RewardRule, Variant

__all__ = ["Campaigns", "Choice", "PendingChoice", "Campaign", "CampaignSpec", "RewardRule",
           "Variant", "RewardOutcome", "SampleSizeQuery", "SampleSizeAnswer", "PlanBatch", "PlanRequest"]

__getattr__ = exports(
    __name__,
    handler=("Campaigns", "Choice", "PendingChoice"),
    plan=("PlanBatch", "PlanRequest"),
    power=("SampleSizeAnswer", "SampleSizeQuery"),
    records=("RewardOutcome",),
    spec=("Campaign", "CampaignSpec", "RewardRule", "Variant"),
)
