"""Typed Python client for Tailor's gRPC services, and its CLI (`python -m clients`)."""
from . import _quiet  # noqa: F401 - before grpc is imported
from .attribution_results import Attribution, ChannelCredit, PathCredit, StoredPath, TransitionMatrix
from .campaign_results import (
           AbRow,
           Campaign,
           CampaignStats,
           DeadLetter,
           Message,
           SampleSize,
           SendProgress,
           SmsLength,
           VariantStats,
)
from .client import Recommendations, RecommendedItem, TailorClient, TailorError
from .drift_results import DriftReport, FeatureDrift
from .model_results import ModelChannelStats, ModelStats, Rate
from .profile_results import ChannelRates, Consent, Event, Features, Profile, RecentItem, Suppression
from .results import CatalogChange, Choice, LoadedBundle, ModelStatus, RejectedEvent, Reward, TrackResult
from .retry import RetryPolicy

__all__ = ["TailorClient", "TailorError", "RetryPolicy", "Recommendations", "RecommendedItem",
           "Choice", "LoadedBundle", "ModelStatus", "RejectedEvent", "Reward", "TrackResult",
           "Profile", "Features", "Consent", "RecentItem", "ChannelRates", "Event", "Suppression",
           "Campaign", "CampaignStats", "VariantStats", "AbRow", "SampleSize", "Message",
           "SmsLength", "SendProgress", "DeadLetter", "Attribution", "ChannelCredit", "PathCredit",
           "TransitionMatrix", "StoredPath", "ModelStats", "ModelChannelStats", "Rate",
           "DriftReport", "FeatureDrift", "CatalogChange"]
