"""The decision log in the `decisions` table (key layouts: `server.store.keys`):

    decisions  decision_key(u, d)       decision record (`encode_decision`)
    decisions  decision_index_key(d)    -> decision_key (lookup by id)
    decisions  due_key(deadline, d)     -> decision_key (pending ones)

Here: the record codec, the entries decisions write (`decision_parts`) and the scans of
the log that serve no decision (`DecisionLog`: the export, one user's records, retention).
What changes a record (logging with caps, rewards, the sweep, erasure) is
`repository.CampaignRepository`'s. Index keys start with the separator, so every scan of user
records skips them.
"""
from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence

from ..store import Store, Table, sweep
from ..store.damaged import DAMAGED, read_each
from ..store.keys import SEP, decision_index_key, decision_keys_many, due_keys_many, user_prefix
from . import decision_codec
from .errors import DecisionDamaged
from .logging import logger
from .records import PENDING, SUPPRESSED, DecisionRecord

__all__ = ["DecisionLog", "decision_parts", "decode_decision", "decoded", "encode_decision",
           "warn_damaged"]

_PAST_INDEX = bytes([SEP[0] + 1])
"""The first key after every index entry (theirs start with the separator)."""


def encode_decision(rec: dict) -> bytes:
    """A decision record's stored bytes (layout: `server.store.layouts`, kind "decision"; the
    codec is `decision_codec`)."""
    return decision_codec.encode(rec)


def decode_decision(raw: bytes) -> dict:
    """A decision record dict from its stored bytes (either layout)."""
    return decision_codec.decode(raw)


def decoded(raw: bytes | None) -> dict | None:
    """A decision record read by `read_each` (None: none); its packed layout cut or changed
    on disk (`struct.error`, an index past its end) is a ValueError, as damaged JSON is."""
    if raw is None:
        return None
    try:
        return decode_decision(raw)
    except (struct.error, IndexError, KeyError) as err:
        raise ValueError(f"not a decision record: {err}") from err


def warn_damaged(n: int, what: str) -> None:
    """Decision records that do not open or decode, met by a batch that goes on without them
    (no user named: the record that would tell it does not read)."""
    logger.warning("%d decision record(s) damaged (do not open or decode): %s; restore the "
                   "store or erase their users (docs/operations.md, \"Damaged decision "
                   "records\")", n, what)


def decision_parts(records: Sequence[DecisionRecord]) -> tuple[list, list, list]:
    """The entries the decisions write, as three lists aligned with `records`: the record
    entries, the id index entries, the due entries (None for a decision not pending: a due entry
    exists only while it waits for a reward). Written in that order (one `put_many`), the index
    and due entries, whose keys start with the decision's time (`decision_ids`, a deadline), go
    to a few adjacent pages in turn."""
    pkeys, index_keys = decision_keys_many([r.user_id for r in records],
                                           [r.decision_id for r in records])
    pending = [j for j, r in enumerate(records) if r.status == PENDING]
    due_keys = due_keys_many([records[j].deadline for j in pending],
                             [records[j].decision_id for j in pending])
    dues: list = [None] * len(records)
    for j, key in zip(pending, due_keys):
        dues[j] = (key, pkeys[j])
    encode = decision_codec.encode_record
    return list(zip(pkeys, [encode(r) for r in records])), list(zip(index_keys, pkeys)), dues


