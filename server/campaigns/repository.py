"""Campaign records in the store. Key layout (␟ = 0x1F, which no id contains):

    campaigns  <campaign>                          Campaign JSON (spec, archived, revision)
    bandit     <campaign>                          kernels.bandits state bytes (posterior)
    bandit     ␟count␟<campaign>                   JSON counters (decisions per arm, holdout, ...)
    decisions  <user>␟<decision>                   decision record JSON (the decision log)
    decisions  ␟d␟<decision>                       -> <user>␟<decision> (lookup by id)
    decisions  ␟w␟<deadline ms, 16 digits>␟<dec>   -> <user>␟<decision> (pending ones)

Campaign keys carry no separator and index keys start with one, so erasing a user (prefix
`<user>␟` in every table) removes exactly that user's decisions; `erase_user` (registered on
`ProfileRepository.erasers`) removes their index entries in the same transaction.

Every write is one `Store.write` transaction whose function reads and writes only through the
transaction (it may run twice): posterior updates are read-modify-write under LMDB's writer
lock, so concurrent rewards from several worker processes are never lost.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kernels import bandits as B

from ..store import Store, join_key, scan_prefix
from .errors import CampaignExists, CampaignNotFound, DecisionNotFound, RewardConflict
from .spec import Campaign

__all__ = ["CampaignRepository", "RewardRequest", "RewardOutcome", "writer_functions"]

SEP = b"\x1f"
PENDING, REWARDED, DEFAULT = "pending", "rewarded", "default"


def _count_key(campaign_id: str) -> bytes:
    return SEP + b"count" + SEP + campaign_id.encode()


def _index_key(decision_id: str) -> bytes:
    return SEP + b"d" + SEP + decision_id.encode()


def _due_key(deadline: float, decision_id: str) -> bytes:
    return SEP + b"w" + SEP + b"%016d" % max(int(deadline * 1000), 0) + SEP + decision_id.encode()


@dataclass(frozen=True)
class RewardRequest:
    """An explicit reward (`event_type` empty) or a tracked event naming a decision."""

    decision_id: str
    reward: float = 0.0
    user_id: str = ""
    event_type: str = ""
    event_value: float = 0.0


@dataclass(frozen=True)
class RewardOutcome:
    campaign_id: str
    variant_id: str
    duplicate: bool = False


class CampaignRepository:
    def __init__(self, store: Store):
        self.store = store
        self._c, self._b, self._d = store.db("campaigns"), store.db("bandit"), store.db("decisions")
        self._parsed: dict[bytes, Campaign] = {}

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
        key = campaign.spec.campaign_id.encode()

        def fn(txn):
            if txn.get(key, db=self._c) is not None:
                raise CampaignExists(campaign.spec.campaign_id)
            txn.put(key, campaign.to_json(), db=self._c)
            txn.put(key, state.to_bytes(), db=self._b)
            return campaign
        return self.store.write(fn)

    def update(self, campaign_id: str, change) -> Campaign:
        """`change(campaign, state) -> (campaign, state)` applied in one write transaction."""
        key = campaign_id.encode()

        def fn(txn):
            raw = txn.get(key, db=self._c)
            if raw is None:
                raise CampaignNotFound(campaign_id)
            new, state = change(self.parse(raw), B.BanditState.from_bytes(txn.get(key, db=self._b)))
            txn.put(key, new.to_json(), db=self._c)
            txn.put(key, state.to_bytes(), db=self._b)
            return new
        return self.store.write(fn)

    def get(self, campaign_id: str) -> Campaign | None:
        raw = self.store.get("campaigns", campaign_id.encode())
        return None if raw is None else self.parse(raw)

    def list(self) -> list[Campaign]:
        return [self.parse(raw) for _, raw in self.store.scan("campaigns")]

    def snapshot(self, campaign_id: str) -> tuple[bytes | None, bytes | None]:
        """(campaign bytes, state bytes) from one read snapshot (the decision path)."""
        key = campaign_id.encode()
        with self.store.read() as txn:
            return txn.get(key, db=self._c), txn.get(key, db=self._b)

    def stats_snapshot(self, campaign_id: str) -> tuple[Campaign, B.BanditState, dict]:
        key = campaign_id.encode()
        with self.store.read() as txn:
            raw, blob = txn.get(key, db=self._c), txn.get(key, db=self._b)
            counts = txn.get(_count_key(campaign_id), db=self._b)
        if raw is None:
            raise CampaignNotFound(campaign_id)
        return self.parse(raw), B.BanditState.from_bytes(blob), _counters(counts)

    # -- decisions ----------------------------------------------------------------------------
    def log_decisions(self, records: Sequence[dict]) -> list[None]:
        """Store decision records (one transaction) with their indexes and counters."""
        def fn(txn):
            per_campaign: dict[str, list[int]] = {}
            for rec in records:
                pkey = join_key(rec["user_id"], rec["decision_id"])
                txn.put(pkey, json.dumps(rec).encode(), db=self._d)
                txn.put(_index_key(rec["decision_id"]), pkey, db=self._d)
                txn.put(_due_key(rec["deadline"], rec["decision_id"]), pkey, db=self._d)
                per_campaign.setdefault(rec["campaign_id"], []).append(rec["arm"])
            for campaign_id, arms in per_campaign.items():
                self._count(txn, campaign_id, arms=arms)
            return [None] * len(records)
        return self.store.write(fn)

    def _count(self, txn, campaign_id: str, *, arms=(), resolved: dict | None = None,
               dropped: int = 0) -> None:
        key = _count_key(campaign_id)
        c = _counters(txn.get(key, db=self._b))
        for arm in arms:
            if arm == B.HOLDOUT:
                c["holdout"] += 1
            else:
                c["decisions"].extend([0] * (arm + 1 - len(c["decisions"])))
                c["decisions"][arm] += 1
        c["pending"] += len(arms) - dropped
        if resolved is not None:
            c["pending"] -= 1
            if resolved["arm"] == B.HOLDOUT:
                c["holdout_rewarded"] += 1
                c["holdout_rewards"] += resolved["reward"]
        txn.put(key, json.dumps(c).encode(), db=self._b)

    def _finalize(self, txn, pkey: bytes, rec: dict, reward: float, status: str,
                  now: float) -> None:
        rec.update(reward=reward, status=status, rewarded_at=now)
        txn.put(pkey, json.dumps(rec).encode(), db=self._d)
        txn.delete(_due_key(rec["deadline"], rec["decision_id"]), db=self._d)
        self._count(txn, rec["campaign_id"], resolved=rec)
        if rec["arm"] != B.HOLDOUT:
            key = rec["campaign_id"].encode()
            x = [1.0, *rec["context"]] if rec.get("linear") else None
            blob = B.update_bytes(txn.get(key, db=self._b), rec["arm"], reward, x)
            txn.put(key, blob, db=self._b)

    def _lookup(self, txn, decision_id: str) -> tuple[bytes, dict] | None:
        pkey = txn.get(_index_key(decision_id), db=self._d)
        raw = None if pkey is None else txn.get(pkey, db=self._d)
        return None if raw is None else (pkey, json.loads(raw))

    def apply_rewards(self, requests: Sequence[RewardRequest], now: float) -> list:
        """Explicit and event rewards in one transaction; one outcome (or error) each."""
        return self.store.write(lambda txn: [self._apply(txn, r, now) for r in requests])

    def _apply(self, txn, req: RewardRequest, now: float):
        found = self._lookup(txn, req.decision_id)
        if found is None:
            return None if req.event_type else DecisionNotFound(req.decision_id)
        pkey, rec = found
        raw = txn.get(rec["campaign_id"].encode(), db=self._c)
        spec = self.parse(raw).spec
        outcome = RewardOutcome(rec["campaign_id"], rec["variant_id"])
        if req.event_type:
            return self._event_reward(txn, pkey, rec, spec, req, now) and outcome
        try:
            reward = spec.check_reward("reward", req.reward)
        except Exception as err:  # noqa: BLE001 - InvalidArgument for this request only
            return err
        if rec["status"] != PENDING:
            if rec["reward"] == reward:
                return RewardOutcome(rec["campaign_id"], rec["variant_id"], duplicate=True)
            return RewardConflict(req.decision_id, rec["status"], rec["reward"], reward)
        self._finalize(txn, pkey, rec, reward, REWARDED, now)
        return outcome

    def _event_reward(self, txn, pkey, rec, spec, req: RewardRequest, now: float) -> bool:
        """Keep the best event reward of a pending decision; final once nothing could beat it."""
        rule = spec.rule_for(req.event_type)
        if rule is None or rec["status"] != PENDING or rec["user_id"] != req.user_id:
            return False
        reward = rule.reward(req.event_value)
        if spec.binary_rewards:
            reward = min(max(reward, 0.0), 1.0)
        earlier = rec.get("event_reward")
        best = reward if earlier is None else max(reward, earlier)
        if best >= spec.best_event_reward:
            self._finalize(txn, pkey, rec, best, REWARDED, now)
        else:
            rec["event_reward"] = best
            txn.put(pkey, json.dumps(rec).encode(), db=self._d)
        return True

    def has_due(self, now: float) -> bool:
        with self.store.read() as txn:
            cur = txn.cursor(db=self._d)
            return cur.set_range(SEP + b"w" + SEP) and cur.key() < _due_key(now, "")

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
        cur, doomed = txn.cursor(db=self._d), []
        if cur.set_range(SEP + b"w" + SEP):
            for key, pkey in cur:
                if not key.startswith(SEP + b"w" + SEP) or key >= _due_key(now, "") \
                        or len(doomed) >= limit:
                    break
                doomed.append((key, pkey))
        closed = 0
        for key, pkey in doomed:
            txn.delete(key, db=self._d)
            raw = txn.get(pkey, db=self._d)
            rec = json.loads(raw) if raw else None
            if rec is None or rec["status"] != PENDING:
                continue
            spec = self.parse(txn.get(rec["campaign_id"].encode(), db=self._c)).spec
            got = rec.get("event_reward")
            self._finalize(txn, pkey, rec, spec.default_reward if got is None else got,
                           DEFAULT if got is None else REWARDED, now)
            closed += 1
        return len(doomed), closed

    def erase_user(self, txn, user_id: str) -> int:
        """Eraser for `ProfileRepository.erasers`: drop the index entries of the user's
        decisions (the records themselves go with the `<user>␟` prefix)."""
        removed = 0
        records = [json.loads(raw) for _, raw in scan_prefix(txn, self._d, join_key(user_id, ""))]
        for rec in records:
            removed += txn.delete(_index_key(rec["decision_id"]), db=self._d)
            if rec["status"] == PENDING:
                removed += txn.delete(_due_key(rec["deadline"], rec["decision_id"]), db=self._d)
                self._count(txn, rec["campaign_id"], dropped=1)
        return removed

    def export(self, campaign_id: str = "", start: float = 0.0, end: float = 0.0,
               include_pending: bool = False) -> Iterator[dict]:
        """Decision records (user by user) matching the filters, from one read snapshot."""
        with self.store.read() as txn:
            for key, raw in txn.cursor(db=self._d):
                if key.startswith(SEP):
                    continue
                rec = json.loads(raw)
                if (campaign_id and rec["campaign_id"] != campaign_id) \
                        or (start and rec["timestamp"] < start) \
                        or (end and rec["timestamp"] > end) \
                        or (rec["status"] == PENDING and not include_pending):
                    continue
                yield rec


def _counters(raw: bytes | None) -> dict:
    base = {"decisions": [], "holdout": 0, "pending": 0, "holdout_rewarded": 0,
            "holdout_rewards": 0.0}
    return base if raw is None else {**base, **json.loads(raw)}


def writer_functions(store: Store) -> dict:
    """The batch functions of the campaigns writer process (`server.writer_process`)."""
    repo = CampaignRepository(store)
    return {"decisions": repo.log_decisions,
            "rewards": lambda requests: repo.apply_rewards(requests, time.time())}
