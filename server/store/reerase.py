"""Erase again, in a restored store copy, the users whose erasure the backup predates.

A backup taken before a user's erasure holds their records, and a restore brings them back.
Every record keyed by the user starts with their record-key token (`<token>␟`,
`keys.user_prefix`), and the indexes around them name that key or that token. Their
tombstones (carried over from the store the restore replaces: `server.backup`) keep a keyed
hash of the token under the tombstone's `erasure` key (`found_by`, layout tombstone 2), not
the token: once a user is erased no file holds it. `tokens_found` hashes each token of the
copy (one seek per user per table, one HMAC per user and key id) and keeps those the
tombstones name. With no user id (nobody serves the copy yet: the restore's staging dir), one
write transaction then deletes, for each token (`reerase`):

- the records under `<token>␟` in `keys.USER_TABLES` (feature state, meta record, events,
  decisions, contact history), their events' dedupe keys, their decisions' index entries and
  pending-window entries, and their events' keys in the outbox entries;
- the user's pointers into the address indexes (SMS numbers, email addresses) and their
  entries there, with an older one-user entry naming them (sealed: it starts with the token;
  without encryption at rest their id, found by `named` below);
- their dead letters and their records in unfinished send jobs (`_sends`): sealed ones start
  with the token; without encryption at rest they are JSON naming the user by id, found by
  the tombstone's own key (the id's HMAC under the same `erasure` key: `named`). Their jobs
  are settled as DeleteProfile settles them (`messages.sends.settle_erased`): a deferred
  message's job deleted, an unsettled recipient counted suppressed `erased` (a sealed
  record's state cannot be read here: not counted, as a job does not count a record it
  cannot open);
- the user's data key (`datakeys` entry), its pad zeroed after the commit (`keyslots`, and
  named in `datakey-unzeroed` so the next writable open zeroes it again): what else was sealed
  under it (freed pages) cannot be opened any more.

The copy's data.mdb is then rewritten record by record (`_rewrite`), so that no byte of the
file keeps the deleted records (tokens in keys included): LMDB leaves them on the pages it
frees, and the backup's compacted copy kept those deleted from pages still in use.

The user's impressions are keyed by a hash of the id under the `user-id` keyring, not by the
token: a tombstone of layout 3 keeps `impressions_by`, a keyed hash under its `erasure` key
of each `<kid>␟<user hash>` its user's impression keys start with (`impressions_found_by`), and
`impressions_found` hashes each such part of the copy's impression keys the same way (one
seek and one HMAC per user and key id); the same transaction deletes those prefixes.

Before anything goes, the records DeleteProfile reads first are read (`Opener`, with the
`encryption` keyring when they are sealed): each pending decision's campaign, whose pending
counter is lowered as an erasure lowers it (`_uncount`), and each send record's state.

Left as they were (docs/privacy.md): the impressions of users whose tombstone keeps no
`impressions_by` (written before layout 3), and, without the `encryption` keyring, the
pending counters of sealed decisions and the erased counts of sealed send records (counted
in `COUNTS`).
"""
from __future__ import annotations

import heapq
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path

import lmdb

from contract.erasure import digest

from . import keys, outbox
from .compaction import rewrite_records
from .datakeys import SHRED_COUNT_KEY, SLOT_BYTES, SLOTS_FILE, UNZEROED_KEY
from .keys import SEP, USER_TABLES
from .lmdb_store import open_env
from .opener import Opener
from .table import Table
from .tokens import TOKEN_CHARS

__all__ = ["COUNTS", "found_by", "impressions_found", "impressions_found_by", "key_check", "reerase",
           "tokens_found"]

_DOMAIN = keys.SEP_CHAR + "token" + keys.SEP_CHAR
"""Prefix of what `found_by` hashes: no user id holds the separator, so the hash of a token
never equals a tombstone's hash of an id under the same key."""

COUNTS = ("pending_corrected", "pending_unread", "sends_unread")
"""What `reerase` counts beside the records it deletes by table."""

