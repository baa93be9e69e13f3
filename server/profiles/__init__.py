"""Real-time user profiles: events, incremental features, attributes, consent, erasure."""
from .events import EventRules, TrackedEvent
from .handler import AccessExport, Profiles, ProfileView, TrackResult
from .schema import ProfileSchema
from .stream import track_stream

__all__ = ["AccessExport", "EventRules", "ProfileSchema", "ProfileView", "Profiles", "TrackResult",
           "TrackedEvent", "track_stream"]
