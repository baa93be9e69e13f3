"""Real-time user profiles: events, incremental features, attributes, consent, erasure."""
from .events import EventRules, TrackedEvent
from .handler import Profiles, ProfileView, TrackResult
from .schema import ProfileSchema
from .stream import track_stream

__all__ = ["EventRules", "ProfileSchema", "ProfileView", "Profiles", "TrackResult", "TrackedEvent",
           "track_stream"]
