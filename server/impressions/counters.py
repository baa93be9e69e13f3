"""The online counters of the impression log: a group's increments per (model version,
channel), the sum of a group's slices, and their addition to the stored counters (`records.C`
names the slots)."""
from __future__ import annotations

import numpy as np

from ..store import keys
from .records import C, new_counters

__all__ = ["add_counters", "count_group", "merge_counts"]


def count_group(group: list[tuple], bundles: dict[int, object]) -> dict[bytes, np.ndarray]:
    """The counter increments of buffered answers (`ImpressionLog.record`'s tuples, in time
    order; `bundles` maps their bundle ids back) per count key."""
    counts: dict[tuple, np.ndarray] = {}
    for ts, _, _, channel, _, ref, _, _, cold in group:
        version = bundles[ref].version
        delta = counts.get((version, channel))
        if delta is None:
            delta = counts[(version, channel)] = new_counters()
            delta[C.FIRST] = ts
        delta[C.IMPRESSIONS] += 1
        delta[C.COLD_START] += cold
        delta[C.LAST] = ts
    return {keys.impression_count_key(v, ch): d for (v, ch), d in counts.items()}


def merge_counts(into: dict[bytes, np.ndarray], counts: dict[bytes, np.ndarray]) -> None:
    """Add the counter increments of one slice to those of the slices before it."""
    for ck, delta in counts.items():
        total = into.get(ck)
        if total is None:
            into[ck] = delta
            continue
        first, last = min(total[C.FIRST], delta[C.FIRST]), max(total[C.LAST], delta[C.LAST])
        total += delta
        total[C.FIRST], total[C.LAST] = first, last


def add_counters(table, txn, counts: dict[bytes, np.ndarray]) -> None:
    """Add each increment to its stored counters (first and last times kept as min and max)."""
    for ck, delta in counts.items():
        raw = table.get(txn, ck)
        if raw is None:
            table.put(txn, ck, delta.tobytes())
            continue
        total = np.frombuffer(raw, np.float64).copy()
        first, last = total[C.FIRST], total[C.LAST]
        total += delta
        if delta[C.FIRST]:
            total[C.FIRST] = min(first, delta[C.FIRST]) if first else delta[C.FIRST]
        else:
            total[C.FIRST] = first
        total[C.LAST] = max(last, delta[C.LAST])
        table.put(txn, ck, total.tobytes())
