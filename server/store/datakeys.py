"""Per-user data keys: created on a user's first write, destroyed by erasure (crypto-shredding).

A user's data key K (AES-256) is the XOR of two random halves kept apart:

- the *wrapped* half W, in table `datakeys` under the user's token: AES-GCM under a key
  encryption key derived (HKDF-SHA256) from the `encryption` master key `kid`, with the token as
  associated data. Layout: ``slot (8 bytes) | len(kid) (1) | kid | nonce (12) | ciphertext``.
- the *pad* P, 32 bytes at ``slot * 32`` of the file `keyslots` beside `data.mdb`.

Erasure (`shred`) deletes the `datakeys` entry in the erasure's transaction and, once that
transaction has committed, overwrites the pad with zeros in place. LMDB never overwrites a page
in place (a deleted entry's bytes stay on a free page until the page is reused), so W alone may
survive on disk; without P it is a random string, even to whoever holds the master key. The pad
file is written in place, so the zeros replace P on disk. The pad is never zeroed before the
commit: a transaction that fails after the shred would otherwise leave the user's entry and
records with no key (unreadable, and every later write for them failing). The transaction
names its slots in `meta` `UNZEROED_KEY`; the next erasure transaction, and every writable
open, zero the slots named there again, so a crash between the commit and the zeroing leaves
no pad behind. Slots are never reused (one per user ever: 32 bytes each).

A worker never uses a key its snapshot no longer holds. Each shred adds one to the shred
count (`meta` `SHRED_COUNT_KEY`, written in the erasure's transaction); a process keeps the
ciphers it used, by token, for as long as the count it read them under is the newest it has
seen, and a transaction whose snapshot holds that count takes them from there without reading
the `datakeys` entries (one user or a batch: no cursor read per user). Any other transaction reads
the entries; unwrapping (one AES-GCM and one file read) happens only on a miss of the
per-process LRU of ready ciphers (`kernels.aead.AesGcm`), keyed by the wrapped entry.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernels import aead
from kernels.aead import AesGcm

from ..durable import write_file
from .errors import StoreKeyMissing

__all__ = ["DataKeys", "SHRED_COUNT_KEY", "SLOT_BYTES", "SLOT_COUNT_KEY", "SLOTS_FILE",
           "UNZEROED_KEY", "WRAP_KID_KEY", "copy_slots", "unshred_copy"]

SLOT_BYTES = 32
SLOTS_FILE = "keyslots"
SLOT_COUNT_KEY = b"keyslot-count"
"""`meta`: slots handed out (the next user's slot)."""
WRAP_KID_KEY = b"datakey-kid"
"""`meta`: the master key id new data keys are wrapped under (`rotate-key` moves it)."""
SHRED_COUNT_KEY = b"datakey-shreds"
"""`meta`: data keys destroyed so far (ASCII integer): ciphers kept by token are valid while
a snapshot shows the count they were kept under."""
UNZEROED_KEY = b"datakey-unzeroed"
"""`meta`: the pad slots (ASCII integers, comma-separated) whose keys the latest erasure
transaction destroyed; zeroed after its commit, and again by the next erasure and at open."""
_ZERO = bytes(SLOT_BYTES)
_NONCE = 12


def _entry_parts(wrapped: bytes) -> tuple[int, str, int]:
    """(slot, master key id, where the nonce starts) of a `datakeys` entry."""
    at = 9 + wrapped[8]
    return int.from_bytes(wrapped[:8], "big"), wrapped[9:at].decode(), at


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(SLOT_BYTES, "big")


class DataKeys:
    """Data keys of one store; `cipher(txn, token)` and `ciphers(txn, tokens)` (batches) are
    the hot-path calls."""

    def __init__(self, store_dir: Path, table, meta, master: Sequence[tuple[str, bytes]],
                 sync: bool = True, cache_size: int = 65536,
                 reload_master=None):
        self.table, self.meta, self.sync = table, meta, sync
        self._master = dict(master)
        self._newest = master[0][0]
        self._reload = reload_master
        """() -> [(kid, key)]: read the keyring again (a kid written by `rotate-key`)."""
        self._keks: dict[str, AESGCM] = {}
        self._cache: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._local = threading.local()
        """`txn`, `memo` {token: AESGCM or None} and `known` (the by-token ciphers, or None
        when its snapshot shows another shred count) of this thread's current transaction."""
        self._kept: tuple[int, OrderedDict[bytes, AESGCM]] = (-1, OrderedDict())
        """(shred count, ciphers by token valid in snapshots that show that count), replaced
        as one tuple under the lock and read once, so a thread never pairs one count with
        another count's ciphers. Oldest first (an OrderedDict: dropping the oldest of a full
        plain dict, `next(iter(d))`, scans the slots of every entry dropped before it, ~28 us
        a new user once 65,536 are kept, where `popitem(last=False)` takes ~1 us)."""
        self.path = Path(store_dir) / SLOTS_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._dirty = False

    def close(self) -> None:
        os.close(self._fd)

    # -- the hot path ----------------------------------------------------------------------
    def cipher(self, txn, token: bytes, create: bool = False) -> AESGCM | None:
        """The user's data key as an AESGCM; None when they have none (never written, or
        shredded) unless `create` (a write transaction) makes one. Memoized per transaction
        (in this thread): a batch reads and writes several records of each user."""
        memo = self.memo(txn)
        found = memo.get(token)
        if found is None:  # as a batch of one: kept by token, entry, LRU, unwrap or `create`
            self._resolve(txn, memo, [token], create)
            found = memo.get(token)
        return found

    def memo(self, txn) -> dict:
        """{token: AESGCM} of the keys `txn` used so far in this thread (batches read it first)."""
        local = self._local
        if getattr(local, "txn", None) is not txn:
            local.txn, local.memo, local.known = txn, {}, self._known_for(txn)
            local.made, local.shredded = {}, []
        return local.memo

    def committed(self, txn) -> None:
        """`Store.write` after `txn` committed: the keys it made are kept by token too, the
        pads of the keys it destroyed are zeroed (never before: a transaction that aborts
        leaves no data key behind, and destroys none)."""
        local = self._local
        if getattr(local, "txn", None) is not txn:
            return
        if local.made:
            self._keep(local.made)
            local.made = {}
        if local.shredded:
            slots, local.shredded = local.shredded, []
            self._zero(slots)

    def _known_for(self, txn) -> dict | None:
        """The by-token ciphers valid in `txn` (renewed, empty, on a newer shred count)."""
        count = int(self.meta.get(txn, SHRED_COUNT_KEY) or b"0")
        kept_count, kept = self._kept
        if count > kept_count:
            with self._lock:
                if count > self._kept[0]:
                    self._kept = (count, OrderedDict())
                kept_count, kept = self._kept
        return kept if count == kept_count else None

    def _keep(self, found: dict) -> None:
        """Keep {token: cipher} found in this thread's transaction, by token, if it may."""
        known = self._local.known
        if known is None:
            return
        known.update(found)
        while len(known) > self._cache_size:
            known.popitem(last=False)

    def ciphers(self, txn, tokens: list, create: bool = False, plain=None) -> list:
        """`cipher` of many users at once (a batch's hot path), aligned with `tokens`: `plain`
        where a token is None (a record that is not per-user), None where the user has no data
        key (never written, or shredded) unless `create` gave them one. One kernel pass over
        the memo (`kernels.aead.pick`); only the tokens it lacks go to `_resolve`."""
        memo, missing = self.memo(txn), []
        picked = aead.pick(memo, tokens, plain, False, missing)
        if missing:
            self._resolve(txn, memo, list(dict.fromkeys(missing)), create)
            picked = aead.pick(memo, tokens, plain, create)
        return picked

    def _resolve(self, txn, memo: dict, missing: list, create: bool) -> None:
        """Put in `memo` the ciphers of `missing` (distinct tokens it lacks): from the ciphers
        kept by token when the snapshot allows, else their `datakeys` entries (one cursor) and
        the LRU (one lock), unwrapping or (`create`) making the rest."""
        known = self._local.known
        if known:
            rest = []
            for token in missing:
                kept = known.get(token)
                if kept is None:
                    rest.append(token)
                else:
                    memo[token] = kept
            missing = rest
        if not missing:
            return
        found = self.table.get_many(txn, missing)
        unknown, new = [], []
        with self._lock:
            cache = self._cache
            for token, wrapped in zip(missing, found):
                cached = None if wrapped is None else cache.get(wrapped)
                if cached is not None:
                    cache.move_to_end(wrapped)
                    memo[token] = cached
                elif wrapped is not None:
                    unknown.append((token, wrapped))
                elif create:
                    new.append(token)
        if unknown:
            memo.update(self._unwrap_many(unknown))
        if new:
            made = self._create_many(txn, new)
            memo.update(made)
            self._local.made.update(made)
        self._keep({t: memo[t] for t in missing if t in memo and t not in self._local.made})

    def _remember_many(self, pairs) -> None:
        """Put (wrapped entry, cipher) pairs in the LRU under one lock."""
        with self._lock:
            cache = self._cache
            cache.update(pairs)
            while len(cache) > self._cache_size:
                cache.popitem(last=False)

    # -- creating, unwrapping ------------------------------------------------------------------
    def _create_many(self, txn, tokens: list[bytes]) -> dict:
        """Data keys for users who have none: consecutive slots, one random draw, one pad write,
        the halves wrapped in one kernel call (`kernels.aead`). They go to the by-token ciphers
        once committed (`committed`), not to the LRU: a new user's key is found by token until
        the next shred, and its entry unwrapped once after it (inserting every new key into the
        LRU cost more, in a batch of new users, than those later unwraps)."""
        first = int(self.meta.get(txn, SLOT_COUNT_KEY) or b"0")
        n, size = len(tokens), SLOT_BYTES
        rand = secrets.token_bytes((2 * size + _NONCE) * n)
        pads, halves, nonces = rand[:size * n], rand[size * n:2 * size * n], rand[2 * size * n:]
        self._write_slot(first, pads)  # the n pads, consecutive
        self.meta.put(txn, SLOT_COUNT_KEY, str(first + n).encode())
        kid = (self.meta.get(txn, WRAP_KID_KEY) or self._newest.encode()).decode()
        wrapped = self._wrap_many(tokens, first, [halves[i * size:(i + 1) * size] for i in range(n)],
                                  kid, nonces)
        keys = (np.frombuffer(pads, np.uint8) ^ np.frombuffer(halves, np.uint8)).tobytes()
        ciphers = [AesGcm(keys[i * size:(i + 1) * size]) for i in range(n)]
        self.table.put_many(txn, list(zip(tokens, wrapped)))
        return dict(zip(tokens, ciphers))

    def wrap(self, token: bytes, slot: int, half: bytes, kid: str) -> bytes:
        return self._wrap_many([token], slot, [half], kid, secrets.token_bytes(_NONCE))[0]

    def _wrap_many(self, tokens: list[bytes], first_slot: int, halves: list[bytes], kid: str,
                   nonces: bytes) -> list[bytes]:
        """The `datakeys` entries of users in slots `first_slot`, `first_slot` + 1, ...:
        ``slot (8 bytes) | len(kid) | kid | nonce | AES-GCM(half)`` under the master key `kid`."""
        raw_kid = kid.encode()
        head = bytes([len(raw_kid)]) + raw_kid
        sealed = aead.seal_records([self._kek(kid)] * len(tokens), tokens, halves, b"",
                                   b"datakey\x00", nonces)
        return [(first_slot + i).to_bytes(8, "big") + head + w for i, w in enumerate(sealed)]

    def unwrap_half(self, token: bytes, wrapped: bytes) -> tuple[int, str, bytes]:
        """(slot, kid, wrapped half) of an entry."""
        slot, kid, at = _entry_parts(wrapped)
        nonce, sealed = wrapped[at:at + _NONCE], wrapped[at + _NONCE:]
        return slot, kid, self._kek(kid).decrypt(nonce, sealed, b"datakey\x00" + token)

    def _unwrap_many(self, pairs: list[tuple[bytes, bytes]]) -> dict:
        """{token: cipher} of (token, `datakeys` entry) pairs the LRU lacks: the halves opened
        in one kernel call per master key, the pads read, the LRU updated under one lock; a
        user whose pad is zeros (shredded by an erasure committing while this snapshot was
        open) gets none."""
        by_kid: dict[str, list] = {}
        for token, wrapped in pairs:
            slot, kid, at = _entry_parts(wrapped)
            by_kid.setdefault(kid, []).append((token, wrapped, slot, at))
        found = []
        for kid, group in by_kid.items():
            halves = aead.open_records([self._kek(kid)] * len(group), [t for t, *_ in group],
                                       [w[at:] for _, w, _, at in group], _NONCE, b"datakey\x00")
            for (token, wrapped, slot, _), half in zip(group, halves):
                pad = os.pread(self._fd, SLOT_BYTES, slot * SLOT_BYTES)
                if len(pad) == SLOT_BYTES and pad != _ZERO:
                    found.append((token, wrapped, AesGcm(_xor(pad, half))))
        self._remember_many([(w, c) for _, w, c in found])
        return {t: c for t, _, c in found}

    def _kek(self, kid: str) -> AESGCM:
        kek = self._keks.get(kid)
        if kek is None:
            master = self._master.get(kid)
            if master is None and self._reload is not None:
                self._master.update(self._reload())
                master = self._master.get(kid)
            if master is None:
                raise StoreKeyMissing(kid)
            derived = HKDF(hashes.SHA256(), 32, salt=None,
                           info=b"tailor data-key wrap v1").derive(master)
            kek = self._keks[kid] = AesGcm(derived)
        return kek

    # -- erasure and rotation ----------------------------------------------------------------------
    def shred(self, txn, token: bytes) -> bool:
        """Destroy the user's data key (write transaction `txn`): once `txn` commits, their
        ciphertext, wherever a copy of it lies, can no longer be read (the entry goes with
        the transaction, the pad is zeroed after its commit: `committed`). True if they had one.
        The previous erasure's pads are zeroed again first, whether or not this user has a key
        (a retried erasure whose first zeroing failed after its commit finds none)."""
        self.memo(txn).pop(token, None)
        local = self._local
        if not local.shredded:  # the previous erasure's slots: committed, zeroed again
            for slot in _slots(self.meta.get(txn, UNZEROED_KEY)):
                self._write_slot(slot, _ZERO)
        wrapped = self.table.get(txn, token)
        if wrapped is None:
            return False
        self.table.delete(txn, token)
        local.shredded.append(int.from_bytes(wrapped[:8], "big"))
        self.meta.put(txn, UNZEROED_KEY, ",".join(map(str, local.shredded)).encode())
        count = int(self.meta.get(txn, SHRED_COUNT_KEY) or b"0")
        self.meta.put(txn, SHRED_COUNT_KEY, str(count + 1).encode())
        with self._lock:
            self._cache.pop(wrapped, None)
            self._kept[1].pop(token, None)
        return True

    def rewrap(self, txn, token: bytes, wrapped: bytes, kid: str) -> bool:
        """Wrap the entry's half under master key `kid` (False: it already is)."""
        slot, old, half = self.unwrap_half(token, wrapped)
        if old == kid:
            return False
        self.table.put(txn, token, self.wrap(token, slot, half, kid))
        return True

    def zero_unzeroed(self, txn) -> int:
        """Zero the pads of the keys the latest erasure destroyed (`UNZEROED_KEY` in `txn`'s
        snapshot), as its commit should have: a crash between the commit and the zeroing
        leaves none behind. Run at every writable open; returns the slots named."""
        slots = _slots(self.meta.get(txn, UNZEROED_KEY))
        if slots:
            self._zero(slots)
        return len(slots)

    def _zero(self, slots: list[int]) -> None:
        """Overwrite the pads of `slots` with zeros, durably (fsynced when `sync`)."""
        for slot in slots:
            os.pwrite(self._fd, _ZERO, slot * SLOT_BYTES)
        if self.sync:  # not `durable`'s temp file and rename: the zeros must land on P's blocks
            os.fsync(self._fd)

    def _write_slot(self, slot: int, data: bytes) -> None:
        os.pwrite(self._fd, data, slot * SLOT_BYTES)
        self._dirty = True

    def flush(self) -> None:
        """Make the pads written by this transaction (new users' pads, the previous erasure's
        zeroed again) durable before it commits (`Store.write` calls it): one fsync per write
        transaction that wrote any, not one per user."""
        if self._dirty:
            self._dirty = False
            if self.sync:  # the file kept open, written in place (the module's docstring)
                os.fsync(self._fd)


def _slots(raw: bytes | None) -> list[int]:
    """The slots of an `UNZEROED_KEY` value."""
    return [int(s) for s in raw.split(b",")] if raw else []


def copy_slots(store_dir: Path, dest_dir: Path) -> None:
    """Copy the pad file beside a copy of `data.mdb` (backups), fsynced. Copied after the LMDB
    copy: every slot its snapshot refers to was written before that snapshot. Mode 0600, as
    `DataKeys` makes it: written with the umask's 0644, the backup's tar member, and the file
    a restore extracts from it, let every user of the host read the pads."""
    src, dest = Path(store_dir) / SLOTS_FILE, Path(dest_dir) / SLOTS_FILE
    if src.exists():
        write_file(dest, src.read_bytes(), mode=0o600)


def unshred_copy(copy_dir: Path, before: Path, entries: Callable[[], Iterable[bytes]]) -> int:
    """Give a copy's pad file (`copy_slots`, taken after its LMDB snapshot) back the pads that an
    erasure zeroed after the snapshot: `before` is the pad file as it was before the snapshot,
    `entries()` the snapshot's `datakeys` values (read only when some pad was zeroed). Pads
    change only when shredded, so a slot zero now, set before, and still named by an entry of
    the snapshot is such a pad: the copy then holds that user as of its snapshot, like every
    user erased after it, instead of records and an entry whose key cannot be rebuilt.
    Returns how many pads were put back."""
    path, chunk = Path(copy_dir) / SLOTS_FILE, SLOT_BYTES << 15
    zeroed: dict[int, bytes] = {}
    with open(path, "rb") as now_fh, open(before, "rb") as then_fh:
        for start in range(0, os.fstat(now_fh.fileno()).st_size, chunk):
            now, then = now_fh.read(chunk), then_fh.read(chunk)
            n = min(len(now), len(then)) // SLOT_BYTES
            if n == 0:
                break
            a = np.frombuffer(now, np.uint8, n * SLOT_BYTES).reshape(n, SLOT_BYTES)
            b = np.frombuffer(then, np.uint8, n * SLOT_BYTES).reshape(n, SLOT_BYTES)
            for i in np.flatnonzero(~a.any(axis=1) & b.any(axis=1)).tolist():
                zeroed[start // SLOT_BYTES + i] = b[i].tobytes()
    if not zeroed:
        return 0
    named = {slot for slot in (_entry_parts(w)[0] for w in entries()) if slot in zeroed}
    with open(path, "r+b") as fh:
        for slot in sorted(named):
            os.pwrite(fh.fileno(), zeroed[slot], slot * SLOT_BYTES)
        os.fsync(fh.fileno())  # in place, a few pads of a file whose name is on disk already
    return len(named)
