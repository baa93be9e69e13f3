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

    from .models import Bundle
    from .profiles.events import TrackedEvent

__all__ = ["BundleSource", "EventListener", "ProfileStates", "UserEraser"]


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

    def states_and_meta(self, user_ids: Sequence[str], with_states: bool = True
                        ) -> list[tuple[np.ndarray | None, dict | None]]:
        """Each user's (feature state, meta record: attributes and consent) from one read
        snapshot, None where there is none (the contact policy reads both); states are not
        read (None) unless `with_states`."""


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
