"""Campaign records in the store (key layouts: `server.store.keys`):

    campaigns  campaign_key(c)          Campaign JSON (spec, archived, revision)
    bandit     campaign_key(c)          kernels.bandits state bytes (posterior)
    bandit     count_key(c)             JSON counters (decisions per arm, holdout, ...)
    decisions  the decision log: records and their id and due indexes (`decision_log`)
    contacts   contact_key(u)           the user's recent contacts (`contact.caps.ContactLog`)

A suppressed decision (status "suppressed", with its reason) is stored with its index entry
only: no due entry, no counters, no posterior change, so it takes no reward and stays out of
stats and (by default) exports. Frequency caps are checked in the decisions' write transaction
(`log_decisions`): a decision over a cap is stored as suppressed with `frequency_cap`.

Index keys start with the separator, so erasing a user (prefix `<user>␟`) removes exactly that
user's decisions; `erase_user` (registered on `ProfileRepository.erasers`) removes their index
entries in the same transaction. The decision log's codec and its scans (export, a user's
records, retention) are `decision_log.DecisionLog` (`repo.log`).

Every write is one `Store.write` transaction whose function reads and writes only through the
transaction (it may run twice): posterior updates are read-modify-write under LMDB's writer
lock, so concurrent rewards from several worker processes are never lost.
"""
from __future__ import annotations

import atexit
import collections
import gc
import itertools
import json
import os
import threading
import time
from collections.abc import Sequence

import numpy as np

from kernels import bandits as B

from ..batching.bulk import Bulk
from ..contact.caps import FREQUENCY_CAP, ContactLog
from ..contexts import carried
from ..limits import DEFAULT_LIMITS, Limits
from ..store import Store, Table, outbox
from ..store.damaged import DAMAGED, read_each
from ..store.keys import (
    DUE_PREFIX,
    campaign_key,
    count_key,
    decision_index_key,
    due_key,
    outbox_parts,
    user_prefix,
)
from .decision_log import (
    DecisionLog,
    decision_parts,
    decode_decision,
    decoded,
    encode_decision,
    warn_damaged,
)
from .errors import (
    CampaignExists,
    CampaignNotFound,
    DecisionDamaged,
    DecisionNotFound,
    DecisionSuppressed,
    RewardConflict,
)
from .logging import logger
from .recheck import Recheck
from .records import (
    DEFAULT,
    ERASED,
    NO_ARM,
    PENDING,
    REWARDED,
    SUPPRESSED,
    WITHDRAWN,
    DecisionRecord,
    Fallback,
    RewardOutcome,
    RewardRequest,
)
from .requests import RequestIds, request_of
from .spec import Campaign

__all__ = ["CampaignRepository", "writer_functions", "PENDING", "REWARDED", "DEFAULT",
           "SUPPRESSED", "OUTBOX_TAG"]

OUTBOX_TAG = b"campaigns"
"""The tag of the campaigns' outbox entries: a tracked batch's rewards and contacts
(`server.profiles.outbox`)."""


