"""Every key layout of every table (key version 2), and nothing else.

Keys are UTF-8 parts joined by 0x1F (unit separator, shown ␟), which no valid id may contain.
`<user>` below is `tokens.user_token(user id)` and `<event>` `tokens.event_token(event id)`:
keyed hashes, so no key holds a raw id (version 1 held the ids; `migrate` rewrites them).
Timestamps in keys are milliseconds since the epoch, 16 zero-padded digits, so byte order is
time order. Records keyed by a user start with `<user>␟` (only in `USER_TABLES`), so a prefix
scan finds exactly one user's records; index keys start with the separator, so no user's
prefix ever matches them.

    profiles   <user>␟features                  feature state, seen  feature_key
    profiles   <user>␟meta                      attributes, consent  profile_meta_key
    events     <user>␟<ms>␟<event>              raw event            event_key
    dedupe     e␟<event>                        -> events key        dedupe_key
    meta       category␟<name>                  category code        category_key
    meta       category-count                   codes handed out     CATEGORY_COUNT
    meta       bundle/active, bundle/history    bundle pointer       BUNDLE_ACTIVE, BUNDLE_HISTORY
    meta       worker␟<pid>                     version a worker serves  worker_key
    meta       bundle/canary                    running canary (JSON) BUNDLE_CANARY
    meta       bundle/fallback                  a start's fallback (JSON) BUNDLE_FALLBACK
    meta       canary␟<pid>                     a worker's canary tally  canary_report_key
    meta       canary␟<pid>.<random>            a stopped worker's tally (still summed)
    meta       layout␟<record kind>             layout version       layout_key
    meta       tombstone␟<kid>␟<hmac hex>       erasure time (JSON)  tombstone_key
    meta       tombstone-count                  tombstones written   TOMBSTONE_COUNT
    meta       tombstone-latest                 latest erasure (JSON) TOMBSTONE_LATEST
    meta       tombstone-seq␟<12-digit n>       n-th tombstone's key tombstone_seq_key
    meta       tombstone-late␟<ms>␟<kid>␟<hmac hex>␟<event>  (empty)  tombstone_late_key
    meta       tombstone-late-legacy            last record swept    TOMBSTONE_LATE_LEGACY
    meta       sms␟<phone digest>               -> user id           phone_key
    meta       sms-user␟<user>                  -> phone digest      phone_user_key
    meta       email␟<address digest>␟<user>     -> user id           address_entry_key
    meta       email-user␟<user>                -> address digest    address_user_key
    campaigns  <campaign>                       campaign             campaign_key
    bandit     <campaign>                       posterior            campaign_key
    bandit     ␟count␟<campaign>                counters             count_key
    decisions  <user>␟<decision>                decision record      decision_key
    decisions  ␟d␟<decision>                    -> decision key      decision_index_key
    decisions  ␟w␟<deadline ms>␟<decision>      -> decision key      due_key
    decisions  ␟i␟<bucket ms><request digest>   request id's answer  request_key
    contacts   <user>␟contacts                  recent contacts      contact_key
    suppression <kid>␟<hmac hex>                suppressed address   suppression_key
    meta       suppression-spelling             entries' spelling    SUPPRESSION_SPELLING
    sends      j␟<send id>                      send job             send_job_key
    sends      u␟<send id>␟<8-digit seq>        one recipient's send send_user_key
    sends      e␟<ms>␟<send id>                 when a kept job goes send_expiry_key
    catalog    <item id>                        catalog update       catalog_item_key
    meta       catalog-seq                      last update's seq    CATALOG_SEQ
    impressions <kid>␟<user hash>␟<ms>␟<request id>  impression       impression_key
    impressions ␟count␟<version>␟<channel>      online counters      impression_count_key
    impressions ␟shown␟<version>␟<12-digit s>   shown, clicked in 10 s  impression_bucket_key
    impressions ␟i␟<bucket ms><digest>          a caller's id answered  request_key (impressions.repeats)
    datakeys   <user>                           wrapped data key     (server.store.datakeys)
    sends      d␟<letter id: ms.hex>            a dead letter        dead_letter_key
    outbox     <ms>␟<batch>␟<listener>          events keys to apply outbox_key

The impressions table is keyed by a keyed hash of the user (HMAC-SHA256 under key `kid` of the
`user-id` keyring, 32 hex characters), never the id: erasure deletes the user's prefix under
every key of the ring (`impression_user_prefix`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .tokens import event_token, event_tokens, user_token

SEP_CHAR = "\x1f"
"""The one separator of key parts, which no id may contain (validation checks ids against it)."""
SEP = SEP_CHAR.encode()
MS_DIGITS = 16
_MS = b"%0" + str(MS_DIGITS).encode() + b"d"
"""The one millisecond key format (b"%016d")."""
MS_MAX = b"9" * MS_DIGITS

USER_TABLES = ("profiles", "events", "decisions", "contacts")
"""The tables holding `<user>␟...` records (erasure clears the user's prefix in these only)."""

__all__ = [
    "SEP", "SEP_CHAR", "MS_DIGITS", "MS_MAX", "USER_TABLES", "join_key", "split_key",
    "millis", "millis_many", "ms_part", "user_prefix", "impression_keys",
    "feature_key", "FEATURES_SUFFIX", "profile_meta_key", "PROFILE_META_SUFFIX",
    "feature_keys_of", "profile_meta_keys_of", "keyed_event_and_dedupe_keys",
    "SEEN_SUFFIX",
    "event_key", "event_keys", "event_and_dedupe_keys", "event_parts",
    "dedupe_key", "dedupe_keys", "dedupe_key_of_event", "DEDUPE_PREFIX",
    "category_key", "CATEGORY_PREFIX", "CATEGORY_COUNT", "BUNDLE_ACTIVE", "BUNDLE_HISTORY",
    "worker_key", "worker_pid", "WORKER_PREFIX", "layout_key", "LAYOUT_PREFIX",
    "BUNDLE_CANARY", "BUNDLE_FALLBACK", "CANARY_REPORT_PREFIX", "canary_report_key",
    "tombstone_key", "tombstone_parts", "TOMBSTONE_PREFIX", "TOMBSTONE_COUNT",
    "ERASURE_CHECK_PREFIX", "erasure_check_key",
    "TOMBSTONE_LATEST", "tombstone_seq_key", "tombstone_seq", "TOMBSTONE_SEQ_PREFIX",
    "TOMBSTONE_LATE_PREFIX", "TOMBSTONE_LATE_LEGACY", "TOMBSTONE_LATE_LEGACY_DONE",
    "tombstone_late_key", "tombstone_late_parts",
    "campaign_key", "count_key", "COUNT_PREFIX", "decision_key", "decision_index_key",
    "INDEX_PREFIX", "due_key", "DUE_PREFIX", "request_key", "REQUEST_PREFIX",
    "LEGACY_REQUEST_PREFIX", "LEGACY_REQUEST_EXPIRY_PREFIX", "contact_key", "CONTACTS_SUFFIX",
    "suppression_key", "SUPPRESSION_SPELLING", "phone_key", "PHONE_PREFIX", "phone_entry_key",
    "phone_user_key", "EMAIL_PREFIX", "EMAIL_USER_PREFIX", "ADDRESS_UNSURE", "ADDRESS_PREFIXES",
    "address_key", "address_entry_key", "address_user_key", "address_token_entry_key",
    "address_token_user_key", "ADDRESS_UNNAMED", "ATTRIBUTES_BACKFILL",
    "PHONE_USER_PREFIX", "send_job_key", "SEND_JOB_PREFIX", "send_user_key", "send_user_prefix",
    "send_expiry_key", "SEND_EXPIRY_PREFIX",
    "SEND_USER_PREFIX", "catalog_item_key", "CATALOG_SEQ", "impression_key",
    "impression_user_prefix", "impression_ms", "impression_count_key", "IMPRESSION_COUNT_PREFIX",
    "impression_bucket_key", "impression_bucket_prefix", "IMPRESSION_BUCKET_PREFIX",
    "IMPRESSION_BUCKET_SECONDS",
    "DEAD_LETTER_PREFIX", "dead_letter_key",
    "decision_keys_many", "due_keys_many", "outbox_key", "outbox_parts",
]


def join_key(*parts: str | bytes) -> bytes:
    out = []
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        if SEP in raw:
            raise ValueError(f"key part {part!r} contains the 0x1F separator")
        out.append(raw)
    return SEP.join(out)


def split_key(key: bytes) -> list[str]:
    return [p.decode() for p in key.split(SEP)]


# -- time ---------------------------------------------------------------------------------------
def millis(ts: float) -> int:
    """Seconds to whole milliseconds, truncated, never negative."""
    return max(int(ts * 1000), 0)


def millis_many(ts: Sequence[float]) -> list[int]:
    """`millis` of every timestamp at once (both truncate toward zero)."""
    return np.maximum(np.array(ts, np.float64) * 1000, 0).astype(np.int64).tolist()


def ms_part(ts: float) -> bytes:
    """The key part of `ts`: milliseconds, 16 digits."""
    return _MS % millis(ts)


# -- profiles and events ------------------------------------------------------------------------
FEATURES_SUFFIX = SEP + b"features"
PROFILE_META_SUFFIX = SEP + b"meta"
SEEN_SUFFIX = SEP + b"seen"
"""Seen records of their own, until layout 3 of `profile_state` folded them in (migration only)."""
_EVENT = SEP.join([b"%s", _MS, b"%s"])  # user, ts in ms, event id
DEDUPE_PREFIX = b"e" + SEP


def user_prefix(user_id: str) -> bytes:
    return user_token(user_id) + SEP


def feature_key(user_id: str) -> bytes:
    return user_token(user_id) + FEATURES_SUFFIX


def profile_meta_key(user_id: str) -> bytes:
    return user_token(user_id) + PROFILE_META_SUFFIX


def feature_keys_of(tokens: Sequence[bytes]) -> list[bytes]:
    """`feature_key` of users given by their tokens (a batch's users, each hashed once)."""
    return [t + FEATURES_SUFFIX for t in tokens]


def profile_meta_keys_of(tokens: Sequence[bytes]) -> list[bytes]:
    """`profile_meta_key` of users given by their tokens."""
    return [t + PROFILE_META_SUFFIX for t in tokens]


def event_key(user_id: str, ts: float, event_id: str) -> bytes:
    return _EVENT % (user_token(user_id), millis(ts), event_token(event_id.encode()))


def event_keys(user_ids: Sequence[str], ts: Sequence[float], event_ids: Sequence[bytes]) -> list[bytes]:
    """`event_key` of every event at once (event ids already encoded)."""
    return event_and_dedupe_keys(user_ids, ts, event_ids)[0]


def event_and_dedupe_keys(user_ids: Sequence[str], ts: Sequence[float],
                          event_ids: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(`event_keys`, `dedupe_keys`) of the same events, each id hashed once, in one call."""
    return keyed_event_and_dedupe_keys([user_token(u) for u in user_ids], ts, event_ids)


def keyed_event_and_dedupe_keys(user_tokens: Sequence[bytes], ts: Sequence[float],
                                event_ids: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """`event_and_dedupe_keys` of events whose users are given by their tokens (a batch's
    users, each hashed once: `records.EventRecords`)."""
    tokens = event_tokens(list(event_ids))
    return ([_EVENT % (u, m, t) for u, m, t in zip(user_tokens, millis_many(ts), tokens)],
            [DEDUPE_PREFIX + t for t in tokens])


def event_parts(key: bytes) -> list[bytes]:
    """[user token, ms part, event token] of an events key."""
    return key.split(SEP)


def dedupe_key(event_id: str) -> bytes:
    return DEDUPE_PREFIX + event_token(event_id.encode())


def dedupe_keys(event_ids: Sequence[bytes]) -> list[bytes]:
    return [DEDUPE_PREFIX + t for t in event_tokens(list(event_ids))]


def dedupe_key_of_event(key: bytes) -> bytes:
    """The dedupe key of the event stored under events key `key`."""
    return DEDUPE_PREFIX + key.rsplit(SEP, 1)[1]


# -- meta -----------------------------------------------------------------------------------------
CATEGORY_PREFIX = b"category" + SEP
CATEGORY_COUNT = b"category-count"
BUNDLE_ACTIVE = b"bundle/active"
BUNDLE_HISTORY = b"bundle/history"
WORKER_PREFIX = b"worker" + SEP
BUNDLE_CANARY = b"bundle/canary"
BUNDLE_FALLBACK = b"bundle/fallback"
CANARY_REPORT_PREFIX = b"canary" + SEP
LAYOUT_PREFIX = b"layout" + SEP
TOMBSTONE_PREFIX = b"tombstone" + SEP
TOMBSTONE_COUNT = b"tombstone-count"
TOMBSTONE_LATEST = b"tombstone-latest"
TOMBSTONE_SEQ_PREFIX = b"tombstone-seq" + SEP
TOMBSTONE_LATE_PREFIX = b"tombstone-late" + SEP
TOMBSTONE_LATE_LEGACY = b"tombstone-late-legacy"
"""How far `Tombstones.sweep_late` has moved the token lists of records written before
`tombstone_late_key` (the last tombstone key done; `TOMBSTONE_LATE_LEGACY_DONE` once all are)."""
TOMBSTONE_LATE_LEGACY_DONE = b"done"


def category_key(name: str) -> bytes:
    return join_key("category", name)


def worker_key(pid: int) -> bytes:
    return WORKER_PREFIX + str(pid).encode()


def worker_pid(key: bytes) -> int:
    return int(key[len(WORKER_PREFIX):])


def canary_report_key(pid: int) -> bytes:
    return CANARY_REPORT_PREFIX + str(pid).encode()


def layout_key(kind: str) -> bytes:
    return LAYOUT_PREFIX + kind.encode()


ERASURE_CHECK_PREFIX = b"erasure-check" + SEP


def erasure_check_key(kid: str) -> bytes:
    """What tells the `erasure` key `kid` tombstones were written under (`reerase.key_check`)."""
    return ERASURE_CHECK_PREFIX + kid.encode()


def tombstone_key(kid: str, digest: str) -> bytes:
    """An erased user's tombstone: the key id and hex HMAC of the user id (never the id)."""
    return TOMBSTONE_PREFIX + join_key(kid, digest)


def tombstone_seq_key(n: int) -> bytes:
    """Where the key of the `n`-th tombstone written is logged (`n`: `TOMBSTONE_COUNT` once it
    is written), so a worker reads the tombstones written since it last looked, in order."""
    return TOMBSTONE_SEQ_PREFIX + b"%012d" % n


def tombstone_seq(key: bytes) -> int:
    """The `n` of a `tombstone_seq_key`."""
    return int(key[len(TOMBSTONE_SEQ_PREFIX):])


def tombstone_late_key(ms: int, kid: str, digest: str, token: bytes = b"") -> bytes:
    """An erased event stamped after its user's erasure (`token`: its `event_token`), kept by
    the user's tombstone (`kid`, `digest`) until `ms` (16 digits first: the sweep walks them in
    time order); without `token`, the prefix of that tombstone's events kept until `ms`."""
    return TOMBSTONE_LATE_PREFIX + join_key(_MS % ms, kid, digest, token)


def tombstone_late_parts(key: bytes) -> tuple[int, str, str, bytes]:
    """(ms, kid, hex digest, event token) of a `tombstone_late_key`."""
    ms, kid, digest, token = key[len(TOMBSTONE_LATE_PREFIX):].split(SEP)
    return int(ms), kid.decode(), digest.decode(), token


def tombstone_parts(key: bytes) -> tuple[str, str]:
    """(kid, hex digest) of a tombstone key."""
    kid, digest = split_key(key[len(TOMBSTONE_PREFIX):])
    return kid, digest


# -- campaigns and decisions ------------------------------------------------------------------------
COUNT_PREFIX = SEP + b"count" + SEP
INDEX_PREFIX = SEP + b"d" + SEP
DUE_PREFIX = SEP + b"w" + SEP
REQUEST_PREFIX = SEP + b"i" + SEP
LEGACY_REQUEST_PREFIX = SEP + b"r" + SEP
"""Request id entries keyed by digest alone (before stop 48: `campaigns.requests` converts them)."""
LEGACY_REQUEST_EXPIRY_PREFIX = SEP + b"q" + SEP
"""Their expiry keys, `<ms>` then the digest (before stop 48: converted likewise)."""


def request_key(start_ms: int, digest: bytes) -> bytes:
    """The entry of a decision request id (`campaigns.requests`) in the bucket of ids
    remembered from `start_ms` (whole milliseconds) on: time order, then its hex digest."""
    return REQUEST_PREFIX + _MS % start_ms + digest


def campaign_key(campaign_id: str) -> bytes:
    """A campaign's key in `campaigns` and (its posterior) in `bandit`."""
    return campaign_id.encode()


def count_key(campaign_id: str) -> bytes:
    return COUNT_PREFIX + campaign_id.encode()


def decision_key(user_id: str, decision_id: str) -> bytes:
    return join_key(user_token(user_id), decision_id)


def decision_index_key(decision_id: str) -> bytes:
    return INDEX_PREFIX + decision_id.encode()


def due_key(deadline: float, decision_id: str) -> bytes:
    """The pending-window entry of a decision; `due_key(now, "")` bounds the ones due by now."""
    return _due_prefix(deadline) + decision_id.encode()


def _due_prefix(deadline: float) -> bytes:
    return DUE_PREFIX + ms_part(deadline) + SEP


def due_keys_many(deadlines: Sequence[float], decision_ids: Sequence[str]) -> list[bytes]:
    """`due_key` of many decisions, aligned; decisions of the same deadline in a row share
    its prefix (made once)."""
    out, last, part = [], None, b""
    for deadline, decision_id in zip(deadlines, decision_ids):
        if deadline != last:
            last, part = deadline, _due_prefix(deadline)
        out.append(part + decision_id.encode())
    return out


def decision_keys_many(user_ids: Sequence[str], decision_ids: Sequence[str]
                       ) -> tuple[list[bytes], list[bytes]]:
    """(`decision_key`, `decision_index_key`) of many decisions, aligned: one separator check
    for all the ids (the tokens are hex) instead of `join_key`'s per part."""
    if SEP_CHAR in "".join(decision_ids):
        raise ValueError("a decision id contains the 0x1F separator")
    ids = [d.encode() for d in decision_ids]
    pkeys = [user_token(u) + SEP + d for u, d in zip(user_ids, ids)]
    return pkeys, [INDEX_PREFIX + d for d in ids]


# -- contact policy ---------------------------------------------------------------------------------
CONTACTS_SUFFIX = SEP + b"contacts"


def contact_key(user_id: str) -> bytes:
    """A user's recent contacts (frequency caps) in `contacts`."""
    return user_token(user_id) + CONTACTS_SUFFIX


# -- suppression list ------------------------------------------------------------------------------
def suppression_key(kid: str, digest: str) -> bytes:
    """An address's entry: the id of the key and the hex HMAC it was hashed with (no user in
    it: the list is global and outlives profiles)."""
    return join_key(kid, digest)


SUPPRESSION_SPELLING = b"suppression-spelling"


# -- SMS replies --------------------------------------------------------------------------------
PHONE_PREFIX = b"sms" + SEP
PHONE_USER_PREFIX = b"sms-user" + SEP


def phone_key(digest: str) -> bytes:
    """Index of the phone numbers SMS went to: keyed hash of the number -> user id."""
    return PHONE_PREFIX + digest.encode()


def phone_entry_key(digest: str, user_id: str) -> bytes:
    """One profile's entry under a number (several profiles may share one: each is found by a
    STOP from it); `phone_key(digest)` alone is the one-user entry written before."""
    return phone_key(digest) + SEP + user_token(user_id)


def phone_user_key(user_id: str) -> bytes:
    """The user's entry in that index (erasure finds the forward key through it)."""
    return PHONE_USER_PREFIX + user_token(user_id)


# -- one-click unsubscribe of a shared email address ------------------------------------------------
EMAIL_PREFIX = b"email" + SEP
EMAIL_USER_PREFIX = b"email-user" + SEP
ADDRESS_UNSURE = b"?"
"""Prefix of a user's address pointer stored before the held pointer (phone_user/email_user
layout 1, marked by the migration to 2): the address last set *or* messaged, not known which."""
ADDRESS_PREFIXES = {"sms": (PHONE_PREFIX, PHONE_USER_PREFIX),
                    "email": (EMAIL_PREFIX, EMAIL_USER_PREFIX)}
"""Channel -> (its index of the addresses messages went to, the users' pointers into it):
the SMS numbers texted (`phone_*` above) and the email addresses mailed, alike."""


def address_key(channel: str, digest: str) -> bytes:
    """The index of the addresses messages on `channel` went to: keyed hash of the address."""
    return ADDRESS_PREFIXES[channel][0] + digest.encode()


def address_entry_key(channel: str, digest: str, user_id: str) -> bytes:
    """One profile's entry under an address (several profiles may share one)."""
    return address_token_entry_key(channel, digest, user_token(user_id))


def address_token_entry_key(channel: str, digest: str, token: bytes) -> bytes:
    """`address_entry_key` of the user whose token is `token`."""
    return address_key(channel, digest) + SEP + token


def address_user_key(channel: str, user_id: str) -> bytes:
    """The user's pointer: the digest of the address last indexed for them on `channel`."""
    return address_token_user_key(channel, user_token(user_id))


def address_token_user_key(channel: str, token: bytes) -> bytes:
    """`address_user_key` of the user whose token is `token`."""
    return ADDRESS_PREFIXES[channel][1] + token


ADDRESS_UNNAMED = b"\x00unnamed"
"""The value of an address entry that names no user (`messages.phones.UNNAMED`: a profile
stored before the index whose id the store does not hold); no user id is stored as it, and no
sealed one starts with a NUL (a token does), so it is stored as is, never sealed (`rekey`)."""


ATTRIBUTES_BACKFILL = b"attributes-backfill"
"""meta: how far the walk of stored profiles that tells attribute watchers of the attributes
stored before them went (`server.profiles.backfill`): JSON [last meta key done, hex] while
under way, `done` after."""


# -- send jobs (SendCampaign) ----------------------------------------------------------------------
SEND_JOB_PREFIX = b"j" + SEP
SEND_USER_PREFIX = b"u" + SEP


def send_job_key(send_id: str) -> bytes:
    """A send job: campaign, rates, counts, owner."""
    return SEND_JOB_PREFIX + send_id.encode()


def send_user_prefix(send_id: str) -> bytes:
    return SEND_USER_PREFIX + send_id.encode() + SEP


def send_user_key(send_id: str, seq: int) -> bytes:
    """One recipient of a job, by position in the audience (the user id is in the value, so
    the job's records scan in audience order)."""
    return send_user_prefix(send_id) + b"%08d" % seq


SEND_EXPIRY_PREFIX = b"e" + SEP


def send_expiry_key(at: float, send_id: str) -> bytes:
    """When the kept record of a finished deferred ComposeMessage's job goes (empty value;
    `messages.sends`): keys in time order, so the expired ones scan first."""
    return SEND_EXPIRY_PREFIX + ms_part(at) + SEP + send_id.encode()


# -- catalog updates between trainings (UpsertItems, RemoveItems) ---------------------------------
CATALOG_SEQ = b"catalog-seq"
"""meta: the sequence number of the latest catalog update (workers poll it)."""


def catalog_item_key(item_id: str) -> bytes:
    """An item's latest update (one record per item: a newer update replaces it)."""
    return item_id.encode()


# -- impressions (server.impressions) ---------------------------------------------------------------
IMPRESSION_COUNT_PREFIX = SEP + b"count" + SEP
IMPRESSION_BUCKET_PREFIX = SEP + b"shown" + SEP
IMPRESSION_BUCKET_SECONDS = 10
"""Width of the buckets of showing time the canary's matured CTR is counted in."""


def impression_user_prefix(kid: str, digest: str) -> bytes:
    """Every impression of one user hashed under key `kid`: `<kid>␟<hex digest>␟`."""
    return kid.encode() + SEP + digest.encode() + SEP


def impression_key(prefix: bytes, ts: float, request_id: str) -> bytes:
    """An impression: the user's prefix, the time in ms, the request id."""
    return prefix + ms_part(ts) + SEP + request_id.encode()


def impression_keys(prefixes: Sequence[bytes], ts: Sequence[float],
                    request_ids: Sequence[str]) -> list[bytes]:
    """`impression_key` of many impressions at once (the same bytes; no call per key)."""
    fmt = b"%s" + _MS + SEP + b"%s"
    return [fmt % (p, ms, r.encode())
            for p, ms, r in zip(prefixes, millis_many(ts), request_ids)]


def impression_key_later(key: bytes) -> bytes:
    """The same impression key a millisecond later (for an answer whose key another holds)."""
    kid, digest, ms, request_id = key.split(SEP, 3)
    return SEP.join((kid, digest, _MS % (int(ms) + 1), request_id))


def impression_ms(key: bytes) -> int:
    """The time (ms) part of an impression key."""
    return int(key.split(SEP, 3)[2])


def impression_count_key(version: str, channel: str) -> bytes:
    """The counters of one model version on one channel (no user in it)."""
    return IMPRESSION_COUNT_PREFIX + join_key(version, channel)


def impression_bucket_prefix(version: str) -> bytes:
    """Every bucket of one model version, in time order."""
    return IMPRESSION_BUCKET_PREFIX + join_key(version) + SEP


def impression_bucket_key(version: str, start: int) -> bytes:
    """(impressions, impressions with a click) of one model version shown in the
    `IMPRESSION_BUCKET_SECONDS` from unix second `start` (a multiple of them)."""
    return impression_bucket_prefix(version) + b"%012d" % start


DEAD_LETTER_PREFIX = b"d" + SEP


def dead_letter_key(letter_id: str) -> bytes:
    """A message no adapter could deliver; its id starts with the time in 16-digit
    milliseconds, so the letters scan in time order (`messages.deadletters`)."""
    return DEAD_LETTER_PREFIX + letter_id.encode()


# -- outbox (server.profiles.outbox) ----------------------------------------------------------------
def outbox_key(ms: int, batch: bytes, listener: bytes) -> bytes:
    """The entry of one ingestion batch's effects that listener `listener` (its outbox tag)
    has not applied yet: the batch's time in ms (time order: a replay scans the oldest first
    and stops at the first too recent), its id (`store.outbox.batch_id`), then the tag. No
    user in the key: the value names the events (`store.outbox.value`)."""
    return _MS % ms + SEP + batch + SEP + listener


def outbox_parts(key: bytes) -> tuple[int, bytes]:
    """(the batch's time in ms, listener tag) of an outbox key."""
    ms, _, listener = key.split(SEP, 2)
    return int(ms), listener
