"""The impression log's writes: what the impressions writer process runs for every flush.

    WriterProcess("server.impressions.writer:writer_functions", store, name="impressions")

`ImpressionWriter.write` takes the `group.Group`s of one or more flushes (the child runs the
frames that queued while it committed as one call) and writes them in one write transaction:
each impression under its user's keyed hash (`store.keys.impression_key`, the hash keyed by the
`user-id` key the group names), and the counters of each (model version, channel) it touched
(`records.C`), so GetModelStats always agrees with the log, and the (impressions, clicked)
of each (model version, 10 s of showing time) bucket (`keys.impression_bucket_key`: the
canary guardrail counts the impressions whose click window has passed, with their clicks).
Every answer shown counts; only the impressions of erased users are left unwritten, and a
repeat of an answer under the caller's request id (a retry: `repeats.Repeats`) is neither
written nor counted.

Erasure: the tombstones are read inside the write transaction (the latest erasure's note and,
for a group holding answers shown before it, its users' tombstones by key: never the list).
LMDB serialises writers across processes, so an erasure (its tombstone and the deletion of the
user's impressions by prefix are one transaction, `ProfileRepository.delete_user`) either
committed before this write, which then sees its tombstone and skips the user's impressions
shown up to the erasure, or commits after it and deletes what this write put. Either way none
shown before the erasure remains.

The keys come with each group (the server's keyring, loaded once by the server): the child reads
no secret of its own and logs none. The server also calls `write` in its own thread when no
writer process runs (an `ImpressionLog` used without `run`, the flush benchmark's in-process
arm).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from contract.erasure import digest
from kernels.keyed import KeyedHash

from ..ids import RandomIds
from ..profiles.tombstone_lookup import noted_latest, tombstones_of
from ..store import Store, keys
from .group import Group, split
from .records import CHANNEL_CODES, HEAD, C, encode, encode_many, new_counters
from .repeats import Repeats

__all__ = ["ImpressionWriter", "add_buckets", "add_counters", "bucket_of", "forget_erased",
           "user_hash", "user_hashes", "writer_functions"]

_DIGEST_CHARS = 32
B = keys.IMPRESSION_BUCKET_SECONDS
_cached_digest = functools.lru_cache(maxsize=1 << 16)(digest)
"""`digest` by (key, user id): emptied when new tombstones are read (`forget_erased`, and the
writer's own reread), so an erased user's id does not stay in it."""
_new_id = RandomIds(8)


def user_hash(key: bytes, user_id: str, cached: bool = True) -> str:
    """The user's part of impression keys under `key`: 32 hex characters of HMAC-SHA256
    (`cached`: through the digest cache of the users served lately)."""
    return (_cached_digest if cached else digest)(key, user_id)[:_DIGEST_CHARS]


def user_hashes(key: bytes, user_ids: Sequence[str]) -> list[str]:
    """`user_hash` of many users under `key` at once, in C (`kernels.keyed`) and without the
    digest cache (a batch's users, most of them met once: the impression join's check)."""
    bodies = [u.encode("utf-8", "surrogatepass") for u in user_ids]
    return [t.decode() for t in _keyed_hash(key).tokens(b"", bodies, _DIGEST_CHARS)]


@functools.lru_cache(maxsize=8)  # the keys of the ring (a rotation adds one)
def _keyed_hash(key: bytes):
    return KeyedHash(key)


def forget_erased(erased=None) -> None:
    """`Tombstones.watch`: new tombstones were read; forget every cached user id."""
    _cached_digest.cache_clear()


def writer_functions(store: Store) -> dict:
    """The batch functions of the impressions writer process (`server.batching.WriterProcess`)."""
    return {"impressions": ImpressionWriter(store).write}


class ImpressionWriter:
    """Writes groups of impressions and their counters; reads tombstones as it writes."""

    def __init__(self, store: Store):
        self.store = store
        self._t, self._meta = store.table("impressions"), store.table("meta")
        self._tomb_count = -1
        """The `TOMBSTONE_COUNT` last read (the digest cache is emptied when it moves)."""
        self._repeats = Repeats(self._t)

    def write(self, groups: Sequence[Group]) -> list[int]:
        """Write `groups` in one transaction; how many impressions of each were written."""
        encoded = [self._encoded(g) for g in groups]  # before the write lock: others wait less
        counts, buckets = self._counted(groups), _bucketed(groups)

        def fn(txn):
            until, kids = self._tombstones(txn)
            items, written = [], []
            counted = {k: v.copy() for k, v in counts.items()}  # fn may run again
            shown = {k: v.copy() for k, v in buckets.items()}
            for g, enc in zip(groups, encoded):
                kept = self._kept(txn, g, enc, until, kids, counted, shown)
                items += kept
                written.append(len(kept))
            _put_apart(self._t, txn, items)
            add_counters(self._t, txn, counted)
            add_buckets(self._t, txn, shown)
            return written
        return self.store.write(fn)

    def _kept(self, txn, g: Group, encoded: tuple, until: float, kids: set[str] | None,
              counted: dict[bytes, np.ndarray], shown: dict[bytes, np.ndarray]
              ) -> list[tuple[bytes, bytes]]:
        """(key, value) of the impressions of `g` to write: not of a user erased after it was
        shown, nor a repeat of an answer logged under the caller's request id (`Repeats`;
        taken out of `counted` and `shown`, the counters and buckets to add)."""
        ks, vs, users, ts, given = encoded
        erased = self._erased(txn, users, g.erasure_keys, kids) if ts and min(ts) <= until else {}
        if not erased and not (g.repeat_seconds and any(given)):
            return list(zip(ks, vs))
        rows = [i for i in range(len(ks)) if ts[i] > erased.get(users[i], -1.0)]
        if g.repeat_seconds:
            rows = [i for i in rows if not (given[i] and self._repeats.seen(
                txn, ks[i], vs[i], ts[i], g.repeat_seconds) and _uncount(vs[i], counted, shown))]
        return [(ks[i], vs[i]) for i in rows]

    def _encoded(self, g: Group) -> tuple[list[bytes], list[bytes], list[str], list[float],
                                          list[bool]]:
        """Keys, values, user ids, times and whether the caller gave the request id, of a
        group's impressions (each user hashed once)."""
        values, users, ts, rids, given = [], [], [], [], []
        for b in g.batches:
            m = len(b.ts)
            given += [False] * m if b.given is None else b.given.tolist()
            values += encode_many(b.ts, b.version, split(b.channels, m), b.codes, b.scores,
                                  b.cold)
            users += split(b.user_ids, m)
            ts += b.ts.tolist()
            rids += split(b.request_ids, m)
        for s in g.singles:
            values.append(encode(s.ts, s.version, s.channel, zip(s.context[::2], s.context[1::2]),
                                 s.codes, s.scores, s.cold))
            users.append(s.user_id)
            ts.append(s.ts)
            rids.append(s.request_id)
            given.append(s.given)
        prefixes = {u: keys.impression_user_prefix(g.kid, user_hash(g.key, u)) for u in set(users)}
        keys_out = keys.impression_keys([prefixes[u] for u in users], ts,
                                        [r or _new_id() for r in rids])
        return keys_out, values, users, ts, given

    @staticmethod
    def _counted(groups: Sequence[Group]) -> dict[bytes, np.ndarray]:
        """The counter increments of the groups per count key."""
        counts: dict[bytes, np.ndarray] = {}

        def add(version, channel, ts, cold):
            ck = keys.impression_count_key(version, channel)
            delta = counts.get(ck)
            if delta is None:
                delta = counts[ck] = new_counters()
                delta[C.FIRST] = ts.min()
            delta[C.IMPRESSIONS] += len(ts)
            delta[C.COLD_START] += cold.sum()
            delta[C.FIRST] = min(delta[C.FIRST], ts.min())
            delta[C.LAST] = max(delta[C.LAST], ts.max())
        for g in groups:
            for b in g.batches:
                names = split(b.channels, len(b.ts))
                channels = np.array(names)
                for channel in set(names):
                    mask = channels == channel
                    add(b.version, channel, b.ts[mask], b.cold[mask])
            for s in g.singles:
                add(s.version, s.channel, np.array([s.ts]), np.array([s.cold]))
        return counts

    def _tombstones(self, txn) -> tuple[float, set[str] | None]:
        """(The latest erasure time, the key ids of the tombstones) as `txn` sees them, from
        the note every erasure keeps (`Tombstones._note_latest`): no impression shown after
        that time is of an erased user. When the note is not of the current count (a store
        written before it, a restore carried tombstones in): every time, every key id. The
        digest cache is emptied when the count moves (new tombstones)."""
        count, noted = noted_latest(self._meta, txn)
        if count != self._tomb_count:
            if self._tomb_count >= 0:
                forget_erased()
            self._tomb_count = count
        return (float("inf"), None) if noted is None else (noted[0], set(noted[1]))

    def _erased(self, txn, users: Sequence[str], ring: Sequence[tuple[str, bytes]],
                kids: set[str] | None) -> dict[str, float]:
        """{user: erasure time} of the erased users among `users`, their tombstones read by
        key (`tombstones_of`: one HMAC per key id in use and one read a user, the list never
        read in this write transaction)."""
        ring = [(kid, key) for kid, key in ring if kids is None or kid in kids]
        users = list(dict.fromkeys(users))
        return {uid: hit[1]["at"] for uid, hit in
                zip(users, tombstones_of(self._meta, txn, users, ring, _cached_digest))
                if hit is not None}


