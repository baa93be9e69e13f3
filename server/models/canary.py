"""The canary split: which users a canary bundle serves, and its record in the store.

A user goes to the canary when ``blake2b(user id, key=canary id) / 2**64 < share``: a keyed
hash, so the split is stable for a user while one canary runs (every worker process computes the
same answer), independent of every other hash Tailor uses (campaign arms, user references), and
a new canary (a new random id) draws a new set of users instead of reusing the last one's.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .bundle import Bundle

__all__ = ["Canary", "CanarySplit"]

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class CanarySplit:
    """A running canary: `version` serves `share` (0..1) of users; `stable` serves the rest.

    Attributes
    ----------
    id : str
        Random hex id of this canary; the hash key of its split and the tag of its tallies.
    version, stable : str
        The canary's and the active bundle's versions when it started.
    share : float
        Share of users served by the canary, 0 < share < 1.
    started : float
        Unix seconds at which it started.
    baseline : dict
        {version: (impressions, clicked impressions)} the impression log held for the canary
        and the active version when it started: the guardrails count outcomes since then
        (records written before it lack the key: no baseline).
    """

    id: str
    version: str
    stable: str
    share: float
    started: float = field(default_factory=time.time)
    baseline: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def new(cls, version: str, stable: str, share: float,
            baseline: dict[str, tuple[int, int]] | None = None) -> CanarySplit:
        return cls(uuid.uuid4().hex, version, stable, float(share), baseline=dict(baseline or {}))

    def since_start(self, version: str, outcomes: tuple[int, int]) -> tuple[int, int]:
        """`version`'s (impressions, clicked impressions) counted since the canary started, from
        the log's totals now. Clicks that joined impressions shown before the start count too;
        they never exceed the impressions."""
        base = self.baseline.get(version, (0, 0))
        shown = max(int(outcomes[0]) - base[0], 0)
        return shown, min(max(int(outcomes[1]) - base[1], 0), shown)

    def point(self, user_id: str) -> float:
        """The user's place in [0, 1) under this canary's keyed hash."""
        digest = hashlib.blake2b(user_id.encode(), digest_size=8, key=self.id.encode()).digest()
        return int.from_bytes(digest, "little") / _SCALE

    def in_canary(self, user_id: str) -> bool:
        return self.point(user_id) < self.share

    def mask(self, user_ids: Sequence[str]) -> np.ndarray:
        """`in_canary` of each user id, as a bool array."""
        return np.fromiter((self.point(u) < self.share for u in user_ids), bool, len(user_ids))

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CanarySplit:
        d = json.loads(raw)
        baseline = {str(v): (int(n), int(x)) for v, (n, x) in d.get("baseline", {}).items()}
        return cls(str(d["id"]), str(d["version"]), str(d["stable"]), float(d["share"]),
                   float(d["started"]), baseline)


@dataclass(frozen=True, slots=True)
class Canary:
    """A canary as one worker serves it: its split and its loaded bundle."""

    split: CanarySplit
    bundle: Bundle
