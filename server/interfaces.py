"""The typed seams between domain packages. Each domain depends on these, never on another
domain's internals; `server.app` alone joins the two sides.

A new domain (messaging, privacy, audit) plugs in the same way: it takes the readers it needs
(`BundleSource`, `ProfileStates`) and offers what it reacts to (`EventListener` to follow
tracked events, `UserEraser` to drop what it keeps about a user when the profile is erased).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from kernels.feature_layout import FeatureLayout

    from .campaigns import Campaign, Choice
    from .models import Bundle
    from .profiles import ProfileView
    from .profiles.events import TrackedEvent
    from .recommend import RecQuery, RecResult

__all__ = ["BundleSource", "EventListener", "ProfileStates", "UserEraser", "ProfileReader",
           "ConsentWriter", "VariantChooser", "Recommendations", "EventRecorder"]


class BundleSource(Protocol):
    """Where the bundle in service is read (the model registry)."""

    @property
    def active(self) -> Bundle | None:
        """The bundle serving now, or None before the first one is loaded."""


class ProfileStates(Protocol):
    """Read access to users' live feature states (the profiles domain)."""

    @property
    def layout(self) -> FeatureLayout:
        """The layout the states are encoded with (`kernels.features` reads them)."""

    def states(self, user_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Each user's feature state from one read snapshot, None where there is none."""


class EventListener(Protocol):
    """Follows tracked events (e.g. campaign rewards from `decision_id` attributes)."""

    async def on_events(self, events: Sequence[TrackedEvent]) -> None:
        """Called after each TrackEvents batch commits, with its newly accepted events. It must
        not raise for one bad event: ingestion has already succeeded."""


class UserEraser(Protocol):
    """Drops what a domain keeps about a user outside `<user>␟...` keys (secondary indexes)."""

    def erase_user(self, txn, user_id: str) -> int:
        """Runs inside the profile erasure's write transaction (`txn`, as `Store.write` gives
        it); returns the records removed."""


class ProfileReader(Protocol):
    """One user's stored profile (the profiles domain): what a message is rendered from."""

    async def get(self, user_id: str, max_events: int = 0) -> ProfileView:
        """Attributes, consent, decoded features; NotFound when the user has no profile."""


class ConsentWriter(Protocol):
    """Records a user's consent for a channel (the profiles domain): unsubscribe, STOP."""

    async def set_consent(self, user_id: str, channel: str, opted_in: bool, source: str,
                          timestamp: float = 0.0) -> None:
        """Idempotent: setting the same consent again changes nothing but its time."""


class VariantChooser(Protocol):
    """Campaign definitions and logged decisions (the campaigns domain)."""

    async def get(self, campaign_id: str) -> Campaign:
        """The campaign; NotFound when there is none."""

    async def choose(self, campaign_id: str, user_id: str, context) -> Choice:
        """One logged decision for one user."""


class Recommendations(Protocol):
    """The Recommend pipeline (exclusions applied) for one query."""

    async def recommend(self, query: RecQuery) -> RecResult:
        """Top-k rows of the active bundle for the query's user."""


class EventRecorder(Protocol):
    """Records tracked events (the profiles domain), e.g. `email_sent` after a delivery."""

    async def track(self, events: Sequence[TrackedEvent], offset: int = 0):
        """Store the valid events (duplicates by event id are no-ops)."""
