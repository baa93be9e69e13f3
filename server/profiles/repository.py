"""Profile records in the store (key layouts: `server.store.keys`); each write is one transaction."""
from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kernels import feature_layout as fl
from kernels import features as kf

from ..contact.quiet_hours import utc_offset_min
from ..interfaces import UserEraser
from ..store import Store, keys, outbox, scan, sweep
from ..store.damaged import DAMAGED, UNREADABLE, decode_each, read_each
from ..store.table import Table
from ..validation import STOP_MARK, stop_sent
from . import seen
from .codec import checked_parts, decode_meta, decode_states, join_state, update_records
from .damage import (
    CHANGE,
    EVENT,
    META,
    PRIOR,
    READ,
    RECOMMEND,
    STATE,
    report_count,
    report_damaged,
    report_found,
)
from .errors import ErasedSince, ProfileDamaged
from .events import TrackedEvent
from .records import EventRecords, event_type, event_user
from .schema import CHANNELS, EVENT_TYPES
from .tombstones import LATE_KEPT

_UNSUBSCRIBE = EVENT_TYPES.index("unsubscribe")

__all__ = ["ProfileRepository", "IngestResult"]


@dataclass
class IngestResult:
    accepted: list[int]
    duplicates: list[int]
    erased: list[int] = field(default_factory=list)
    """Events from before their user's erasure, refused (`Tombstones.judged`)."""
    taken: list[int] = field(default_factory=list)
    """Events whose id an event of another user holds (in the store or earlier in the batch),
    refused: no re-send, since a re-send keeps its user (`_fresh`)."""
    erased_why: list[str] = field(default_factory=list)
    """Why each of `erased` was refused, as judged in the write (`Tombstones.judged`:
    "since", "replay" or "window"; "absent": `_absent`; "damaged": its user's profile record
    does not open or decode, `_refuse_damaged`)."""
    applied: dict[bytes, object] = field(default_factory=dict)
    """{outbox entry key: what its listener's `in_write` gave} of the entries whose effects
    were applied in the write (`write_events`' `in_write`) rather than stored."""


_UNSEEN = object()
_ZONES_KEPT = 50_000
"""Meta records whose zone `ProfileRepository._zones` remembers (by a 16-byte digest of their
stored bytes: a few MB)."""
_BEFORE_EVERY_ERASURE = sys.float_info.min
"""A change's date (> 0: dated) at or before every erasure: `_brings_back`."""


