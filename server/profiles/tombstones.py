"""Tombstones: which users were erased, and when, held as keyed hashes of their ids only.

DeleteProfile writes one tombstone per user (`erase_user`, inside the erasure's transaction):
the key is the HMAC-SHA256 of the user id under the `erasure` keyring (`keys.tombstone_key`,
with the key id, so a rotated ring still finds older tombstones), the value the erasure time.
Nothing else of the user remains, and the hash cannot be turned back into the id without the key.

What a tombstone decides (docs/privacy.md):

- serving: a bundle trained on data up to its cutoff still holds a user erased after it; that
  user's bundle row (training history, seen-set) is never used again (`Profiles.history_of`
  drops it, `Bundle.forget`, on first sight). A bundle whose cutoff is after an erasure and
  that still holds the user (who did not come back) is refused at load (`check_bundle`).
- re-creation: a tombstone does not block new activity. A user who comes back after erasure
  starts from nothing (every record went with the erasure); only the old bundle row stays masked.
  Events timestamped at or before the user's erasure (a retried or late batch) are refused at
  ingestion (`before_erasure`): they would bring the erased profile back; so are replays of
  events the erasure deleted stamped after it (a client clock ahead), known by their dedupe
  keys, up to the latest of them (at most `future_tolerance_s` past the erasure).
- training: `training export` receives the list (kid, hash, time) and training drops the events
  of those users from before their erasure (`training.tombstones`).

Workers share the list through the store: `tombstone-count` changes with every new tombstone, and
the n-th tombstone written logs its key under `tombstone-seq␟n` (`keys.tombstone_seq_key`), so a
worker that reads a new count reads the tombstones written since it last looked, one log entry
and one record each (the whole list only on its first read, or when the log lacks some: a store
written before it, tombstones a restore carried in). Every
`bundle_poll_seconds` the server reads the count and tells the `watch`ers which users the
tombstones read since name (`tell_watchers`), so caches that hold users by id (the Recommend
user cache) forget a user erased in another worker within that time, serving or not.
"""
from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from contract.erasure import digest, erased_at, keys_in_use

from ..security.secrets import Keyring
from ..store import Store, keys

__all__ = ["Tombstone", "Tombstones", "digest"]

_cached_digest = functools.lru_cache(maxsize=1 << 16)(digest)
"""`digest` of recently served users (~15 MB when full): an HMAC costs ~3 µs, a hit ~0.1 µs.
Its keys hold user ids: emptied when this process reads new tombstones (`tell_watchers`), so
an erased user's id does not stay in it (the served users' digests are computed again)."""


@dataclass(frozen=True)
class Tombstone:
    kid: str
    digest: str
    """Hex HMAC-SHA256 of the user id under key `kid` of the `erasure` keyring."""
    at: float
    """Erasure time, unix seconds."""


class _Read:
    """What this process knows of the tombstones, as of `count`: one object, grown in place
    (under `Tombstones._lock`) by the tombstones logged since it was read (`_logged`), or
    replaced whole by a read of the list. Lock-free readers only look values up in its dicts
    (`count` moves last); whoever iterates them copies them under the lock (`listing`)."""

    __slots__ = ("count", "by_digest", "keys", "latest", "erased", "kids")

    def __init__(self, count: int, by_digest: dict[tuple[str, str], float],
                 keys: list[tuple[str, bytes]], latest: float,
                 erased: dict[tuple[str, str], float]):
        self.count = count
        """`tombstone-count` as read (-1: never read)."""
        self.by_digest = by_digest
        """{(kid, digest): erasure time}."""
        self.keys = keys
        """The ring's keys some tombstone names (one HMAC per key per lookup)."""
        self.latest = latest
        """The latest time up to which an erased user's events are late (`_late_until`): no
        event after it can be from before an erasure."""
        self.erased = erased
        """{(kid, digest): the user's erasure time}: when their data was erased (a repeat that
        found nothing left moves `by_digest`, the cut-off, not this: `erase_user`)."""
        self.kids = {kid for kid, _ in keys}


