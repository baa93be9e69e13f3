"""Request ids of decisions: a ChooseVariant or ComposeMessage repeating one is answered the
decision logged for it, not a second decision.

A client that retries a call (the Python client's channel retries UNAVAILABLE by itself:
`clients.retry`) may repeat one whose first attempt was logged but whose answer was lost (the
campaigns writer died after its commit, a proxy dropped the reply). Deciding again would log a
second decision for one request: a second contact against the frequency caps, a pull without
a reward for the first, a biased off-policy estimate. A request with a `request_id` carries
the id's digest (`request_digest`: caller, campaign, user and id) on its decision-log row; the
campaigns writer looks the digest up in the transaction that would log the row
(`CampaignRepository.log_decisions`). A digest remembered within
`Limits.request_id_window_seconds`, whose decision is still logged and was not withdrawn, makes
the row a repeat: nothing is logged or counted (caps included) and the answer is the logged
decision's record. Atomic across worker processes: LMDB has one write transaction at a time,
and the look-up and the entry are in the same one. A request without an id reads nothing.

Keys (table `decisions`):

    request_key(digest)             JSON {"d": decision id, "t": unix s, "r": answered again}
    request_expiry_key(t, digest)   b"" (time order: each new entry removes up to
                                    `EXPIRE_PER_ENTRY` expired ones with their entries)
"""
from __future__ import annotations

import hashlib
import json

from ..store.keys import REQUEST_EXPIRY_PREFIX, ms_part, request_expiry_key, request_key

__all__ = ["request_digest", "RequestIds", "EXPIRE_PER_ENTRY"]

EXPIRE_PER_ENTRY = 8
"""Expired entries a new entry removes (more than one: the remembered ids shrink back to those
of the last window after a burst)."""


def request_digest(caller: str, campaign_id: str, user_id: str, request_id: str) -> bytes:
    """The hex digest naming a request id of `caller` for one campaign and user (no raw user
    id in the key; the parts are length-prefixed, so no two tuples share a digest text)."""
    text = "".join(f"{len(p)}:{p};" for p in (caller, campaign_id, user_id, request_id))
    return hashlib.blake2b(text.encode(), digest_size=16, person=b"tailor-request").hexdigest().encode()


class RequestIds:
    """The remembered request ids, read and written inside the decision log's transactions."""

    def __init__(self, table, window: float):
        self._d, self.window = table, window

    def find(self, txn, digest: bytes, now: float) -> dict | None:
        """The entry of `digest` ({"d", "t", "r"}), None if unknown or older than the window."""
        raw = self._d.get(txn, request_key(digest))
        if raw is None:
            return None
        entry = json.loads(raw)
        return entry if now - entry["t"] <= self.window else None

    def repeated(self, txn, digest: bytes, entry: dict) -> None:
        """Note that a repeat was answered the entry's decision (it is no longer withdrawn if
        its first caller gives up: `release`)."""
        if not entry["r"]:
            self._d.put(txn, request_key(digest), json.dumps({**entry, "r": 1}).encode())

    def remember(self, txn, digest: bytes, decision_id: str, now: float) -> None:
        """Remember that `digest` was answered `decision_id`, and forget up to
        `EXPIRE_PER_ENTRY` expired ones. An older entry of the digest (stale, or its decision
        withdrawn: `find` just read it) is replaced; its expiry key stays until it expires,
        and `_expire` then leaves the newer entry, whose time differs."""
        self._d.put(txn, request_key(digest),
                     json.dumps({"d": decision_id, "t": now, "r": 0}).encode())
        self._d.put(txn, request_expiry_key(now, digest), b"")
        self._expire(txn, now)

    def release(self, txn, digest: bytes, decision_id: str) -> bool:
        """Whether the decision `digest` was answered may be withdrawn (its caller gave up):
        not if a repeat of the request was answered it. Forgets the entry when it may (a
        later repeat then decides anew)."""
        raw = self._d.get(txn, request_key(digest))
        if raw is None:
            return True
        entry = json.loads(raw)
        if entry["d"] != decision_id:
            return True
        if entry["r"]:
            return False
        self._d.delete(txn, request_key(digest))
        self._d.delete(txn, request_expiry_key(entry["t"], digest))
        return True

    def _expire(self, txn, now: float) -> None:
        end = REQUEST_EXPIRY_PREFIX + ms_part(now - self.window)
        doomed = []
        for key, _ in self._d.items(txn, REQUEST_EXPIRY_PREFIX):
            if key >= end or len(doomed) == EXPIRE_PER_ENTRY:
                break
            doomed.append(key)
        for key in doomed:
            self._d.delete(txn, key)
            digest = key[len(end):]
            raw = self._d.get(txn, request_key(digest))
            # an entry made again later has its own, later expiry entry
            if raw is not None and ms_part(json.loads(raw)["t"]) == key[len(REQUEST_EXPIRY_PREFIX):len(end)]:
                self._d.delete(txn, request_key(digest))
