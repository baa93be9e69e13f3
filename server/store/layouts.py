"""Every kind of stored record, its table, its current layout version and how to migrate to it.

A record's layout version lives in the `meta` table, one entry per kind (`keys.layout_key`),
not in the record: hot reads and writes (feature states, decisions) touch the bytes as they
are, with no header to strip or add. When a kind's `version` goes up, add the step from the
old version to `steps`; the first process that opens the store (writable) stamps the new
version and rewrites every record of that kind, in transactions of `migrate.CHUNK` records
that a later open goes on from when one is cut short (`meta layout-progress`). No process
reads the records meanwhile: an open that finds the migration under way finishes it first,
and a binary that knows only the old layout is refused by the stamp (`migrate.open_layouts`).

A data dir written before versions were stored has no stamps: its records are in each kind's
`first` layout (1 for every kind below: the layouts of key version 1 in `keys`). A kind added
later declares the version it starts at as `first`.

To change a layout: bump `version`, add `steps[old] = fn(old bytes) -> new bytes` (or a `Fold`
when another record of the same user joins this one), keep the readers on the new layout
only, and add a test that opens a data dir in the old layout.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import keys as K

__all__ = ["RecordKind", "Fold", "KINDS"]


def _any(key: bytes) -> bool:
    return True


@dataclass(frozen=True)
class Fold:
    """A step that folds the record of the same user under another suffix (same table) into
    this one, and deletes it: `fn(this record, that record or None)` gives this record in the
    next layout."""

    own: bytes
    """The key suffix of this kind's records."""
    other: bytes
    """The key suffix of the record folded in."""
    fn: Callable[[bytes, bytes | None], bytes]

    def apply(self, table, txn, key: bytes, value: bytes) -> bytes:
        other_key = key[:len(key) - len(self.own)] + self.other
        other = table.get(txn, other_key)
        if other is not None:
            table.delete(txn, other_key)
        return self.fn(value, other)


@dataclass(frozen=True)
class RecordKind:
    name: str
    table: str
    version: int
    owns: Callable[[bytes], bool]
    """Which keys of `table` hold records of this kind."""
    what: str
    steps: Mapping[int, Callable[[bytes], bytes] | Fold] = field(default_factory=dict)
    """steps[v] turns a record in layout v into layout v + 1."""
    first: int = 1
    """The layout of records stored before this kind's version was stamped."""

    def __post_init__(self):
        missing = [v for v in range(self.first, self.version) if v not in self.steps]
        if missing:
            raise ValueError(f"record kind {self.name!r} at version {self.version} has no "
                             f"migration step from version(s) {missing}")


def _tombstone_unlinked(raw: bytes) -> bytes:
    """tombstone 1 -> 2: `found_by` null: a tombstone written before layout 2 kept nothing of
    the user's record-key token, and nothing without the user id can give it now (a restore
    counts these as erasures it cannot apply again: `server.backup`). One that has it (carried
    by a restore from a newer store into an older copy) keeps it."""
    record = json.loads(raw)
    record.setdefault("found_by", None)
    return json.dumps(record).encode()


def _tombstone_impressions_unlinked(raw: bytes) -> bytes:
    """tombstone 2 -> 3: `impressions_by` null: a tombstone written before layout 3 kept
    nothing that finds its user's impressions (keyed by a hash under the `user-id` keyring);
    a restore counts it in `impressions_not_linked`. One that has it keeps it."""
    record = json.loads(raw)
    record.setdefault("impressions_by", None)
    return json.dumps(record).encode()


def _meta_consent_by_purpose(raw: bytes) -> bytes:
    """profile_meta 1 -> 2: `consent[channel]` becomes `consent[channel]["marketing"]` (layout 1
    knew one purpose), and each stored state starts the `consent_history`, oldest first."""
    meta = json.loads(raw)
    old = {channel: entry if isinstance(entry, dict) else  # a bare flag: from a test only
           {"opted_in": bool(entry), "source": "", "timestamp": 0.0}
           for channel, entry in meta.get("consent", {}).items()}
    meta["consent"] = {channel: {"marketing": entry} for channel, entry in old.items()}
    meta["consent_history"] = sorted(
        ({"channel": channel, "purpose": "marketing", **entry} for channel, entry in old.items()),
        key=lambda change: change["timestamp"])
    return json.dumps(meta, sort_keys=True).encode()