_IMPRESSIONS = keys.SEP_CHAR + "impressions" + keys.SEP_CHAR
"""Prefix of what `impressions_found_by` hashes."""

_POINTERS = (b"", SEP + b"held", SEP + b"sent")
"""Suffixes of a user's pointers into an address index (messaged, held, sent: `AddressIndex`)."""


_FRESH = ".rewritten"
"""Where, inside the copy's directory, `_rewrite` writes the fresh file before it replaces
data.mdb (inside: the same filesystem, and gone with the staging dir if the restore dies)."""


def found_by(key: bytes, token: bytes) -> str:
    """What a tombstone keeps of its user's record-key `token`: its hex HMAC-SHA256 under the
    tombstone's `erasure` key `key` (`Tombstones.erase_user`)."""
    return digest(key, _DOMAIN + token.decode())


def impressions_found_by(key: bytes, kid: str, user_hash: str) -> str:
    """What a tombstone keeps (`impressions_by`, one per key of the `user-id` keyring) of the
    part `<kid>␟<user hash>` of its user's impression keys (`impressions.writer.user_hash`):
    its hex HMAC-SHA256 under the tombstone's `erasure` key `key`, in a domain of its own
    (a token or an id never hashes to it). The impression keys already hold the user hash:
    without the `erasure` key this links none of them to the tombstone."""
    return digest(key, _IMPRESSIONS + kid + keys.SEP_CHAR + user_hash)


def key_check(key: bytes) -> bytes:
    """A value that tells the `erasure` key `key` without revealing it (a token is hex
    digits: no token's `found_by` is hashed from this)."""
    return digest(key, _DOMAIN + "key check")[:16].encode()