class CampaignRepository:
    def __init__(self, store: Store, limits: Limits = DEFAULT_LIMITS, before_erasure=None):
        """`before_erasure(txn, user_ids, timestamps)`: the indices of decisions made before
        their user's erasure (`profiles.tombstones.Tombstones.before_erasure`; None: not
        checked, as in a repository without the `erasure` keyring)."""
        self.store = store
        self._before_erasure = before_erasure
        self._c, self._b = store.table("campaigns"), store.table("bandit")
        self._d = store.table("decisions")
        self._outbox = store.table("outbox")
        self.held_since: float | None = None
        """The commit time of the campaigns outbox entry that held the last sweep back
        (`_held_back`), None when none did."""
        self.log = DecisionLog(store)
        self.contacts = ContactLog(store, limits)
        self.requests = RequestIds(self._d, limits.request_id_window_seconds)
        self.recheck = Recheck(store)
        self.limits = limits
        self._parsed: dict[bytes, Campaign] = {}
        self._counted: dict[bytes, tuple[bytes, dict]] = {}
        """{counters key: (the bytes `_count` wrote there last, their dict)}: the next
        transaction that reads the same bytes takes the dict instead of decoding them."""

    def parse(self, raw: bytes) -> Campaign:
        """Campaign from its stored bytes, memoised on the bytes (a pure cache)."""
        campaign = self._parsed.get(raw)
        if campaign is None:
            if len(self._parsed) > 1024:
                self._parsed.clear()
            campaign = self._parsed[raw] = Campaign.from_json(raw)
        return campaign

    # -- campaigns ----------------------------------------------------------------------------
    def create(self, campaign: Campaign, state: B.BanditState) -> Campaign:
        key = campaign_key(campaign.spec.campaign_id)

        def fn(txn):
            if self._c.get(txn, key) is not None:
                raise CampaignExists(campaign.spec.campaign_id)
            self._c.put(txn, key, campaign.to_json())
            self._b.put(txn, key, state.to_bytes())
            return campaign
        return self.store.write(fn)

    def update(self, campaign_id: str, change) -> Campaign:
        """`change(campaign, state) -> (campaign, state)` applied in one write transaction; a
        change of the split (weights, or variants appended) restarts its counts
        (`_restart_split`)."""
        key = campaign_key(campaign_id)

        def fn(txn):
            raw = self._c.get(txn, key)
            if raw is None:
                raise CampaignNotFound(campaign_id)
            old = B.BanditState.from_bytes(self._b.get(txn, key))
            new, state = change(self.parse(raw), old)
            self._c.put(txn, key, new.to_json())
            self._b.put(txn, key, state.to_bytes())
            if old.weights.shape != state.weights.shape or \
                    not np.array_equal(old.weights, state.weights):
                self._restart_split(txn, campaign_id, new.updated_at)
            return new
        return self.store.write(fn)

    def _restart_split(self, txn, campaign_id: str, at: float) -> None:
        """Remember the decisions per arm made under the split before `at` (`split_from`) and
        when it changed (`split_at`): the split check and the time to significance count the
        decisions since (`split_counts`), made under the split the weights now give; the
        decision counts themselves stay whole."""
        key = count_key(campaign_id)
        c = _counters(self._b.get(txn, key))
        c["split_from"], c["split_at"] = list(c["decisions"]), at
        self._b.put(txn, key, _encoded(c))

    def get(self, campaign_id: str) -> Campaign | None:
        raw = self.store.get("campaigns", campaign_key(campaign_id))
        return None if raw is None else self.parse(raw)

    def page(self, after: str, most: int, most_bytes: int,
             include_archived: bool) -> tuple[list[Campaign], str]:
        """Up to `most` campaigns with ids after `after` ("": from the first), in id order,
        archived ones only if asked, ending before their stored bytes pass `most_bytes` (at
        least one); and the id to pass as `after` for the next page ("" after the last)."""
        start = campaign_key(after) + b"\0" if after else b""
        found: list[Campaign] = []
        size = 0
        with self.store.read() as txn:
            for _, raw in self._c.items(txn, start):
                campaign = self.parse(raw)
                if campaign.archived and not include_archived:
                    continue
                if len(found) == most or (found and size + len(raw) > most_bytes):
                    return found, found[-1].spec.campaign_id
                found.append(campaign)
                size += len(raw)
        return found, ""

    def snapshot(self, campaign_id: str) -> tuple[bytes | None, bytes | None]:
        """(campaign bytes, state bytes) from one read snapshot (the decision path)."""
        key = campaign_key(campaign_id)
        with self.store.read() as txn:
            return self._c.get(txn, key), self._b.get(txn, key)

    def stats_snapshot(self, campaign_id: str) -> tuple[Campaign, B.BanditState, dict]:
        key = campaign_key(campaign_id)
        with self.store.read() as txn:
            raw, blob = self._c.get(txn, key), self._b.get(txn, key)
            counts = self._b.get(txn, count_key(campaign_id))
        if raw is None:
            raise CampaignNotFound(campaign_id)
        return self.parse(raw), B.BanditState.from_bytes(blob), _counters(counts)

    # -- decisions ----------------------------------------------------------------------------
    def log_decisions(self, records: Sequence[DecisionRecord]) -> list[str]:
        """Store decision records (one transaction) with their indexes and counters; returns
        each one's suppression reason ("" when logged as decided). Contact decisions over a
        frequency cap are stored suppressed (`FREQUENCY_CAP`), or, when the record names the
        channels the contact policy allowed (`DecisionRecord.choices`), on the first with room,
        answered `Fallback(channel, propensity)` (as is a decision whose propensity takes
        others' fallbacks: `Admission.settled`); the caps are checked and counted in
        this transaction, so concurrent decisions cannot both pass a cap. So are consent and
        the suppression list (`recheck`: a change committed since the decision's read refuses
        its channel as a full cap does, with its reason: `no_consent`, `suppressed_address`). A
        decision made before its user's erasure (read before it, committed after) is not
        stored at all: its reason is `ERASED`. A contact decision of a user whose contact
        history is damaged is stored suppressed with `CONTACT_HISTORY_DAMAGED` when a cap
        checks it (`ContactLog.admit`), the batch's other decisions as without it."""
        checks = [(i, a) for i, a in enumerate(r.admission() for r in records) if a is not None]
        parts = decision_parts(records)  # outside the writer lock
        asked = [(i, r.request) for i, r in enumerate(records) if r.request]
        rechecked = any(r.recheck for r in records)

        def fn(txn):
            now = time.time()
            recs, reasons = list(records), [""] * len(records)
            repeats = self._repeats(txn, asked, now) if asked else {}
            gone = self._erased_since(txn, records)
            if gone:  # left out as repeats are: nothing stored, counted or capped
                repeats = {**repeats, **dict.fromkeys(gone, ERASED)}
            checked = [c for c in checks if c[0] not in repeats] if repeats else checks
            refused = self.recheck.refused(txn, records, repeats) if rechecked else None
            refused = refused if refused and any(refused) else None
            if refused:  # the contact policy refuses some channels now: blocked as by a cap
                checked = [(i, a._replace(refused=frozenset(refused[i])) if refused[i] else a)
                           for i, a in checked]
            passed = self.contacts.admit(txn, [a for _, a in checked], now) if checked else ()
            entries, index, dues = (list(p) for p in parts)
            if refused:
                _refuse_uncapped(recs, reasons, refused, checked, entries, index, dues)
            for (i, asked_for), admitted in zip(checked, passed):
                if admitted is asked_for:
                    continue
                if admitted is None or admitted.__class__ is str:  # refused (a cap, a reason)
                    why = admitted or (refused and refused[i].get(recs[i].channel)) or \
                        FREQUENCY_CAP
                    recs[i], reasons[i] = recs[i].suppressed(why), why
                else:  # on a fallback channel, or its propensity with their mass
                    recs[i] = recs[i].settled(admitted)
                    reasons[i] = Fallback(admitted.channel, admitted.propensity)
                (entries[i],), (index[i],), (dues[i],) = decision_parts([recs[i]])
            per_campaign = {}
            for i, rec in enumerate(recs):
                if rec.status == PENDING and i not in repeats:
                    per_campaign.setdefault(rec.campaign_id, []).append((rec.arm, rec.timestamp))
            if repeats:
                entries, index, dues = ([x for i, x in enumerate(p) if i not in repeats]
                                        for p in (entries, index, dues))
            self._d.put_many(txn, entries + index + [d for d in dues if d is not None])
            for campaign_id, arms in per_campaign.items():
                self._count(txn, campaign_id, arms=arms)
            out = [r or rec.reason for r, rec in zip(reasons, records)]
            # a row repeating an earlier row of this batch was answered that row's decision:
            # its entry says so at once (its first caller giving up no longer withdraws it)
            again = {request_of(d) for i, d in asked if repeats.get(i).__class__ is int}
            for i, digest in asked:
                if i not in repeats:
                    self.requests.remember(txn, digest, recs[i].decision_id, now,
                                           repeated=request_of(digest) in again)
            for i, original in repeats.items():  # the logged record, or the row it repeats
                out[i] = original if original.__class__ in (dict, str) else \
                    _as_logged(recs[original])
            return out
        return self.store.write(fn)

    def _erased_since(self, txn, records: Sequence[DecisionRecord]) -> list[int]:
        """Indices of `records` made before their user's erasure, as `txn` sees the
        tombstones (one read of their count a transaction; a hash per user only for decisions
        older than the latest erasure)."""
        if self._before_erasure is None:
            return []
        return self._before_erasure(txn, [r.user_id for r in records],
                                    [r.timestamp for r in records])

    def _repeats(self, txn, asked: Sequence[tuple[int, bytes]], now: float) -> dict:
        """{row: the logged record (a dict) it repeats, or the index of an earlier row of this
        batch it repeats} of the rows whose request id was answered before (`requests`): not
        withdrawn, still logged, within the window; `DECISION_DAMAGED` for a row whose logged
        record is damaged (answered suppressed so, nothing stored)."""
        out, first = {}, {}
        for i, digest in asked:
            request = request_of(digest)  # with the unkeyed digest or not: one request
            if request in first:
                out[i] = first[request]
                continue
            known = self.requests.find(txn, digest, now)
            found = None if known is None else self._lookup(txn, known[1]["d"])
            if found is DAMAGED:  # its answer unknown: not decided again (it may have gone)
                out[i] = first[request] = DECISION_DAMAGED
                continue
            if found is None or (found[1]["status"] == SUPPRESSED
                                 and found[1].get("reason") == WITHDRAWN):
                first[request] = i
                continue
            self.requests.repeated(txn, known)
            out[i] = first[request] = found[1]
        return out

    def answered(self, digest: bytes, now: float) -> dict | None:
        """The logged record of the decision a request (`digest`) was answered within the
        window, if it stands (not withdrawn); None otherwise. One read transaction."""
        with self.store.read() as txn:
            known = self.requests.find(txn, digest, now)
            found = None if known is None else self._lookup(txn, known[1]["d"])
        if found is None or found is DAMAGED or (found[1]["status"] == SUPPRESSED
                             and found[1].get("reason") == WITHDRAWN):
            return None
        return found[1]

    def claim_delivery(self, digest: bytes, decision_id: str, until: float) -> dict | None:
        """`RequestIds.claim_delivery` in a write transaction of its own."""
        return self.store.write(lambda txn: self.requests.claim_delivery(
            txn, digest, decision_id, until, time.time()))

    def renew_delivery(self, digest: bytes, decision_id: str, until: float) -> bool:
        """`RequestIds.renew_delivery` in a write transaction of its own."""
        return self.store.write(lambda txn: self.requests.renew_delivery(
            txn, digest, decision_id, until, time.time()))

    def settle_delivery(self, digest: bytes, decision_id: str, state: dict) -> None:
        self.store.write(lambda txn: self.requests.settle_delivery(txn, digest, decision_id,
                                                                   state, time.time()))

    def withdraw(self, batches: Sequence[Sequence[str]], reason: str = WITHDRAWN) -> list[int]:
        """Withdraw logged decisions nobody received (a PlanCampaign stream that ended before
        answering them, a ChooseVariant whose caller gave up), in one transaction: each one
        still pending becomes suppressed with `reason` (no arm, variant, propensity or context;
        no reward can follow), leaves the decision counters and the reward sweep, and stops
        counting toward the frequency caps. An item is an id, (id, request digest: its
        request is released, a repeat decides anew), or (id, None, its own reason): a reason
        other than `WITHDRAWN` stands as the answer to a repeat of its request (a message the
        marketer stopped, `cancelled` or `archived`: a repeat must not send it again).
        Returns how many of each batch were withdrawn."""
        def fn(txn):
            out, arms, contacts, now = [], {}, {}, time.time()
            for ids in batches:
                n = 0
                for decision_id in ids:
                    why = reason
                    if decision_id.__class__ is tuple and len(decision_id) == 3:
                        decision_id, _, why = decision_id
                    elif decision_id.__class__ is tuple:  # (decision id, request digest)
                        decision_id, digest = decision_id
                        if not self.requests.release(txn, digest, decision_id, now):
                            continue  # a repeat of its request was answered it
                    found = self._lookup(txn, decision_id)
                    if found is None or found is DAMAGED or found[1]["status"] != PENDING:
                        continue
                    pkey, rec = found
                    self._d.delete(txn, due_key(rec["deadline"], decision_id))
                    arms.setdefault(rec["campaign_id"], []).append((rec["arm"], rec["timestamp"]))
                    contacts.setdefault(rec["user_id"], set()).add(decision_id)
                    rec.update(arm=NO_ARM, propensity=0.0, variant_id="", status=SUPPRESSED,
                               reason=why, context=[], linear=False,
                               deadline=rec["timestamp"])
                    self._d.put(txn, pkey, encode_decision(rec))
                    n += 1
                out.append(n)
            for campaign_id, withdrawn in arms.items():
                self._count(txn, campaign_id, withdrawn=withdrawn)
            if contacts:
                self.contacts.forget(txn, contacts, now)
            return out
        return self.store.write(fn)

    def apply_event_effects(self, requests: Sequence[tuple], now: float) -> list[list[str]]:
        """What tracked events do to campaigns, in one transaction. Each request is one
        ingestion batch's: (its outbox entry, items), each item (events key, `RewardRequest` or
        None, send `(user, channel, time, decision id)` or None); sends count as contacts
        (`ContactLog.add_sends`). A request counts only if its entry is still there, and only
        the items of the events it still names; the entry is deleted in this
        transaction (`store.outbox.claim`): the worker that committed the events, or a replay
        after a crash, applies them once (`server.profiles.outbox`). A reward's window is
        judged at its batch's commit (the entry's time), not at the replay's: the sweep keeps
        the windows open meanwhile (`_held_back`). Returns, per request, the users whose sends
        were not counted: their contact histories are damaged (the rest of the batch is
        applied, and its entry cleared, as without them)."""
        def fn(txn):
            sends, ends = [], []
            for entry, items in requests:
                at = min(now, outbox_parts(entry)[0] / 1000.0)
                for _, req, send in outbox.claim_named(txn, self._outbox, entry, items):
                    if req is not None:
                        self._apply(txn, req, at)
                    if send is not None:
                        sends.append(send)
                ends.append(len(sends))
            damaged = self.contacts.add_sends(txn, sends, time.time()) if sends else ()
            if not damaged:
                return [[] for _ in requests]
            gone = set(damaged)
            return [list(dict.fromkeys(s[0] for s in sends[start:end] if s[0] in gone))
                    for start, end in zip([0, *ends], ends)]
        return self.store.write(fn)

    def _count(self, txn, campaign_id: str, *, arms=(), resolved: dict | None = None,
               dropped: int = 0, withdrawn=()) -> None:
        """Count decisions logged (`arms`) or withdrawn (`withdrawn`), each (arm, its time), a
        reward (`resolved`), pending ones dropped. A decision made before the split last
        changed (`split_at`) is counted in the counts before it (`split_from`) too: logged
        after the change or withdrawn after it, it stays out of the split check's counts."""
        key = count_key(campaign_id)
        raw, last = self._b.get(txn, key), self._counted.pop(key, None)
        c = last[1] if last is not None and last[0] == raw else _counters(raw)
        split_at = c.get("split_at")
        for (arm, at), step in [*((a, 1) for a in arms), *((a, -1) for a in withdrawn)]:
            if arm == B.HOLDOUT:
                c["holdout"] += step
                continue
            _add(c["decisions"], arm, step)
            if split_at is not None and at < split_at:
                _add(c["split_from"], arm, step)
        c["pending"] += len(arms) - dropped - len(withdrawn)
        if resolved is not None:
            c["pending"] -= 1
            if resolved["arm"] == B.HOLDOUT:
                c["holdout_rewarded"] += 1
                c["holdout_rewards"] += resolved["reward"]
        raw = _encoded(c)
        self._b.put(txn, key, raw)
        if len(self._counted) >= 1024:
            self._counted.clear()
        self._counted[key] = (raw, c)  # popped above: a transaction that fails
        # between its change of `c` and here leaves no entry, and the next one decodes

    def _finalize(self, txn, pkey: bytes, rec: dict, reward: float, status: str,
                  now: float) -> None:
        rec.update(reward=reward, status=status, rewarded_at=now)
        self._d.put(txn, pkey, encode_decision(rec))
        self._d.delete(txn, due_key(rec["deadline"], rec["decision_id"]))
        self._count(txn, rec["campaign_id"], resolved=rec)
        if rec["arm"] != B.HOLDOUT:
            key = campaign_key(rec["campaign_id"])
            x = [1.0, *rec["context"]] if rec.get("linear") else None
            self._b.put(txn, key, B.update_bytes(self._b.get(txn, key), rec["arm"], reward, x))

    def _lookup(self, txn, decision_id: str):
        """`DecisionLog.find` in `txn`: a `DAMAGED` record, the caller goes on without it."""
        return self.log.find(txn, decision_id, "read without it")

    def apply_rewards(self, requests: Sequence[RewardRequest], now: float) -> list:
        """Explicit and event rewards in one transaction; one outcome (or error) each."""
        return self.store.write(lambda txn: [self._apply(txn, r, now) for r in requests])

    def _apply(self, txn, req: RewardRequest, now: float):
        found = self._lookup(txn, req.decision_id)
        if found is None or found is DAMAGED:
            if req.event_type:  # rewards nothing, as an event naming an unknown decision
                return None
            return DecisionNotFound(req.decision_id) if found is None else \
                DecisionDamaged(req.decision_id)
        pkey, rec = found
        spec = self.parse(self._c.get(txn, campaign_key(rec["campaign_id"]))).spec
        if rec["status"] == PENDING and rec["deadline"] <= now:  # due; the sweep is behind
            self._close_window(txn, pkey, rec, spec, now)
        outcome = RewardOutcome(rec["campaign_id"], rec["variant_id"])
        if req.event_type:
            return self._event_reward(txn, pkey, rec, spec, req, now) and outcome
        try:
            reward = spec.check_reward("reward", req.reward, self.limits.reward_max)
        except Exception as err:  # noqa: BLE001 - InvalidArgument for this request only
            return err
        if rec["status"] == SUPPRESSED:
            return DecisionSuppressed(req.decision_id, rec.get("reason", ""))
        if rec["status"] != PENDING:
            if rec["reward"] == reward:
                return RewardOutcome(rec["campaign_id"], rec["variant_id"], duplicate=True)
            return RewardConflict(req.decision_id, rec["status"], rec["reward"], reward)
        self._finalize(txn, pkey, rec, reward, REWARDED, now)
        return outcome

    def _event_reward(self, txn, pkey, rec, spec, req: RewardRequest, now: float) -> bool:
        """Keep the best event reward of a pending decision; final once nothing could beat it.
        An event's reward lies within ±`Limits.reward_max` as every reward does (an uncapped
        rule's is clipped to it)."""
        rule = spec.rule_for(req.event_type)
        if rule is None or rec["status"] != PENDING or rec["user_id"] != req.user_id:
            return False
        most = self.limits.reward_max
        reward = min(max(rule.reward(req.event_value), -most), most)
        if spec.binary_rewards:
            reward = min(max(reward, 0.0), 1.0)
        earlier = rec.get("event_reward")
        best = reward if earlier is None else max(reward, earlier)
        if best >= min(spec.best_event_reward, most):
            self._finalize(txn, pkey, rec, best, REWARDED, now)
        else:
            rec["event_reward"] = best
            self._d.put(txn, pkey, encode_decision(rec))
        return True

    def has_due(self, now: float) -> bool:
        with self.store.read() as txn:
            first = self._d.first_key(txn, DUE_PREFIX)
        return first is not None and first < due_key(now, "")

    def sweep(self, now: float, limit: int = 1000) -> int:
        """Close the windows that ended by `now`: the best event reward, else the default.

        Idempotent across processes: the status is checked and the due entry deleted in the
        same write transaction (of at most `limit` entries; repeated until none is due).
        """
        total = 0
        while True:
            seen, closed = self.store.write(lambda txn: self._sweep_some(txn, now, limit))
            total += closed
            if seen < limit:
                return total

    def _sweep_some(self, txn, now: float, limit: int) -> tuple[int, int]:
        now = self._held_back(txn, now)
        doomed, due_by_now = [], due_key(now, "")
        # as stored (due entries are plain): a sealed table's walk opens 256 records at a time,
        # so it opened (and failed on a damaged one) the users' records after the due entries
        for key, pkey in Table.items(self._d, txn, DUE_PREFIX):
            if key >= due_by_now or len(doomed) >= limit:  # due keys end below due_by_now
                break
            doomed.append((key, pkey))
        closed = damaged = 0
        recs = read_each(self._d, txn, [pkey for _, pkey in doomed], decoded)
        for (key, pkey), rec in zip(doomed, recs):
            self._d.delete(txn, key)
            if rec is DAMAGED:  # its due entry gone: no pass reads it again
                damaged += 1
                continue
            if rec is None or rec["status"] != PENDING:
                continue
            spec = self.parse(self._c.get(txn, campaign_key(rec["campaign_id"]))).spec
            self._close_window(txn, pkey, rec, spec, now)
            closed += 1
        if damaged:
            warn_damaged(damaged, "left pending: their reward windows cannot close")
        return len(doomed), closed

    def _held_back(self, txn, now: float) -> float:
        """`now`, or the commit time of the oldest tracked batch whose campaign effects still
        wait in the outbox (a listener that failed, a crash before it ran), if earlier: a
        window ending after that batch stays open until the replay applies its rewards, which
        were in time (`apply_event_effects`). At most a few entries are read (the table holds
        the batches in flight and those left for the replay, dropped after `MAX_TRIES`)."""
        for key in self._outbox.keys(txn):  # time order
            ms, tag = outbox_parts(key)
            if ms >= now * 1000.0:
                break
            if tag == OUTBOX_TAG:
                self.held_since = ms / 1000.0
                return self.held_since
        self.held_since = None
        return now

    def _close_window(self, txn, pkey: bytes, rec: dict, spec, now: float) -> None:
        """Close a pending decision whose window ended: its best event reward, else the
        default (by the sweep, or by a reward that came after the window, before the sweep)."""
        got = rec.get("event_reward")
        self._finalize(txn, pkey, rec, spec.default_reward if got is None else got,
                       DEFAULT if got is None else REWARDED, now)

    ERASE_CHUNK = 10_000
    """Decisions erased per write transaction before the erasure's last one (`erase_ahead`)."""

    def erase_ahead(self, user_id: str) -> int:
        """`UserEraser.erase_ahead`: the user's decisions (records, index and due entries, the
        pending counts), `ERASE_CHUNK` per write transaction, before the erasure's last one
        (`erase_user`, which erases those logged since): a shared id deciding for logged-out
        visitors holds hundreds of thousands, and erasing them in that one transaction held
        the store's write lock for seconds. Records removed."""
        prefix = user_prefix(user_id)
        with self.store.read() as txn:  # none (most users): no write at all
            first = self._d.first_key(txn, prefix)
        if first is None or not first.startswith(prefix):
            return 0
        removed, found = 0, [None] * self.ERASE_CHUNK
        while len(found) == self.ERASE_CHUNK:
            found, gone = self.store.write(
                lambda txn: self._erase_decisions(txn, prefix, None, True), erasure=True)
            removed += gone
        return removed

    def erase_user(self, txn, user_id: str) -> int:
        """Eraser for `ProfileRepository.erasers`: drop the index entries of the user's
        decisions (the records themselves go with the `<user>␟` prefix; most went ahead:
        `erase_ahead`), read `ERASE_CHUNK` at a time."""
        prefix, removed, before = user_prefix(user_id), 0, None
        while True:
            found, gone = self._erase_decisions(txn, prefix, before, False)
            removed += gone
            if len(found) < self.ERASE_CHUNK:
                return removed
            before = found[-1]

    def _erase_decisions(self, txn, prefix: bytes, before: bytes | None,
                         records: bool) -> tuple[list[bytes], int]:
        """(keys read, records removed) of up to `ERASE_CHUNK` of the user's decisions (key
        prefix `prefix`; before key `before`, newest first) in write transaction `txn`: their
        index and due entries and pending counts, and the records themselves if `records` (a
        damaged record, whose entries and campaign cannot be read, alone)."""
        found = list(itertools.islice(Table.walk_back(self._d, txn, prefix, before),
                                      self.ERASE_CHUNK))  # as stored: opened each (damaged)
        removed, dropped = 0, collections.Counter()
        recs = read_each(self._d, txn, [bytes(k) for k, _ in found], decoded,
                         [v for _, v in found])
        for (key, _), rec in zip(found, recs):
            if rec is None or rec is DAMAGED:  # shredded, damaged: the record goes alone
                removed += self._d.delete(txn, key) if records else 0
                continue
            removed += self._d.delete(txn, decision_index_key(rec["decision_id"]))
            if rec["status"] == PENDING:
                removed += self._d.delete(txn, due_key(rec["deadline"], rec["decision_id"]))
                dropped[rec["campaign_id"]] += 1
            if records:
                removed += self._d.delete(txn, key)
        for campaign_id, n in dropped.items():
            self._count(txn, campaign_id, dropped=n)
        return [bytes(key) for key, _ in found], removed

    def contacts_of(self, user_id: str) -> list[dict]:
        """The user's recent contacts as the frequency caps count them, oldest first."""
        with self.store.read() as txn:
            return self.contacts.history(txn, user_id).exported()