def _late_until(record: dict) -> float:
    """The time up to which a tombstone's user's events are late: the later of the erasure
    time and the latest event it erased."""
    return max(record["at"], record.get("events_until", 0.0))


LATE_KEPT = 1000
"""Most event tokens a tombstone keeps of the events it erased stamped after it (a client's
clock ahead); past it, every event of the user up to the latest of them is refused."""


class Tombstones:
    """The store's tombstones, read through a per-process cache; `erase_user` writes one."""

    def __init__(self, store: Store, ring: Keyring, clock: Callable[[], float] = time.time,
                 future_tolerance_s: float = 300.0):
        """`future_tolerance_s`: how far ahead of the server's clock an event may be stamped
        (`event_future_tolerance_s`): the late-event window never reaches further past an
        erasure."""
        self.store, self.ring, self.clock = store, ring, clock
        self.future_tolerance_s = future_tolerance_s
        self._meta = store.table("meta")
        self._read = _Read(-1, {}, [], 0.0, {})
        """The latest list read, replaced whole: threads reading snapshots of different ages
        (the ingestion's write transaction, a Recommend batch's older read) each use the list
        they read with its own keys and latest time, and an older read never replaces a newer
        one."""
        self._lock = threading.Lock()
        self._watchers: list[Callable[[Callable[[Sequence[str]], list[str]]], None]] = []
        self._untold: dict[tuple[str, str], float] = {}
        """Tombstones read (new, or moved to a later erasure) since `tell_watchers` last ran."""

    def watch(self, forget: Callable[[Callable[[Sequence[str]], list[str]]], None]) -> None:
        """`forget(erased)` runs in `tell_watchers` when this process has read tombstones since
        the last one: `erased(user_ids)` gives those of `user_ids` they name."""
        self._watchers.append(forget)

    def tell_watchers(self) -> int:
        """Run the `watch`ers on the tombstones read since the last call (the server's poll,
        off the Recommend path: its cost, one HMAC per cached user at most, is paid once per
        poll however many erasures came); how many tombstones that was."""
        with self._lock:
            added, self._untold = self._untold, {}
        if not added:
            return 0
        _cached_digest.cache_clear()  # (cannot drop one user: functools)
        ring = keys_in_use(added, self.ring.keys)

        def erased(user_ids: Sequence[str]) -> list[str]:
            ids = list(user_ids)
            return [u for u, at in zip(ids, erased_at(ids, added, ring, _cached_digest))
                    if at is not None]
        for forget in self._watchers:
            forget(erased)
        return len(added)

    # -- writing (UserEraser) ----------------------------------------------------------------
    def erase_user(self, txn, user_id: str, events_until: float = 0.0,
                   found: bool = True, ahead: Sequence[tuple[int, bytes]] = ()) -> float:
        """Write (or move to now) the user's tombstone in the erasure transaction `txn`, and
        return the time of the erasure that removed the user's data; `events_until`: the time
        of the latest event erased, when after now (stamped by a client whose clock runs
        ahead; at most `future_tolerance_s` after now); `ahead`: (ms, event token) of the
        newest erased events (`LATE_KEPT` + 1 at most), of which those stamped after now are
        kept (more than `LATE_KEPT`: too many to keep): `before_erasure` refuses those up to
        `events_until` too, as replays (every event of the user up to it, for callers that name
        no event or when they were too many). Not `found` (the erasure found nothing of the
        user: a repeat), the time returned is the earlier erasure's (kept in the
        tombstone as `erased`), which a client retrying after a lost answer is told; the
        tombstone's own time still moves to now (answers another worker still buffers, shown
        since, are dropped by the impression writer)."""
        kid, now = self.ring.kid, self.clock()
        key = keys.tombstone_key(kid, digest(self.ring.key, user_id))
        old = json.loads(self._meta.get(txn, key) or b"{}")
        record: dict = {"at": now}
        # erased again soon after: the late events of the first erasure still count
        until = min(max(events_until, old.get("events_until", 0.0)),
                    now + self.future_tolerance_s)
        if until > now:
            record["events_until"] = until
            late = {token.decode() for ms, token in ahead if ms / 1000 > now}
            if old.get("events_until", 0.0) > now:  # (none kept: every event counts)
                late |= set(old["late"]) if old.get("late") is not None else {""}
            too_many = "" in late or len(late) > LATE_KEPT
            record["late"] = None if too_many else sorted(late)
        if old and not found:
            record["erased"] = old.get("erased", old["at"])
        self._meta.put(txn, key, json.dumps(record).encode())
        count = int(self._meta.get(txn, keys.TOMBSTONE_COUNT) or b"0")
        self._meta.put(txn, keys.TOMBSTONE_COUNT, str(count + 1).encode())
        self._meta.put(txn, keys.tombstone_seq_key(count + 1), key[len(keys.TOMBSTONE_PREFIX):])
        self._note_latest(txn, count, kid, _late_until(record))
        return record.get("erased", now)

    def _note_latest(self, txn, count: int, kid: str, until: float) -> None:
        """Keep `TOMBSTONE_LATEST` (the latest `late_until` of every tombstone and the key ids
        they name, as of `count` + 1 tombstones written) with the tombstone just written: from
        the note of `count`, or, when there is none of it (a store written before the note, or
        a restore carried tombstones in), from one read of the whole list."""
        raw = self._meta.get(txn, keys.TOMBSTONE_LATEST)
        noted = json.loads(raw) if raw else None
        if noted is not None and noted["count"] == count:
            latest, kids = max(noted["until"], until), sorted({*noted["kids"], kid})
        elif count == 0:
            latest, kids = until, [kid]
        else:
            read = self._scan(txn, count + 1)  # (not cached: this transaction may fail)
            latest, kids = read.latest, sorted(kid for kid, _ in read.keys)
        self._meta.put(txn, keys.TOMBSTONE_LATEST, json.dumps(
            {"count": count + 1, "until": latest, "kids": kids}).encode())

    # -- reading -------------------------------------------------------------------------------
    def current(self, txn=None) -> dict[tuple[str, str], float]:
        """{(kid, digest): erasure time} of every tombstone (one read unless one was added),
        read in `txn` if given (a write transaction: what it sees is exact until it commits)."""
        return self._current(txn).by_digest

    def _current(self, txn=None) -> _Read:
        """`current` with the ring's keys its tombstones name and their latest time, as of
        one count: the tombstones logged since this process last looked are read (one log
        entry and one record each), the list only on the first read or when the log does not
        hold every tombstone added (a store written before it, a restore's carried ones)."""
        if txn is None:
            with self.store.read() as txn:
                return self._current(txn)
        count = int(self._meta.get(txn, keys.TOMBSTONE_COUNT) or b"0")
        last = self._read
        if count <= last.count:  # (lower: an older snapshot; what is known is a superset)
            return last
        added = self._logged(txn, last.count, count) if last.count >= 0 else None
        if added is None:
            return self._reread(txn, count)
        with self._lock:
            read = self._read
            if read.count < count:
                self._grow(read, [a for a in added if a[0] > read.count], count)
            return read

    def _logged(self, txn, since: int, count: int
                ) -> list[tuple[int, tuple[str, str], dict]] | None:
        """(n, (kid, digest), record) of the tombstones written `since` + 1 .. `count`, in
        order, from the log (`keys.tombstone_seq_key`); None when it lacks one of them."""
        logged = []
        for key, value in self._meta.items(txn, keys.tombstone_seq_key(since + 1)):
            if not key.startswith(keys.TOMBSTONE_SEQ_PREFIX) or \
                    (n := keys.tombstone_seq(key)) > count:
                break
            logged.append((n, value))
        if [n for n, _ in logged] != list(range(since + 1, count + 1)):
            return None
        records: dict[bytes, dict | None] = {}  # (one read of a tombstone written twice)
        out = []
        for n, suffix in logged:
            key = keys.TOMBSTONE_PREFIX + suffix
            if key not in records:
                raw = self._meta.get(txn, key)
                records[key] = json.loads(raw) if raw is not None else None
            if records[key] is None:
                return None
            out.append((n, keys.tombstone_parts(key), records[key]))
        return out

    def _grow(self, read: _Read, added: list[tuple[int, tuple[str, str], dict]],
              count: int) -> None:
        """Add the tombstones `added` (`_logged`) to `read`, as of `count` (under the lock)."""
        for _, k, record in added:
            at = record["at"]
            if self._watchers and read.by_digest.get(k) != at:
                self._untold[k] = at
            read.by_digest[k] = at
            read.erased[k] = record.get("erased", at)
            read.latest = max(read.latest, _late_until(record))
            if k[0] not in read.kids:
                read.kids = read.kids | {k[0]}
                read.keys = [(kid, key) for kid, key in self.ring.keys if kid in read.kids]
        read.count = count

    def _scan(self, txn, count: int) -> _Read:
        """The whole list as `txn` sees it (`count` tombstones written)."""
        found = [(keys.tombstone_parts(k), json.loads(v))
                 for k, v in self._meta.scan_prefix(txn, keys.TOMBSTONE_PREFIX)]
        by_digest = {k: t["at"] for k, t in found}
        return _Read(count, by_digest, keys_in_use(by_digest, self.ring.keys),
                     max((_late_until(t) for _, t in found), default=0.0),
                     {k: t.get("erased", t["at"]) for k, t in found})

    def _reread(self, txn, count: int) -> _Read:
        """`_scan`, kept unless a newer read was kept meanwhile."""
        read = self._scan(txn, count)
        with self._lock:
            last = self._read
            if count > last.count:  # the count only grows: a lower one is an older snapshot
                if self._watchers:
                    before = last.by_digest
                    self._untold.update((k, at) for k, at in read.by_digest.items()
                                        if before.get(k) != at)
                self._read = read
        return read

    def before_erasure(self, txn, user_ids: Sequence[str], ts: Sequence[float],
                       dedupe_keys: Sequence[bytes] | None = None) -> list[int]:
        """Indices of the events (user, timestamp) from before their user's erasure, or replays
        of an event it erased stamped after it (a client whose clock runs ahead of the
        server's retrying a batch acknowledged before the erasure): late or replayed events,
        which would bring an erased user back. With `dedupe_keys` (each event's), an event
        stamped after the erasure is refused only if it is one the erasure deleted (or they
        were too many to keep: `LATE_KEPT`); without, every event up to the latest one erased
        is (at most `future_tolerance_s` past the erasure). Read in the ingestion's (or the
        campaigns writer's) write transaction `txn`, so no erasure commits between this check
        and the events' write. Reads no list under that lock: the latest erasure time
        (`TOMBSTONE_LATEST`, one read), then only the tombstones of the users of the events at
        or before it; events newer than the latest erasure are not looked up (the usual case:
        no HMAC)."""
        latest, kids = self._latest(txn)
        late = [i for i, t in enumerate(ts) if t <= latest]
        if not late:
            return []
        users = list(dict.fromkeys(user_ids[i] for i in late))  # one lookup a user
        found = dict(zip(users, self._records(txn, users, kids)))
        for record in found.values():  # the tokens kept, looked up once per event
            if record is not None and record.get("late") is not None:
                record["late"] = set(record["late"])
        refused = []
        for i in late:
            if (record := found[user_ids[i]]) is None:
                continue
            if ts[i] <= record["at"]:
                refused.append(i)
            elif ts[i] <= _late_until(record):
                kept = record.get("late")  # None, or missing (written before): every event
                if dedupe_keys is None or kept is None or \
                        dedupe_keys[i][len(keys.DEDUPE_PREFIX):].decode() in kept:
                    refused.append(i)
        return refused

    def find(self, txn, user_ids: Sequence[str],
             kids: Sequence[str] | None = None) -> list[tuple[float, float] | None]:
        """Each user's tombstone as `txn` sees it, (erasure time, `late_until`), None if never
        erased: read by key, one HMAC per key id in use (`kids`, else the store's) and one
        read a user, whatever the number of tombstones (the write transactions' and the
        decision path's lookup: no list is read)."""
        return [None if r is None else (r["at"], _late_until(r))
                for r in self._records(txn, user_ids, kids)]

    def _records(self, txn, user_ids: Sequence[str],
                 kids: Sequence[str] | None = None) -> list[dict | None]:
        """`find`'s tombstone records as stored (JSON), None for a user never erased."""
        if kids is None:
            kids = self._latest(txn)[1]
        ring = [(kid, key) for kid, key in self.ring.keys if kid in kids]
        out: list[dict | None] = []
        for uid in user_ids:
            found = None
            for kid, key in ring:
                raw = self._meta.get(txn, keys.tombstone_key(kid, _cached_digest(key, uid)))
                if raw is not None:
                    found = json.loads(raw)
                    break
            out.append(found)
        return out

    def _latest(self, txn) -> tuple[float, list[str]]:
        """(The latest `late_until` of all tombstones, the key ids they name) as `txn` sees
        them: the note `erase_user` keeps (one read), or, when it is not of the current count
        (a store written before the note, or a restore carried tombstones in, until the next
        erasure), the cached list (`_current`)."""
        count = int(self._meta.get(txn, keys.TOMBSTONE_COUNT) or b"0")
        if count == 0:
            return float("-inf"), []
        raw = self._meta.get(txn, keys.TOMBSTONE_LATEST)
        noted = json.loads(raw) if raw else None
        if noted is not None and noted["count"] == count:
            return noted["until"], noted["kids"]
        read = self._current(txn)
        return read.latest, [kid for kid, _ in read.keys]

    def listing(self) -> list[Tombstone]:
        """Every tombstone with its user's erasure time (a repeat's that found nothing left
        does not move it: what DeleteProfile answered), oldest erasure first (ExportTombstones,
        what `training export` receives)."""
        read = self._current()
        with self._lock:  # (grown in place under it)
            erased = list(read.erased.items())
        return sorted((Tombstone(kid, d, at) for (kid, d), at in erased),
                      key=lambda t: (t.at, t.digest))

    def erasure_times(self, user_ids: Sequence[str]) -> list[float | None]:
        """Each user's erasure time as `listing` and DeleteProfile give it (ExportProfile's
        `erased_at`), None if never erased (read by key, as `find`). `erased_at` gives the
        cut-off the late-event check and serving use, which a repeat moves to its own time."""
        with self.store.read() as txn:
            return [None if r is None else r.get("erased", r["at"])
                    for r in self._records(txn, user_ids)]

    def erased_at(self, user_ids: Sequence[str], tombs=None, txn=None) -> list[float | None]:
        """Each user's erasure time, None if never erased (the serving path: a user's HMAC is
        computed once per process while it stays in a small cache); the tombstones as `txn`
        (a read the caller holds) sees them, or as read now."""
        read = self._current(txn) if tombs is None else self._read  # given: no second read
        if tombs is None or tombs is read.by_digest:
            return erased_at(user_ids, read.by_digest, read.keys, _cached_digest)
        return erased_at(user_ids, tombs, keys_in_use(tombs, self.ring.keys), _cached_digest)

    def matches(self, user_ids: Iterable[str]) -> dict[str, float]:
        """{user id: erasure time} of the erased users among `user_ids` (a bundle's, at load)."""
        read = self._current()
        if not read.by_digest:
            return {}
        ids = list(user_ids)  # a whole bundle: hashed without the serving path's cache
        return {u: at for u, at in zip(ids, erased_at(ids, read.by_digest, read.keys))
                if at is not None}