def tokens_found(store_dir: Path, wanted: Mapping[str, Collection[str]],
                 ring: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The record-key tokens of the store copy under `store_dir` whose `found_by` under key
    `kid` of `ring` is in `wanted[kid]` (key ids `ring` lacks find nothing)."""
    by_kid = [(kid, key, wanted[kid]) for kid, key in ring if wanted.get(kid)]
    return [token for token in _stored_tokens(store_dir)
            if any(found_by(key, token) in digests for _, key, digests in by_kid)]


def impressions_found(store_dir: Path, wanted: Mapping[str, Collection[str]],
                      ring: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The impression key prefixes `<kid>␟<user hash>␟` of the store copy under `store_dir`
    whose `impressions_found_by` under key `ekid` of `ring` is in `wanted[ekid]` (one seek and
    one HMAC per user and key id)."""
    by_kid = [(key, wanted[kid]) for kid, key in ring if wanted.get(kid)]
    if not by_kid:
        return []
    return [kid.encode() + SEP + user.encode() + SEP for kid, user in _impression_users(store_dir)
            if any(impressions_found_by(key, kid, user) in found for key, found in by_kid)]


def _impression_users(store_dir: Path) -> Iterator[tuple[str, str]]:
    """(kid, user hash) of every user with an impression in the copy, one at a time (a list
    of them all held ~200 bytes a user: 2 GB for ten million): one seek past each user's keys
    (the counters and buckets, whose keys start with the separator, skipped)."""
    env = open_env(store_dir, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            try:
                db = env.open_db(b"impressions", txn=txn, create=False)
            except lmdb.NotFoundError:
                return
            cur = txn.cursor(db=db)
            more = cur.set_range(SEP + b"\xff")
            while more:
                kid, user = bytes(cur.key()).split(SEP, 2)[:2]
                yield kid.decode(), user.decode()
                more = cur.set_range(kid + SEP + user + b"\x20")  # past `<kid>␟<user>␟...`
    finally:
        env.close()


def _stored_tokens(store_dir: Path) -> Iterator[bytes]:
    """Every user token keying a record of the copy (`keys.USER_TABLES`, `datakeys`), in
    order, each once, one at a time: one seek past each user's keys per table (the index
    keys, which start with the separator, below the tokens' hex digits, skipped), the tables'
    walks merged (a set of them all held ~120 bytes a user: 1.2 GB for ten million)."""
    env = open_env(store_dir, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            walks = []
            for name in (*USER_TABLES, "datakeys"):
                try:
                    db = env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                walks.append(_tokens_of(txn.cursor(db=db)))
            last = None
            for token in heapq.merge(*walks):
                if token != last:
                    yield token
                    last = token
    finally:
        env.close()


def _tokens_of(cur) -> Iterator[bytes]:
    """The tokens one table's keys start with, in order (cursor `cur`)."""
    more = cur.set_range(b"0")
    while more:
        token = bytes(cur.key()[:TOKEN_CHARS])
        yield token
        more = cur.set_range(token + b"\x20")  # past `<token>` and `<token>␟...`


def reerase(store_dir: Path, tokens: Sequence[bytes],
            named: Callable[[str], bool] | None = None,
            impressions: Sequence[bytes] = (),
            master: Sequence[tuple[str, bytes]] = ()) -> Counter:
    """Erase the users whose record-key tokens are `tokens` from the store copy under
    `store_dir` (nobody else has it open); the records removed, by table (and `send_jobs`:
    deferred messages' jobs deleted whole). `named(user id)`: whether a carried tombstone
    names the id a plaintext send record or dead letter holds (a store without encryption
    at rest), so those go too (`_sends`); `impressions`: the impression key prefixes of those
    users (`impressions_found`); `master`: the `encryption` keyring, which opens the sealed
    records DeleteProfile reads before it deletes them (`Opener`: pending decisions'
    campaigns, send records' states). Besides the tables' counts, `COUNTS` (not records)."""
    if not tokens and named is None and not impressions:
        return Counter()
    env = open_env(store_dir, readahead=False, map_size=_room(store_dir))
    try:
        with env.begin(write=True) as txn:
            tables = {name: Table(name, env.open_db(name.encode(), txn=txn))
                      for name in (*USER_TABLES, "dedupe", "meta", "outbox", "sends", "datakeys",
                                   "impressions", "bandit")}
            opened = Opener(store_dir, txn, tables, master)
            try:
                # first: `_erase` destroys the data keys that open the sealed send records
                sends = _sends(txn, tables["sends"], set(tokens), named, opened)
                removed, slots = _erase(txn, tables, [t + SEP for t in tokens], opened, named)
                removed += sends
            finally:
                opened.close()
            for prefix in impressions:
                removed["impressions"] += tables["impressions"].delete_prefix(txn, prefix)
    finally:
        env.close()
    if any(n for name, n in removed.items() if name not in COUNTS):
        _rewrite(store_dir)
    _zero(store_dir / SLOTS_FILE, slots)
    return removed


def _rewrite(store_dir: Path) -> None:
    """Replace the copy's data.mdb by a fresh file of its live records only
    (`compaction.rewrite_records`): the deleted records' bytes (their users' tokens in keys,
    sealed values) stay on the pages LMDB freed, and in the pages a compacted copy keeps
    (measured on 20,000 users, 207 erased: 207 of their tokens in the file after the
    deletions, 59 in LMDB's compacted copy, 0 in this rewrite)."""
    fresh = store_dir / _FRESH
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    rewrite_records(store_dir, fresh, _room(store_dir))
    os.replace(fresh / "data.mdb", store_dir / "data.mdb")
    shutil.rmtree(fresh)


def _room(store_dir: Path) -> int:
    """A map size for the copy's deletions (pages are copied before they are freed)."""
    size = (store_dir / "data.mdb").stat().st_size
    return 2 * size + (64 << 20)


def _erase(txn, t: dict[str, Table], prefixes: list[bytes], opened: Opener,
           named: Callable[[str], bool] | None) -> tuple[Counter, list[int]]:
    doomed = {key for prefix in prefixes for key in _prefixed(txn, t["decisions"], prefix)}
    due = _due(txn, t["decisions"], doomed)
    removed = _uncount(txn, t["bandit"], [pkey for _, pkey in due], opened)
    removed["decisions"] += sum(int(t["decisions"].delete(txn, k)) for k, _ in due)
    for prefix in prefixes:
        for key in _prefixed(txn, t["events"], prefix):
            removed["dedupe"] += t["dedupe"].delete(txn, keys.dedupe_key_of_event(key))
        for key in _prefixed(txn, t["decisions"], prefix):
            removed["decisions"] += t["decisions"].delete(
                txn, keys.decision_index_key(key[len(prefix):].decode()))
        for name in USER_TABLES:
            removed[name] += t[name].delete_prefix(txn, prefix)
        removed["outbox"] += outbox.forget(txn, t["outbox"], prefix)
        removed["meta"] += _addresses(txn, t["meta"], prefix[:-1], named)
    slots = _shred(txn, t["datakeys"], t["meta"], [p[:-1] for p in prefixes])
    removed["datakeys"] += len(slots)
    return +removed, slots


def _prefixed(txn, table: Table, prefix: bytes) -> list[bytes]:
    """The keys of `table` that start with `prefix`."""
    out = []
    for key, _ in table.items(txn, prefix):
        if not key.startswith(prefix):
            break
        out.append(bytes(key))
    return out


def _due(txn, decisions: Table, doomed: set[bytes]) -> list[tuple[bytes, bytes]]:
    """(entry key, decision key) of the pending-window entries naming one of the `doomed`
    decision keys (one walk of the window: the pending decisions)."""
    if not doomed:
        return []
    found = []
    for key, pkey in decisions.items(txn, keys.DUE_PREFIX):
        if not key.startswith(keys.DUE_PREFIX):
            break
        if bytes(pkey) in doomed:
            found.append((bytes(key), bytes(pkey)))
    return found


def _uncount(txn, bandit: Table, pending: list[bytes], opened: Opener) -> Counter:
    """Lower each campaign's pending counter by the `pending` decisions (their keys) it
    counts, as DeleteProfile does (`CampaignRepository._erase_decisions`): the campaign is in
    the decision record, sealed with encryption at rest (`Opener`); `pending_corrected` and
    `pending_unread` (records that did not open: their campaigns' counters still count them)."""
    from ..campaigns.decision_log import decode_decision  # campaigns imports the store
    by_campaign: Counter = Counter()
    unread = 0
    for pkey in pending:
        raw = opened.record(txn, "decisions", pkey)
        try:
            by_campaign[decode_decision(raw)["campaign_id"]] += 1
        except (TypeError, ValueError, KeyError):  # None: not opened; or not a record
            unread += 1
    for campaign_id, n in by_campaign.items():
        key = keys.count_key(campaign_id)
        if (raw := bandit.get(txn, key)) is not None:
            counters = json.loads(bytes(raw))
            counters["pending"] = counters.get("pending", 0) - n
            bandit.put(txn, key, json.dumps(counters).encode())
    return Counter(pending_corrected=sum(by_campaign.values()), pending_unread=unread)


def _addresses(txn, meta: Table, token: bytes, named: Callable[[str], bool] | None) -> int:
    """The user's pointers into each address index and the entries they point at, and an
    older one-user entry there that names them (`AddressIndex._legacy_names`, as DeleteProfile
    finds it): sealed for them, it starts with their token; without encryption at rest it is
    their id, which `named` accepts."""
    removed = 0
    for channel in keys.ADDRESS_PREFIXES:
        base = keys.address_token_user_key(channel, token)
        for pointer in (base + s for s in _POINTERS):
            raw = meta.get(txn, pointer)
            if raw is None:
                continue
            digest = bytes(raw).removeprefix(keys.ADDRESS_UNSURE).decode()
            removed += meta.delete(txn, keys.address_token_entry_key(channel, digest, token))
            legacy = keys.address_key(channel, digest)
            if _names(bytes(meta.get(txn, legacy) or b""), token, named):
                removed += meta.delete(txn, legacy)
            removed += meta.delete(txn, pointer)
    return removed


def _names(entry: bytes, token: bytes, named: Callable[[str], bool] | None) -> bool:
    """Whether an older one-user address entry is the user's (token `token`): sealed for them,
    or their id as it is (a store without encryption at rest; an unnamed entry,
    `keys.ADDRESS_UNNAMED`, is nobody's)."""
    if entry.startswith(token):
        return True
    try:
        return bool(entry) and named is not None and named(entry.decode())
    except UnicodeDecodeError:  # sealed for another user
        return False


def _sends(txn, sends: Table, tokens: set[bytes], named: Callable[[str], bool] | None,
           opened: Opener) -> Counter:
    """The dead letters and unfinished send jobs' recipient records of the users erased
    again: sealed ones start with one of `tokens` (`Store.seal_for_user`); plaintext ones (no
    encryption at rest) are JSON whose `user` is an id `named` accepts. A recipient's job is
    settled as DeleteProfile settles it (`messages.sends.settle_erased`: a deferred
    message's job deleted, an unsettled recipient counted suppressed `erased`), before its
    record goes; a sealed record's state is read through the `encryption` keyring
    (`Opener`); without it, it is not counted (`sends_unread`), as a running job does not
    count a record it cannot open."""
    from ..messages.sends import Recipient, send_id_of, settle_erased  # messages imports the store
    removed: Counter = Counter()
    for prefix in (keys.DEAD_LETTER_PREFIX, keys.SEND_USER_PREFIX):
        found = []
        for key, stored in sends.items(txn, prefix):
            if not key.startswith(prefix):
                break
            if _whose(bytes(stored), tokens, named):
                found.append((bytes(key), bytes(stored)))
        for key, stored in found:
            if prefix == keys.SEND_USER_PREFIX:
                raw = opened.for_user(txn, key, stored)
                removed["sends_unread"] += raw is None
                r = None if raw is None else Recipient.decode(0, raw)
                removed["send_jobs"] += settle_erased(txn, sends, send_id_of(key), r)
            removed["sends"] += sends.delete(txn, key)
    return removed


def _whose(stored: bytes, tokens: set[bytes], named: Callable[[str], bool] | None) -> bool:
    """Whether a send record or dead letter is of a user erased again."""
    if not stored.startswith(b"{"):
        return stored[:TOKEN_CHARS] in tokens
    if named is None:
        return False
    try:
        user = json.loads(stored).get("user")
    except (ValueError, AttributeError):
        return False
    return isinstance(user, str) and named(user)


def _shred(txn, datakeys: Table, meta: Table, tokens: list[bytes]) -> list[int]:
    """Delete the users' data key entries (`DataKeys.shred`, offline); their pad slots, also
    named in `UNZEROED_KEY` (with those already there) so the next writable open zeroes them
    should this process die before `_zero` does."""
    slots = []
    for token in tokens:
        wrapped = datakeys.get(txn, token)
        if wrapped is not None:
            slots.append(int.from_bytes(bytes(wrapped[:8]), "big"))
            datakeys.delete(txn, token)
    if slots:
        before = [s for s in bytes(meta.get(txn, UNZEROED_KEY) or b"").split(b",") if s]
        meta.put(txn, UNZEROED_KEY, b",".join([*before, *(b"%d" % s for s in slots)]))
        count = int(meta.get(txn, SHRED_COUNT_KEY) or b"0")
        meta.put(txn, SHRED_COUNT_KEY, b"%d" % (count + len(slots)))
    return slots


def _zero(path: Path, slots: list[int]) -> None:
    """Overwrite the pads of `slots` with zeros in the pad file `path`, fsynced."""
    if not slots or not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        for slot in slots:
            os.pwrite(fd, bytes(SLOT_BYTES), slot * SLOT_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