def _counters(raw: bytes | None) -> dict:
    """The counters stored as `raw` (JSON, ASCII), with the fields an older record lacks;
    decoded as text (`json.loads` of bytes first guesses their encoding)."""
    base = {"decisions": [], "holdout": 0, "pending": 0, "holdout_rewarded": 0,
            "holdout_rewards": 0.0}
    return base if raw is None else {**base, **_json_decode(raw.decode())}


_json_decode = json.JSONDecoder().decode

DECISION_DAMAGED = "decision_record_damaged"
"""The answer to a repeat of a request whose logged decision's record is damaged (`_repeats`):
suppressed, nothing stored (the first answer, which may have gone, cannot be read back)."""


_COUNTER_FIELDS = ("decisions", "holdout", "pending", "holdout_rewarded", "holdout_rewards")
_SPLIT_COUNTER_FIELDS = (*_COUNTER_FIELDS, "split_from", "split_at")
_COUNTERS_JSON = ('{"decisions": %r, "holdout": %d, "pending": %d, "holdout_rewarded": %d, '
                  '"holdout_rewards": %r')
_SPLIT_COUNTERS_JSON = _COUNTERS_JSON + ', "split_from": %r, "split_at": %r}'
_COUNTERS_JSON += "}"


def _encoded(c: dict) -> bytes:
    """The counters `c` as stored: the bytes `json.dumps(c).encode()` gives (the layout stays
    that JSON, which every reader of the counters decodes as before), formatted here when `c`
    holds the counters' own fields in their order (`_counters`; `_restart_split` appends the
    split's two) and its floats are finite Python floats (written as json writes them,
    `float.__repr__`), `json.dumps` otherwise. The counts are ints (the lists' items too:
    decoded from JSON, or ±1 added). The writer encodes the counters once a commit, where
    json.dumps cost ~16 us of CPU and this 8-11 us less (docs/performance.md, stop 62)."""
    fields, rewards = tuple(c), c["holdout_rewards"]
    if rewards.__class__ is not float or rewards - rewards != 0.0:  # NaN, ±inf: as json does
        return json.dumps(c).encode()
    if fields == _COUNTER_FIELDS:
        return (_COUNTERS_JSON % (c["decisions"], c["holdout"], c["pending"],
                                  c["holdout_rewarded"], rewards)).encode()
    at = c.get("split_at")
    if fields == _SPLIT_COUNTER_FIELDS and at.__class__ is float and at - at == 0.0:
        return (_SPLIT_COUNTERS_JSON % (c["decisions"], c["holdout"], c["pending"],
                                        c["holdout_rewarded"], rewards, c["split_from"],
                                        at)).encode()
    return json.dumps(c).encode()


