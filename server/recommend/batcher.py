"""Moved to `server.batching` (kept for one commit while the profiles package switches over)."""
from ..batching import AdaptiveBatcher

__all__ = ["AdaptiveBatcher"]