def _uncount(value: bytes, counted: dict[bytes, np.ndarray], shown: dict[bytes, np.ndarray]
             ) -> bool:
    """Take the impression `value` out of the counters and buckets to add (it is not written);
    True."""
    ts, flags, channel = HEAD.unpack_from(value)[:3]
    nv = HEAD.unpack_from(value)[9]
    version = value[HEAD.size:HEAD.size + nv].decode()
    delta = counted[keys.impression_count_key(version, CHANNEL_CODES[channel])]
    delta[C.IMPRESSIONS] -= 1
    delta[C.COLD_START] -= flags & 1
    shown[bucket_of(version, ts)][0] -= 1
    return True


def _put_apart(table, txn, items: list[tuple[bytes, bytes]]) -> None:
    """Put every impression, none over another: a key already taken (one user's answers under
    one request id in one millisecond, a caller's x-request-id given to parallel calls), in
    this group or by an earlier one, moves on by a millisecond until it is free. One `put_new`
    when no key is taken (the usual case)."""
    taken: set[bytes] = set()
    todo = [(_free(key, taken), value) for key, value in items]
    while todo:
        todo.sort()
        if table.put_new(txn, todo) == len(todo):
            return
        todo = [(_free(k, taken), v) for k, v in todo if table.get(txn, k) != v]