def _add(counts: list, arm: int, step: int) -> None:
    """`step` added to `counts[arm]` (a list of counts per arm, extended with zeros)."""
    counts.extend([0] * (arm + 1 - len(counts)))
    counts[arm] += step


def split_counts(counters: dict, n_arms: int, created_at: float) -> tuple[list[int], float]:
    """(decisions per arm made under the current split, when it began): those made since the
    last update that changed the weights or appended variants (`_restart_split`; a decision
    made before it, logged or withdrawn after it, is in `split_from` too: `_count`), else
    since the campaign was created (counters written before this was kept: since then too)."""
    made = [*counters["decisions"][:n_arms], *[0] * (n_arms - len(counters["decisions"]))]
    base = counters.get("split_from", [])
    return ([max(m - (base[a] if a < len(base) else 0), 0) for a, m in enumerate(made)],
            counters.get("split_at", created_at))


WRITER_GC_THRESHOLD = (10_000, 10, 10)
"""The writer process's `gc.set_threshold`: a PlanCampaign transaction allocates a few tuples
per decision (rows, records, entries), so the default 700 ran a young collection every ~70
decisions and an old one (every object the process holds, its 65,536-entry key caches
included) every ~7,000; with these, and the objects made at start-up frozen (`gc.freeze`),
collection and traversal cost ~1.4k instead of ~13k instructions a decision (callgrind, 8,000
decisions). The process makes few reference cycles."""


