"""Recommend counts per bundle version while a canary runs: requests, server-side errors and a
latency histogram, per worker process, summed over workers through the store.

The histogram has fixed log-spaced buckets (0.1 ms .. ~26 s, x1.25 apart), so the tallies of
several workers add bucket by bucket and the p99 of the sum is exact to one bucket (it reports
the bucket's upper bound: at most 25% above the true value, never below it).
"""
from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["BOUNDS_MS", "Counts", "Tally"]

BOUNDS_MS: tuple[float, ...] = tuple(0.1 * 1.25 ** i for i in range(57))
"""Upper bounds of the latency buckets in milliseconds; one more bucket holds the rest."""


@dataclass(slots=True)
class Counts:
    """One version's requests, errors and latency bucket counts."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float = 0.99) -> float:
        """Upper bound of the bucket holding the q-quantile (0.0 with no request)."""
        n = sum(self.buckets)
        if not n:
            return 0.0
        need, seen = q * n, 0
        for i, c in enumerate(self.buckets):
            seen += c
            if seen >= need:
                return BOUNDS_MS[i] if i < len(BOUNDS_MS) else float("inf")
        return float("inf")

    def to_json(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "buckets": self.buckets}

    @classmethod
    def from_json(cls, d: dict) -> Counts:
        buckets = [int(b) for b in d.get("buckets", ())]
        if len(buckets) != len(BOUNDS_MS) + 1:  # another bucket layout: keep the counts only
            buckets = [0] * (len(BOUNDS_MS) + 1)
        return cls(int(d["requests"]), int(d["errors"]), buckets)


class Tally:
    """This worker's counts per version for the canary `canary_id` (reset when it changes)."""

    def __init__(self):
        self.canary_id = ""
        self.versions: dict[str, Counts] = {}

    def reset(self, canary_id: str) -> None:
        self.canary_id, self.versions = canary_id, {}

    def observe(self, version: str, seconds: float, failed: bool) -> None:
        counts = self.versions.get(version)
        if counts is None:
            counts = self.versions[version] = Counts()
        counts.requests += 1
        counts.errors += failed
        counts.buckets[bisect.bisect_left(BOUNDS_MS, seconds * 1000.0)] += 1

    def encode(self) -> bytes:
        return json.dumps({"id": self.canary_id,
                           "versions": {v: c.to_json() for v, c in self.versions.items()}}).encode()

    @staticmethod
    def merge(raws: Iterable[bytes], canary_id: str) -> dict[str, Counts]:
        """Sum the encoded tallies of every worker that count for `canary_id`."""
        total: dict[str, Counts] = {}
        for raw in raws:
            d = json.loads(raw)
            if d.get("id") != canary_id:
                continue
            for version, counts in d.get("versions", {}).items():
                total.setdefault(version, Counts()).add(Counts.from_json(counts))
        return total
