"""The typed seams between domain packages. Each domain depends on these, never on another
domain's internals; `server.app` alone joins the two sides.

A new domain (messaging, privacy, audit) plugs in the same way: it takes the readers it needs
(`BundleSource`, `ProfileStates`) and offers what it reacts to (`EventListener` to follow
tracked events, `UserEraser` to drop what it keeps about a user when the profile is erased).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from kernels.feature_layout import FeatureLayout

    from .campaigns import Campaign, Choice, PendingChoice
    from .models import Bundle
    from .profiles import ProfileView
    from .profiles.events import TrackedEvent
    from .recommend import RecQuery, RecResult

__all__ = ["AttributeWatcher", "BundleGate", "BundleSource", "ConsentWriter", "DecisionOwners",
           "EventListener",
           "EventRecorder", "ImpressionSink", "OptInWatcher", "ProfileMetas", "ProfileReader",
           "ProfileStates",
           "Recommendations",
           "SuppressedAddresses", "UserEraser", "UserExporter", "VariantChooser"]


class BundleSource(Protocol):
    """Where the bundle in service is read (the model registry)."""

    @property
    def active(self) -> Bundle | None:
        """The bundle serving now, or None before the first one is loaded."""


class ProfileStates(Protocol):
    """Read access to users' live feature states (the profiles domain)."""

    @property
    def layout(self) -> FeatureLayout:
        """The layout the states are encoded with (`kernels.features` reads them)."""

    def states(self, user_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Each user's feature state from one read snapshot, None where there is none."""

    def states_and_meta(self, user_ids: Sequence[str], with_states: bool = True, txn=None,
                        with_seen: bool = False, with_stored: bool = False) -> list[tuple]:
        """Each user's (feature state, meta record: attributes and consent) from one read
        snapshot (`txn`, a `Store.read` the caller holds, or a new one), None where there is
        none (the contact policy reads both); states are not read (None) unless
        `with_states`; with `with_seen` too, each has the user's live seen-set third; with
        `with_stored`, the meta record's bytes as stored (None for none) last, from the same
        read (the contact policy's stamp at the commit: `campaigns.recheck`)."""

    def sample_states(self, limit: int, start: bytes = b"") -> tuple[np.ndarray, bytes]:
        """Up to `limit` stored feature states from key `start` on, and the key to continue
        from (b"" past the last): the contact policy's population prior is fitted on them."""


class ProfileMetas(Protocol):
    """Read access to users' profile meta records (attributes, consent)."""

    def metas(self, user_ids: Sequence[str], use: str = "read") -> list[dict | None]:
        """Each user's meta record (`server.store.layouts` kind `profile_meta`) from one read
        snapshot, None where there is none; `ProfileDamaged` if one does not open or decode
        (counted and logged as read for `use`: `profiles.damage.USES`)."""

    def unnamed_metas(self, tokens: Sequence[bytes]) -> list[dict | None]:
        """`metas` of profiles known by their token alone (unnamed address index entries)."""


class SuppressedAddresses(Protocol):
    """The suppression list as the decision path reads it (the contact domain)."""

    def covers(self, channel: str) -> bool:
        """Whether messages on `channel` go to an address the list may hold."""

    def suppressed_channels(self, meta: Mapping | None, channels: Sequence[str],
                            txn=None, purpose: str = "marketing") -> frozenset[str]:
        """The `channels` on which the user's address (from the profile meta record) is
        suppressed for messages of `purpose` (an erasure's keep-out blocks marketing only;
        one read snapshot: `txn`, a `Store.read` the caller holds, or a new one)."""

    def address_keys(self, meta: Mapping | None, channel: str) -> tuple[bytes, ...]:
        """The list's keys of the user's address for `channel` (() for none), for the
        campaigns writer to look up again at the commit (`campaigns.recheck`)."""


class EventListener(Protocol):
    """Follows tracked events (e.g. campaign rewards from `decision_id` attributes).

    A listener whose effect must survive a crash after the ingestion's commit also has
    `outbox` (a short stable tag, stored in keys) and `follows(events)` (the indices of the
    events it has an effect for): a batch with such events gets one outbox entry for the
    listener in the ingestion's transaction, and `on_events` gets only those events, with the
    entry (`server.profiles.outbox`; a replay after a crash calls it the same way).

    One that may apply a batch's effects in the ingestion's own write transaction (the
    impression join, the campaigns' contact counts of sends) also has `before_write() -> bool`
    (in the writer thread, before the write lock: False when it is not ready),
    `in_write(txn, pairs, entry)` (in that
    transaction, with the (event, events key) pairs it follows: what it did, or None when it
    did nothing, and the batch gets its entry as for any other listener) and `async
    after_write(done, entry)` (once that transaction has committed, instead of `on_events`)."""

    async def on_events(self, events: Sequence[TrackedEvent], batch=None) -> None:
        """Called after each TrackEvents batch commits, with its newly accepted events (a
        listener with an `outbox`: those it follows, and `batch`, a `store.outbox.Batch`: the
        entry's key and the events' keys, aligned; it deletes the entry in the one write
        transaction that applies the batch's effects, and applies those of the events the entry
        still names, only if it was there: `store.outbox.claim`, exactly once). It must not
        raise for one bad event: ingestion has already succeeded."""


class UserEraser(Protocol):
    """Drops what a domain keeps about a user outside `<user>␟...` keys (secondary indexes).

    One that may hold many records of a user also has `erase_ahead(user_id) -> int`: it
    deletes them in write transactions of its own (`Store.write(..., erasure=True)`), bounded,
    before the erasure's last transaction, and returns how many (`ProfileRepository.erase`).
    One that keeps copies of what readers read (a cache) also has `after_erasure(user_id)`:
    it runs once the erasure has committed, since a reader that began before the commit still
    reads the user's records as they were."""

    def erase_user(self, txn, user_id: str) -> int:
        """Runs inside the profile erasure's write transaction (`txn`, as `Store.write` gives
        it); returns the records removed."""


class OptInWatcher(Protocol):
    """Follows marketing opt-ins (SetConsent `opted_in=true`): the erasure's keep-out entries
    of the suppression list they lift (`server.contact.keepout`)."""

    def on_opt_in(self, txn, meta: Mapping, channel: str, timestamp: float, source: str) -> int:
        """Runs inside the opt-in's write transaction (`txn`), after the change: `meta` is the
        profile meta record as written, `source` the opt-in's (as the caller named it, "" for
        none); returns the records removed."""


class AttributeWatcher(Protocol):
    """Keeps an index of profile attributes outside `<user>␟...` keys (the address index of
    one-click unsubscribes and STOP replies: `server.messages.phones`)."""

    def on_attributes(self, txn, user_id: str, changed: Mapping[str, str]) -> int:
        """Runs inside UpsertAttributes' write transaction (`txn`), after the change:
        `changed` is the request's attributes (an empty value: removed); returns the records
        written."""

    def on_stored(self, txn, token: bytes, user_id: str | None,
                  attributes: Mapping[str, str]) -> int:
        """Runs once per profile stored before the watcher (`server.profiles.backfill`), in a
        write transaction of the walk: `token` is the profile's key part, `user_id` its id
        when the walk found it (None: the store holds none), `attributes` its attributes;
        returns the records written."""


class ErasedUsers(Protocol):
    """Which users were erased (the profiles domain's tombstones)."""

    def erased_at(self, user_ids: Sequence[str], tombs=None, txn=None) -> list[float | None]:
        """Each user's last erasure time, None if never erased (`txn`: a read the caller
        holds, or a new one)."""


class BundleGate(Protocol):
    """Decides whether a loaded bundle may serve (the model registry asks before it does)."""

    def check_bundle(self, bundle: Bundle) -> None:
        """Raise FailedPrecondition to refuse `bundle`; may mask rows it must not use."""


class UserExporter(Protocol):
    """Adds what a domain keeps about a user to their access export (ExportProfile, Art. 15/20):
    decisions, suppression status, scores, ... Each exporter owns its sections of the document."""

    def export_user(self, user_id: str) -> dict[str, object]:
        """{section name: JSON-ready value} of everything held about `user_id` (empty values
        included, so the document says "none" rather than leaving a section out). A section
        that may not fit one document (impressions) holds its first page, with the next page's
        offset beside it, and the exporter has `export_page(user_id, offset)` giving the page
        at that offset (ExportProfile's `impressions_offset`)."""


class ProfileReader(Protocol):
    """One user's stored profile (the profiles domain): what a message is rendered from."""

    async def get(self, user_id: str, max_events: int = 0) -> ProfileView:
        """Attributes, consent, decoded features; NotFound when the user has no profile."""

    def attributes_and_interests(self, user_id: str, most: int
                                 ) -> tuple[dict[str, str], tuple[str, ...]] | None:
        """The user's attributes and up to `most` category names by affinity, strongest first
        (what a message is rendered from, without decoding every feature); None: no profile."""

    def recipient_of(self, state, meta, most: int) -> tuple[dict[str, str], tuple[str, ...]] | None:
        """The same from a feature state and meta record already read (one snapshot)."""


class ConsentWriter(Protocol):
    """Records a user's consent for a channel (the profiles domain): unsubscribe, STOP."""

    async def set_consent(self, user_id: str, channel: str, opted_in: bool, source: str,
                          timestamp: float = 0.0, purpose: str = "",
                          existing: bool = False) -> None:
        """Idempotent: setting the same consent again changes nothing but its time. `purpose`:
        marketing (empty) or transactional (`server.contact.consent`).
        `ErasedSince` when it would bring an erased user back (dated before their erasure,
        or `existing` and no profile since the erasure)."""

    async def set_consents(self, user_ids: Sequence[str], channel: str, opted_in: bool,
                           source: str, timestamp: float = 0.0, purpose: str = "",
                           existing: bool = False, keep_later_opt_in: bool = False,
                           stopped_only: bool = False, open_only: bool = False,
                           needs_opt_in: bool = False,
                           opted_in_after: float | None = None) -> list[str]:
        """`set_consent` of each user in one write; those it would bring back skipped, and,
        checked in that write, those whose current state is (`keep_later_opt_in`) an opt-in
        dated after `timestamp` (or after `opted_in_after`, given), (`stopped_only`) not
        closed by a STOP alone or, with `needs_opt_in`, without an opt-in in its history
        (`contact.consent.reopenable`: what a START reopens), or (`open_only`) closed already.
        The users changed."""

    async def set_unnamed_consents(self, tokens: Sequence[bytes], channel: str, opted_in: bool,
                                   source: str, still, timestamp: float = 0.0,
                                   purpose: str = "", keep_later_opt_in: bool = False,
                                   stopped_only: bool = False, open_only: bool = False,
                                   needs_opt_in: bool = False,
                                   opted_in_after: float | None = None) -> list[bytes]:
        """`set_consents` of existing profiles known by their token alone (unnamed address
        index entries, `server.messages.phones`), each only while `still(txn, token)`. The
        tokens changed."""


class VariantChooser(Protocol):
    """Campaign definitions and logged decisions (the campaigns domain)."""

    async def get(self, campaign_id: str) -> Campaign:
        """The campaign; NotFound when there is none."""

    async def choose(self, campaign_id: str, user_id: str, context) -> Choice:
        """One logged decision for one user."""

    def decide(self, campaign_id: str, user_id: str, context, profile: bool = False,
               seen: bool = False, decision_id: str = "",
               reachable: frozenset[str] | None = None, addressed: bool = False
               ) -> PendingChoice:
        """One decision for one user, its record queued for the decision log: `.choice` is
        known at once (work on it may overlap the commit); await `.logged()` (the commit,
        which may find it over a frequency cap: suppressed) before answering, or `.cancel()`.
        `profile`: `.profile` carries the (state, meta, live seen-set if `seen` else None) the
        contact policy read, if it read any; `decision_id`: the id the caller fixed for it
        (`fixed_decision_id`), else a new one; `reachable`: the channels the caller's message
        may go on (None: any); `addressed`: it goes to the profile's addresses (a channel
        without one is chosen only when no other is allowed)."""

    def fixed_decision_id(self, started: float, key: str) -> str:
        """The decision id a job started at `started` fixes for `key` (the same every time)."""

    def answered_before(self, campaign_id: str, user_id: str, request_id: str, caller: str):
        """(Choice, request digest) of the decision logged for a request id of a campaign
        archived since, None if there is none (blocking: one read snapshot)."""

    async def withdraw(self, decision_ids) -> int:
        """Withdraw logged decisions nobody received (ids, or (id, request digest) pairs: a
        repeat of the request then decides anew, or (id, None, reason) triples: a repeat is
        answered the decision, suppressed with that reason); how many were withdrawn."""

    def abandon(self, pending) -> None:
        """The caller gave up after `decide` queued `pending`: its decision is withdrawn once
        logged pending, in the background."""

    async def claim_delivery(self, request: bytes, decision_id: str, until: float
                             ) -> dict | None:
        """For a request id's (digest `request`) decision: None when the caller is to deliver
        its message (claimed until `until`), else the state of the delivery an earlier call of
        the request claimed."""

    async def renew_delivery(self, request: bytes, decision_id: str, until: float) -> bool:
        """Extend the claim `claim_delivery` gave the caller to `until` while the delivery is
        being made; False when it is not any more."""

    async def settle_delivery(self, request: bytes, decision_id: str, state: dict) -> None:
        """The outcome of a delivery `claim_delivery` gave the caller."""

    def logged_decisions(self, campaign_id: str, wanted) -> dict[str, Choice]:
        """{decision id: Choice} of the (user id, decision id) pairs already logged for that
        user in the campaign (blocking: one read snapshot)."""


class Recommendations(Protocol):
    """The Recommend pipeline (exclusions applied) for one query."""

    async def recommend(self, query: RecQuery, request_id: str = "", on_loop: bool = False,
                        read: tuple | None = None, record: bool = True) -> RecResult:
        """Top-k rows of the active bundle for the query's user (`on_loop`: computed on the
        event loop, not handed to a batch thread; `read`: (user id, feature state, live
        seen-set) as the caller read them, used on the loop instead of a new read; `record`:
        logged as an impression now, else not until the caller calls `record`)."""

    def record(self, request_id: str, query: RecQuery, result: RecResult, at: float = 0.0
               ) -> None:
        """Log an answer of `recommend(record=False)` as shown (the impression log), dated `at`
        (0: now)."""

    def unavailable(self, item_ids: Sequence[str]) -> set[str]:
        """Those of `item_ids` that would not be recommended now (removed from the catalog)."""


class DecisionOwners(Protocol):
    """Whose a logged decision is (the campaigns domain): delivery reports name a message by
    its Message-ID, which carries the decision id."""

    async def decision_owner(self, decision_id: str) -> tuple[str, str] | None:
        """(user id, campaign id) of the decision, None if it is unknown."""


class EventRecorder(Protocol):
    """Records tracked events (the profiles domain), e.g. `email_sent` after a delivery."""

    async def track(self, events: Sequence[TrackedEvent], offset: int = 0):
        """Store the valid events (duplicates by event id are no-ops); the result's `rejected`
        lists the others, (index, event id, reason) each."""

    async def recorded_at(self, event_id: str) -> float | None:
        """The time of the event stored under `event_id` (None: none is)."""


class ImpressionSink(Protocol):
    """Where the Recommend path records its answers (the impression log)."""

    def record(self, request_id: str, query: RecQuery, result: RecResult, at: float = 0.0,
               given: bool = False) -> None:
        """Take the answer (dated `at`; 0: now) for later writing; must cost the serving path
        next to nothing (no I/O, no hashing) and never raise. `given`: the caller named the
        request (`x-request-id`): a repeat of the same answer under it is not logged again."""
