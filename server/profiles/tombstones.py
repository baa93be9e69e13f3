"""Tombstones: which users were erased, and when, held as keyed hashes of their ids only.

DeleteProfile writes one tombstone per user (`erase_user`, inside the erasure's transaction):
the key is the HMAC-SHA256 of the user id under the `erasure` keyring (`keys.tombstone_key`,
with the key id, so a rotated ring still finds older tombstones), the value the erasure time.
Nothing else of the user remains, and the hash cannot be turned back into the id without the key.
The record also keeps a keyed hash, under the same `erasure` key, of the user's record-key
token (`tokens.user_token`, the `<user>` part of their store keys; `"found_by"`, layout 2):
not the token, which no file holds once the user is erased, but what tells it among the
tokens of a restored store, so a restore of a backup taken before the erasure erases the
user again (`server.backup`, `store.reerase`); `"impressions_by"` (layout 3) does the same
for their impressions, whose keys hold a hash of the id under the `user-id` keyring: one
keyed hash (same `erasure` key) of that part of the keys per key of the ring. It is never
exported. The first tombstone
under a key id also stores a check value of that key (`keys.erasure_check_key`), so a restore
given another key under the same id tells its operator, rather than finding nobody.

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
  tokens (`tombstone-late␟<ms>␟<kid>␟<hmac>␟<event>` keys, dropped by `sweep_late` once the
  window has passed by `future_tolerance_s`), up to the latest of them (at most
  `future_tolerance_s` past the erasure).
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
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from contract.erasure import digest, erased_at, keys_in_use

from ..security.secrets import Keyring
from ..store import Store, keys
from ..store.reerase import found_by, impressions_found_by, key_check
from ..store.tokens import user_token
from . import replay_tokens
from .replay_tokens import LATE_KEPT
from .tombstone_log import TombstoneRead, late_until, logged, scan
from .tombstone_lookup import noted_latest, tombstones_of

__all__ = ["Tombstone", "Tombstones", "digest", "LATE_KEPT"]

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


class Tombstones:
    """The store's tombstones, read through a per-process cache; `erase_user` writes one."""

    def __init__(self, store: Store, ring: Keyring, clock: Callable[[], float] = time.time,
                 future_tolerance_s: float = 300.0, impressions: Keyring | None = None):
        """`future_tolerance_s`: how far ahead of the server's clock an event may be stamped
        (`event_future_tolerance_s`): the late-event window never reaches further past an
        erasure; `impressions`: the `user-id` keyring impressions are filed under, whose keys'
        user hashes a tombstone keeps a keyed hash of (`impressions_by`; None: the tombstone
        says null, not linked)."""
        self.store, self.ring, self.clock = store, ring, clock
        self.impressions = impressions
        self.future_tolerance_s = future_tolerance_s
        self._meta = store.table("meta")
        self._read = TombstoneRead(-1, {}, [], 0.0, {})
        """What this process knows: grown in place by the tombstones logged since (`TombstoneRead.grow`),
        replaced whole by a read of the list (`_reread`); a thread whose snapshot is older (a
        Recommend batch's read) gets it as it is (a superset), and an older read never replaces
        a newer one."""
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
        old_key, old = self._earlier(txn, user_id, key)
        record: dict = {"at": now, "found_by": found_by(self.ring.key, user_token(user_id)),
                        "impressions_by": self._impressions_by(user_id)}
        # erased again soon after: the late events of the first erasure still count
        until = min(max(events_until, old.get("events_until", 0.0)),
                    now + self.future_tolerance_s)
        if until > now:
            record["events_until"] = until
            late: set[bytes] | None = {token for ms, token in ahead if ms / 1000 > now}
            if old.get("events_until", 0.0) > now:  # (none kept: every event counts)
                kept = replay_tokens.kept_tokens(self._meta, txn, old_key, old)
                late = None if kept is None else late | kept
            # kept until the window has passed by the tolerance (`sweep_late`)
            replay_tokens.keep(self._meta, txn, key, record, late, until, self.future_tolerance_s)
        if old and not found:
            record["erased"] = old.get("erased", old["at"])
        self._meta.put(txn, key, json.dumps(record).encode())
        if self._meta.get(txn, check := keys.erasure_check_key(kid)) is None:
            self._meta.put(txn, check, key_check(self.ring.key))  # (a restore's key: the same?)
        count = int(self._meta.get(txn, keys.TOMBSTONE_COUNT) or b"0")
        self._meta.put(txn, keys.TOMBSTONE_COUNT, str(count + 1).encode())
        self._meta.put(txn, keys.tombstone_seq_key(count + 1), key[len(keys.TOMBSTONE_PREFIX):])
        self._note_latest(txn, count, kid, late_until(record))
        return record.get("erased", now)

    def _impressions_by(self, user_id: str) -> list[str] | None:
        """What finds the user's impressions after a restore: a keyed hash under the tombstone's
        key of their impression-key part under each key of the `user-id` ring (the keys
        erasure deletes under: `ImpressionLog.erase_user`), never that part itself."""
        if self.impressions is None:
            return None
        from ..impressions.writer import user_hash  # impressions imports the profiles
        return [impressions_found_by(self.ring.key, kid, user_hash(key, user_id, cached=False))
                for kid, key in self.impressions.keys]

    def _earlier(self, txn, user_id: str, key: bytes) -> tuple[bytes, dict]:
        """(key, record) of the user's tombstone before this erasure ({} if none): under the
        current key id (`key`), else under an older one of the ring (written before the
        `erasure` keyring was rotated: the repeat still knows the first erasure)."""
        raw = self._meta.get(txn, key)
        if raw is not None or len(self.ring.keys) == 1:
            return key, json.loads(raw or b"{}")
        hit = self._found(txn, [user_id], [kid for kid, _ in self.ring.keys[1:]])[0]
        return hit if hit is not None else (key, {})

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
            read = scan(self._meta, txn, count + 1, self.ring.keys)  # (not cached: may fail)
            latest, kids = read.latest, sorted(kid for kid, _ in read.keys)
        self._meta.put(txn, keys.TOMBSTONE_LATEST, json.dumps(
            {"count": count + 1, "until": latest, "kids": kids}).encode())

    # -- reading -------------------------------------------------------------------------------
    def current(self, txn=None) -> dict[tuple[str, str], float]:
        """{(kid, digest): erasure time} of every tombstone (one read unless one was added),
        read in `txn` if given (a write transaction: what it sees is exact until it commits)."""
        return self._current(txn).by_digest

    def _current(self, txn=None) -> TombstoneRead:
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
        added = logged(self._meta, txn, last.count, count) if last.count >= 0 else None
        if added is None:
            return self._reread(txn, count)
        with self._lock:
            read = self._read
            if read.count < count:
                read.grow([a for a in added if a[0] > read.count], count, self.ring.keys,
                          self._untold if self._watchers else None)
            return read

    def _reread(self, txn, count: int) -> TombstoneRead:
        """`tombstone_log.scan`, kept unless a newer read was kept meanwhile."""
        read = scan(self._meta, txn, count, self.ring.keys)
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
        """Indices of the events `judged` refuses."""
        return [i for i, _ in self.judged(txn, user_ids, ts, dedupe_keys)]

    def judged(self, txn, user_ids: Sequence[str], ts: Sequence[float],
               dedupe_keys: Sequence[bytes] | None = None) -> list[tuple[int, str]]:
        """(index, why) of the events (user, timestamp) from before their user's erasure, or replays
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
        no HMAC). Why: "since" (stamped at or before the erasure), "replay" (after it: one the
        erasure deleted, its token kept), or "window" (after it, no token kept: too many, or
        swept; it may be a replay)."""
        latest, kids = self._latest(txn)
        late = [i for i, t in enumerate(ts) if t <= latest]
        if not late:
            return []
        users = list(dict.fromkeys(user_ids[i] for i in late))  # one lookup a user
        found = dict(zip(users, self._found(txn, users, kids)))
        for hit in found.values():  # tokens kept in the record (written before `late_ms`)
            if hit is not None and isinstance(hit[1].get("late"), list):
                hit[1]["late"] = {t.encode() for t in hit[1]["late"]}
        refused = []
        for i in late:
            if (hit := found[user_ids[i]]) is None:
                continue
            key, record = hit
            if ts[i] <= record["at"]:
                refused.append((i, "since"))
            elif ts[i] <= late_until(record) and (
                    dedupe_keys is None or replay_tokens.replayed(
                        self._meta, txn, key, record, dedupe_keys[i][len(keys.DEDUPE_PREFIX):])):
                refused.append((i, "replay" if "late_ms" in record or
                                record.get("late") is not None else "window"))
        return refused

    def sweep_late(self, now: float | None = None, chunk: int = 10_000) -> int:
        """Drop the tokens of erased events whose window has passed by `future_tolerance_s`
        (retention): the tombstone then refuses every event of its user up to the window's end
        (`late` None), which new events from correct clocks are stamped after. `chunk` keys a
        write transaction; how many went (as of `now`, else the clock). The lists of records
        written before token keys go too (`replay_tokens.sweep_legacy`)."""
        horizon = math.floor((self.clock() if now is None else now) * 1000)
        return replay_tokens.sweep_legacy(self.store, self._meta, horizon, chunk,
                                          self.future_tolerance_s) + \
            replay_tokens.sweep(self.store, self._meta, horizon, chunk)

    def find(self, txn, user_ids: Sequence[str],
             kids: Sequence[str] | None = None) -> list[tuple[float, float] | None]:
        """Each user's tombstone as `txn` sees it, (erasure time, `late_until`), None if never
        erased: read by key, one HMAC per key id in use (`kids`, else the store's) and one
        read a user, whatever the number of tombstones (the write transactions' and the
        decision path's lookup: no list is read)."""
        return [None if r is None else (r["at"], late_until(r))
                for r in self._records(txn, user_ids, kids)]

    def _records(self, txn, user_ids: Sequence[str],
                 kids: Sequence[str] | None = None) -> list[dict | None]:
        """`find`'s tombstone records as stored (JSON), None for a user never erased."""
        return [None if hit is None else hit[1] for hit in self._found(txn, user_ids, kids)]

    def _found(self, txn, user_ids: Sequence[str],
               kids: Sequence[str] | None = None) -> list[tuple[bytes, dict] | None]:
        """(key, record) of each user's tombstone, None for a user never erased."""
        if kids is None:
            kids = self._latest(txn)[1]
        ring = [(kid, key) for kid, key in self.ring.keys if kid in kids]
        return tombstones_of(self._meta, txn, user_ids, ring, _cached_digest)

    def _latest(self, txn) -> tuple[float, list[str]]:
        """(The latest `late_until` of all tombstones, the key ids they name) as `txn` sees
        them: the note `erase_user` keeps (one read), or, when it is not of the current count
        (a store written before the note, or a restore carried tombstones in, until the next
        erasure), the cached list (`_current`)."""
        noted = noted_latest(self._meta, txn)[1]
        if noted is not None:
            return noted
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