PLAN_SLICES_A_COMMIT = 1
"""PlanCampaign slices (`plan.DECIDE_SLICE` decisions each) the writer commits in one
transaction while other batches (ChooseVariant, rewards, sends) come. Plans are `Bulk`: such a
batch arriving behind queued slices runs next, after the transaction in progress, so one slice
(~15 ms of the writer's time) is the longest it waits for a plan; up to 8 slices a transaction
had it wait p50 113-162 ms beside a plan."""
PLAN_SLICES_ALONE = 4
"""Slices a transaction once no other batch has come for `bulk.QUIET_SECONDS`: a plan alone
costs the writer ~20% less CPU a decision at 4 slices a commit than at 1."""


def _refuse_uncapped(recs: list, reasons: list, refused: Sequence[dict], checked: Sequence,
                     entries: list, index: list, dues: list) -> None:
    """Log suppressed, in place, the decisions whose channel the contact policy refuses at the
    commit (`recheck`) and that no cap check settles (not a contact channel: web, app)."""
    capped = {i for i, _ in checked}
    for i, why in enumerate(refused):
        reason = why.get(recs[i].channel) if why and i not in capped else None
        if reason:
            recs[i], reasons[i] = recs[i].suppressed(reason), reason
            (entries[i],), (index[i],), (dues[i],) = decision_parts([recs[i]])