class DecisionLog:
    """Reads of the decision log from one snapshot each; retention deletes in batches of one
    write transaction."""

    def __init__(self, store: Store):
        self.store = store
        self._d = store.table("decisions")

    def owner(self, decision_id: str) -> tuple[str, str] | None:
        """(user id, campaign id) of a logged decision, None if it is unknown (or gone), or
        if its record is damaged (logged): a delivery report naming it is then applied by its
        address alone, as one naming an unknown decision."""
        with self.store.read() as txn:
            found = self.find(txn, decision_id, "read as unknown (its user not found)")
        if found is None or found is DAMAGED:
            return None
        return found[1]["user_id"], found[1]["campaign_id"]

    def find(self, txn, decision_id: str, damaged: str):
        """(record key, record) of a logged decision, read in `txn`; None: none is; `DAMAGED`:
        its record does not open or decode (logged, `damaged` saying what the caller does
        without it; the index entries are not per-user records: plain)."""
        pkey = self._d.get(txn, decision_index_key(decision_id))
        if pkey is None:
            return None
        (rec,) = read_each(self._d, txn, [bytes(pkey)], decoded)
        if rec is DAMAGED:
            warn_damaged(1, f"decision {decision_id} {damaged}")
            return rec
        return None if rec is None else (pkey, rec)

    def by_ids(self, wanted: Sequence[tuple[str, str]]) -> list:
        """The records of the decisions of these (user id, decision id) pairs, one read
        snapshot: None for one unknown, gone or another user's (the record is read under the
        user's key), `DAMAGED` for one that does not open or decode (logged: a SendCampaign
        job resumed after a crash must not decide that user again, the first message may
        have gone)."""
        if not wanted:
            return []
        pkeys, _ = decision_keys_many([u for u, _ in wanted], [d for _, d in wanted])
        with self.store.read() as txn:
            recs = read_each(self._d, txn, pkeys, decoded)
        damaged = sum(rec is DAMAGED for rec in recs)
        if damaged:
            warn_damaged(damaged, "read back by a resumed send (their users settled, not "
                         "decided again)")
        return recs

    def of_user(self, user_id: str) -> list[dict]:
        """Every decision record of one user (pending ones included), oldest key first;
        `DecisionDamaged` naming the first that does not open or decode (an access export
        may not leave one out)."""
        prefix = user_prefix(user_id)
        with self.store.read() as txn:  # as stored, then opened together (a damaged one alone)
            found = Table.scan_prefix(self._d, txn, prefix)
            recs = read_each(self._d, txn, [k for k, _ in found], decoded, [v for _, v in found])
        for (key, _), rec in zip(found, recs):
            if rec is DAMAGED:
                raise DecisionDamaged(key[len(prefix):].decode(errors="replace"))
        return [rec for rec in recs if rec is not None]  # (None: shredded meanwhile)

    def export(self, campaign_id: str = "", start: float = 0.0, end: float = 0.0,
               include_pending: bool = False, include_suppressed: bool = False,
               chunk: int = 10_000) -> Iterator[list[dict]]:
        """Decision records (user by user) matching the filters, a list per read snapshot of
        `chunk` records (empty lists too), past the index entries: an export holds no snapshot
        open while its records are sent (a reader open for long keeps LMDB from reusing the
        pages written meanwhile), and no snapshot spans the threads a caller may read it from
        (take each list in a thread). A record changed during the export shows as its chunk
        read it; none shows twice."""
        after = _PAST_INDEX
        while after is not None:
            picked, after = self._export_chunk(after, chunk, campaign_id, start, end,
                                               include_pending, include_suppressed)
            yield picked

    def _export_chunk(self, first: bytes, chunk: int, campaign_id: str, start: float,
                      end: float, include_pending: bool, include_suppressed: bool
                      ) -> tuple[list[dict], bytes | None]:
        """(the records matching the filters among the `chunk` from key `first` on, the key to
        go on from, None at the end), from one read snapshot."""
        with self.store.read() as txn:  # as stored, then opened together (a damaged one alone)
            walked = list(itertools.islice(Table.items(self._d, txn, first), chunk + 1))
            after = walked.pop()[0] if len(walked) > chunk else None
            recs = read_each(self._d, txn, [k for k, _ in walked], decoded, [v for _, v in walked])
        picked, damaged = [], 0
        for rec in recs:
            if rec is None or rec is DAMAGED:  # shredded (its user erased); damaged: counted
                damaged += rec is DAMAGED
                continue
            if (campaign_id and rec["campaign_id"] != campaign_id) \
                    or (start and rec["timestamp"] < start) \
                    or (end and rec["timestamp"] > end) \
                    or (rec["status"] == PENDING and not include_pending) \
                    or (rec["status"] == SUPPRESSED and not include_suppressed):
                continue
            picked.append(rec)
        if damaged:
            warn_damaged(damaged, "left out of a decisions export")
        return picked, after

    def drop_before(self, cutoff: float, batch: int | None = None) -> int:
        """Retention: delete closed decision records made before `cutoff` and their index
        entries (pending ones wait for their window to close); counters and posteriors stay.
        The records are walked in read snapshots of `batch` keys (None: the store's
        `sweep_pace`; `store.sweep`), past the
        index entries (their keys start with the separator), each snapshot's picks deleted in
        short write transactions."""
        table, damaged = self._d, []

        def closed(txn, key: bytes) -> tuple[bytes, str] | None:
            if key.startswith(SEP):
                return None
            (rec,) = read_each(table, txn, [key], decoded)
            if rec is DAMAGED:  # its status and age unknown: kept (as everywhere: not touched)
                damaged.append(key)
                return None
            if rec is not None and rec["status"] != PENDING and rec["timestamp"] < cutoff:
                return key, rec["decision_id"]
            return None

        def drop(txn, doomed: list[tuple[bytes, str]]) -> int:
            dropped = 0
            for key, decision_id in doomed:
                if table.delete(txn, key):
                    dropped += 1
                    table.delete(txn, decision_index_key(decision_id))
            return dropped

        dropped = sweep(self.store, table, closed, drop, start=_PAST_INDEX, chunk=batch)
        if damaged:
            warn_damaged(len(damaged), "kept by the retention sweep (their status and age do "
                         "not read)")
        return dropped
