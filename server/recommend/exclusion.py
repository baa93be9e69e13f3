"""Which item rows a batch of users must not be recommended: their seen items under the policy.

Two sources, united per user: the bundle's seen-set (users.npz `seen_*`, or its training
history rows when a bundle predates them: unknown type, seen at the data cutoff) and the live
one (`profiles.seen.SeenSet`). An item is excluded when one of its event types excludes for
good, or excludes for a window that has not passed since the latest event on it; items of
repeatable categories never are. Everything is vectorised over the whole batch: the answer is
one sorted int64 array of rows per user, for `searchsorted` against candidates.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence

import numpy as np

from kernels.exclusion import Rule, one_user

from ..models import Bundle
from ..profiles.schema import EVENT_TYPES
from ..profiles.seen import UNKNOWN_BIT, SeenSet

__all__ = ["SeenPolicy", "excluded_rows"]

DAY = 86400.0
_FOREVER = math.inf


class SeenPolicy:
    """Exclusion days per event type (inf: for good), for unknown types, repeatable categories."""

    def __init__(self, days: Mapping[str, float], unknown_days: float = _FOREVER,
                 repeatable: Sequence[str] = ()):
        unknown = sorted(set(days) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"seen_exclusion_days: unknown event types {unknown} "
                             f"(known: {', '.join(EVENT_TYPES)})")
        bad = {t: d for t, d in {**days, "<unknown type>": unknown_days}.items() if not d > 0}
        if bad:
            raise ValueError(f"seen exclusion days must be > 0 (inf: for good), got {bad}")
        self.days = dict(days)
        self.unknown_days = float(unknown_days)
        self.repeatable = frozenset(repeatable)
        self.live = self.compile(EVENT_TYPES)
        self._per_bundle: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, s) -> SeenPolicy:
        return cls(s.seen_exclusion_days, s.seen_unknown_type_days, s.repeatable_categories)

    def compile(self, types: Sequence[str]) -> Rule:
        """The policy as a `kernels.exclusion.Rule` over type bit masks: bit i of a mask stands
        for `types[i]`; bit 31 for an unknown type."""
        by_days: dict[float, int] = {}
        for i, name in enumerate(types):
            if name in self.days:
                by_days[self.days[name]] = by_days.get(self.days[name], 0) | (1 << i)
        by_days[self.unknown_days] = by_days.get(self.unknown_days, 0) | int(UNKNOWN_BIT)
        forever = by_days.pop(_FOREVER, 0)
        return Rule.of(forever, [(d * DAY, b) for d, b in sorted(by_days.items())])

    def tables(self, bundle: Bundle) -> _BundleSeen:
        tables = self._per_bundle.get(bundle)
        if tables is None:
            tables = self._per_bundle[bundle] = _BundleSeen(bundle, self)
        return tables


class _BundleSeen:
    """What a policy needs from one bundle, computed once: its seen-set, code → row lookup,
    the rows of repeatable categories."""

    def __init__(self, bundle: Bundle, policy: SeenPolicy):
        u = bundle.users
        if "seen_indptr" in u:
            self.indptr, self.items = u["seen_indptr"], u["seen_items"].astype(np.int64)
            self.mask, self.ts = u["seen_mask"].astype(np.uint32), u["seen_last_ts"].astype(np.float64)
            types = bundle.manifest.history.seen_event_types  # checked at load (`contract`)
            if types is None:  # bits without names: every seen item counts as of unknown type
                self.mask = np.full(len(self.items), UNKNOWN_BIT, np.uint32)
            self.bits = policy.compile(types or ())
        else:  # older bundle: its training history, type unknown, seen at the data cutoff
            self.indptr, self.items = u["indptr"], u["items"].astype(np.int64)
            self.mask = np.full(len(self.items), UNKNOWN_BIT, np.uint32)
            cutoff = float(bundle.manifest.cutoff)
            self.ts = np.full(len(self.items), cutoff)
            self.bits = policy.compile(())
        codes = bundle.item_codes
        self.code_order = np.argsort(codes, kind="stable")
        self.codes_sorted = codes[self.code_order]
        cats = [bundle.category_code[c] for c in policy.repeatable if c in bundle.category_code]
        self.repeatable = np.isin(bundle.item_category, np.asarray(cats, np.int32))

    def rows_of_codes(self, codes: np.ndarray) -> np.ndarray:
        """Bundle rows of item codes, -1 for codes not in this bundle's catalog."""
        if not len(self.codes_sorted):
            return np.full(len(codes), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.codes_sorted, codes), len(self.codes_sorted) - 1)
        return np.where(self.codes_sorted[pos] == codes, self.code_order[pos], -1)