class ProfileRepository:
    def __init__(self, store: Store, layout: fl.FeatureLayout, before_erasure=None,
                 seen_items: int = 0, seen_types=seen.SEEN_TYPES, seen_first=(),
                 unsubscribe=None, zone_of=None, mark_erased=None):
        """`before_erasure(txn, user_ids, ts, dedupe_keys=None)`: (index, why) of the events
        to refuse because their user was erased after them (`Tombstones.judged`; None: no
        check); `mark_erased(txn,
        user_id, events_until)`: writes the user's tombstone in the erasure's last transaction,
        `events_until` the time of the latest event erased (`Tombstones.erase_user`; None: no
        tombstone); `seen_items`: the
        most items a live seen-set keeps (`Limits.seen_items`; 0: no bound); `seen_types`: the
        event types that enter it (`seen.SEEN_TYPES`); `seen_first`: those whose items it keeps
        first when full (excluded for good); `unsubscribe(meta, channel, ts, marked)`: the change an
        unsubscribe event makes to its user's meta record, in the transaction that stores it
        (None: none); `zone_of(meta)`: the user's time zone (`ZoneInfo`) from their meta record
        or None, in whose local time the hour-of-week features bin their events (None: UTC)."""
        self.store = store
        self.layout = layout
        self._before_erasure = before_erasure
        self._mark_erased = mark_erased
        self._unsubscribe = unsubscribe
        self._zone_of = zone_of
        self._zone_by_record: dict[bytes, object] = {}
        self._seen_items = seen_items
        self._seen_kept = seen.type_mask(seen_types)
        self._seen_first = seen.type_bits(seen_first)
        self._profiles, self._events = store.table("profiles"), store.table("events")
        self._dedupe, self._meta = store.table("dedupe"), store.table("meta")
        self._outbox = store.table("outbox")
        self._user_tables = [store.table(t) for t in keys.USER_TABLES]

    # -- writes ----------------------------------------------------------------------------
    def ingest(self, events: Sequence[TrackedEvent], categories: Sequence[str | None]) -> IngestResult:
        """Store valid events in one transaction: dedupe, raw events, feature updates."""
        return self.write_events(EventRecords.build(events, categories))

    def write_events(self, records: EventRecords,
                     in_write: Mapping[bytes, object] | None = None) -> IngestResult:
        """Store prepared records in one transaction; indices refer to `records`. `in_write`:
        {listener tag: `in_write(txn, pairs, entry)`} of the listeners that apply their
        effects in this transaction instead of an outbox entry (`_effects`)."""
        records.users()  # outside the write lock
        return self.store.write(lambda txn: self._ingest(txn, records, in_write or {}))

    def _ingest(self, txn, records: EventRecords, in_write: Mapping) -> IngestResult:
        late = (self._before_erasure(txn, records.user_ids, records.ts, records.dedupe_keys)
                if self._before_erasure is not None else [])
        if True in records.stored_only:
            late = self._absent(txn, records, late)
        while True:
            try:
                return self._ingest_judged(txn, records, late, in_write)
            except _DamagedUsers as err:  # (nothing written yet: judged, and again)
                late = sorted({**dict(late), **{i: "damaged" for i in err.at}}.items())

    def _ingest_judged(self, txn, records: EventRecords, late: list[tuple[int, str]],
                       in_write: Mapping) -> IngestResult:
        """`_ingest` of `records` but those of `late` (index, why: refused)."""
        if not late:
            return self._ingest_fresh(txn, records, in_write)
        gone = {i for i, _ in late}
        keep = [i for i in range(len(records)) if i not in gone]
        try:
            part = (self._ingest_fresh(txn, records.take(keep), in_write) if keep
                    else IngestResult([], []))
        except _DamagedUsers as err:
            err.at = [keep[j] for j in err.at]
            raise
        return IngestResult([keep[i] for i in part.accepted], [keep[i] for i in part.duplicates],
                            [i for i, _ in late], [keep[i] for i in part.taken],
                            erased_why=[why for _, why in late], applied=part.applied)

    def _absent(self, txn, records: EventRecords, late: list) -> list[tuple[int, str]]:
        """`late` (index, why) with the events to be stored only if their user's profile is
        (`TrackedEvent.stored_only`) whose user has none in `txn`, judged "absent": no profile
        is made under such an id."""
        judged = dict(late)
        for i, only in enumerate(records.stored_only):
            if only and i not in judged and not self._present(txn, records.user_ids[i]):
                judged[i] = "absent"
        return sorted(judged.items())

    def _ingest_fresh(self, txn, records: EventRecords, in_write: Mapping) -> IngestResult:
        fresh, dups, taken = _fresh(records.dedupe_keys, records.event_keys,
                                    self._dedupe.present(txn, records.dedupe_keys))
        if not fresh:
            return IngestResult([], dups, taken=taken)
        new = records if len(fresh) == len(records) else records.take(fresh)
        users, fkeys, rows = new.users()
        olds = self._state_reads(txn, fkeys)
        zones = self._zones(txn, new.user_tokens()) if self._zone_of is not None else None
        _refuse_damaged(users, (new.user_ids, fresh), olds, zones)
        batch = kf.Events(type=new.type, channel=new.channel, ts=new.ts, item=new.item,
                          category=self._category_codes(txn, new.categories), value=new.value,
                          tz_offset_min=self._tz_offsets(new, zones))
        old_states = [p[0] if p else None for p in olds]
        old_seens = [p[1] if p else None for p in olds]
        try:
            states = update_records(self.layout, old_states, rows, batch)
        except ValueError:  # a plain state that does not decode: its user's events refused
            _refuse_damaged(users, (new.user_ids, fresh), self._decoded(olds))
            raise
        seens = seen.merge_updates(dict(zip(users, old_seens)), new.user_ids, new.item,
                                   new.type, new.ts, self._seen_items, self._seen_kept,
                                   self._seen_first)
        self._profiles.put_many(txn, [(k, join_state(st, seens.get(u, old)))
                                      for k, st, u, old in zip(fkeys, states, users, old_seens)])
        self._events.put_many(txn, list(zip(new.event_keys, new.payloads)))
        self._dedupe.put_many(txn, list(zip(new.dedupe_keys, new.event_keys)))
        if self._unsubscribe is not None and _UNSUBSCRIBE in new.type:
            self._unsubscribed(txn, new)
        applied = self._effects(txn, new, in_write) if any(new.outbox) else {}
        return IngestResult(fresh, dups, taken=taken, applied=applied)

    def _effects(self, txn, new: EventRecords, in_write: Mapping) -> dict[bytes, object]:
        """The outbox entries of the new events' batches (`server.profiles.outbox`): one per
        entry key their `outbox` column names (a batch's, per listener), naming those of its
        events that are new; but a listener in `in_write` (by tag) applies its effects here,
        in this transaction, and its entry is written only if that failed (None). {entry:
        what each applied gave}."""
        named: dict[bytes, list[int]] = {}
        for i, entries in enumerate(new.outbox):
            for entry in entries:
                named.setdefault(entry, []).append(i)
        stored, applied = [], {}
        for entry, mine in named.items():
            apply = in_write.get(keys.outbox_parts(entry)[1]) if in_write else None
            if apply is not None:
                done = apply(txn, [(new.events[i], new.event_keys[i]) for i in mine], entry)
                if done is not None:
                    applied[entry] = done
                    continue
            stored.append((entry, outbox.value([new.event_keys[i] for i in mine])))
        if stored:
            self._outbox.put_many(txn, stored)
        return applied

    def _tz_offsets(self, new: EventRecords, zones: list | None) -> np.ndarray | None:
        """Each event's UTC offset in minutes at its time in its user's zone (`zones`, by
        user: `_zones`, `zone_of` of their meta record: the `timezone` attribute, else the
        default), so the hour-of-week features, the send-time model and its population prior
        read local hours. None when every user's zone is UTC, the offsets are all 0 (or
        without `zone_of`)."""
        if zones is None:
            return None
        offsets = np.zeros(len(new), np.int32)  # always given: a state keeps its last offset
        if all(z is None for z in zones):  # (a user gone back to UTC is binned in UTC again)
            return offsets
        _, _, rows = new.users()
        known = {}
        for i, (row, ts) in enumerate(zip(rows, new.ts)):
            zone = zones[row]
            if zone is not None:  # offsets change at quarter hours at most (DST, zone history)
                at = (zone, int(ts // 900))
                off = known.get(at)
                if off is None:
                    off = known[at] = utc_offset_min(zone, ts)
                offsets[i] = off
        return offsets

    def _zones(self, txn, tokens: Sequence[bytes]) -> list:
        """`zone_of` the meta record of each user (by token), remembered by a digest of the
        record's stored bytes (a changed record, resealed, is read again; no record, personal
        data included, is kept): a batch opens and parses only the records it has not met.
        `DAMAGED` for a record that does not open or decode."""
        meta_keys = keys.profile_meta_keys_of(tokens)
        known, out, default = self._zone_by_record, [], _UNSEEN
        for key, raw in zip(meta_keys, self._profiles.stored(txn, meta_keys)):
            if raw is None:  # (most users of a batch: `zone_of(None)` once)
                if default is _UNSEEN:
                    default = self._zone_of(None)
                out.append(default)
                continue
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            zone = known.get(digest, _UNSEEN)
            if zone is _UNSEEN:
                (meta,) = self._meta_reads(txn, [key], [raw])
                if meta is DAMAGED:
                    out.append(DAMAGED)
                    continue
                zone = self._zone_of(meta)
                if len(known) >= _ZONES_KEPT:
                    known.clear()
                known[digest] = zone
            out.append(zone)
        return out

    def _unsubscribed(self, txn, new: EventRecords) -> None:
        """Apply the new unsubscribe events to their users' meta records (consent), in the
        transaction that stores them: an event is never stored without its opt-out. `marked`:
        the event carries the server's STOP mark (`validation.STOP_MARK`); `sent`: when the
        text its 21610 reported went (`validation.stop_sent`)."""
        for i in [i for i, t in enumerate(new.type) if t == _UNSUBSCRIBE]:
            attributes = new.events[i].attributes
            self._change_meta(txn, new.user_ids[i], functools.partial(
                self._unsubscribe, channel=CHANNELS[new.channel[i]], ts=new.ts[i],
                marked=STOP_MARK in attributes, sent=stop_sent(attributes)))

    def _category_codes(self, txn, names: Sequence[str | None]) -> list[int]:
        """Stable codes per category name, assigned on first sight (-1 past the layout's K)."""
        if not any(names):
            return [-1] * len(names)
        meta, codes, cache = self._meta, [], {}
        for name in names:
            if not name:
                codes.append(-1)
                continue
            if name not in cache:
                raw = meta.get(txn, keys.category_key(name))
                if raw is None:
                    n = int(meta.get(txn, keys.CATEGORY_COUNT) or b"0")
                    code = n if n < self.layout.n_categories else -1
                    if code >= 0:
                        meta.put(txn, keys.category_key(name), str(code).encode())
                        meta.put(txn, keys.CATEGORY_COUNT, str(n + 1).encode())
                    cache[name] = code
                else:
                    cache[name] = int(raw)
            codes.append(cache[name])
        return codes

    def update_meta(self, user_id: str, change, dated: float = 0.0, what: str = "change",
                    create: bool = True, existing: bool = False, after=None,
                    absent: Exception | None = None) -> dict | None:
        """Read-modify-write the user's meta record with `change(meta)` in one transaction (an
        exception from `change` aborts it: nothing is written). A change that would bring an
        erased user back is refused (`ErasedSince`, `_brings_back`), checked in the same
        transaction, so no erasure commits in between. Not `create`: a user with no meta
        record is left without one (None). `absent`: raised, nothing written, when the user has
        no profile (meta record or feature state) in this transaction: none is made (an id
        only a profile stored before may hold). `after(txn)`: run in the same transaction once
        the record is written (not when none is)."""
        def fn(txn):
            if absent is not None and not self._present(txn, user_id):
                raise absent
            if self._brings_back(txn, user_id, dated, existing):
                raise ErasedSince(what)
            meta = self._change_meta(txn, user_id, change, create)
            if meta is not None and after is not None:
                after(txn)
            return meta
        return self.store.write(fn)

    def update_metas(self, user_ids: Sequence[str], change, dated: float = 0.0,
                     existing: bool = False, keep=None) -> list[str]:
        """`update_meta` of each of `user_ids` with `change(meta)`, all in one transaction;
        a user it would bring back (`_brings_back`) is skipped, and so is one whose record
        `keep(meta)` says to leave as is (read in this transaction: a change committed after
        the caller chose the users counts); one whose record does not open or decode is
        skipped too, left as it is (reported). The users changed."""
        def fn(txn):
            damaged: list[str] = []
            changed = [user_id for user_id in user_ids
                       if not self._brings_back(txn, user_id, dated, existing)
                       and _unless_damaged(damaged, user_id, lambda u: self._change_meta(
                           txn, u, change, keep=keep)) is not None]
            report_damaged(damaged, META, CHANGE)
            return changed
        return self.store.write(fn)

    def update_unnamed_metas(self, tokens: Sequence[bytes], change, still,
                             keep=None) -> list[bytes]:
        """`update_metas` of profiles known by their token alone (an unnamed address index
        entry: `server.messages.phones`), all in one transaction: each one whose meta record
        exists and `still(txn, token)` is true (its entry is there: an erasure drops it with
        the profile, so no erased user is changed), unless `keep(meta)`, or its record does
        not open or decode (left as it is, counted). The tokens changed."""
        def fn(txn):
            damaged: list[bytes] = []
            changed = [token for token in tokens if still(txn, token) and _unless_damaged(
                damaged, token, lambda t: self._change_meta_at(
                    txn, t + keys.PROFILE_META_SUFFIX, change, create=False,
                    keep=keep)) is not None]
            if damaged:
                report_count(len(damaged), META, CHANGE)
            return changed
        return self.store.write(fn)

    def _brings_back(self, txn, user_id: str, dated: float, existing: bool) -> bool:
        """Whether a change of the user's profile in `txn` would bring back an erased user: it
        is `dated` (> 0) at or before their erasure, as a late event is; or it is meant for an
        `existing` profile only (an undated one-click opt-out) and the user, erased at any
        time, has no profile since."""
        if self._before_erasure is None:
            return False
        if existing and not self._present(txn, user_id):
            dated = _BEFORE_EVERY_ERASURE  # no profile: an erasure at any time counts
        return bool(dated) and bool(self._before_erasure(txn, [user_id], [dated]))

    def _present(self, txn, user_id: str) -> bool:
        """Whether the user has a profile in `txn`: a meta record or a feature state (one
        that does not open, damaged, too: its own reads refuse it)."""
        try:
            return bool(self._profiles.present(
                txn, [keys.profile_meta_key(user_id), keys.feature_key(user_id)]))
        except UNREADABLE:  # (sealed: `present` opens the records, to leave out a shredded one)
            return True

    def _change_meta(self, txn, user_id: str, change, create: bool = True,
                     keep=None) -> dict | None:
        """`update_meta` in the caller's write transaction `txn`; None, nothing written: no
        record and not `create`, or `keep(meta)` (None: no record) is true."""
        return self._change_meta_at(txn, keys.profile_meta_key(user_id), change, create, keep)

    def _change_meta_at(self, txn, key: bytes, change, create: bool = True,
                        keep=None) -> dict | None:
        """`_change_meta` of the meta record under `key`."""
        (meta,) = self._meta_reads(txn, [key])
        if meta is DAMAGED:
            raise ProfileDamaged(META)
        if meta is None and not create:
            return None
        if keep is not None and keep(meta):
            return None
        if meta is None:
            meta = {"attributes": {}, "consent": {}, "created_at": time.time()}
        change(meta)
        meta["updated_at"] = time.time()
        self._profiles.put(txn, key, json.dumps(meta, sort_keys=True).encode())
        return meta

    ERASE_CHUNK = 128
    """Events deleted per transaction before the final erasure transaction (`delete_user`)."""

    def delete_user(self, user_id: str, erasers: Sequence[UserEraser] = ()) -> int:
        """`erase`: the records removed."""
        return self.erase(user_id, erasers)[0]

    def erase(self, user_id: str, erasers: Sequence[UserEraser] = ()) -> tuple[int, float]:
        """(records removed, the user's erasure time: `mark_erased`'s, 0.0 without it).

        Erase every record keyed by the user (in `keys.USER_TABLES`) and its events' dedupe
        keys; `erasers` drop the records that mention the user elsewhere, in the last
        transaction, which also writes the tombstone (`mark_erased`) and destroys the user's
        data key (`Store.shred`).

        Erasers with an `erase_ahead` (`UserEraser`) delete theirs first, then the events go,
        `ERASE_CHUNK` per transaction: their dedupe keys are keyed hashes
        spread over the whole dedupe table, so deleting thousands in one transaction copies as
        many pages, more than a full store's erasure reserve holds; each commit frees its pages
        for the next. A failure in between leaves fewer events and the erasure still to do
        (asked again, it goes on where it stopped). The tombstone gets the time of the latest
        event erased (the client's clock, which may run ahead of the server's): a retry of it
        is refused as a late event (`Tombstones.before_erasure`), whatever the erasure's time.
        Erasers with an `after_erasure` hear of it once the last transaction has committed."""
        prefix = keys.user_prefix(user_id)
        removed, latest, erased_at = 0, [0], [0.0]
        newest_erased = collections.deque(maxlen=LATE_KEPT + 1)  # (ms, event token)
        for eraser in erasers:  # many records (a shared id's impressions): bounded transactions
            if (ahead := getattr(eraser, "erase_ahead", None)) is not None:
                removed += ahead(user_id)
        while True:
            n = self.store.write(lambda txn: self._drop_user_events(txn, prefix, latest,
                                                                     newest_erased),
                                 erasure=True)
            removed += n
            if n < 2 * self.ERASE_CHUNK:  # an event and its dedupe key each
                break

        def fn(txn):
            gone = 0
            for eraser in erasers:
                gone += eraser.erase_user(txn, user_id)
            # Events committed since the last chunk (by the ingestion) go with their dedupe
            # keys too: `delete_prefix` below would leave those keys for good.
            newest, late = list(latest), newest_erased.copy()  # (its own, for a rerun)
            while n := self._drop_user_events(txn, prefix, newest, late):
                gone += n
            for table in self._user_tables:
                gone += table.delete_prefix(txn, prefix)
            # Entries of batches committed since `Profiles.delete` replayed them stop naming
            # the user's events (gone above): their effects go unapplied, as their events.
            outbox.forget(txn, self._outbox, prefix)
            if self._mark_erased is not None:  # (the ms is truncated: up to its end)
                erased_at[0] = self._mark_erased(
                    txn, user_id, (newest[0] + 1) / 1000 if newest[0] else 0.0,
                    found=bool(removed or gone), ahead=late)
            self.store.shred(txn, user_id)  # last: erasers above may read the user's records
            return gone
        removed += self.store.write(fn, erasure=True)
        for eraser in erasers:  # committed: no reader that begins now finds the user
            if (after := getattr(eraser, "after_erasure", None)) is not None:
                after(user_id)
        return removed, erased_at[0]

    def _drop_user_events(self, txn, prefix: bytes, latest: list[int],
                          newest: collections.deque) -> int:
        """Up to `ERASE_CHUNK` of the user's events with their dedupe keys; records deleted.
        `latest[0]` becomes the latest event time (ms) deleted, if later; (ms, event token) of
        each goes to `newest` (a deque of `LATE_KEPT` + 1: the newest erased), so the
        tombstone can refuse replays of those stamped after the erasure (a clock ahead)."""
        mine = itertools.takewhile(lambda k: k.startswith(prefix), self._events.keys_from(txn, prefix))
        doomed = list(itertools.islice(mine, self.ERASE_CHUNK))
        removed = 0
        for key in doomed:  # (time order: the deque keeps the newest)
            _, ms, token = keys.event_parts(key)
            newest.append((int(ms), token))
            removed += self._dedupe.delete(txn, keys.dedupe_key_of_event(key))
            removed += self._events.delete(txn, key)
        if doomed:  # keys in time order: the chunk's last is its latest
            latest[0] = max(latest[0], int(keys.event_parts(doomed[-1])[1]))
        return removed

    def drop_events_before(self, cutoff: float, batch: int | None = None,
                           by_type: Mapping[str, float] | None = None) -> int:
        """Retention: delete raw events (and their dedupe keys) older than `cutoff`, or than
        `by_type[type]` for the types it lists (an event's type is read only when its time
        falls between the earliest and the latest of the cutoffs; each >= 0: `server.retention`).
        The events are walked in read snapshots of `batch` keys (None: the store's
        `sweep_pace`), each one's expired events deleted in short write transactions
        (`store.sweep`), so ingestion is never held up for a walk of every event."""
        limits = {t: keys.ms_part(c) for t, c in (by_type or {}).items()}
        default = keys.ms_part(cutoff)
        bounds = [default, *limits.values()]
        lo, hi = min(bounds), max(bounds)
        events = self._events

        def expired(txn, key: bytes) -> bytes | None:
            ms = keys.event_parts(key)[1]
            if ms < lo:
                return key
            if ms >= hi:
                return None
            raw = events.get(txn, key)  # None: its user's data key is gone (erased)
            return key if raw is not None and ms < limits.get(event_type(raw), default) else None

        return sweep(self.store, events, expired, self._drop_keys, chunk=batch)

    def _drop_keys(self, txn, doomed: list[bytes]) -> int:
        dropped = 0
        for key in doomed:
            if self._events.delete(txn, key):
                dropped += 1
                self._dedupe.delete(txn, keys.dedupe_key_of_event(key))
        return dropped

    # -- reads -----------------------------------------------------------------------------
    def read(self, user_id: str, max_events: int = 0, with_events: bool = True,
             max_bytes: int = 0):
        """(state or None, meta dict or None, [raw event bytes newest first, the newest
        `max_events` if > 0, those of at most `max_bytes` stored bytes if > 0 (one at least)])
        in one snapshot; no events (an empty list) unless `with_events`. Older events than
        those asked for are not read (a walk back from the newest)."""
        prefix = keys.user_prefix(user_id)
        with self.store.read() as txn:
            state, meta = self._profile_of(txn, user_id)
            if not with_events:
                events = []
            elif max_events or max_bytes:
                events = [v for _, v in self._events.scan_prefix_last(
                    txn, prefix, max_events or sys.maxsize, max_bytes)]
            else:
                events = [v for _, v in self._events.scan_prefix(txn, prefix)][::-1]  # newest first
        return state, meta, events

    def read_page(self, user_id: str, skip: int, most: int, max_bytes: int):
        """`read` for the access export, which pages the events: (state, meta, [raw events
        newest first from the `skip`th: at most `most` of at most `max_bytes` bytes, one at
        least], how many events are held) in one snapshot. Keys only are walked past the
        page; its own events alone are read (and opened)."""
        prefix = keys.user_prefix(user_id)
        page, size, held = [], 0, 0
        with self.store.read() as txn:
            state, meta = self._profile_of(txn, user_id)
            for key in self._events.keys_back(txn, prefix):
                held += 1
                if held <= skip or len(page) == most or (page and size > max_bytes):
                    continue
                raw = self._events.get(txn, key)
                if raw is None:  # (its user's data key gone: not theirs to list)
                    held -= 1
                    continue
                size += len(raw)
                if not page or size <= max_bytes:
                    page.append(raw)
        return state, meta, page, held

    def _profile_of(self, txn, user_id: str) -> tuple[np.ndarray | None, dict | None]:
        """(feature state, meta dict) of one user (None where there is none); `ProfileDamaged`
        naming each record that does not open or decode (reported)."""
        (state,) = self._decoded(self._state_reads(txn, [keys.feature_key(user_id)]))
        (meta,) = self._meta_reads(txn, [keys.profile_meta_key(user_id)])
        _raise_damaged([user_id], [(state, meta)], READ)
        return state, meta

    def recorded_at(self, event_id: str) -> float | None:
        """The time of the event stored under `event_id`, the end of its millisecond (its
        idempotency entry names its events key, which holds it truncated to the ms: the end
        is no earlier than the time given); None when none is (never recorded, or erased or
        retained out since)."""
        with self.store.read() as txn:
            key = self._dedupe.get(txn, keys.dedupe_key(event_id))
        return None if key is None else (int(keys.event_parts(key)[1]) + 1) / 1000

    def metas(self, user_ids: Sequence[str], use: str = READ) -> list[dict | None]:
        """Meta records of many users in one snapshot (None where there is none);
        `ProfileDamaged` if one does not open or decode (reported, read for `use`:
        `damage.USES`)."""
        try:
            return self.metas_at([keys.profile_meta_key(u) for u in user_ids])
        except ProfileDamaged as err:
            report_found(err.found, user_ids, use)
            raise

    def metas_at(self, meta_keys: Sequence[bytes]) -> list[dict | None]:
        """`metas` of the records under `meta_keys`; `ProfileDamaged` if one does not open or
        decode."""
        with self.store.read() as txn:
            metas = self._meta_reads(txn, meta_keys)
        if _any_damaged(metas):
            _raise_damaged((), [(None, m) for m in metas])
        return metas

    def _meta_reads(self, txn, meta_keys: Sequence[bytes],
                    stored: list[bytes | None] | None = None) -> list:
        """The meta dict of each record under `meta_keys` (None: none; `DAMAGED`: it does not
        open or decode), read in `txn` or opened from `stored`, as stored
        (`store.damaged.read_each`)."""
        return read_each(self._profiles, txn, meta_keys, decode_meta, stored)

    def _state_reads(self, txn, feature_keys: Sequence[bytes]) -> list:
        """(feature state record, seen record or None) of each profile state record under
        `feature_keys` (None: none; `DAMAGED`: it does not open, or its parts are cut:
        `codec.checked_parts`)."""
        return read_each(self._profiles, txn, feature_keys, checked_parts)

    def category_names(self) -> dict[int, str]:
        """Every assigned category code with its name (`_category_codes` assigns them)."""
        prefix = keys.CATEGORY_PREFIX
        with self.store.read() as txn:
            found = self._meta.scan_prefix(txn, prefix)
        return {int(code): key[len(prefix):].decode() for key, code in found}

    def states(self, user_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Feature states for many users in one snapshot (None where there is none, or where
        it does not open or decode: reported, read for Recommend)."""
        return self._live(user_ids)[1]

    def states_and_seen(self, user_ids: Sequence[str]
                        ) -> list[tuple[np.ndarray | None, seen.SeenSet | None]]:
        """(feature state, live seen-set) of many users from one snapshot, each record read and
        opened once (Recommend's reads; None where there is no profile). The seen-set holds every
        item the user had an event on (live, uncapped); a profile older than seen-sets gets its
        recent items, of unknown type. A profile whose state record does not open or decode
        is served as none (reported: the user is recommended to without their live events)."""
        parts, states = self._live(user_ids)
        return list(zip(states, map(self._seen, parts, states)))

    def _live(self, user_ids: Sequence[str]) -> tuple[list, list]:
        """(`_state_reads`, the feature states) of the users from one snapshot, each damaged
        one's None (reported)."""
        with self.store.read() as txn:
            parts = self._state_reads(txn, [keys.feature_key(u) for u in user_ids])
        states = self._decoded(parts)
        if _any_damaged(states):
            bad = [i for i, st in enumerate(states) if st is DAMAGED]
            report_damaged([user_ids[i] for i in bad], STATE, RECOMMEND)
            for i in bad:
                parts[i] = states[i] = None
        return parts, states

    def _decoded(self, parts: Sequence) -> list:
        """The feature state of each profile state record's parts (`_state_reads`: None
        where there is none; `DAMAGED` where it does not open or decode), decoded together,
        or each alone when that fails."""
        found = [i for i, p in enumerate(parts) if p is not None and p is not DAMAGED]
        out: list = [p if p is DAMAGED else None for p in parts]
        if found:  # decoding costs even with nothing to decode (Recommend's bundle-only users)
            states = decode_each([parts[i][0] for i in found],
                                 lambda records: list(decode_states(self.layout, records)),
                                 lambda record: decode_states(self.layout, [record])[0])
            for i, state in zip(found, states):
                out[i] = state
        return out

    def sample_states(self, limit: int, start: bytes = b"") -> tuple[np.ndarray, bytes]:
        """Up to `limit` feature states in key order from the first key >= `start` (one
        snapshot), and the key to start the next sample from (b"" after the last profile), so
        successive samples walk the whole store round-robin. A state that does not open or
        decode is left out (counted, logged by number: the keys hold no user id)."""
        suffix, found, stored, after = keys.FEATURES_SUFFIX, [], [], b""
        with self.store.read() as txn:
            for key, value in Table.items(self._profiles, txn, start):  # (as stored: opened
                if len(found) == limit:                                   # below, each batch)
                    after = bytes(key)
                    break
                if key.endswith(suffix):
                    found.append(bytes(key))
                    stored.append(bytes(value))
            parts = read_each(self._profiles, txn, found, checked_parts, stored)
        records = [p[0] for p in parts if p is not None and p is not DAMAGED]
        try:
            states = decode_states(self.layout, records)
        except ValueError:  # (a plain one that does not decode: found alone)
            decoded = self._decoded([(r, None) for r in records])
            records = [r for r, st in zip(records, decoded) if st is not DAMAGED]
            states = decode_states(self.layout, records)
        if (damaged := len(parts) - parts.count(None) - len(records)):
            report_count(damaged, STATE, PRIOR)
        return states, after

    def states_and_meta(self, user_ids: Sequence[str], with_states: bool = True, txn=None,
                        with_seen: bool = False, with_stored: bool = False) -> list[tuple]:
        """(feature state, meta dict) of many users in one snapshot, the caller's `txn` or a
        new one (None where there is none; no states read unless `with_states`); with
        `with_seen` (and `with_states`), (state, meta, live seen-set as `states_and_seen` has it);
        with `with_stored`, the meta record's bytes as stored (sealed or not; None for none)
        last, from the same read (the contact policy's stamp: `campaigns.recheck`).
        `ProfileDamaged` when a record read does not open or decode, with the batch as read
        (`ProfileDamaged.read`: those records None) for a caller that goes on without them."""
        if with_seen and not with_states:
            raise ValueError("with_seen: the seen-sets are read with the states (with_states)")
        if txn is None:
            with self.store.read() as txn:
                return self.states_and_meta(user_ids, with_states, txn, with_seen, with_stored)
        raws = (self._state_reads(txn, [keys.feature_key(u) for u in user_ids])
                if with_states else [None] * len(user_ids))
        meta_keys = [keys.profile_meta_key(u) for u in user_ids]
        stored = self._profiles.stored(txn, meta_keys)
        metas = self._meta_reads(txn, meta_keys, stored)
        states = self._decoded(raws)  # nothing to decode (None) on the contact path: free
        damaged = _any_damaged(states) or _any_damaged(metas)
        if damaged:  # (blanked: read as without a profile, for `ProfileDamaged.read`)
            raws = [None if s is DAMAGED else r for r, s in zip(raws, states)]
        parts = [states, metas]
        if with_seen:
            parts.append(list(map(self._seen, raws, states)))
        if with_stored:
            parts.append(stored)
        read = list(zip(*parts))
        if damaged:  # (reported by the caller that catches it)
            _raise_damaged(user_ids, read)
        return read

    def _seen(self, parts, state: np.ndarray | None = None) -> seen.SeenSet | None:
        """The live seen-set of a profile state record's parts (`_state_reads`; `state`: its
        feature state, if decoded already)."""
        if not parts or state is DAMAGED:
            return None
        packed, part = parts
        if part is not None:
            return seen.decode(part)
        if state is None:
            state = decode_states(self.layout, [packed])[0]
        v, n = self.layout.views(state), int(state[fl.N_RECENT])
        return seen.from_recent(v["rc_item"][:n].astype(np.int64), v["rc_ts"][:n])

    def user_ids(self, chunk: int = 10_000) -> list[str]:
        """The id of every user with a stored event. Store keys hold only keyed hashes of ids
        (`store.tokens`), so each id is read from the user's first event, found by a seek past
        the user's other events (one value read and opened per user, never one per event), in
        read snapshots of `chunk` users (none held open for the whole table)."""
        out, start = [], b""
        while True:
            firsts: list[bytes] = []
            with self.store.read() as txn:
                while len(firsts) < chunk:
                    key = self._events.first_key(txn, start)
                    if key is None:
                        break
                    firsts.append(key)
                    start = key[:key.index(keys.SEP)] + _PAST_USER
                values = self._events.get_many(txn, firsts)
            out += [event_user(bytes(v)) for v in values if v is not None]  # None: shredded
            if len(firsts) < chunk:
                return out

    def export(self, start: float = 0.0, end: float = 0.0, check=None) -> Iterator[list[bytes]]:
        """Raw event bytes with start <= ts <= end (0 = unbounded), user by user, one list per
        read snapshot of `_CHECK_EVERY` keys (`store.scan`: none held open between two; empty
        lists too). Every stored event's key is read (the keys are by user, then time), and only
        the values in the range are read and opened: take each list in a thread. `check()`,
        when given, runs before each snapshot and may raise to stop the scan (a deadline),
        whether or not any event falls in the range."""
        lo, hi = keys.ms_part(start), keys.ms_part(end) if end else keys.MS_MAX

        def in_range(txn, key: bytes) -> bytes | None:
            return key if lo <= keys.event_parts(key)[1] <= hi else None

        def values(txn, picked: list[bytes]) -> list[bytes]:
            return [v for v in self._events.get_many(txn, picked) if v is not None]  # shredded
        chunks = scan(self.store, self._events, in_range, chunk=_CHECK_EVERY, finish=values)
        while True:
            if check is not None:
                check()
            chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk


class _DamagedUsers(Exception):
    """Users of an ingestion's batch whose profile records do not open or decode: refused
    before anything is written (`ProfileRepository._ingest`). `at`: the indices of their new
    events in the batch (not their re-sent ones: those stay duplicates)."""

    def __init__(self, users: set[str], at: list[int]):
        super().__init__(f"{len(users)} damaged profile(s)")
        self.users, self.at = users, at


def _refuse_damaged(users: Sequence[str], fresh: tuple[Sequence[str], Sequence[int]],
                    *reads: Sequence | None) -> None:
    """Report and raise `_DamagedUsers` for the users of a batch (`users`, in the order of
    each of `reads`, by record: the feature states', `STATE`, then the meta records', `META`;
    None: not read) any of whose records is `DAMAGED`; `fresh`: (the user of each new event,
    its index in the batch)."""
    bad: set[str] = set()
    for record, read in zip((STATE, META), reads):
        found = [u for u, r in zip(users, read or ()) if r is DAMAGED and u not in bad]
        report_damaged(found, record, EVENT)
        bad.update(found)
    if bad:
        raise _DamagedUsers(bad, [i for u, i in zip(*fresh) if u in bad])


def _raise_damaged(user_ids: Sequence[str], read: list, use: str | None = None) -> None:
    """`ProfileDamaged` for the users of `user_ids` whose rows of `read` (state, meta, ...)
    hold a `DAMAGED` record, those records blanked in `read` (None: as without one), reported
    if `use` is given (else the caller that catches it reports: `damage.report_found`); none:
    nothing."""
    found = tuple((i, record) for record, at in ((STATE, 0), (META, 1))
                  for i, row in enumerate(read) if row[at] is DAMAGED)
    if not found:
        return
    if use is not None:
        report_found(found, user_ids, use)
    damaged = tuple(sorted({i for i, _ in found}))
    for i in damaged:
        read[i] = tuple(None if v is DAMAGED else v for v in read[i])
    raise ProfileDamaged(", ".join(dict.fromkeys(r for _, r in found)), read, damaged, found)


def _unless_damaged(damaged: list, who, change):
    """`change(who)`, or None, `who` added to `damaged`, when its record is damaged
    (`ProfileDamaged`: raised before anything is written)."""
    try:
        return change(who)
    except ProfileDamaged:
        damaged.append(who)
        return None


def _any_damaged(values: Sequence) -> bool:
    """Whether any of `values` is `DAMAGED` (by identity: `in` compares arrays)."""
    return any(v is DAMAGED for v in values)


_PAST_USER = bytes([keys.SEP[0] + 1])
"""After a user token: a key past every events key of that user (`<token>␟...`) and before the
next user's."""
_CHECK_EVERY = 4096  # keys `ProfileRepository.export` scans in a snapshot, between two checks


def _fresh(dedupe: list[bytes], events: list[bytes], known: list[tuple[bytes, bytes]]
           ) -> tuple[list[int], list[int], list[int]]:
    """(indices of first sightings of unknown ids, of repeats of an id by the user whose
    event holds it, of ids an event of another user holds), each ascending. `dedupe` and
    `events` are the dedupe and events keys of the batch, `known` the stored (dedupe key,
    events key) pairs among them; an events key starts with its user's token."""
    if not known and len(set(dedupe)) == len(dedupe):
        return list(range(len(dedupe))), [], []
    holder = {k: _user_part(v) for k, v in known}
    fresh, dups, taken = [], [], []
    for i, key in enumerate(dedupe):
        held, user = holder.get(key), _user_part(events[i])
        if held is None:
            holder[key] = user
            fresh.append(i)
        else:
            (dups if held == user else taken).append(i)
    return fresh, dups, taken


def _user_part(event_key: bytes) -> bytes:
    """The user token an events key starts with."""
    return bytes(event_key).partition(keys.SEP)[0]
