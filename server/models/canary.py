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
    """

    id: str
    version: str
    stable: str
    share: float
    started: float = field(default_factory=time.time)

    @classmethod
    def new(cls, version: str, stable: str, share: float) -> CanarySplit:
        return cls(uuid.uuid4().hex, version, stable, float(share))

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
        return cls(str(d["id"]), str(d["version"]), str(d["stable"]), float(d["share"]),
                   float(d["started"]))


@dataclass(frozen=True, slots=True)
class Canary:
    """A canary as one worker serves it: its split and its loaded bundle."""

    split: CanarySplit
    bundle: Bundle
