"""Campaigns: variants chosen by bandit policies or fixed splits, logged decisions, rewards."""
from .handler import Campaigns, Choice, PendingChoice
from .plan import PlanBatch, PlanRequest
from .power import SampleSizeAnswer, SampleSizeQuery
from .records import RewardOutcome
from .spec import Campaign, CampaignSpec, RewardRule, Variant

__all__ = ["Campaigns", "Choice", "PendingChoice", "Campaign", "CampaignSpec", "RewardRule",
           "Variant", "RewardOutcome", "SampleSizeQuery", "SampleSizeAnswer", "PlanBatch", "PlanRequest"]
