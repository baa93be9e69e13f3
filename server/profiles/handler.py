"""Transport-agnostic profile operations; the Recommend path reads live histories from here."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from contract.events import DEFAULT_HALF_LIFE_DAYS
from kernels import feature_layout as fl
from kernels import features as kf

from .. import metrics
from ..batching import AdaptiveBatcher, ThreadRunner
from ..contact.addresses import KINDS as ADDRESS_KINDS
from ..contact.consent import (
    MARKETING,
    PURPOSES,
    closed,
    current_consents,
    event_source,
    opted_in_since,
    record_consent,
    reopenable,
)
from ..contact.quiet_hours import TIMEZONE, local_zone_of, zone
from ..errors import FailedPrecondition, InvalidArgument, NotFound, failure_level
from ..interfaces import (
    AttributeWatcher,
    BundleSource,
    EventListener,
    OptInWatcher,
    UserEraser,
    UserExporter,
)
from ..security.userref import user_ref
from ..store import Store, keys, outbox
from ..validation import (
    STORED_CAMPAIGN_ONLY,
    STORED_ONLY,
    check_address,
    check_count,
    check_id,
    check_key,
    check_known,
    check_not_negative,
    check_source,
    check_stored_id,
    check_text,
    check_time,
    check_window,
    refused_since,
    shown,
    text_problem,
)
from . import damage
from .backfill import backfill_attributes
from .errors import ProfileAttributesFull
from .events import EventRules, TrackedEvent, check_event
from .history import DEFAULT_BLEND, HistoryBlend, unique_histories
from .outbox import REPLAY_AFTER_S, Outbox
from .records import EventRecords
from .repository import IngestResult, ProfileRepository
from .schema import CHANNELS, EVENT_TYPES, ProfileSchema
from .tombstones import Tombstone, Tombstones

__all__ = ["AccessExport", "Profiles", "TrackResult", "ProfileView", "PROFILE_PARTS"]

PROFILE_PARTS = ("attributes", "consent", "features", "recent_items", "events")
"""What GetProfile may be asked for (`Profiles.get` `parts`); none named: all of them."""

logger = logging.getLogger("tailor.profiles")

_KNOWN_TYPES = frozenset(EVENT_TYPES)
"""Event types counted by name in `tailor_events_total` (any other string is 'other')."""


@dataclass
class TrackResult:
    accepted_ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class ProfileView:
    user_id: str
    attributes: dict
    consent: list[dict]
    """Current consent states: {channel, purpose, opted_in, source, timestamp} each."""
    features: dict | None
    recent_items: list[tuple[str, float, float]]
    events: list[bytes]
    created_at: float
    updated_at: float
    category_names: dict[int, str] = field(default_factory=dict)
    """Name of each category code in `features["category_affinity"]`."""
    extra: dict = field(default_factory=dict)
    """Every other entry of the stored meta record, as stored (ExportProfile shows it)."""
    consent_history: list[dict] = field(default_factory=list)
    """Consent changes as they arrived, oldest first (bounded: `Limits.consent_history`)."""


@dataclass
class AccessExport:
    """Everything held about one user (ExportProfile): the profile, if any, and the sections
    other domains add (`UserExporter`)."""

    user_id: str
    profile: ProfileView | None
    sections: dict
    events_held: int
    """Events stored for the user; `profile.events` holds a page of them (`export_view`)."""
    erased_at: float | None
    """When the user was last erased (a tombstone), if ever: they came back after it."""
    events_offset: int = 0
    """Newest events skipped before this page."""
    events_next: int | None = None
    """The offset of the next page; None when this one holds the oldest event."""


ERASED_SINCE = "the user was erased after this event's time (DeleteProfile); it is not stored"
"""The reason a TrackEvents rejection gives for an event from before its user's erasure."""
ERASED_REPLAY = ("this event was erased with its user (DeleteProfile; stamped after the erasure "
                 "by a clock ahead of the server's): a replay of it is not stored")
"""The reason for an event stamped after its user's erasure that the erasure deleted (a client
whose clock runs ahead retrying an acknowledged batch; `Tombstones.before_erasure`)."""
ERASED_WINDOW = ("stamped in the minutes after its user's erasure (DeleteProfile) that held "
                 "events a clock ahead of the server's stamped: it may be a replay of one, and "
                 "is not stored")
"""The reason for an event stamped after its user's erasure, up to the latest event it erased,
when the tombstone keeps no token to tell replays apart (too many, or past the window)."""
ID_TAKEN = ("event_id is the id of another user's event (ids are unique across users; a re-send "
            "of an event names its user): it is not stored")
"""The reason for an event whose id an event of another user holds: not a duplicate (which
would tell the client it was stored before), and not stored."""
PROFILE_DAMAGED = (f"{damage.PROFILE_DAMAGED}: the user's profile record does not open or "
                   "decode; the event is not stored (restore the store from a backup, then "
                   "send it again; or erase the user, after which events dated before the "
                   "erasure, this one among them, are refused: docs/operations.md, \"Damaged "
                   "profile records\")")
"""The reason for an event whose user's feature state or meta record is damaged (reported):
applying it would mean writing over the record, the user's history, with a new one."""
_ERASED_REASONS = {"since": ERASED_SINCE, "replay": ERASED_REPLAY, "window": ERASED_WINDOW,
                   "damaged": PROFILE_DAMAGED}
"""The reason of each judgment of `Tombstones.judged`, made in the ingestion's write (and
"absent", `ProfileRepository._absent`'s: `Profiles._absent`; "damaged", its
`_refuse_damaged`)."""