def _free(key: bytes, taken: set[bytes]) -> bytes:
    while key in taken:
        key = keys.impression_key_later(key)
    taken.add(key)
    return key


def bucket_of(version: str, ts: float) -> bytes:
    """The bucket key of an impression of `version` shown at `ts`."""
    return keys.impression_bucket_key(version, int(ts // B) * B)


def _bucketed(groups: Sequence[Group]) -> dict[bytes, np.ndarray]:
    """Impressions per (version, bucket of showing time): (impressions, 0) per bucket key."""
    out: dict[bytes, np.ndarray] = {}

    def add(version: str, ts: np.ndarray) -> None:
        starts, n = np.unique((ts // B).astype(np.int64) * B, return_counts=True)
        for start, count in zip(starts.tolist(), n.tolist()):
            key = keys.impression_bucket_key(version, start)
            out.setdefault(key, np.zeros(2))[0] += count
    for g in groups:
        for b in g.batches:
            add(b.version, np.asarray(b.ts, np.float64))
        for s in g.singles:
            add(s.version, np.array([s.ts], np.float64))
    return out


def add_buckets(table, txn, buckets: dict[bytes, np.ndarray]) -> None:
    """Add each (impressions, clicked) increment to its bucket."""
    for key, delta in buckets.items():
        raw = table.get(txn, key)
        total = delta if raw is None else np.frombuffer(raw, np.float64) + delta
        table.put(txn, key, total.tobytes())


def add_counters(table, txn, counts: dict[bytes, np.ndarray]) -> None:
    """Add each increment to its stored counters (first and last times kept as min and max)."""
    for ck, delta in counts.items():
        raw = table.get(txn, ck)
        if raw is None:
            table.put(txn, ck, delta.tobytes())
            continue
        total = np.frombuffer(raw, np.float64).copy()
        first, last = total[C.FIRST], total[C.LAST]
        total += delta
        if delta[C.FIRST]:
            total[C.FIRST] = min(first, delta[C.FIRST]) if first else delta[C.FIRST]
        else:
            total[C.FIRST] = first
        total[C.LAST] = max(last, delta[C.LAST])
        table.put(txn, ck, total.tobytes())
