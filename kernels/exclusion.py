"""The item rows one user must not be recommended: what they asked to exclude, and the seen
items an exclusion rule still holds.

Inputs, for one user:
- `requested`: rows excluded whatever the rule (the query's `exclude_item_ids`, removed items);
- the bundle's seen entries (`seen_rows`, `seen_mask`, `seen_ts`: row, event-type bit mask,
  latest event time) and the live ones (`live_codes`, `live_mask`, `live_ts`: item code, mask,
  time), each judged by its `Rule`. A live code maps to its row through `codes_sorted` (the
  catalog's codes ascending) and `code_order` (the row of each); a code the catalog lacks is
  never excluded.

An entry is excluded when its mask shares a bit with `rule.forever`, or with the bits of a
window whose time has not passed (`ts > now - window`, so a NaN time passes every window),
unless its row's category is repeatable (`repeatable[row]`). The answer is the sorted unique
int64 rows of `requested` and of the excluded entries.

`one_user` runs the Cython kernel (`kernels._exclusion`: one buffer, one sort, no numpy
temporaries) unless ``use_native=False``, which runs the numpy reference. The server's
vectorised path for many users at once (`server.recommend.exclusion`) computes the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import F64, I64, contiguous

__all__ = ["Rule", "one_user"]

U32, BOOL = np.dtype(np.uint32), np.dtype(np.bool_)


@dataclass(frozen=True, eq=False)  # holds arrays: compared and hashed by identity
class Rule:
    """Which event-type bits exclude an item for good, and which for a window (seconds)."""

    forever: int
    window_s: np.ndarray
    """float64 [W]: each window's length."""
    window_bits: np.ndarray
    """uint32 [W]: the bits each window applies to."""

    @classmethod
    def of(cls, forever: int, windows) -> Rule:
        """From (window seconds, bits) pairs."""
        windows = list(windows)
        return cls(int(forever), np.asarray([w for w, _ in windows], F64),
                   np.asarray([b for _, b in windows], U32))

    def excluded(self, mask: np.ndarray, ts: np.ndarray, now: float) -> np.ndarray:
        """Per entry, whether the rule excludes it at `now` (the reference's test)."""
        out = (mask & np.uint32(self.forever)) != 0
        for window, bits in zip(self.window_s.tolist(), self.window_bits.tolist()):
            out |= ((mask & np.uint32(bits)) != 0) & (ts > now - window)
        return out


def one_user(requested, seen_rows, seen_mask, seen_ts, seen_rule: Rule, live_codes, live_mask,
             live_ts, live_rule: Rule, codes_sorted, code_order, repeatable, now: float, *,
             use_native: bool = True) -> np.ndarray:
    """Sorted unique int64 rows not to recommend to one user (see the module).

    ValueError when the arrays of one source differ in length, `codes_sorted` and
    `code_order` differ in length, or a seen row or a code's row is outside `repeatable`."""
    requested, seen_rows, live_codes = (contiguous(a, I64) for a in (requested, seen_rows, live_codes))
    seen_ts, live_ts = contiguous(seen_ts, F64), contiguous(live_ts, F64)
    seen_mask, live_mask = contiguous(seen_mask, U32), contiguous(live_mask, U32)
    codes_sorted, code_order = contiguous(codes_sorted, I64), contiguous(code_order, I64)
    repeatable = contiguous(repeatable, BOOL)
    if not (len(seen_rows) == len(seen_mask) == len(seen_ts)
            and len(live_codes) == len(live_mask) == len(live_ts)
            and len(codes_sorted) == len(code_order)):
        raise ValueError("seen rows/mask/ts, live codes/mask/ts and codes_sorted/code_order: "
                         "each group must be of one length")
    if use_native:
        from . import _exclusion
        out = _exclusion.one_user(requested, seen_rows, seen_mask, seen_ts, seen_rule.forever,
                                  contiguous(seen_rule.window_s, F64),
                                  contiguous(seen_rule.window_bits, U32), live_codes, live_mask,
                                  live_ts, live_rule.forever, contiguous(live_rule.window_s, F64),
                                  contiguous(live_rule.window_bits, U32), codes_sorted,
                                  code_order, repeatable.view(np.uint8), float(now))
        if out is None:
            raise ValueError("a seen row or a code's row is outside `repeatable`")
        return out
    return _reference(requested, seen_rows, seen_mask, seen_ts, seen_rule, live_codes, live_mask,
                      live_ts, live_rule, codes_sorted, code_order, repeatable, now)


def _reference(requested, seen_rows, seen_mask, seen_ts, seen_rule, live_codes, live_mask,
               live_ts, live_rule, codes_sorted, code_order, repeatable, now):
    n = len(repeatable)
    parts = [requested]
    if len(seen_rows):
        if seen_rows.min() < 0 or seen_rows.max() >= n:
            raise ValueError("a seen row or a code's row is outside `repeatable`")
        keep = seen_rule.excluded(seen_mask, seen_ts, now) & ~repeatable[seen_rows]
        parts.append(seen_rows[keep])
    if len(live_codes) and len(codes_sorted):
        pos = np.minimum(np.searchsorted(codes_sorted, live_codes), len(codes_sorted) - 1)
        rows = np.where(codes_sorted[pos] == live_codes, code_order[pos], -1)
        keep = live_rule.excluded(live_mask, live_ts, now) & (rows >= 0)
        if (rows[keep] >= n).any():
            raise ValueError("a seen row or a code's row is outside `repeatable`")
        keep &= ~repeatable[np.clip(rows, 0, n - 1)]
        parts.append(rows[keep])
    return np.unique(np.concatenate(parts)).astype(np.int64)