def _meta_stop_events(raw: bytes) -> bytes:
    """profile_meta 2 -> 3: an SMS marketing opt-out of source `unsubscribe event` (or its
    `(shared address)`) dated as an `sms carrier STOP (21610)` opt-out of the record's history
    is the one the server recorded for that 21610 (`messages.reports.record_opt_out`: the STOP
    and the event share its time); it takes the source such an event writes now,
    `sms carrier STOP (21610) event` (and its shared one), which a START reopens, in the
    history and the current state. Layout 2 wrote `unsubscribe event` for a client's event and
    the 21610's alike; a client's is the user's withdrawal now, which a START never reopens
    (`contact.consent.event_source`), and so is every other `unsubscribe event` kept (not
    dated as a carrier STOP of the history: told apart by nothing stored). A record without
    such a pair is left byte for byte."""
    if b"unsubscribe event" not in raw or b"sms carrier STOP (21610)" not in raw:
        return raw
    from ..contact import consent as c
    meta = json.loads(raw)
    history = meta.get("consent_history", [])
    stops = {float(h.get("timestamp", 0.0)) for h in history if h.get("channel") == "sms"
             and not h.get("opted_in") and h.get("source") == c.CARRIER_SOURCE}
    renamed = {c.EVENT_SOURCE: c.STOP_EVENT_SOURCE, c.SHARED_SOURCE: c.STOP_SHARED_SOURCE}
    current = meta.get("consent", {}).get("sms", {}).get("marketing")
    changed = False
    for entry, channel, purpose in [*((h, h.get("channel"), h.get("purpose", "marketing"))
                                      for h in history), (current, "sms", "marketing")]:
        if entry and channel == "sms" and purpose == "marketing" and not entry.get("opted_in") \
                and entry.get("source") in renamed \
                and float(entry.get("timestamp", 0.0)) in stops:
            entry["source"] = renamed[entry["source"]]
            changed = True
    return json.dumps(meta, sort_keys=True).encode() if changed else raw


def _state_delivery_types(raw: bytes) -> bytes:
    """profile_state 1 -> 2: the event vocabulary gained email_bounce, email_complaint and
    sms_bounce (appended; their counts start at 0)."""
    mover = _STATE_MOVERS.get(1)
    if mover is None:
        from ..profiles import codec, schema  # at migration time: profiles imports the store
        s = schema.ProfileSchema()
        mover = _STATE_MOVERS[1] = codec.AppendedTypes(s.layout(schema.EVENT_TYPES_V1), s.layout())
    return mover.record(raw)


_STATE_MOVERS: dict[int, object] = {}


def _state_with_seen(state: bytes, seen: bytes | None) -> bytes:
    """profile_state 2 -> 3: the user's seen record (`<user>␟seen`, its own kind until now)
    joins the feature state in one record (profiles.codec.join_state)."""
    from ..profiles.codec import join_state  # profiles imports the store
    return join_state(state, seen)


def _send_job_terms_keyed(raw: bytes) -> bytes:
    """send_job 1 -> 2: the plain (unkeyed) digest of a job's terms that a Tailor from before
    they were keyed stored (32 hex characters; the keyed one has 64) becomes `plain_terms`, a
    keyed digest of it (messages.jobs.blind_plain_terms): the record outlives its audience's
    erasure, and the plain digest let anyone holding the data dir test a guessed audience."""
    job = json.loads(raw)
    terms = job.get("terms")
    if not isinstance(terms, str) or len(terms) != 32:
        return raw
    from ..messages.jobs import blind_plain_terms  # messages imports the store
    job["plain_terms"] = blind_plain_terms(job.pop("terms"))
    return json.dumps(job).encode()


def _pointer_unsure(raw: bytes) -> bytes:
    """phone_user/email_user 1 -> 2: a pointer stored before the held pointer named the address
    last set (UpsertAttributes) or messaged; layout 2's plain pointer is the address last
    messaged, so the old ones are marked `keys.ADDRESS_UNSURE` (read as the address held:
    `server.messages.phones`). A held pointer is marked too (read alike); a marked one is left
    as it is."""
    return raw if raw.startswith(K.ADDRESS_UNSURE) else K.ADDRESS_UNSURE + raw


def same(raw: bytes) -> bytes:
    """A step whose old layout is a valid new one (the new one only adds forms): the
    migration only stamps the new version (no record is read or rewritten); the bump keeps an
    older binary, which cannot read the new forms, away from the store."""
    return raw


