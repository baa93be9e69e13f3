"""When a worker tries again to load a bundle version it failed to load.

A worker follows the active-bundle pointer every `bundle_poll_seconds` (0.5 s by default). A
version it cannot load (a missing or damaged directory, a model ONNX Runtime refuses, too
little memory) failed the same way every poll: each attempt read the bundle again (seconds of
CPU for a large catalog's index) and logged a traceback, twice a second, for as long as the
pointer named it. `LoadBackoff` spaces the attempts at one version out, from 1 s doubling to
60 s, and says when a failure is the version's first (logged in full) or a repeat (one line).
A pointer to another version starts over.
"""
from __future__ import annotations

__all__ = ["LoadBackoff"]


class LoadBackoff:
    FIRST_S, MOST_S = 1.0, 60.0
    """The wait after a version's first failure, and the longest wait between attempts."""

    def __init__(self):
        self.version, self.delay, self.next_at = "", 0.0, 0.0

    def due(self, version: str, now: float) -> bool:
        """Whether to try loading `version` at `now`."""
        return version != self.version or now >= self.next_at

    def failed(self, version: str, now: float) -> bool:
        """Note a failed attempt at `version`; True when it is the version's first (log it in
        full; a repeat deserves one line)."""
        first = version != self.version
        self.delay = self.FIRST_S if first else min(2.0 * self.delay, self.MOST_S)
        self.version, self.next_at = version, now + self.delay
        return first

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed (and no success or `loaded` came since)."""
        return bool(self.version)

    def loaded(self) -> None:
        self.version, self.delay, self.next_at = "", 0.0, 0.0
