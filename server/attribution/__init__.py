"""Multi-touch attribution over gRPC: given paths, or journeys built from stored events."""
from .handler import AttributionResult, Attributor
from .journeys import TOUCH_TYPES, JourneyQuery, Journeys, build_journeys
from .paths import PathSet
from .spec import ModelSpec

__all__ = ["Attributor", "AttributionResult", "JourneyQuery", "Journeys", "ModelSpec", "PathSet",
           "TOUCH_TYPES", "build_journeys"]