def _decision_packed(raw: bytes) -> bytes:
    """decision 1 -> 2: the JSON object packed (campaigns.decision_codec), every key kept."""
    from ..campaigns.decision_codec import from_json  # campaigns imports the store
    return from_json(raw)


KINDS: tuple[RecordKind, ...] = (
    RecordKind("profile_state", "profiles", 3, lambda k: k.endswith(K.FEATURES_SUFFIX),
               "profiles.codec state record: uint32 n, a kernels.sparse feature state of n "
               "bytes (its own FORMAT_VERSION and layout fingerprint inside), then the "
               "profiles.seen record of every item the user touched (or nothing); 2: three "
               "more event types; 3: the seen record (`<user>␟seen` until then) inside",
               steps={1: _state_delivery_types,
                      2: Fold(K.FEATURES_SUFFIX, K.SEEN_SUFFIX, _state_with_seen)}),
    RecordKind("profile_meta", "profiles", 3, lambda k: k.endswith(K.PROFILE_META_SUFFIX),
               "JSON {attributes, consent: {channel: {purpose: state}}, consent_history, "
               "created_at, updated_at} (server.contact.consent); 3: the opt-out of the "
               "unsubscribe event the server records for a carrier's 21610 is sourced "
               "`sms carrier STOP (21610) event`, a START reopens it; `unsubscribe event` is a "
               "client's, which it never does",
               steps={1: _meta_consent_by_purpose, 2: _meta_stop_events}),
    RecordKind("event", "events", 1, _any, "tailor.v1.Event bytes"),
    RecordKind("dedupe", "dedupe", 1, _any, "the events key of the event"),
    RecordKind("category_code", "meta", 1, lambda k: k.startswith(K.CATEGORY_PREFIX),
               "ASCII integer code"),
    RecordKind("category_count", "meta", 1, lambda k: k == K.CATEGORY_COUNT, "ASCII integer"),
    RecordKind("bundle_active", "meta", 1, lambda k: k == K.BUNDLE_ACTIVE, "UTF-8 bundle version"),
    RecordKind("bundle_history", "meta", 1, lambda k: k == K.BUNDLE_HISTORY,
               "JSON list of bundle versions, oldest first"),
    RecordKind("worker_report", "meta", 2, lambda k: k.startswith(K.WORKER_PREFIX),
               "UTF-8 bundle version a worker process serves; 2: then a space and when the "
               "process started (clock ticks since boot: a later process given its pid is "
               "not taken for it; models.registry.worker_report)",
               steps={1: same}),
    RecordKind("bundle_canary", "meta", 1, lambda k: k == K.BUNDLE_CANARY,
               "JSON {id, version, share, stable, started, baseline} of the running canary "
               "(models.canary.CanarySplit)"),
    RecordKind("bundle_fallback", "meta", 1, lambda k: k == K.BUNDLE_FALLBACK,
               "JSON {from, to, at}: the active version a start could not load and the one it "
               "served instead (models.registry); deleted when a push, rollback, promotion or "
               "--bundle records a version, and counted only while bundle_active names `to`"),
    RecordKind("canary_report", "meta", 1, lambda k: k.startswith(K.CANARY_REPORT_PREFIX),
               "JSON {id, versions: {version: tally}}: a worker's Recommend counts per version "
               "since the canary started (models.tally)"),
    RecordKind("tombstone", "meta", 3, lambda k: k.startswith(K.TOMBSTONE_PREFIX),
               "JSON {at, found_by, impressions_by, events_until?, late_ms? or late?, "
               "erased?}: when the user whose keyed hash the key holds was erased, and a keyed "
               "hash (same key) of the user's record-key token, which finds their records "
               "again after a restore (`reerase.found_by`; null: written before layout 2, not "
               "linked), and one of their impression keys' user part per `user-id` key "
               "(`reerase.impressions_found_by`; null: written before layout 3; "
               "profiles.tombstones)",
               steps={1: _tombstone_unlinked, 2: _tombstone_impressions_unlinked}),
    RecordKind("erasure_check", "meta", 1, lambda k: k.startswith(K.ERASURE_CHECK_PREFIX),
               "ASCII hex: a keyed check value of the `erasure` key whose id the key names, "
               "written with the first tombstone under it, so a restore given another key "
               "under the same id says so instead of finding nobody (`reerase.key_check`)"),
    RecordKind("tombstone_count", "meta", 1, lambda k: k == K.TOMBSTONE_COUNT,
               "ASCII integer: tombstones written, so workers see new ones with one read"),
    RecordKind("tombstone_latest", "meta", 1, lambda k: k == K.TOMBSTONE_LATEST,
               "JSON {count, until, kids}: as of `count` tombstones, the latest time up to "
               "which an erased user's events are late and the key ids the tombstones name "
               "(profiles.tombstones: write transactions look up their users, not the list)"),
    RecordKind("tombstone_seq", "meta", 1, lambda k: k.startswith(K.TOMBSTONE_SEQ_PREFIX),
               "`kid␟hmac hex`, the key (after `tombstone␟`) of the tombstone written n-th "
               "(the key's 12 digits): workers read the tombstones written since they last "
               "looked, not the list (profiles.tombstones)"),
    RecordKind("tombstone_late", "meta", 1, lambda k: k.startswith(K.TOMBSTONE_LATE_PREFIX),
               "empty: an erased event stamped after its user's erasure (a client clock "
               "ahead), whose replay the tombstone named in the key refuses until the key's ms "
               "(then swept; profiles.tombstones)"),
    RecordKind("phone_index", "meta", 2, lambda k: k.startswith(K.PHONE_PREFIX),
               "user id of a hashed phone number (server.messages.phones), sealed under the "
               "user's data key with encryption on (Store.seal_for_user: token, sealed); the "
               "key is the number's digest, then SEP and the user's token (one entry per "
               "profile sharing the number; older entries: the digest alone); 2: or "
               "`\\x00unnamed`, a profile stored before the index whose id the store does not "
               "hold (phones.UNNAMED; the bump keeps a binary that reads it as an id away)",
               steps={1: same}),
    RecordKind("phone_user", "meta", 2, lambda k: k.startswith(K.PHONE_USER_PREFIX),
               "ASCII phone digest `kid.hex` of the user's last texted number; the key "
               "then SEP and `held`: the number their attribute holds, when another; "
               "2: a digest stored by layout 1 (last set or texted) is marked `?`, and SEP "
               "`sent`: the number a text last went to, when neither",
               steps={1: _pointer_unsure}),
    RecordKind("email_index", "meta", 2, lambda k: k.startswith(K.EMAIL_PREFIX),
               "user id of a hashed email address mailed (server.messages.phones, as "
               "phone_index: sealed; the address's digest, then SEP and the user's token); 2: "
               "or `\\x00unnamed` (as phone_index 2)", steps={1: same}),
    RecordKind("attributes_backfill", "meta", 1, lambda k: k == K.ATTRIBUTES_BACKFILL,
               "JSON [hex of the last profile key walked] while the walk telling attribute "
               "watchers of the profiles stored before them is under way, `done` after "
               "(profiles.backfill)"),
    RecordKind("email_user", "meta", 2, lambda k: k.startswith(K.EMAIL_USER_PREFIX),
               "ASCII address digest `kid.hex` of the user's last mailed email address; "
               "the key then SEP and `held`: the address their attribute holds, when another; "
               "2: a digest stored by layout 1 (last set or mailed) is marked `?`, and SEP "
               "`sent`: the address a message last went to, when neither",
               steps={1: _pointer_unsure}),
    RecordKind("campaign", "campaigns", 1, _any, "Campaign JSON (spec, archived, revision)"),
    RecordKind("bandit_state", "bandit", 1, lambda k: not k.startswith(K.SEP),
               "kernels.bandits state bytes (posterior)"),
    RecordKind("campaign_counters", "bandit", 1, lambda k: k.startswith(K.COUNT_PREFIX),
               "JSON counters (decisions per arm, holdout, pending, ...)"),
    RecordKind("decision", "decisions", 2, lambda k: not k.startswith(K.SEP),
               "decision record (campaigns.decision_codec): 1 JSON; 2 packed struct head, "
               "strings, float64 context", steps={1: _decision_packed}),
    RecordKind("decision_index", "decisions", 1, lambda k: k.startswith(K.INDEX_PREFIX),
               "the decision key"),
    RecordKind("decision_due", "decisions", 1, lambda k: k.startswith(K.DUE_PREFIX),
               "the decision key"),
    RecordKind("decision_request", "decisions", 1,
               lambda k: k.startswith((K.REQUEST_PREFIX, K.LEGACY_REQUEST_PREFIX)),
               "JSON {d, t, r, x}: the decision a ChooseVariant/ComposeMessage request id was "
               "answered with, when, whether a repeat was answered it, and (x, optional) a "
               "delivering ComposeMessage's delivery state, keyed by time "
               "bucket and digest (campaigns.requests: keyed with the store-id key; an unkeyed "
               "blake2b in entries made before, read for one window after); by digest alone before stop 48 "
               "(LEGACY_REQUEST_PREFIX: moved into buckets once the campaigns writer has started, "
               "the value as it is)"),
    RecordKind("decision_request_expiry", "decisions", 1,
               lambda k: k.startswith(K.LEGACY_REQUEST_EXPIRY_PREFIX),
               "empty: a legacy request id entry in the order of its time (before stop 48; "
               "deleted once the campaigns writer has started: campaigns.requests)"),
    RecordKind("contact_history", "contacts", 2, lambda k: k.endswith(K.CONTACTS_SUFFIX),
               "JSON list of a user's recent contacts [time, channel, decision id] "
               "(contact.caps.ContactHistory); 2: a transactional campaign's with a fourth "
               "element, \"transactional\" (layout 1 records are layout 2 as they are; the bump "
               "keeps a binary that unpacks three elements away from them)",
               steps={1: same}),
    RecordKind("suppression", "suppression", 1, _any,
               "JSON {kind, reason, timestamp[, purpose]} of an address on the suppression "
               "list, keyed by its HMAC (contact.suppression); `purpose` \"marketing\" only "
               "in an erasure's keep-out (contact.keepout), absent: every purpose, so the "
               "entries stored before it read as they did with no rewrite, and a Tailor "
               "before it reads a keep-out as blocking every purpose (more, never less)"),
    RecordKind("suppression_spelling", "meta", 1, lambda k: k == K.SUPPRESSION_SPELLING,
               "ASCII integer: how the suppression list's entries were normalized before "
               "hashing: 1 = some as given (listed before the NFC, bracket and trunk-zero "
               "rules), 2 = some with an xn-- domain (before that rule), 3 = some phone numbers "
               "with a trunk prefix after the country code (before that rule), 4 = some "
               "phone numbers with Italy's own 0 dropped after a \"(0)\" (before it "
               "followed the plans), 5 = some mobiles with a \"(0)\" kept as a 0 where "
               "both forms are numbers (before that was checked), 6 = all as now "
               "(contact.addresses.SPELLING)"),
    RecordKind("send_job", "sends", 4, lambda k: k.startswith(K.SEND_JOB_PREFIX),
               "JSON {campaign, context, rates, total, counts, owner, started, finished, "
               "terms, due (a deferred ComposeMessage's job: when to start it; kept "
               "finished until its send_expiry), cancelled (when CancelSend or its bounce "
               "breaker stopped it; absent or 0: not cancelled), stopped_by (which: "
               "cancelled, bounce_breaker; absent: cancelled)} "
               "(messages.sends); 2: terms keyed, a plain digest of them (a Tailor from "
               "before) replaced by plain_terms, a keyed digest of it (messages.jobs); 3: "
               "cancelled (layout 2 records are layout 3 as they are; the bump keeps a binary "
               "that would go on sending a cancelled job away from the store); 4: "
               "stopped_by (layout 3 records are layout 4 as they are, read cancelled, as "
               "before; the bump keeps a binary that would settle a job its breaker stopped "
               "`cancelled` after a crash away from the store)",
               steps={1: _send_job_terms_keyed, 2: same, 3: same}),
    RecordKind("send_expiry", "sends", 1, lambda k: k.startswith(K.SEND_EXPIRY_PREFIX),
               "empty: a finished deferred ComposeMessage's send_job is kept until the time "
               "in the key (messages.sends)"),
    RecordKind("send_recipient", "sends", 1, lambda k: k.startswith(K.SEND_USER_PREFIX),
               "JSON {user, state, decision, reason, send_at, message} of one recipient of a "
               "send job (messages.sends)"),
    RecordKind("catalog_item", "catalog", 1, _any,
               "JSON {seq, at, removed, title, category, price, url, image} of an item's latest "
               "update between trainings (server.catalog.records)"),
    RecordKind("catalog_seq", "meta", 1, lambda k: k == K.CATALOG_SEQ,
               "ASCII integer: the latest catalog update's sequence number"),
    RecordKind("impression", "impressions", 1, lambda k: not k.startswith(K.SEP),
               "packed impression: fixed struct head (time, outcomes, lengths), model version, "
               "context, item codes int64[n], scores float32[n], outcome bits uint8[n] "
               "(impressions.records)"),
    RecordKind("impression_counters", "impressions", 1,
               lambda k: k.startswith(K.IMPRESSION_COUNT_PREFIX),
               "packed float64 counters of one model version and channel (impressions.records)"),
    RecordKind("impression_buckets", "impressions", 1,
               lambda k: k.startswith(K.IMPRESSION_BUCKET_PREFIX),
               "packed float64 (impressions, impressions with a click) of one model version "
               "shown in one 10 s bucket (impressions.records; the canary's matured CTR)"),
    RecordKind("impression_request", "impressions", 1,
               lambda k: k.startswith(K.REQUEST_PREFIX),
               "JSON {d, t, r} naming an answer logged under a caller's request id (digest of "
               "user hash, id and items shown) in the bucket of its time, as decision request "
               "ids are (impressions.repeats, campaigns.requests)"),
    # Encryption at rest (store.datakeys, store.rekey). With it on, every per-user record of
    # keys.USER_TABLES above is sealed as a whole (store.sealed: version, nonce, AES-GCM).
    RecordKind("data_key", "datakeys", 1, _any,
               "a user's wrapped data key half: slot, master key id, nonce, AES-GCM "
               "(store.datakeys)"),
    RecordKind("keyslot_count", "meta", 1, lambda k: k == b"keyslot-count",
               "ASCII integer: pad slots handed out in the keyslots file"),
    RecordKind("datakey_kid", "meta", 1, lambda k: k == b"datakey-kid",
               "UTF-8 master key id new data keys are wrapped under (rotate-key)"),
    RecordKind("datakey_shreds", "meta", 1, lambda k: k == b"datakey-shreds",
               "ASCII integer: data keys destroyed so far (store.datakeys)"),
    RecordKind("datakey_unzeroed", "meta", 1, lambda k: k == b"datakey-unzeroed",
               "ASCII integers, comma-separated: pad slots of the keys the latest erasure "
               "destroyed, zeroed after its commit and again at open (store.datakeys)"),
    RecordKind("key_version", "meta", 1, lambda k: k == b"key-version",
               "ASCII integer: 2 = ids in keys are keyed hashes (store.rekey)"),
    RecordKind("rekey_progress", "meta", 1, lambda k: k == b"rekey-progress",
               "JSON [step, half] of a re-key to key version 2 under way (store.rekey); gone "
               "once it is done"),
    RecordKind("layout_progress", "meta", 1, lambda k: k == b"layout-progress",
               "JSON {from, todo, at, n} of a layout migration under way (store.migrate); gone "
               "once it is done"),
    RecordKind("seal_progress", "meta", 1, lambda k: k == b"seal-progress",
               "JSON [part, last key sealed in it (hex) or null] of a seal under way "
               "(store.rekey); gone once it is done"),
    RecordKind("sealed_flag", "meta", 1, lambda k: k == b"sealed",
               "b'1' once per-user records are encrypted"),
    RecordKind("store_id_check", "meta", 1, lambda k: k == b"store-id-check",
               "check value of the store-id key the keys were hashed with"),
    RecordKind("outbox", "outbox", 1, _any,
               "ASCII lines: the replays tried, then the events keys (`keys.event_key`, keyed "
               "hashes) of one ingestion batch's events whose effects its listener (the key's "
               "last part) has not applied yet; written in the ingestion's transaction, deleted "
               "in the one that applies them (store.outbox, server.profiles.outbox); not sealed: "
               "it holds what the events table's keys hold, no id, no address"),
    RecordKind("dead_letter", "sends", 2, lambda k: k.startswith(K.DEAD_LETTER_PREFIX),
               "JSON {channel, campaign, decision, user, to, data, reason, attempts, at, id, "
               "claimed_until, claim} of a message no adapter could deliver "
               "(messages.deadletters); 2: claimed_until and claim (a running retry's claim "
               "and its token, both optional; layout 1 records are layout 2 as "
               "they are: the bump keeps a binary that refuses the new key away from them)",
               steps={1: same}),
)
"""Every stored record kind. Add a kind here with the table and keys that hold it."""
