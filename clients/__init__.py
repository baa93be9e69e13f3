"""Typed Python client for Tailor's gRPC services, and its CLI (`python -m clients`)."""
from .client import Recommendations, RecommendedItem, TailorClient, TailorError

__all__ = ["TailorClient", "TailorError", "Recommendations", "RecommendedItem"]
