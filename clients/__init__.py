"""Typed Python client for Tailor's gRPC services, and its CLI (`python -m clients`)."""
from .client import Recommendations, RecommendedItem, TailorClient, TailorError
from .results import Choice, LoadedBundle, ModelStatus, RejectedEvent, Reward, TrackResult

__all__ = ["TailorClient", "TailorError", "Recommendations", "RecommendedItem", "Choice",
           "LoadedBundle", "ModelStatus", "RejectedEvent", "Reward", "TrackResult"]