def _server_limits() -> Limits:
    """The limits the server handed over in `TAILOR_LIMITS`, alone: the rest of the child's
    environment may hold variables the server's flags overrode (a refused one would stop the
    start). Without it (a writer started on its own), the environment's."""
    handed = os.environ.get("TAILOR_LIMITS")
    if handed:
        return Limits.model_validate_json(handed)
    from ..config import Settings  # not imported otherwise: the child starts without it
    return Settings().limits


ERASURE_SECRETS_ENV = "TAILOR_CAMPAIGNS_ERASURE_SECRETS"
"""The environment variable in which `Campaigns` hands the writer child the secrets directory
of the `erasure` keyring ("" for none: the keyring comes from the environment, as the
server's did); unset, the writer checks no tombstones (a bare setup without secrets)."""


def _tombstones(store: Store):
    """The store's tombstones with the server's `erasure` keyring, or None when the server
    handed none over (`ERASURE_SECRETS_ENV`)."""
    where = os.environ.get(ERASURE_SECRETS_ENV)
    if where is None:
        return None
    from pathlib import Path

    from ..profiles.tombstones import Tombstones
    from ..security.secrets import Secrets
    ring = Secrets.load(Path(where) if where else None, generate=False, names=(),
                        optional=("erasure",)).get("erasure")
    return Tombstones(store, ring) if ring is not None else None


