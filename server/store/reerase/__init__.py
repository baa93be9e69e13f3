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
- their dead letters and their records in unfinished send jobs (`sends`): sealed ones start
  with the token; without encryption at rest they are JSON naming the user by id, found by
  the tombstone's own key (the id's HMAC under the same `erasure` key: `named`). Their jobs
  are settled as DeleteProfile settles them (`messages.sends.settle_erased`): a deferred
  message's job deleted, an unsettled recipient counted suppressed `erased` (a sealed
  record's state cannot be read here: not counted, as a job does not count a record it
  cannot open);
- the user's data key (`datakeys` entry), its pad zeroed after the commit (`keyslots`, and
  named in `datakey-unzeroed` so the next writable open zeroes it again): what else was sealed
  under it (freed pages) cannot be opened any more.

The copy's data.mdb is then rewritten record by record (`rewrite`), so that no byte of the
file keeps the deleted records (tokens in keys included): LMDB leaves them on the pages it
frees, and the backup's compacted copy kept those deleted from pages still in use.

The user's impressions are keyed by a hash of the id under the `user-id` keyring, not by the
token: a tombstone of layout 3 keeps `impressions_by`, a keyed hash under its `erasure` key
of each `<kid>␟<user hash>` its user's impression keys start with (`impressions_found_by`), and
`impressions_found` hashes each such part of the copy's impression keys the same way (one
seek and one HMAC per user and key id); the same transaction deletes those prefixes.

Before anything goes, the records DeleteProfile reads first are read (`Opener`, with the
`encryption` keyring when they are sealed): each pending decision's campaign, whose pending
counter is lowered as an erasure lowers it (`pending`), and each send record's state.

Left as they were (docs/privacy.md): the impressions of users whose tombstone keeps no
`impressions_by` (written before layout 3), and, without the `encryption` keyring, the
pending counters of sealed decisions and the erased counts of sealed send records (counted
in `COUNTS`).

One module each: `find` (tokens), `profiles` (records keyed by the token, address indexes),
`pending` (pending counters), `sends` (send records, dead letters), `impressions`, `shred`
(data keys), `rewrite` (the file after).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ..datakeys import SLOTS_FILE
from ..keys import SEP, USER_TABLES
from ..lmdb_store import open_env
from ..opener import Opener
from ..table import Table
from .find import found_by, key_check, tokens_found
from .impressions import erase_impressions, impressions_found, impressions_found_by
from .profiles import erase_users
from .rewrite import rewrite, room
from .sends import erase_sends
from .shred import zero

__all__ = ["COUNTS", "found_by", "impressions_found", "impressions_found_by", "key_check", "reerase",
           "tokens_found"]

COUNTS = ("pending_corrected", "pending_unread", "sends_unread")
"""What `reerase` counts beside the records it deletes by table."""


def reerase(store_dir: Path, tokens: Sequence[bytes],
            named: Callable[[str], bool] | None = None,
            impressions: Sequence[bytes] = (),
            master: Sequence[tuple[str, bytes]] = ()) -> Counter:
    """Erase the users whose record-key tokens are `tokens` from the store copy under
    `store_dir` (nobody else has it open); the records removed, by table (and `send_jobs`:
    deferred messages' jobs deleted whole). `named(user id)`: whether a carried tombstone
    names the id a plaintext send record or dead letter holds (a store without encryption
    at rest), so those go too (`sends`); `impressions`: the impression key prefixes of those
    users (`impressions_found`); `master`: the `encryption` keyring, which opens the sealed
    records DeleteProfile reads before it deletes them (`Opener`: pending decisions'
    campaigns, send records' states). Besides the tables' counts, `COUNTS` (not records)."""
    if not tokens and named is None and not impressions:
        return Counter()
    env = open_env(store_dir, readahead=False, map_size=room(store_dir))
    try:
        with env.begin(write=True) as txn:
            tables = {name: Table(name, env.open_db(name.encode(), txn=txn))
                      for name in (*USER_TABLES, "dedupe", "meta", "outbox", "sends", "datakeys",
                                   "impressions", "bandit")}
            opened = Opener(store_dir, txn, tables, master)
            try:
                # first: `erase_users` destroys the data keys that open the sealed send records
                sends = erase_sends(txn, tables["sends"], set(tokens), named, opened)
                removed, slots = erase_users(txn, tables, [t + SEP for t in tokens], opened, named)
                removed += sends
            finally:
                opened.close()
            removed["impressions"] += erase_impressions(txn, tables["impressions"], impressions)
    finally:
        env.close()
    if any(n for name, n in removed.items() if name not in COUNTS):
        rewrite(store_dir)
    zero(store_dir / SLOTS_FILE, slots)
    return removed