class Profiles:
    """Implements `ProfileStates` for other domains; `add_listener`/`add_eraser` join theirs."""

    def __init__(self, store: Store, bundles: BundleSource, schema: ProfileSchema = ProfileSchema(),
                 rules: EventRules = EventRules(), history: HistoryBlend = DEFAULT_BLEND,
                 tombstones: Tombstones | None = None, default_zone: str = "UTC"):
        """`default_zone`: the IANA zone of users without a `timezone` attribute, whose local
        hours their events' hour-of-week features count in (`contact_default_timezone`)."""
        self.layout = schema.layout()
        self.repo = ProfileRepository(store, self.layout,
                                      tombstones.judged if tombstones is not None else None,
                                      seen_items=rules.limits.seen_items,
                                      seen_types=rules.seen_types,
                                      seen_first=rules.seen_first,
                                      unsubscribe=self._unsubscribed,
                                      zone_of=local_zone_of(zone("contact_default_timezone",
                                                                 default_zone)),
                                      mark_erased=tombstones.erase_user
                                      if tombstones is not None else None)
        self.bundles = bundles
        self.rules = rules
        self.history = history
        self.limits = rules.limits
        # Concurrent TrackEvents calls share one write transaction (one fsync); streams' read
        # ahead (bulk) goes after them, `stream_commit_events` of it a transaction at most,
        # and not in theirs: a call waits for the stream's transaction running when it comes.
        self._writer = AdaptiveBatcher(ThreadRunner(self._ingest_many, concurrency=1, name="ingest"),
                                       max_size=64, max_wait=0.0,
                                       shed_after=self.limits.batch_queue_seconds,
                                       max_bulk=self.limits.stream_commit_events,
                                       bulk_beside=0, weigh=len)
        self._derived: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        """Per bundle, its `_BundleDerived` (computed on first use, dropped with the bundle)."""
        self._category_names: dict[int, str] = {}  # codes never change once assigned
        self._listeners: list[EventListener] = []
        self._durable: list[EventListener] = []
        """The listeners with an outbox tag (`server.profiles.outbox`)."""
        self._writing: dict[bytes, EventListener] = {}
        """By tag, those of them that apply a batch's effects in its write (`in_write`)."""
        self.outbox = Outbox(store)
        self._landing: set[asyncio.Future] = set()
        """`_commit` tasks not yet done (`close` waits for them)."""
        self._erasers: list[UserEraser] = []
        self._exporters: list[UserExporter] = []
        self._watchers: list[AttributeWatcher] = []
        self._opt_in_watchers: list[OptInWatcher] = []
        self.tombstones = tombstones
        """Erased users (keyed hashes); None: erasure leaves no tombstone (bare test setups).
        The erasure writes them (`ProfileRepository.delete_user`'s `mark_erased`)."""
        self.campaign_stored: Callable[[str], bool] | None = None
        """Whether a campaign is stored under an id (`Campaigns.stored`, wired by the app): an
        unsubscribe naming one under an id refused since is taken only then
        (`TrackedEvent.campaign_stored_only`); None (bare setups): never."""

    def add_listener(self, listener: EventListener) -> None:
        """`listener.on_events` gets the newly accepted events of every call; one with an
        `outbox` tag, those it `follows`, with their batch's outbox entry
        (`server.profiles.outbox`)."""
        self._listeners.append(listener)
        if getattr(listener, "outbox", None) is not None:
            self._durable.append(listener)
            if getattr(listener, "in_write", None) is not None:
                self._writing[listener.outbox] = listener

    def add_eraser(self, eraser: UserEraser) -> None:
        """`eraser.erase_user` runs inside every profile erasure's transaction."""
        self._erasers.append(eraser)

    def add_attribute_watcher(self, watcher: AttributeWatcher) -> None:
        """`watcher.on_attributes` runs inside every UpsertAttributes' transaction."""
        self._watchers.append(watcher)

    def add_opt_in_watcher(self, watcher: OptInWatcher) -> None:
        """`watcher.on_opt_in` runs inside every marketing opt-in's transaction (SetConsent)."""
        self._opt_in_watchers.append(watcher)

    def add_exporter(self, exporter: UserExporter) -> None:
        """`exporter.export_user` adds its sections to every access export."""
        self._exporters.append(exporter)

    # -- ingestion -------------------------------------------------------------------------
    def _categories(self, events: Sequence[TrackedEvent]) -> list[str | None]:
        """Each event's item category in the active bundle (None: no bundle, item or category)."""
        bundle = self.bundles.active
        if bundle is None:
            return [None] * len(events)
        rows = [bundle.item_row.get(ev.item_id, -1) if ev.item_id else -1 for ev in events]
        if all(r < 0 for r in rows):
            return [None] * len(events)
        names = bundle.items["category_names"][bundle.item_category[rows]].tolist()
        return [str(name) if r >= 0 else None for name, r in zip(names, rows)]

    def _ingest_many(self, batches: Sequence[EventRecords]) -> list[IngestResult]:
        records = EventRecords.concat(batches)
        result = self.repo.write_events(records, self._in_write(records))
        applied = result.applied  # (entry keys are a batch's own: each finds its entries)
        if not result.duplicates and not result.erased and not result.taken:
            return [IngestResult(list(range(len(b))), [], applied=applied) for b in batches]
        out, start = [], 0
        parts = [set(x) for x in (result.accepted, result.duplicates, result.erased, result.taken)]
        gone = dict(zip(result.erased, result.erased_why))
        for batch in batches:
            idx = range(start, start + len(batch))
            out.append(IngestResult(*([i - start for i in idx if i in part] for part in parts),
                                    erased_why=[gone[i] for i in idx if i in gone],
                                    applied=applied))
            start += len(batch)
        return out

    def _in_write(self, records: EventRecords) -> dict[bytes, object]:
        """{tag: `in_write`} of the listeners that apply a batch's effects in its ingestion's
        transaction (the impression join: `EventListener`) and follow some of `records`, each
        ready for it (`before_write`, in this thread before the write lock; one that is not
        gets its entry and `on_events` after the commit, as the others)."""
        if not self._writing or not any(records.outbox):
            return {}
        named = {entry for entries in records.outbox for entry in entries}  # a few a batch
        tags = {keys.outbox_parts(entry)[1] for entry in named}
        return {tag: listener.in_write for tag, listener in self._writing.items()
                if tag in tags and listener.before_write()}

    async def track(self, events: Sequence[TrackedEvent], offset: int = 0) -> TrackResult:
        """Check each event on its own and store the valid ones (one shared transaction);
        `offset` is added to the indices of rejected events (batches of a stream)."""
        return await self.submit(events, offset)

    def submit(self, events: Sequence[TrackedEvent], offset: int = 0) -> Awaitable[TrackResult]:
        """`track`, with the valid events' commit started before it returns (a task of its own
        in `_landing`, which `close` waits for): await the result, or drop it; the commit and
        its effects happen whatever becomes of the caller (a deadline or disconnect cancels
        it; the retry is a duplicate). Refused as overload unless inside `batching.exempt`
        (a stream's batches after its first: `track_stream`)."""
        check_count("events", len(events), self.limits.events_per_batch)
        self._writer.admit()  # overloaded: refused before its records are built
        now = time.time()
        result, valid = TrackResult(), []
        for i, ev in enumerate(events):
            problem = check_event(ev, self.rules, now)
            if problem is None and ev.campaign_stored_only:
                problem = self._unknown_campaign(ev)
            if problem:  # an over-long id (one reason) is echoed cut: the index names it
                result.rejected.append((offset + i, ev.event_id[:self.limits.id_bytes], problem))
            else:
                valid.append(ev)
        landing = None
        if valid:
            column, followed = self._followed(valid)
            records = EventRecords.build(valid, self._categories(valid), column)
            queued = self._writer.enqueue(records)  # or refused here, overloaded: nothing done
            landing = asyncio.ensure_future(self._commit(queued, records, valid, followed))
            self._landing.add(landing)
            landing.add_done_callback(self._landed)
        return self._tracked(events, offset, result, valid, landing)

    async def _tracked(self, events, offset: int, result: TrackResult,
                       valid: list[TrackedEvent], landing: asyncio.Future | None) -> TrackResult:
        """`submit`'s result, once its commit (`landing`, shielded) is done."""
        if landing is not None:
            stored = await asyncio.shield(landing)
            result.accepted_ids = [valid[i].event_id for i in stored.accepted]
            result.duplicates = len(stored.duplicates)
            if stored.erased or stored.taken:  # refused in the write: not stored
                refused = [(i, ID_TAKEN) for i in stored.taken]
                refused += [(i, _ERASED_REASONS[why] if why != "absent" else self._absent(
                    valid[i])) for i, why in zip(stored.erased, stored.erased_why)]
                bad = {i for i, _, _ in result.rejected}  # the request positions of `valid`:
                where = [j for j in range(offset, offset + len(events)) if j not in bad]
                result.rejected.extend((where[i], valid[i].event_id, reason)
                                       for i, reason in refused)
                result.rejected.sort()
        metrics.count_events("rejected", (events[i - offset].type for i, _, _ in result.rejected),
                             _KNOWN_TYPES)
        return result

    def _unknown_campaign(self, ev: TrackedEvent) -> str | None:
        """None when a campaign is stored under the id of an unsubscribe's campaign refused
        since (`TrackedEvent.campaign_stored_only`: the campaign of a message sent before the
        rule), else the reason it is refused: any client could otherwise store a new id the
        rule refuses in its events. One read of the campaigns table, for such ids only."""
        if self.campaign_stored is not None and self.campaign_stored(ev.campaign_id):
            return None
        refused = refused_since(ev.campaign_id, self.limits.id_bytes)
        return f"campaign_id {refused}{STORED_CAMPAIGN_ONLY}"

    def _absent(self, ev: TrackedEvent) -> str:
        """The reason for an event refused in the write for want of its user's profile (one of
        an id stored before the rule, `TrackedEvent.stored_only`): its id's problem."""
        return f"user_id {refused_since(ev.user_id, self.limits.id_bytes)}{STORED_ONLY}"

    def _followed(self, events: Sequence[TrackedEvent]
                  ) -> tuple[list[tuple[bytes, ...]] | None, dict[bytes, tuple[bytes, list[int]]]]:
        """(per event, the keys of the outbox entries that will name it, None: no event is;
        {listener tag: (this batch's entry key for it, the indices of the events it follows)}
        of the listeners that follow some event) (`server.profiles.outbox`)."""
        column, followed = None, {}
        for listener in self._durable:
            mine = listener.follows(events)
            if not mine:
                continue
            if column is None:
                column = [()] * len(events)
                ms, batch = keys.millis(time.time()), outbox.batch_id()
            entry = keys.outbox_key(ms, batch, listener.outbox)
            followed[listener.outbox] = (entry, mine)
            for i in mine:
                column[i] += (entry,)
        return column, followed

    async def _commit(self, queued: Awaitable[IngestResult], records: EventRecords,
                      valid: Sequence[TrackedEvent],
                      followed: Mapping[bytes, tuple[bytes, list[int]]]) -> IngestResult:
        """Store `records` (`queued`: their place in the writer's queue; built from `valid`;
        an unsubscribe's consent change, and an outbox
        entry per listener that `followed` some of its new events, in the same transaction),
        then apply what the newly accepted events change elsewhere: the listeners
        (suppression, rewards, impression join), each clearing its entry in the transaction
        that applies the batch's effects (`server.profiles.outbox`: a crash before that leaves
        it for the replay). Runs as a task of its own (`_landing`), so the effects of a
        committed batch are never lost with a cancelled caller. A listener marked `detached`
        (durable: its entry is in the batch's transaction) runs in a task of its own too,
        which the answer does not wait for (`SharedOptOut`: one write per thousand profiles
        at an address held the answer for seconds), when it follows some of the batch's
        events (`_detached`)."""
        stored = await queued  # with an unsubscribe's consent change
        accepted = [valid[i] for i in stored.accepted]
        fresh = None if len(stored.accepted) == len(valid) else set(stored.accepted)
        for listener in self._listeners:
            told = self._told(listener, accepted, valid, records, followed, fresh,
                              stored.applied)
            if self._detached(listener, followed):  # not awaited by the answer (its entry)
                task = asyncio.ensure_future(told)
                self._landing.add(task)
                task.add_done_callback(self._landed)
            else:
                await told
        metrics.count_events("accepted", (ev.type for ev in accepted), _KNOWN_TYPES)
        metrics.count_events("duplicate", (valid[i].type for i in stored.duplicates), _KNOWN_TYPES)
        return stored

    @staticmethod
    def _detached(listener, followed: Mapping[bytes, tuple[bytes, list[int]]]) -> bool:
        """Whether `_commit` runs the listener's part in a task of its own: it is `detached`
        and has work in this batch (it follows some of its events; nearly every batch holds
        none, and a task costs ten times the call that returns at once)."""
        if not getattr(listener, "detached", False):
            return False
        tag = getattr(listener, "outbox", None)
        return tag is None or tag in followed

    @classmethod
    async def _told(cls, listener, *batch) -> None:
        """`_tell`, its failure logged (the batch stands; its entry waits for the replay)."""
        try:
            await cls._tell(listener, *batch)
        except Exception:
            logger.exception("%s could not apply a committed batch's effects (the outbox "
                             "replay tries again)", type(listener).__name__)

    @staticmethod
    async def _tell(listener, accepted, valid, records, followed, fresh, applied) -> None:
        """One listener's part of `_commit`: the batch's events it follows, with its entry
        (or, for one that applied them in the write, `after_write` with what that gave)."""
        tag = getattr(listener, "outbox", None)
        if tag is None:
            await listener.on_events(accepted)
            return
        if tag not in followed:
            return
        entry, mine = followed[tag]
        if entry in applied:
            await listener.after_write(applied[entry], entry)
            return
        if fresh is not None:  # duplicates and erased users' events: not in the entry
            mine = [i for i in mine if i in fresh]
        if mine:
            await listener.on_events([valid[i] for i in mine], outbox.Batch(
                entry, [records.event_keys[i] for i in mine]))

    def _unsubscribed(self, meta: dict, channel: str, ts: float, marked: bool = False,
                      sent: float | None = None) -> None:
        """An unsubscribe event's change to its user's meta record: the channel's marketing
        consent opted out (the repository applies it in the event's own transaction), of the
        source `event_source` gives: a STOP's when the event carries the server's mark
        (`validation.STOP_MARK`: a carrier's 21610), which a START reopens, else the
        client's, which it never does. None when the 21610 is stale for them: its text went
        at `sent`, before their opt-in (a START since; `validation.STOP_SENT`): the event is
        stored, their consent left as their latest choice says (docs/messages.md)."""
        if sent is not None and opted_in_since(meta, channel, MARKETING, sent):
            return
        record_consent(meta, channel, MARKETING, False, event_source(marked), ts,
                       self.rules.limits.consent_history)

    def _landed(self, task: asyncio.Future) -> None:
        """A `_commit` task ended: forget it; log its failure (its caller may be gone)."""
        self._landing.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            logger.log(failure_level(err), "a TrackEvents batch or its effects failed: %s",
                       type(err).__name__)

    # -- attributes, consent, erasure ----------------------------------------------------------
    async def upsert_attributes(self, user_id: str, attributes: dict[str, str]) -> None:
        """Set (a non-empty value) or remove (an empty one) the user's attributes. A user id
        stored before C1 and bidirectional controls were refused (`refused_since`) is taken
        for a profile the store holds, checked in the write: none is made under it
        (INVALID_ARGUMENT, as before the profile existed). An `email` or `phone` the send path
        and the suppression list could not read (`check_address`) refuses the call, nothing of
        it stored: a CRM sync's bad address was found only at the send (a blank one, which the
        send path reads as none, is not checked). It is stored as given
        (the send path normalizes it); one stored before the check stays as it is, read,
        exported and erased as any attribute (docs/messages.md, "Addresses")."""
        lim = self.limits
        absent = _if_absent(user_id, lim.id_bytes)
        if absent is None:
            check_id("user_id", user_id, lim.id_bytes)
        check_count("attributes", len(attributes), lim.profile_attributes)
        for k, v in attributes.items():
            if v:  # a key stored before keys were checked may still be removed
                check_key("attributes key", k, lim.attribute_key_chars)
            else:
                check_text("attributes key", k, lim.attribute_key_chars)
            if len(v) > lim.attribute_value_chars:  # the value is not echoed: it may be PII
                raise InvalidArgument(f"attributes[{shown(k)}]", f"{len(v)} characters, at most "
                                      f"{lim.attribute_value_chars}")
            if (problem := text_problem(v, multiline=True)) is not None:  # nor echoed here
                raise InvalidArgument(f"attributes[{shown(k)}]", problem)
            if k == TIMEZONE and v:  # read by the contact policy (quiet hours)
                zone(f"attributes[{TIMEZONE}]", v)
            elif k in ADDRESS_KINDS and v.strip():  # as the send path reads it (blank: none)
                check_address(f"attributes[{k}]", k, v, lim.address_chars_of(k))

        def change(meta):
            held = meta["attributes"]
            before = _attributes_size(held)
            for k, v in attributes.items():
                if v:
                    held[k] = v
                else:
                    held.pop(k, None)
            _check_attributes_total(before, _attributes_size(held), lim)

        def watched(txn):  # the address index: a profile holding an address never messaged
            for watcher in self._watchers:  # at it was missed by its STOP or one-click link
                watcher.on_attributes(txn, user_id, attributes)
        # removals only create no profile: an unknown user stays unknown (NOT_FOUND)
        await asyncio.to_thread(self.repo.update_meta, user_id, change,
                                create=any(attributes.values()), after=watched, absent=absent)

    async def set_consent(self, user_id: str, channel: str, opted_in: bool, source: str,
                          timestamp: float = 0.0, purpose: str = "",
                          existing: bool = False) -> int:
        """Record a consent change of (channel, purpose; empty = marketing), kept in the
        user's consent history too (`server.contact.consent`). Refused (`ErasedSince`) when
        it would bring an erased user back: dated at or before their erasure, or (`existing`:
        a change for a profile that exists, such as a one-click link's) the user was erased
        and has no profile since. `existing` changes name stored profiles (a link the server
        signed, its address index: `_check_named`). An opt-out takes an id stored before C1 and
        bidirectional controls were refused too: an opt-out is never refused for the id's
        spelling (`check_stored_id`), but SetConsent's (not `existing`) is taken only for the
        profile stored under it, checked in the write, as by `upsert_attributes`: none is made
        under such an id (INVALID_ARGUMENT). A source the server's STOP handling writes
        or a tracked unsubscribe event writes (`reserved_source`) is refused: a START would
        reopen what it closed; so is one holding a control or format character (`check_source`).
        An `existing` change's source is the server's own, not checked so: a one-click link's
        names its campaign, whose id, stored before such characters were refused, may hold one
        (checked, every click of that campaign's links was a 400 page, the user still opted
        in). A marketing opt-in tells the `OptInWatcher`s in the same
        transaction, with its source (the erasure's keep-out it lifts: `contact.keepout`; a
        lift, once committed, is logged with the user's `user_ref`). Returns how many
        keep-out entries it lifted (the caller audits a lift: `services.profile`)."""
        _check_named(user_id, self.limits.id_bytes, existing or not opted_in)
        if not existing:  # (an `existing` change's source is the server's: see above)
            check_source("source", source)
        absent = None if existing else _if_absent(user_id, self.limits.id_bytes)
        change, ts = self._consent_change(channel, opted_in, source, timestamp, purpose)
        after, lifted = None, [0]
        if opted_in and (purpose or MARKETING) == MARKETING and self._opt_in_watchers:
            written: list[dict] = []
            change = functools.partial(_keeping, change, written)

            def after(txn):
                lifted[0] = sum(watcher.on_opt_in(txn, written[-1], channel, ts, source)
                                for watcher in self._opt_in_watchers)
        await asyncio.to_thread(self.repo.update_meta, user_id, change, ts, "consent change",
                                existing=existing, absent=absent, after=after)
        if lifted[0]:  # committed: the trace of an unsubscribe undone (no address, no id)
            logger.info("marketing opt-in of %s on %s lifted %d keep-out entr%s of its address",
                        user_ref(user_id), channel, lifted[0], "y" if lifted[0] == 1 else "ies")
        return lifted[0]

    async def drop_attribute(self, user_id: str, key: str, value: str) -> bool:
        """Remove `key` from the user's attributes while it holds `value` (surrounding
        whitespace aside: the address the send path used, `delivery.address_of`, is trimmed),
        in one transaction (a push token the provider answered gone: one the app registered
        since is kept); no profile (an erased user) is left without one. Whether it was
        removed."""
        def change(meta):
            meta["attributes"].pop(key, None)

        def keep(meta):
            return meta is None or (meta.get("attributes", {}).get(key) or "").strip() != value
        return bool(await asyncio.to_thread(self.repo.update_metas, [user_id], change, keep=keep))

    async def set_consents(self, user_ids: Sequence[str], channel: str, opted_in: bool,
                           source: str, timestamp: float = 0.0, purpose: str = "",
                           existing: bool = False, keep_later_opt_in: bool = False,
                           stopped_only: bool = False, open_only: bool = False,
                           needs_opt_in: bool = False,
                           opted_in_after: float | None = None) -> list[str]:
        """`set_consent` of each of `user_ids` in one write transaction (one fsync, not one
        each); a user it would bring back is skipped, not refused, and so is one whose record,
        read in the same transaction, says to leave it (`_kept`: a change committed after the
        caller chose the users counts). The users changed."""
        for user_id in user_ids:
            _check_named(user_id, self.limits.id_bytes, existing)
        change, ts = self._consent_change(channel, opted_in, source, timestamp, purpose)
        keep = _kept(channel, purpose, ts, keep_later_opt_in, stopped_only, open_only,
                     needs_opt_in, opted_in_after)
        return await asyncio.to_thread(self.repo.update_metas, list(user_ids), change, ts,
                                       existing=existing, keep=keep)

    async def set_unnamed_consents(self, tokens: Sequence[bytes], channel: str, opted_in: bool,
                                   source: str, still, timestamp: float = 0.0,
                                   purpose: str = "", keep_later_opt_in: bool = False,
                                   stopped_only: bool = False, open_only: bool = False,
                                   needs_opt_in: bool = False,
                                   opted_in_after: float | None = None) -> list[bytes]:
        """`set_consents` of existing profiles known by their token alone (unnamed entries of
        the address index, `server.messages.phones`: stored before it, their id nowhere in
        the store), each changed only while `still(txn, token)` (its entry is there: an
        erasure drops it with the profile). The tokens changed."""
        change, ts = self._consent_change(channel, opted_in, source, timestamp, purpose)
        keep = _kept(channel, purpose, ts, keep_later_opt_in, stopped_only, open_only,
                     needs_opt_in, opted_in_after)
        return await asyncio.to_thread(self.repo.update_unnamed_metas, list(tokens), change,
                                       still, keep)

    def unnamed_metas(self, tokens: Sequence[bytes]) -> list[dict | None]:
        """`metas` of profiles known by their token alone (`set_unnamed_consents`)."""
        return self.repo.metas_at([token + keys.PROFILE_META_SUFFIX for token in tokens])

    def backfill_watchers(self) -> int:
        """Tell the attribute watchers of the profiles stored before them, once per store
        (`server.profiles.backfill`); the records they wrote."""
        return backfill_attributes(self.repo.store, self._watchers)

    def _consent_change(self, channel: str, opted_in: bool, source: str, timestamp: float,
                        purpose: str):
        """(the checked consent change to apply to a meta record, its time)."""
        lim = self.limits
        check_known("channel", channel, CHANNELS)
        purpose = check_known("purpose", purpose or MARKETING, PURPOSES)
        check_text("source", source, lim.consent_source_chars)
        ts = check_time("timestamp", timestamp, lim.latest_timestamp) or time.time()
        ahead = ts - time.time()
        if ahead > self.rules.future_tolerance_s:  # it would outrank every change until then
            raise InvalidArgument("timestamp", f"{ahead:.0f}s in the future (tolerance "
                                  f"{self.rules.future_tolerance_s:.0f}s, as for events)")

        def change(meta):
            record_consent(meta, channel, purpose, opted_in, source, ts, lim.consent_history)
        return change, ts

    async def delete(self, user_id: str) -> int:
        """Erase the user (`erase`); the records removed."""
        return (await self.erase(user_id))[0]

    async def erase(self, user_id: str) -> tuple[int, float]:
        """Erase the user (`ProfileRepository.erase`), once the effects of their events
        left in the outbox are applied (`server.profiles.outbox`: a suppression outlives them;
        the erasure takes their events out of the entries committed since); (records removed,
        the erasure's time: this one's, or the earlier one's when nothing was left). An id
        stored before C1 and bidirectional controls were refused is taken (`check_stored_id`)."""
        check_stored_id("user_id", user_id, self.limits.id_bytes)
        try:
            await self.replay_outbox(older_than=0, user_id=user_id)
        except Exception:  # the erasure goes on: it takes their events out of the entries
            logger.exception("outbox replay before an erasure failed")
        return await asyncio.to_thread(self.repo.erase, user_id, self._erasers)

    async def drop_expired_events(self, cutoff: float,
                                  by_type: Mapping[str, float] | None = None) -> int:
        """Retention: raw events older than `cutoff`, or than `by_type[type]` for the types
        it lists, go (`server.retention`); feature states (decayed counts, monetary,
        affinities) keep what the events added."""
        return await asyncio.to_thread(self.repo.drop_events_before, cutoff, by_type=by_type)

    # -- reads ------------------------------------------------------------------------------
    async def get(self, user_id: str, max_events: int = 0, parts: Sequence[str] = (),
                  stored: bool = False) -> ProfileView:
        """Everything stored about one user, PII included: the transport masks it for callers
        who may not read it (`server.security.pii`). `parts` (of `PROFILE_PARTS`; none: all)
        leaves the others empty, and unread when they are events or features. The events are
        the newest `max_events` (0: all) of at most `Limits.profile_events_bytes` stored bytes
        (one reply). A user with more than `LOOP_EVENTS` of them to read is read in a worker
        thread, not the event loop's. `stored`: the id may be one stored before C1 and
        bidirectional controls were refused (`check_stored_id`: the answer to an opt-out)."""
        view = self.view(user_id, max_events, parts, cap=self.LOOP_EVENTS, stored=stored)
        return view if view is not None else await asyncio.to_thread(
            self.view, user_id, max_events, parts, 0, stored)

    LOOP_EVENTS = 256
    """Events a read in the event loop's thread holds at most (~1.5 ms, decrypted); the reads
    of a user with more, up to 16 MiB of them (`Limits.profile_events_bytes`), would hold every
    other call of the worker for ~0.3 s."""

    def view(self, user_id: str, max_events: int = 0, parts: Sequence[str] = (),
             cap: int = 0, stored: bool = False) -> ProfileView | None:
        """`get`, in the caller's thread. `cap` > 0: None instead when more than `cap` events
        are asked for and stored (no more than `cap` + 1 are read)."""
        (check_stored_id if stored else check_id)("user_id", user_id, self.limits.id_bytes)
        check_not_negative("max_events", max_events)
        want = _wanted_parts(parts)
        capped = bool(cap) and not 0 < max_events <= cap
        state, meta, events = self.repo.read(
            user_id, cap + 1 if capped else max_events, "events" in want,
            self.limits.profile_events_bytes)
        if capped and len(events) > cap:
            return None
        return self._view_of(user_id, want, state, meta, events)

    def export_view(self, user_id: str, offset: int) -> tuple[ProfileView, int]:
        """(the access export's view, with the page of events from `offset`, newest first:
        `Limits.profile_export_events` of at most `profile_export_bytes`; how many events are
        held), in the caller's thread; only the page's events are read
        (`ProfileRepository.read_page`)."""
        lim = self.limits
        state, meta, events, held = self.repo.read_page(
            user_id, offset, lim.profile_export_events, lim.profile_export_bytes)
        return self._view_of(user_id, _wanted_parts(()), state, meta, events), held

    def _view_of(self, user_id: str, want, state, meta, events) -> ProfileView:
        """The `ProfileView` of what one read snapshot found (NotFound: neither record)."""
        if state is None and meta is None:
            raise NotFound("profile", user_id, personal=True)
        meta = meta or {"attributes": {}, "consent": {}, "created_at": 0.0, "updated_at": 0.0}
        feats, recent, names, first, last = None, [], {}, 0.0, 0.0
        if state is not None and "features" in want:
            feats = kf.read_features(self.layout, state, time.time(), recent=False)
            names = self._names_of(np.flatnonzero(feats["category_affinity"].any(axis=0)).tolist())
        if state is not None and "recent_items" in want:
            recent = self._recent_ids(state)
        if state is not None and state[fl.N_EVENTS] and np.isfinite(state[fl.FIRST_TS]):
            first = float(state[fl.FIRST_TS])  # what read_features calls first_ts
            last = float(state[fl.REF_TS])  # and last_ts: the latest event
        # created: the first of the meta record and the first event; updated: the last of the
        # meta record's change and the latest event (events do not write the meta record)
        created = min((t for t in (meta.get("created_at") or 0.0, first) if t), default=0.0)
        consent = "consent" in want
        return ProfileView(user_id, dict(meta["attributes"]) if "attributes" in want else {},
                           current_consents(meta) if consent else [],
                           feats, recent, events,
                           created, max(meta.get("updated_at", 0.0), last), names,
                           {k: v for k, v in meta.items() if k not in _META_FIELDS},
                           meta.get("consent_history", []) if consent else [])

    def attributes_and_interests(self, user_id: str, most: int
                                 ) -> tuple[dict[str, str], tuple[str, ...]] | None:
        """Attributes and up to `most` category names by affinity under the longest half-life
        (strongest first, > 0 only) from one read snapshot; None when there is no profile.
        Decay scales every category of one half-life alike, so the stored values rank them as
        `get`'s decayed `category_affinity` does, without decoding the other features."""
        return self.recipient_of(*self.repo.states_and_meta([user_id], True)[0], most)

    def recipient_of(self, state: np.ndarray | None, meta: dict | None, most: int
                     ) -> tuple[dict[str, str], tuple[str, ...]] | None:
        """`attributes_and_interests` of a profile already read (`states_and_meta`)."""
        if state is None and meta is None:
            return None
        attrs = dict((meta or {}).get("attributes", {}))
        if state is None:
            return attrs, ()
        affinity = self.layout.views(state)["category"][-1]
        codes = [int(c) for c in np.argsort(-affinity, kind="stable")[:most] if affinity[c] > 0]
        names = self._names_of(codes)
        return attrs, tuple(names[c] for c in codes)

    async def export_user(self, user_id: str, events_offset: int = 0,
                          impressions_offset: int = 0) -> AccessExport:
        """Everything held about one user (right of access, Art. 15/20); NotFound when nothing is.
        The events come a page at a time from `events_offset` (`export_view`); the other
        domains' sections with the first page only. `impressions_offset` > 0: the page of the
        paged sections (`UserExporter.export_page`) from it, nothing else. An id stored before
        C1 and bidirectional controls were refused is taken (`check_stored_id`)."""
        check_stored_id("user_id", user_id, self.limits.id_bytes)
        check_not_negative("events_offset", events_offset)
        check_not_negative("impressions_offset", impressions_offset)
        if impressions_offset:
            return await self._export_page(user_id, impressions_offset)
        try:
            # a page of events (and their decryption): off the event loop
            view, held = await asyncio.to_thread(self.export_view, user_id, events_offset)
        except NotFound:
            view, held = None, 0
        end = events_offset + (len(view.events) if view else 0)
        after = end if view is not None and end < held else None
        sections: dict = {}
        found = view is not None
        for exporter in self._exporters if not events_offset else ():
            added = await asyncio.to_thread(exporter.export_user, user_id)
            sections.update(added)
            # sections that only refer to the user (audit lines) do not make them found
            found = found or (getattr(exporter, "finds_user", True) and any(added.values()))
        if not found:
            raise NotFound("profile", user_id, personal=True)
        erased = self.tombstones.erasure_times([user_id])[0] if self.tombstones else None
        return AccessExport(user_id, view, sections, held, erased, events_offset, after)

    async def _export_page(self, user_id: str, offset: int) -> AccessExport:
        """`export_user` of a page after the first of the sections that come in pages."""
        sections: dict = {}
        for exporter in self._exporters:
            if (page := getattr(exporter, "export_page", None)) is not None:
                sections.update(await asyncio.to_thread(page, user_id, offset))
        erased = self.tombstones.erasure_times([user_id])[0] if self.tombstones else None
        return AccessExport(user_id, None, sections, 0, erased)

    def _names_of(self, codes: list[int]) -> dict[int, str]:
        """Category names of stored codes (re-read when another worker assigned new codes)."""
        if any(c not in self._category_names for c in codes):
            self._category_names = self.repo.category_names()
        return {c: self._category_names.get(c, f"code:{c}") for c in codes}

    def _recent_ids(self, state) -> list[tuple[str, float, float]]:
        """Recent items oldest first, weighted as the active bundle's histories are."""
        bundle = self.bundles.active
        if bundle is None:
            weights, half_life_s, rows = None, DEFAULT_HALF_LIFE_DAYS * fl.DAY, {}
        else:
            d = self._of(bundle)
            weights, half_life_s, rows = d.weights, d.half_life_s, d.code_row
        codes, w, ts = kf.recent_entries(self.layout, state, half_life_s, weights=weights)
        ids = bundle.items["item_ids"] if bundle is not None else None
        codes = codes.tolist()
        if bundle is not None and bundle is not bundle.trained:
            rows = {**rows, **_added_rows(bundle, [c for c in codes if c not in rows])}
        out = []
        for code, wi, t in zip(codes, w.tolist(), ts.tolist()):
            row = rows.get(code)
            out.append((str(ids[row]) if row is not None else f"code:{code}", wi, t))
        return out

    def _of(self, bundle) -> _BundleDerived:
        bundle = bundle.trained  # catalog updates add items the encoder does not know
        derived = self._derived.get(bundle)
        if derived is None:
            derived = self._derived[bundle] = _BundleDerived(bundle, self.layout, self.history)
        return derived

    def states(self, user_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Feature states of many users from one read snapshot (None where there is none)."""
        return self.repo.states(user_ids)

    def states_and_meta(self, user_ids: Sequence[str], with_states: bool = True, txn=None,
                        with_seen: bool = False, with_stored: bool = False) -> list[tuple]:
        """(feature state or None unless `with_states`, meta record[, live seen-set if
        `with_seen`][, the meta record's stored bytes if `with_stored`]) of many users from one
        read snapshot (the caller's `txn`, if it has one)."""
        return self.repo.states_and_meta(user_ids, with_states, txn, with_seen, with_stored)

    def sample_states(self, limit: int, start: bytes = b"") -> tuple[np.ndarray, bytes]:
        """Up to `limit` stored feature states from key `start` on, and the next start key
        (`ProfileRepository.sample_states`; the contact policy's population prior)."""
        return self.repo.sample_states(limit, start)

    def history_of(self, bundle, user_ids: Sequence[str], now: float | Sequence[float] | None = None,
                   states: Sequence | None = None, session_now: float | None = None):
        """Encoder input per user: the bundle's training history and the live profile's recent
        items, blended into short- and long-term interest as of `now` (`history.HistoryBlend`;
        one time for every user, or one per user: Recommend's `decay_clock`), the session
        counted back from `session_now` (default: `now`; Recommend's: the request's time).

        Live items are weighted with the event weights the bundle was trained with (manifest
        `history`), and the blend's short-term half-life is the bundle's. `states`: the users'
        feature states as the caller read them (default: read now).
        """
        now = time.time() if now is None else now
        times = [now] * len(user_ids) if np.ndim(now) == 0 else now
        self._mask_erased(bundle, user_ids)
        states = self.repo.states(user_ids) if states is None else states
        d = self._of(bundle)
        rows_of = d.code_row if any(s is not None for s in states) else {}
        trained_ts, weights, blend = d.trained_ts, d.weights, d.blend
        indptr, uniq_rows, uniq_w = d.unique_histories
        out = []
        for uid, state, now in zip(user_ids, states, times):
            if state is None:  # the common case: a bundle user without live events, or unknown
                row = bundle.row_of(uid)
                if row is None:
                    out.append(None)
                    continue
                lo, hi = indptr[row], indptr[row + 1]
                out.append(blend.blend_trained(uniq_rows[lo:hi], uniq_w[lo:hi], trained_ts[row],
                                               now, bundle.history_len, session_now))
                continue
            row = bundle.row_of(uid)  # once: an erasure may drop it meanwhile
            rows, w, ts = [], [], []
            if row is not None:
                lo, hi = bundle.users["indptr"][row], bundle.users["indptr"][row + 1]
                rows.append(bundle.users["items"][lo:hi].astype(np.int64))
                w.append(bundle.users["weights"][lo:hi].astype(np.float64))
                ts.append(np.full(hi - lo, trained_ts[row]))
            if state is not None:
                v, n = self.layout.views(state), int(state[fl.N_RECENT])
                summed = kf.recent_weights(self.layout, state, weights)
                keep = [(rows_of[c], j) for j, c in enumerate(v["rc_item"][:n].astype(np.int64).tolist())
                        if c in rows_of]
                idx = np.asarray([j for _, j in keep], np.int64)
                rows.append(np.asarray([r for r, _ in keep], np.int64))
                w.append(summed[idx])
                ts.append(v["rc_ts"][:n][idx])
            try:
                out.append(blend.blend(np.concatenate(rows), np.concatenate(w), np.concatenate(ts),
                                       now, bundle.history_len, session_now))
            except ValueError as err:  # a damaged record fails its user, not the whole batch
                logger.error("history of %s not blended: %s", user_ref(uid), err)
                out.append(None)  # no history: the popular items
        return out

    def _mask_erased(self, bundle, user_ids: Sequence[str]) -> None:
        """Drop from `bundle.user_row` the users erased after its data cutoff: their training
        history and seen-set are never used again (`tombstones`); new activity still counts."""
        if self.tombstones is None:
            return
        tombs = self.tombstones.current()  # one read while no tombstone was added
        known = [u for u in user_ids if bundle.row_of(u) is not None] if tombs else []
        if known:
            cutoff = bundle.manifest.cutoff
            for uid, at in zip(known, self.tombstones.erased_at(known, tombs)):
                if at is not None and at >= cutoff:
                    bundle.forget(uid)

    def check_bundle(self, bundle) -> None:
        """`BundleGate`: refuse a bundle trained after an erasure that still holds the erased
        user (unless they came back: a live profile, built after the erasure); mask the users
        erased after its cutoff. Hashes every bundle user once when there are tombstones.

        Only a bundle with user ids can be checked (training's, pushed or imported: checked
        before `server.models.pseudonyms` hashes them); the server's hashed copy passed this
        check when it was first loaded, and serving masks its erased users on first sight
        (`_mask_erased`, by the queried id)."""
        if self.tombstones is None or bundle.ids_hashed:
            return
        erased = self.tombstones.matches(bundle.users["user_ids"].tolist())
        cutoff = bundle.manifest.cutoff
        held = [u for u, at in erased.items() if at < cutoff]
        stale = [u for u, s in zip(held, self.repo.states(held)) if s is None] if held else []
        if stale:
            raise HoldsErasedUsers(bundle.version, len(stale), cutoff)
        for uid, at in erased.items():
            if at >= cutoff:
                bundle.forget(uid)

    async def recorded_at(self, event_id: str) -> float | None:
        """The time of the event stored under `event_id` (None: none is), e.g. when the
        server's `<channel>_sent` event of a decision says its message went
        (`messages.reports.record_opt_out`: a 21610 for a text sent before a START)."""
        return await asyncio.to_thread(self.repo.recorded_at, event_id)

    def metas(self, user_ids: Sequence[str], use: str = "read") -> list[dict | None]:
        """Meta records (attributes, consent) of many users from one read snapshot."""
        return self.repo.metas(user_ids, use)

    def states_and_seen(self, user_ids: Sequence[str]) -> list[tuple]:
        """(feature state, live seen-set) of many users from one read snapshot, each profile
        record opened once (what Recommend reads of its users; None: no profile)."""
        return self.repo.states_and_seen(user_ids)

    def erased(self) -> list[Tombstone]:
        """Every tombstone (keyed hashes and times), oldest erasure first."""
        return self.tombstones.listing() if self.tombstones is not None else []

    def user_ids(self) -> list[str]:
        """Every user with a stored event (the impression export names users by them)."""
        return self.repo.user_ids()

    def export(self, start: float = 0.0, end: float = 0.0, check=None):
        """`ProfileRepository.export`: lists of raw events, one per read snapshot (``check``:
        called as the scan goes, may raise)."""
        check_window(start, end, self.limits.latest_timestamp)
        return self.repo.export(start, end, check)

    async def replay_outbox(self, older_than: float = REPLAY_AFTER_S,
                            user_id: str | None = None) -> int:
        """Apply the listeners' outbox entries left behind (a crash between a batch's commit
        and its listeners, a listener that failed) of batches more than `older_than` seconds
        old (0: every one), every entry or those naming `user_id`'s events, each through its
        listener as after a commit; returns how many entries were replayed
        (`server.profiles.outbox`)."""
        by_tag = {listener.outbox: listener for listener in self._durable}
        user = keys.user_prefix(user_id) if user_id is not None else None
        before = keys.millis(time.time() - older_than) + (1 if older_than <= 0 else 0)
        start, total = b"", 0
        while True:
            due = await asyncio.to_thread(self.outbox.take, by_tag.keys(), before, start, user)
            if len(due):
                counts: dict[bytes, list[int]] = {}
                for tag, events, _ in due.batches:
                    n = counts.setdefault(tag, [0, 0])
                    n[0], n[1] = n[0] + 1, n[1] + len(events)
                logger.warning("outbox: replaying %s", ", ".join(
                    f"{tag.decode()}: {b} batch(es), {e} event(s)" for tag, (b, e) in counts.items()))
            for tag, events, batch in due.batches:
                await by_tag[tag].on_events(events, batch)
            total += len(due)
            if due.after is None:
                return total
            start = due.after

    async def close(self) -> None:
        """Finish the submitted batches and their effects (the listeners' domains must still
        be open; the server's periodic replay has ended before: `server.background`)."""
        while self._landing:  # a commit's detached listeners join it as it ends
            await asyncio.gather(*list(self._landing), return_exceptions=True)
        await self._writer.close()


def _added_rows(bundle, codes: list[int]) -> dict[int, int]:
    """{code: row} of the `codes` among the items catalog updates added to `bundle` (rows from
    `bundle.trained.n_items` on; the trained rows are looked up by `_BundleDerived.code_row`)."""
    if not codes:
        return {}
    first = bundle.trained.n_items
    added = bundle.item_codes[first:]
    return {int(added[i]): first + int(i) for i in np.flatnonzero(np.isin(added, codes)).tolist()}


def _keeping(change, written: list, meta: dict) -> None:
    """`change(meta)`, then `meta` kept in `written` (what the write stored, for its `after`)."""
    change(meta)
    written.append(meta)


def _wanted_parts(parts: Sequence[str]) -> frozenset[str]:
    """The named parts (each checked), or every part when none is named."""
    if not parts:
        return frozenset(PROFILE_PARTS)
    check_count("parts", len(parts), len(PROFILE_PARTS))
    return frozenset(check_known("parts", p, PROFILE_PARTS) for p in parts)


def _kept(channel: str, purpose: str, ts: float, later_opt_in: bool, stopped_only: bool,
          open_only: bool, needs_opt_in: bool = False, opted_in_after: float | None = None):
    """`keep(meta)` of a consent change dated `ts`, checked in its write transaction (None:
    none): `later_opt_in`, the profile's own opt-in is later (`SharedOptOut`);
    `opted_in_after`, it is later than that time (a carrier's 21610 for a text sent then: an
    opt-in since, a START, is newer than what the report tells, `messages.reports.stale`);
    `stopped_only`, a START may no longer reopen (channel, purpose) (`reopenable`: it is not
    closed by a STOP alone, or, with `needs_opt_in`, its history holds no opt-in any more: a
    START reopens nothing else, and a withdrawal committed after it read the profiles was
    overwritten by its later-dated opt-in, an opt-in pushed out of the history since reopened
    all the same); `open_only`, it is closed already (a carrier's 21610 closes what is open:
    an opt-in committed after it read the profiles stayed open)."""
    purpose = purpose or MARKETING
    since = ts if opted_in_after is None else min(ts, opted_in_after)
    rules = [rule for on, rule in (
        (later_opt_in or opted_in_after is not None,
         lambda meta: opted_in_since(meta, channel, purpose, since)),
        (stopped_only, lambda meta: not reopenable(meta, channel, purpose, needs_opt_in)),
        (open_only, lambda meta: closed(meta, channel, purpose))) if on]
    if not rules:
        return None
    return lambda meta: any(rule(meta) for rule in rules)


def _attributes_size(attributes: dict[str, str]) -> tuple[int, int]:
    """(count, UTF-8 bytes of keys and values) of a profile's attributes."""
    return len(attributes), sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())


def _check_attributes_total(before: tuple[int, int], after: tuple[int, int], lim) -> None:
    """ProfileAttributesFull when a change grows the attributes beyond the profile's limits (a
    profile already beyond them may still shrink or keep its size)."""
    if after[0] > lim.profile_attributes_total and after[0] > before[0]:
        raise ProfileAttributesFull("entries", after[0], lim.profile_attributes_total,
                                    "profile_attributes_total")
    if after[1] > lim.profile_attributes_bytes and after[1] > before[1]:
        raise ProfileAttributesFull("bytes", after[1], lim.profile_attributes_bytes,
                                    "profile_attributes_bytes")


def _if_absent(user_id: str, id_bytes: int) -> InvalidArgument | None:
    """The refusal of a call that takes an id stored before C1 and bidirectional controls were
    refused (`refused_since`) for the profile stored under it only, raised in its write when
    there is none (`ProfileRepository.update_meta`'s `absent`); None for any other id."""
    refused = refused_since(user_id, id_bytes)
    return None if refused is None else InvalidArgument("user_id", refused + STORED_ONLY)


def _check_named(user_id: str, id_bytes: int, existing: bool) -> None:
    """The id of a consent change: `check_id`, or, for a change of a profile that exists (an
    opt-out by a one-click link or a STOP reply, and of the profiles sharing its address: ids
    the server's own records name), `check_stored_id`: a profile stored before C1 and
    bidirectional controls were refused must still be opted out (a STOP refused for it left
    every profile at the number opted in)."""
    (check_stored_id if existing else check_id)("user_id", user_id, id_bytes)


_META_FIELDS = frozenset({"attributes", "consent", "consent_history", "created_at", "updated_at"})


class HoldsErasedUsers(FailedPrecondition):
    def __init__(self, version: str, n: int, cutoff: float):
        super().__init__(f"bundle {version!r} was trained on data up to {cutoff:.0f} and holds {n} "
                         "user(s) erased before that: train it again from a `training export` "
                         "taken after the erasure (it carries the tombstones)")


class _BundleDerived:
    """What `Profiles` derives from one bundle, each part computed on its first use."""

    def __init__(self, bundle, layout, history: HistoryBlend):
        self.bundle, self._layout, self._history = bundle, layout, history

    @functools.cached_property
    def weights(self) -> np.ndarray:
        """The bundle's event weights (manifest `history`), aligned with the layout's types."""
        weights = self.bundle.manifest.history.event_weights
        return np.array([weights[n] for n in self._layout.event_types])

    @functools.cached_property
    def half_life_s(self) -> float:
        return self.bundle.manifest.history.half_life_days * fl.DAY

    @functools.cached_property
    def blend(self) -> HistoryBlend:
        """The bundle's short-term half-life, Settings' long-term blend."""
        return dataclasses.replace(self._history, half_life_s=self.half_life_s)

    @functools.cached_property
    def code_row(self) -> dict[int, int]:
        return dict(zip(self.bundle.item_codes.tolist(), range(self.bundle.n_items)))

    @functools.cached_property
    def unique_histories(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u = self.bundle.users
        return unique_histories(u["indptr"], u["items"], u["weights"])

    @functools.cached_property
    def trained_ts(self) -> np.ndarray:
        """Per bundle user, the time its training weights are relative to: the user's latest
        seen event when the bundle has seen arrays, else the data cutoff (docs/bundle.md)."""
        u, n = self.bundle.users, len(self.bundle.users["user_ids"])
        out = np.full(n, float(self.bundle.manifest.cutoff))
        if "seen_indptr" in u and len(u["seen_last_ts"]):
            lo, hi = u["seen_indptr"][:-1], u["seen_indptr"][1:]
            some = hi > lo
            out[some] = np.maximum.reduceat(u["seen_last_ts"].astype(np.float64), lo[some])
        return out
