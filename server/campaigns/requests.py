"""Request ids of decisions: a ChooseVariant or ComposeMessage repeating one is answered the
decision logged for it, not a second decision.

A client that retries a call (the Python client's channel retries UNAVAILABLE by itself:
`clients.retry`) may repeat one whose first attempt was logged but whose answer was lost (the
campaigns writer died after its commit, a proxy dropped the reply). Deciding again would log a
second decision for one request: a second contact against the frequency caps, a pull without
a reward for the first, a biased off-policy estimate. A request with a `request_id` carries
the id's digest (`request_digest`: caller, campaign, user and id, keyed) on its decision-log row; the
campaigns writer looks the digest up in the transaction that would log the row
(`CampaignRepository.log_decisions`). A digest remembered within
`Limits.request_id_window_seconds`, whose decision is still logged and was not withdrawn, makes
the row a repeat: nothing is logged or counted (caps included) and the answer is the logged
decision's record. Atomic across worker processes: LMDB has one write transaction at a time,
and the look-up and the entry are in the same one. A request without an id reads nothing.

A ComposeMessage with `deliver` also keeps its delivery's state in the entry (`x`:
`claim_delivery`, `settle_delivery`), so that a repeat is answered the first delivery's outcome
and never hands the message over again (`messages.once`). It names no one: a state, a time,
the adapter's short reason and the attempts.

Keys (table `decisions`), in buckets as wide as the window:

    request_key(bucket start, digest)   JSON {"d": decision id, "t": unix s, "r": answered again,
                                        "x": delivery state (optional)}

An id is remembered with one write, in the bucket of its time. An entry within the window is
in the current bucket or the one before (a look-up reads both, newest first), so the buckets
before those only hold expired entries: each new entry deletes up to `EXPIRE_PER_ENTRY` of
them, oldest first, in key order (neighbouring keys: few pages written), and a process that
found none left does not look again until the next bucket starts. Changing the window changes
the buckets: ids remembered under the old width are not found after the restart (a retry
spanning it is decided anew) and expire with the old buckets.

Stores written before stop 48 keyed entries by digest alone, with a time-ordered expiry key
each (`LEGACY_*` in `store.keys`); `convert_legacy` moves the ones still within the window into
their buckets and deletes the rest, once, in the background once the campaigns writer has
started (about 18 us an entry: a store that remembered millions of ids would otherwise keep the
writer from reporting ready). Until a process finds none left, a look-up that misses both
buckets also reads the entry's legacy key, so a repeat is answered its decision (and a delivery
is not handed over twice) however far the conversion has gone.

The digest an entry is keyed by is an HMAC under the store's `store-id` key
(`tokens.keyed_digest`), so nobody holding the store file alone can test a guessed user id
against it. A Tailor from before then used an unkeyed blake2b of the same parts
(`unkeyed_digest`), which anyone can compute; such an entry is not rewritten (its digest
cannot be keyed without the ids it hides) but read: `request_digest` carries both digests, and
a look-up that misses the keyed one also reads the unkeyed one in both buckets (then, as
before, its legacy key) until one window has passed since the process started (every entry
made before the upgrade has expired by then). A server's calls stop computing the unkeyed one
then too (`RequestDigests`: the keyed digest alone, which the look-up takes as "no unkeyed
entry to read"), so one request may come with both digests (a process in its first window)
and with the keyed one alone (another past it): the writer tells requests apart by the keyed
one (`request_of`). Those entries expire with their buckets; the legacy entries the conversion
moves keep their unkeyed digest.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time

from ..store import tokens
from ..store.keys import (
    LEGACY_REQUEST_EXPIRY_PREFIX,
    LEGACY_REQUEST_PREFIX,
    REQUEST_PREFIX,
    millis,
    request_key,
)

__all__ = ["request_digest", "unkeyed_digest", "RequestDigests", "RequestIds", "EXPIRE_PER_ENTRY",
           "DIGEST_CHARS", "request_of"]

EXPIRE_PER_ENTRY = 8
"""Expired entries a new entry removes (more than one: the remembered ids shrink back to those
of the last window after a burst)."""

LEGACY_CHUNK = 2_000
"""Entries of the pre-bucket layout converted a write transaction (`convert_legacy`)."""
LEGACY_PAUSE = 0.01
"""Seconds `convert_legacy` waits between two transactions: the writer's batches (and other
processes' writes) take the store's write lock meanwhile."""


DIGEST_CHARS = 32
"""Hex characters of a digest (128 bits), keyed or not."""
_DOMAIN = b"tailor-request"


def request_digest(caller: str, campaign_id: str, user_id: str, request_id: str) -> bytes:
    """The digests naming a request id of `caller` for one campaign and user: the keyed one
    (`DIGEST_CHARS` hex characters of `tokens.keyed_digest`: its entry's key, which nobody
    without the store's key can test a guessed user id against), then `unkeyed_digest`, read
    for the entries of a Tailor from before digests were keyed (`RequestIds`); neither holds a
    raw id."""
    text = _text(caller, campaign_id, user_id, request_id)
    return _keyed(text) + _blake2b(text)


def _keyed(text: bytes) -> bytes:
    return tokens.keyed_digest(_DOMAIN, text)[:DIGEST_CHARS].encode()


class RequestDigests:
    """`request_digest` for the calls of one process: both digests until one window has passed
    since it started (`started`), then the keyed one alone. Every entry named by an unkeyed
    digest was made by a Tailor from before digests were keyed, so before this process
    started: once it has expired, the unkeyed digest (~1 us a request, half the cost of both)
    is never read again (`RequestIds._newest` reads it only when given)."""

    def __init__(self, window: float, started: float | None = None):
        self.unkeyed_until = (time.time() if started is None else started) + window
        """Until when an entry named by an unkeyed digest may be within the window."""

    def __call__(self, caller: str, campaign_id: str, user_id: str, request_id: str,
                 now: float) -> bytes:
        text = _text(caller, campaign_id, user_id, request_id)
        keyed = _keyed(text)
        return keyed if now > self.unkeyed_until else keyed + _blake2b(text)


def request_of(digest: bytes) -> bytes:
    """What names the request of `digest` (`request_digest`, `RequestDigests`): its keyed
    digest. Whether the unkeyed one follows depends on the process that computed it (its
    first window or not), so two digests of one request compare equal only by this."""
    return digest[:DIGEST_CHARS]


def unkeyed_digest(caller: str, campaign_id: str, user_id: str, request_id: str) -> bytes:
    """The hex blake2b of the same parts, unkeyed: a request id's digest before digests were
    keyed (and still a send job's id, `messages.jobs`, which names no user)."""
    return _blake2b(_text(caller, campaign_id, user_id, request_id))


def _text(*parts: str) -> bytes:
    """The parts length-prefixed, so no two tuples share a text."""
    return "".join(f"{len(p)}:{p};" for p in parts).encode()


def _blake2b(text: bytes) -> bytes:
    return hashlib.blake2b(text, digest_size=DIGEST_CHARS // 2, person=_DOMAIN).hexdigest().encode()


class RequestIds:
    """The remembered request ids, read and written inside the decision log's transactions."""

    def __init__(self, table, window: float):
        self._d, self.window = table, window
        self._width = max(millis(window), 1)
        """The buckets' width, in milliseconds."""
        self._clean_below = b""
        """A key under which this process found no entry left (`_expire`)."""
        self._legacy = True
        """Whether entries of the pre-bucket layout may still be stored (`_newest` reads them
        until a miss finds none left: none is ever written again)."""
        self._unkeyed_until = time.time() + window
        """Until when an entry named by an unkeyed digest (a Tailor's from before digests were
        keyed, or a legacy one) may be within the window: each was made before this process
        started."""

    def _keys(self, digest: bytes, now: float) -> tuple[bytes, bytes]:
        """The keys `digest` may have within the window at `now`: this bucket's, the last's."""
        start = millis(now) // self._width * self._width
        return request_key(start, digest), request_key(max(start - self._width, 0), digest)

    def _newest(self, txn, digest: bytes, now: float) -> tuple[bytes, dict] | None:
        """(key, entry) of `digest`'s newest entry in this bucket or the last, however old:
        by its keyed digest, else (while one may be within the window) by its unkeyed one,
        else by that one's legacy key (`request_digest`)."""
        found = self._bucketed(txn, digest[:DIGEST_CHARS], now)
        unkeyed = digest[DIGEST_CHARS:]
        if found is not None or not unkeyed or now > self._unkeyed_until:
            return found
        found = self._bucketed(txn, unkeyed, now)
        if found is None and self._legacy:
            found = self._legacy_entry(txn, unkeyed)
        return found

    def _bucketed(self, txn, digest: bytes, now: float) -> tuple[bytes, dict] | None:
        """(key, entry) of one digest in this bucket or the last."""
        for key in self._keys(digest, now):
            raw = self._d.get(txn, key)
            if raw is not None:
                return key, json.loads(raw)
        return None

    def _legacy_entry(self, txn, digest: bytes) -> tuple[bytes, dict] | None:
        """(key, entry) of `digest` in the pre-bucket layout, not converted yet (its key is
        read and written as a bucket's is); notes when none is left."""
        key = LEGACY_REQUEST_PREFIX + digest
        raw = self._d.get(txn, key)
        if raw is not None:
            return key, json.loads(raw)
        first = self._d.first_key(txn, LEGACY_REQUEST_PREFIX)
        if first is None or not first.startswith(LEGACY_REQUEST_PREFIX):
            self._legacy = False
        return None

    def find(self, txn, digest: bytes, now: float) -> tuple[bytes, dict] | None:
        """(key, entry {"d", "t", "r"}) of `digest`'s newest entry; None if unknown or older
        than the window."""
        found = self._newest(txn, digest, now)
        return found if found is not None and now - found[1]["t"] <= self.window else None

    def repeated(self, txn, found: tuple[bytes, dict]) -> None:
        """Note that a repeat was answered the entry's decision (`find`'s answer; it is no
        longer withdrawn if its first caller gives up: `release`)."""
        key, entry = found
        if not entry["r"]:
            self._d.put(txn, key, json.dumps({**entry, "r": 1}).encode())

    def remember(self, txn, digest: bytes, decision_id: str, now: float,
                 repeated: bool = False) -> None:
        """Remember that `digest` was answered `decision_id` (an older entry of it in this
        bucket, withdrawn or stale, is replaced; one in the last bucket is read after this
        one), and forget up to `EXPIRE_PER_ENTRY` expired ones. `repeated`: a repeat of the
        request in the same batch was answered it already (what `repeated` notes for a repeat
        in a later one)."""
        self._d.put(txn, self._keys(digest[:DIGEST_CHARS], now)[0],
                    json.dumps({"d": decision_id, "t": now, "r": int(repeated)}).encode())
        self._expire(txn, now)

    def claim_delivery(self, txn, digest: bytes, decision_id: str, until: float,
                       now: float) -> dict | None:
        """None when the caller is to deliver the message of `decision_id` (the entry then says
        it is being delivered until `until`); else the delivery state the entry holds ({"s":
        "sending", "u": until} while another call delivers it, "sent", "refused", "withheld",
        "unavailable", or "doubt", which a lapsed "sending" becomes: its call stopped mid-send).
        No entry of that decision (expired meanwhile): None, nothing written."""
        found = self._entry_of(txn, digest, decision_id, now)
        if found is None:
            return None
        key, entry = found
        state = entry.get("x")
        if state is not None:
            return {"s": "doubt"} if state["s"] == "sending" and state["u"] <= now else state
        self._d.put(txn, key, json.dumps({**entry, "x": {"s": "sending", "u": until}}).encode())
        return None

    def renew_delivery(self, txn, digest: bytes, decision_id: str, until: float,
                       now: float) -> bool:
        """Extend the claim `claim_delivery` gave the caller to `until`, while the delivery is
        still being made (not settled); False when it is not (settled, or the entry gone).
        Only the claim's holder renews: a repeat never claims a "sending" entry, lapsed or
        not."""
        found = self._entry_of(txn, digest, decision_id, now)
        if found is None:
            return False
        key, entry = found
        state = entry.get("x")
        if state is None or state["s"] != "sending":
            return False
        self._d.put(txn, key, json.dumps({**entry, "x": {"s": "sending", "u": until}}).encode())
        return True

    def settle_delivery(self, txn, digest: bytes, decision_id: str, state: dict,
                        now: float) -> None:
        """The outcome of the delivery `claim_delivery` gave the caller (no entry of that
        decision any more: nothing to write)."""
        found = self._entry_of(txn, digest, decision_id, now)
        if found is not None:
            key, entry = found
            self._d.put(txn, key, json.dumps({**entry, "x": state}).encode())

    def _entry_of(self, txn, digest: bytes, decision_id: str, now: float
                  ) -> tuple[bytes, dict] | None:
        """(key, entry) of `digest` if it still names `decision_id` (in this bucket or the
        last, however old: a delivery may outlast the window)."""
        found = self._newest(txn, digest, now)
        return found if found is not None and found[1]["d"] == decision_id else None

    def release(self, txn, digest: bytes, decision_id: str, now: float) -> bool:
        """Whether the decision `digest` was answered may be withdrawn (its caller gave up):
        not if a repeat of the request was answered it. Forgets the entry when it may (a
        later repeat then decides anew)."""
        found = self._entry_of(txn, digest, decision_id, now)
        if found is None:  # no entry, or a newer one of another decision
            return True
        if found[1]["r"]:
            return False
        self._d.delete(txn, found[0])
        return True

    def _expire(self, txn, now: float) -> None:
        keep = self._keys(b"", now)[1]  # the last bucket's first key
        if keep == self._clean_below:
            return
        doomed = []
        for key in self._d.keys_from(txn, REQUEST_PREFIX):  # keys only: nothing opened
            if key >= keep or len(doomed) == EXPIRE_PER_ENTRY:
                break
            doomed.append(key)
        for key in doomed:
            self._d.delete(txn, key)
        if len(doomed) < EXPIRE_PER_ENTRY:
            # a rolled-back transaction leaves them for the next bucket's look: harmless,
            # `find` tells an expired entry by its time
            self._clean_below = keep

    def convert_legacy(self, store, stop: threading.Event | None = None) -> int:
        """Move the entries of the pre-bucket layout still within the window into their
        buckets, delete the others and every legacy expiry key (`LEGACY_CHUNK` a write
        transaction, `LEGACY_PAUSE` apart, so concurrent writers wait little) until done or
        `stop` is set; returns how many were moved. An entry already in the bucket (made
        since, by this layout) is kept."""
        moved = 0
        for prefix in (LEGACY_REQUEST_PREFIX, LEGACY_REQUEST_EXPIRY_PREFIX):
            with store.read() as txn:  # a store without any: no write transaction
                first = self._d.first_key(txn, prefix)
            done = first is None or not first.startswith(prefix)
            while not done:
                time.sleep(LEGACY_PAUSE)  # relative: a timed Event.wait sets an absolute
                # deadline, which a clock set ahead (`make test-at`'s faketime) put months away
                if stop is not None and stop.is_set():
                    return moved  # the writer stops: the next start goes on
                n, done = store.write(lambda txn, p=prefix: self._convert_some(txn, p, time.time()))
                moved += n
        return moved

    def _convert_some(self, txn, prefix: bytes, now: float) -> tuple[int, bool]:
        chunk = []
        for key in self._d.keys_from(txn, prefix):
            if not key.startswith(prefix) or len(chunk) == LEGACY_CHUNK:
                break
            chunk.append(key)
        moved = 0
        for key in chunk:
            if prefix == LEGACY_REQUEST_PREFIX:
                entry = json.loads(self._d.get(txn, key))
                new = self._keys(key[len(prefix):], entry["t"])[0]
                if now - entry["t"] <= self.window and self._d.get(txn, new) is None:
                    self._d.put(txn, new, json.dumps(entry).encode())
                    moved += 1
            self._d.delete(txn, key)
        return moved, len(chunk) < LEGACY_CHUNK