def excluded_rows(policy: SeenPolicy | None, bundle: Bundle, user_ids: Sequence[str],
                  live: Sequence[SeenSet | None], requested: Sequence[np.ndarray], now: float
                  ) -> list[np.ndarray]:
    """Per user, the sorted unique rows not to recommend: the `requested` rows plus the seen
    items (bundle seen-set and `live`) that `policy` excludes at `now` (none without a policy).

    One user (Recommend's usual batch under load) takes slices of the tables and one
    `np.unique`; several are done together, as one sorted array of (user, row) keys."""
    if len(user_ids) == 1:
        return [_one_user(policy, bundle, user_ids[0], live[0], requested[0], now)]
    parts_rows, parts_user = [], []
    _add(parts_rows, parts_user, list(range(len(requested))), list(requested))
    if policy is not None:
        t = policy.tables(bundle)
        _add_bundle_seen(t, bundle, user_ids, now, parts_rows, parts_user)
        _add_live_seen(t, policy, live, now, parts_rows, parts_user)
    n = bundle.n_items
    keys = (np.concatenate(parts_rows) + n * np.concatenate(parts_user) if parts_rows
            else np.zeros(0, np.int64))
    keys.sort()
    if len(keys) > 1:
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    bounds = np.searchsorted(keys, np.arange(len(user_ids) + 1, dtype=np.int64) * n)
    return [keys[bounds[j]:bounds[j + 1]] - j * n for j in range(len(user_ids))]


def _one_user(policy: SeenPolicy | None, bundle: Bundle, user_id: str, live: SeenSet | None,
              requested: np.ndarray, now: float) -> np.ndarray:
    """`excluded_rows` of one user, by the `kernels.exclusion` kernel."""
    if policy is None:
        return np.unique(requested.astype(np.int64, copy=False))
    t = policy.tables(bundle)
    row = bundle.row_of(user_id)
    seen = slice(int(t.indptr[row]), int(t.indptr[row + 1])) if row is not None else slice(0, 0)
    if live is None:
        live = _NO_LIVE
    return one_user(requested, t.items[seen], t.mask[seen], t.ts[seen], t.bits, live.codes,
                    live.mask, live.ts, policy.live, t.codes_sorted, t.code_order, t.repeatable,
                    now)


_NO_LIVE = SeenSet(np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float64))


def _bundle_kept(t: _BundleSeen, at: slice | np.ndarray, now: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(rows excluded at `now`, which entries they are) of the bundle seen-set entries `at`."""
    rows = t.items[at]
    keep = t.bits.excluded(t.mask[at], t.ts[at], now) & ~t.repeatable[rows]
    return rows[keep], keep


def _live_kept(t: _BundleSeen, policy: SeenPolicy, codes: np.ndarray, mask: np.ndarray,
               ts: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows excluded at `now`, which entries they are) of live seen-set entries: items of
    this bundle's catalog whose events exclude them."""
    rows = t.rows_of_codes(codes)
    keep = policy.live.excluded(mask, ts, now) & (rows >= 0)
    keep &= ~t.repeatable[np.maximum(rows, 0)]
    return rows[keep], keep


def _add(parts_rows: list, parts_user: list, owners: list[int], arrays: list[np.ndarray]) -> None:
    """Append the rows of `arrays[i]`, owned by user `owners[i]`, as one part."""
    lengths = [len(a) for a in arrays]
    if sum(lengths):
        parts_rows.append(np.concatenate(arrays).astype(np.int64, copy=False))
        parts_user.append(np.repeat(np.asarray(owners, np.int64), lengths))


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) without the loop."""
    lengths = stops - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + offsets


def _add_bundle_seen(t: _BundleSeen, bundle: Bundle, user_ids, now, parts_rows, parts_user):
    found = [(j, r) for j, r in enumerate(bundle.row_of(u) for u in user_ids) if r is not None]
    if not found:
        return
    owners = np.asarray([j for j, _ in found], np.int64)
    at = np.asarray([r for _, r in found], np.int64)
    lo, hi = t.indptr[at], t.indptr[at + 1]
    idx = _ranges(lo, hi)
    rows, keep = _bundle_kept(t, idx, now)
    parts_rows.append(rows)
    parts_user.append(np.repeat(owners, hi - lo)[keep])


def _add_live_seen(t: _BundleSeen, policy: SeenPolicy, live, now, parts_rows, parts_user):
    sets = [(j, s) for j, s in enumerate(live) if s is not None and len(s)]
    if not sets:
        return
    owner = np.repeat(np.asarray([j for j, _ in sets], np.int64), [len(s) for _, s in sets])
    rows, keep = _live_kept(t, policy, np.concatenate([s.codes for _, s in sets]),
                            np.concatenate([s.mask for _, s in sets]),
                            np.concatenate([s.ts for _, s in sets]), now)
    parts_rows.append(rows)
    parts_user.append(owner[keep])
