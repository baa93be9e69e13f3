"""Each recent user's encoder output and retrieval candidates, reused while the history holds.

A Recommend call for a user spends most of its compute in the encoder (one ALS fold-in) and the
FAISS search; both are pure functions of the encoder's input (item rows and weights) and the
bundle. `UserCache` keeps, per bundle, the last input it saw for a user with the vector it gave
and the candidates of the free (uncategorised) search at the depth asked. An entry is reused only
while the new input is the cached one, bit for bit: the same item rows and the same float32
weights. So a new event (a new row or weight) misses and refreshes the entry, with no
invalidation to wire; the weights decay against a clock that moves in steps
(`handler.decay_clock`), so an entry lasts at most a step, and a hit gives exactly what a fresh
encode in any worker gives in that step (an entry reused while the weights were within 1e-4,
as before, served a vector another worker's fresh encode did not). Exclusions are applied to the candidates
on every call, as without the cache; a list that differs from the ranked one, or was ranked in
another request context (a bundle with context features, `context`), is ranked again.

At most `max_users` entries per bundle (the oldest inserted go first); a new bundle starts empty
and an old one's entries go with it. An erased user's entries go with the erasure in the worker
that erased them (`Recommender.erase_user`, and again once the erasure has committed:
`after_erasure`, for the batches that read the user before the commit), and in every other
worker within `bundle_poll_seconds` (`Recommender.forget_erased`, `Tombstones.watch`); a
request that finds the user without history drops them too. A batch that read the user's
history before the erasure and stores its entry after it stores nothing (`since`, `erase`;
the users of batches under way, `reading`, count among those another worker's erasure is
looked for in). Safe from several threads (one lock around the table's writes; an entry's
parts are swapped whole, `CachedUser`).
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ..models import Bundle

__all__ = ["UserCache", "CachedUser"]

ERASED_KEPT = 10_000
"""Erased users `UserCache` remembers for the batches under way; a batch older than the oldest
(10,000 erasures during one batch) stores none of its users."""

Candidates = tuple[np.ndarray, np.ndarray]
"""(item rows, inner-product scores) of one search, best first."""


class CachedUser:
    """One user's encoder input and output, the last free search's candidates, and the ranker's
    scores of the last candidate list it was given.

    Two pipelines may use one entry at once (batch threads, and the event loop for
    `Recommender.recommend(on_loop=True)`): what goes together is kept in one tuple, replaced
    and read as a whole, so a reader never pairs one call's candidates or scores with
    another's depth or rows."""

    __slots__ = ("items", "weights", "vector", "_found", "_ranked")

    def __init__(self, items: np.ndarray, weights: np.ndarray, vector: np.ndarray):
        self.items = items
        self.weights = weights
        self.vector = vector
        self._found: tuple[int, Candidates] | None = None
        """(search depth, the candidates found at it)."""
        self._ranked: tuple[np.ndarray, np.ndarray, object] | None = None
        """(candidate rows, the ranker's scores of them, the request-context key they were
        computed in: None for a bundle without one)."""

    @property
    def ranked(self) -> tuple[np.ndarray, np.ndarray, object] | None:
        """(candidate rows, the ranker's scores of them, their context key) of the last list
        ranked, or None."""
        return self._ranked

    def candidates(self, depth: int) -> Candidates | None:
        """The cached candidates if they were searched at exactly `depth`."""
        found = self._found
        return found[1] if found is not None and found[0] == depth else None

    def keep(self, depth: int, found: Candidates) -> None:
        self._found = (depth, found)

    def scores_for(self, rows: np.ndarray, ctx=None) -> np.ndarray | None:
        """The ranker's scores if they were computed for exactly these candidate `rows` in
        request context `ctx` (the same history, rows and context give the same features)."""
        ranked = self._ranked
        if (ranked is None or ranked[2] != ctx or len(ranked[0]) != len(rows)
                or not (ranked[0] == rows).all()):
            return None
        return ranked[1]

    def keep_scores(self, rows: np.ndarray, scores: np.ndarray, ctx=None) -> None:
        self._ranked = (rows, scores, ctx)


