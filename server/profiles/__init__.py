"""Real-time user profiles: events, incremental features, attributes, consent, erasure."""
from .events import EventRules, TrackedEvent
from .handler import ProfileView, Profiles, TrackResult
from .schema import ProfileSchema

__all__ = ["Profiles", "ProfileSchema", "ProfileView", "TrackResult", "TrackedEvent", "EventRules"]
