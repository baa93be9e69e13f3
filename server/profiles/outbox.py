"""The listeners' outbox: a batch's effects elsewhere survive a crash after its commit.

A TrackEvents batch commits its events in one write transaction; what they change in other
domains (the listeners, `server.interfaces.EventListener`: the suppression list for bounces
and complaints, campaign rewards and contact counts, the impression join) is applied after
that commit. A process that died in between lost those effects for good: a retry of the batch
is a duplicate, and changes nothing. So:

1. **Recorded with the events, one entry per (batch, listener).** A listener with an outbox
   tag says which events of a batch it has an effect for (`follows`, in the event loop before
   the write). For each listener that follows at least one, the batch gets an entry key
   `<ms>␟<batch id>␟<tag>` (`keys.outbox_key`, `store.outbox.batch_id`), and the ingestion's
   transaction writes it once, naming the events keys of the batch's new events that listener
   follows (`store.outbox.value`; duplicates are not named, a batch of duplicates or of events
   nobody follows, views and most others, writes nothing). The table is not per-user: a value
   holds events keys as the events table keys them (keyed hashes of the user and event ids,
   and the time; no id, no address), so it is not sealed.
2. **Applied once, then cleared, in one transaction.** After the commit, each listener gets
   the events it follows with its entry (`store.outbox.Batch`) and deletes the entry in the
   one write transaction that applies the batch's effects, applying those of the events the
   entry still names, and only if it was still there (`store.outbox.claim`): the suppression
   list (`Suppressions`, this worker's store), the impression join (`ImpressionJoin`, this
   worker's store: adding counts is not idempotent; events left unmatched for a later try are
   put back in the entry, `store.outbox.keep`; it normally joins in the ingestion's own
   transaction instead, `EventListener.in_write`, and writes an entry only for the events
   left for its retry, or when it could not join there) and the campaigns
   (`CampaignRepository.apply_event_effects`, in the campaigns writer process, which opens the
   same LMDB environment: a batch's rewards, contact counts and the entry's deletion are one
   request, applied in one of the child's transactions; a batch whose campaigns events are all
   sends, no reward, has their contacts counted in the ingestion's own transaction instead,
   `Campaigns.in_write`, and no entry). Whoever applies an entry first, the
   worker that committed it or a replay, the other finds it gone and skips it.
3. **Replayed.** Entries left behind (a crash or SIGKILL between the commit and a listener's
   transaction, a listener that failed) are replayed by `Profiles.replay_outbox`: at every
   worker's start, once its listeners' domains are up (every entry), then every
   `REPLAY_SECONDS` (entries older than `REPLAY_AFTER_S`, so batches in flight are left to
   their worker). The events are read back from the events table (`records.tracked_event`);
   those gone (erased, expired) are skipped, and an entry none of whose events is left, or
   whose listener is no longer wired, is dropped. Each replay that leaves an entry counts a
   try in its value; after `MAX_TRIES` it is dropped with a warning (a listener that fails on
   it every time).
4. **Erasure.** DeleteProfile first replays the entries that name the user's events (a scan
   of the table, normally empty or holding the few batches in flight), so what their committed
   events do elsewhere happens as if no crash had come between (a bounced or complained-about
   address is listed: the list outlives the profile); racing the worker that committed them is
   safe (the claim). Then its transaction takes the user's events keys out of every entry left
   (`store.outbox.forget`: those of a batch committed after that replay), so the worker that
   committed such a batch applies nothing for the user's events, and no entry names the user.

A binary from before the outbox never meets it: the same upgrade stamps the worker registry's
entries at layout 2 (`store.layouts`), so such a binary refuses the store.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from ..store import Store, keys, outbox
from ..store.outbox import Batch
from .records import tracked_event

__all__ = ["Outbox", "Due", "REPLAY_AFTER_S", "REPLAY_SECONDS", "MAX_TRIES", "REPLAY_EVENTS"]

logger = logging.getLogger("tailor.profiles")

REPLAY_AFTER_S = 30.0
"""Age of the entries a periodic replay takes: older than any batch still in flight."""
REPLAY_SECONDS = 60.0
"""How often each worker replays the entries left behind."""
MAX_TRIES = 5
"""Replays an entry gets before it is dropped (with a warning)."""
REPLAY_EVENTS = 4096
"""Events read back per replay round (whole entries: at least one)."""


@dataclass
class Due:
    """One round of a replay: (listener tag, events, their `Batch`) per entry taken."""

    batches: list[tuple[bytes, list, Batch]] = field(default_factory=list)
    dropped: int = 0
    after: bytes | None = None
    """The key to start the next round at; None: this round reached the end."""

    def __len__(self) -> int:
        return len(self.batches)


class Outbox:
    """The `outbox` table as `Profiles` replays it."""

    def __init__(self, store: Store):
        self.store = store
        self._t, self._events = store.table("outbox"), store.table("events")

    def take(self, tags: Collection[bytes], before_ms: int, start: bytes = b"",
             user: bytes | None = None, most: int = REPLAY_EVENTS) -> Due:
        """The entries from key `start` on of batches from before `before_ms` (those naming
        events under `user`, a user's prefix, if given), until they name `most` events, with
        their events; their tries counted (one write). Entries none of whose events is left,
        whose tag is not in `tags` or that were tried `MAX_TRIES` times are deleted instead."""
        due, seen, n = Due(), [], 0
        with self.store.read() as txn:
            for key, stored in self._t.items(txn, start):
                ms, tag = keys.outbox_parts(key)
                if ms >= before_ms:
                    break
                if user is not None and not outbox.names_user(stored, user):
                    continue
                if n >= most:
                    due.after = bytes(key)
                    break
                tries, named = outbox.parsed(stored)
                seen.append((bytes(key), tag, tries, named))
                n += len(named)
            raws = iter(self._events.get_many(txn, [k for *_, named in seen for k in named]))
        doomed, kept = [], []
        for key, tag, tries, named in seen:
            found = [(k, raw) for k, raw in zip(named, raws) if raw is not None]
            if not found or tag not in tags or tries >= MAX_TRIES:
                doomed.append((key, tag, not found))
                continue
            kept.append(key)
            due.batches.append((tag, [tracked_event(raw) for _, raw in found],
                                Batch(key, [k for k, _ in found])))
        if doomed or kept:
            self.store.write(lambda txn: self._mark(txn, doomed, kept))
        due.dropped = len(doomed)
        _log_dropped(doomed)
        return due

    def _mark(self, txn, doomed: Sequence[tuple], kept: Sequence[bytes]) -> None:
        t = self._t
        for key, _, _ in doomed:
            t.delete(txn, key)
        for key in kept:
            stored = t.get(txn, key)
            if stored is not None:  # not applied meanwhile (by the worker that committed it)
                tries, named = outbox.parsed(stored)
                t.put(txn, key, outbox.value(named, tries + 1))

    def count(self) -> int:
        """Entries held (a test's and an operator's look)."""
        with self.store.read() as txn:
            return self._t.count(txn)


def _log_dropped(doomed: Sequence[tuple]) -> None:
    """One warning per tag for the entries dropped with their effects not applied (counts and
    tags only: no user, no event id)."""
    tried: dict[bytes, int] = {}
    for _, tag, gone in doomed:
        if not gone:
            tried[tag] = tried.get(tag, 0) + 1
    for tag, n in tried.items():
        logger.warning("outbox: %d %s batch(es) dropped unapplied (listener not wired, or failed "
                       "%d replays)", n, tag.decode(errors="replace"), MAX_TRIES)