class UserCache:
    """Per bundle, up to `max_users` users' `CachedUser`, matched by content (see module doc).

    Parameters
    ----------
    max_users : int
        Entries per bundle; 0 keeps none (every lookup misses).
    """

    def __init__(self, max_users: int):
        if max_users < 0:
            raise ValueError("max_users must be >= 0")
        self.max_users = max_users
        self._tables: weakref.WeakKeyDictionary[Bundle, OrderedDict[str, CachedUser]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._erasures = 0
        """Erasures so far (`erase`): what `since` hands a batch."""
        self._erased: OrderedDict[str, int] = OrderedDict()
        """The users of the last `ERASED_KEPT` erasures, with the count each was erased at."""
        self._erased_floor = 0
        """The count of the latest erasure no longer in `_erased`."""
        self._reading: dict[str, int] = {}
        """Users of the batches under way (`reading`), with how many read each."""

    def lookup(self, bundle: Bundle, user_ids: Sequence[str], items: np.ndarray,
               weights: np.ndarray) -> list[CachedUser | None]:
        """The entry of each user whose input (row j of `items`, `weights`) is still its own."""
        table = self._tables.get(bundle)
        if not table:
            return [None] * len(user_ids)
        found = [table.get(u) for u in user_ids]
        at = [j for j, e in enumerate(found) if e is not None]
        if not at:
            return found
        if len(at) == 1:  # most batches under load: views of the one entry, no copies
            j = at[0]
            cached_items, cached_w = found[j].items[None], found[j].weights[None]
            items, weights = items[j:j + 1], weights[j:j + 1]
        else:
            cached_items = np.stack([found[j].items for j in at])
            cached_w = np.stack([found[j].weights for j in at])
            items, weights = items[at], weights[at]
        same = (cached_items == items).all(axis=1)
        same &= (weights == cached_w).all(axis=1)
        for j, ok in zip(at, same.tolist()):
            if not ok:
                found[j] = None
        return found

    @contextlib.contextmanager
    def reading(self, user_ids: Sequence[str]):
        """Around a batch that may store entries of `user_ids`: `user_ids()` names them too."""
        with self._lock:
            for user_id in user_ids:
                self._reading[user_id] = self._reading.get(user_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for user_id in user_ids:
                    left = self._reading.pop(user_id) - 1
                    if left:
                        self._reading[user_id] = left

    def since(self) -> int:
        """What a batch takes before it reads its users' histories and gives `store`."""
        return self._erasures

    def store(self, bundle: Bundle, user_id: str, items: np.ndarray, weights: np.ndarray,
              vector: np.ndarray, since: int | None = None) -> CachedUser:
        """A new entry for `user_id` (copies of the rows given), replacing any older one; kept
        only if the user was not erased after `since` (the batch's `since()`, when given: its
        history was read before the erasure)."""
        entry = CachedUser(items.copy(), weights.copy(), vector.copy())
        if not self.max_users:
            return entry
        with self._lock:
            if since is not None and since < self._erasures and (
                    since < self._erased_floor or self._erased.get(user_id, 0) > since):
                return entry
            table = self._tables.get(bundle)
            if table is None:
                table = self._tables[bundle] = OrderedDict()
            table.pop(user_id, None)
            while len(table) >= self.max_users:  # oldest first, O(1) (a dict's first key is
                table.popitem(last=False)       # found by scanning past the deleted ones)
            table[user_id] = entry
        return entry

    def forget(self, user_ids: Sequence[str]) -> None:
        """Drop the users' entries from every bundle's table (an erasure; users whose history
        is gone)."""
        with self._lock:
            for table in list(self._tables.values()):
                for user_id in user_ids:
                    table.pop(user_id, None)

    def erase(self, user_ids: Sequence[str]) -> None:
        """`forget` erased users, and keep a batch that read them before from storing them again."""
        with self._lock:
            self._erasures += 1
            for user_id in user_ids:
                self._erased.pop(user_id, None)
                self._erased[user_id] = self._erasures
            while len(self._erased) > ERASED_KEPT:
                self._erased_floor = self._erased.popitem(last=False)[1]
        self.forget(user_ids)

    def user_ids(self) -> list[str]:
        """Every user some bundle's table holds, or a batch under way may store (once each)."""
        with self._lock:
            held = (u for t in list(self._tables.values()) for u in t)
            return list(dict.fromkeys(itertools.chain(held, self._reading)))

    def __contains__(self, user_id: str) -> bool:
        return any(user_id in table for table in list(self._tables.values()))

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())