def writer_functions(store: Store) -> dict:
    """The batch functions of the campaigns writer process (`server.batching.WriterProcess`).
    Its limits (how long contacts are kept) are the server's: `Campaigns` hands them over as
    `TAILOR_LIMITS` in the child's environment (the server may have read them from its config
    file). Converts request ids remembered in the pre-bucket layout in a thread of its own
    (`convert_legacy_ids`). Sets the process's garbage collection (`WRITER_GC_THRESHOLD`)."""
    tombstones = _tombstones(store)
    repo = CampaignRepository(store, _server_limits(),
                              tombstones.before_erasure if tombstones is not None else None)
    convert_legacy_ids(repo, store)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WRITER_GC_THRESHOLD)
    return {"decisions": lambda rows: repo.log_decisions([_record(r) for r in rows]),
            "decision_batches": Bulk(lambda batches: _log_batches(repo, batches),
                                     per_call=PLAN_SLICES_A_COMMIT,
                                     per_call_alone=PLAN_SLICES_ALONE),
            "rewards": lambda requests: repo.apply_rewards(requests, time.time()),
            "withdrawals": repo.withdraw,
            "event_effects": lambda items: repo.apply_event_effects(items, time.time())}


def convert_legacy_ids(repo: CampaignRepository, store: Store) -> threading.Thread:
    """`requests.convert_legacy` in a daemon thread, stopped (after its transaction in progress)
    and joined when the process exits; the writer serves meanwhile (its look-ups read the
    legacy keys until none is left). Returns the thread."""
    stop = threading.Event()

    def convert() -> None:
        try:
            moved = repo.requests.convert_legacy(store, stop)
        except Exception:  # noqa: BLE001 - look-ups go on reading the legacy keys, and the
            logger.exception("moving remembered request ids into time buckets failed")
            return  # next start tries again
        if moved:
            logger.info("moved %d remembered request ids into time buckets", moved)

    thread = threading.Thread(target=carried(convert), name="legacy-request-ids", daemon=True)
    thread.start()
    atexit.register(lambda: (stop.set(), thread.join()))
    return thread


_FIELDS = len(DecisionRecord._fields)


def _record(row: tuple) -> DecisionRecord:
    """A record from its tuple; one without the trailing fields that have defaults (sent by a
    caller that does not set them) gets those defaults."""
    return DecisionRecord._make(row) if len(row) == _FIELDS else DecisionRecord(*row)


def _as_logged(rec: DecisionRecord) -> dict:
    """A record as the decision log reads it back (a repeat of a request within one batch is
    answered its first row's decision as logged)."""
    return decode_decision(rec.to_bytes())


def _log_batches(repo: CampaignRepository, batches: Sequence[Sequence[tuple]]) -> list[list]:
    """Several PlanCampaign batches of decision rows in one `log_decisions` transaction; the
    per-record results (suppression reasons) split back per batch."""
    results = repo.log_decisions([_record(r) for rows in batches for r in rows])
    out, start = [], 0
    for rows in batches:
        out.append(results[start:start + len(rows)])
        start += len(rows)
    return out
