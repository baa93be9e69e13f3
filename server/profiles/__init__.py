"""Real-time user profiles: events, incremental features, attributes, consent, erasure."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .events import EventRules, TrackedEvent
    from .handler import AccessExport, Profiles, ProfileView, TrackResult
    from .schema import ProfileSchema
    from .stream import track_stream

__all__ = ["AccessExport", "EventRules", "ProfileSchema", "ProfileView", "Profiles", "TrackResult",
           "TrackedEvent", "track_stream"]

__getattr__ = exports(
    __name__,
    events=("EventRules", "TrackedEvent"),
    handler=("AccessExport", "Profiles", "ProfileView", "TrackResult"),
    schema=("ProfileSchema",),
    stream=("track_stream",),
)
