"""Send jobs' records in LMDB (table `sends`; keys in `server.store.keys`).

A job (`send_job_key`) holds its campaign, context, rates, owner process and counts; each
recipient (`send_user_key`, in audience order) holds a state:

    pending    nothing composed yet
    ready      composed: the decision id, send_at and the flattened message are stored, and
               the message may be on its way (written BEFORE delivery, so a restart re-sends
               these very bytes, with their Message-ID, rather than composing a new one)
    sent / suppressed / failed   settled (the message is dropped from the record)

Transaction rules: `create` writes the job and every recipient in one transaction; every
state change is written with the job's counts in the same transaction (`update`), so the
counts always match the records; `claim` reads and sets the owner in one transaction, so of
several workers starting at once one resumes a job. `finish` stamps the job and drops its
recipients' records (they name users; the counts stay). DeleteProfile reaches the records of
unfinished jobs (`erase_user`, a `UserEraser`): the user id goes, an unsettled recipient is
settled suppressed `erased`, and `update` never writes an erased record back.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..store import Store
from ..store.keys import SEND_JOB_PREFIX, SEND_USER_PREFIX, SEP, send_job_key, send_user_key, send_user_prefix

__all__ = ["SendRecords", "Recipient", "PENDING", "READY", "SENT", "SUPPRESSED", "FAILED",
           "ERASED"]

PENDING, READY, SENT, SUPPRESSED, FAILED = "pending", "ready", "sent", "suppressed", "failed"
ERASED = "erased"
"""The suppressed reason of a recipient whose profile was deleted before the message went."""


@dataclass
class Recipient:
    seq: int
    user: str
    state: str = PENDING
    decision: str = ""
    reason: str = ""
    send_at: float = 0.0
    message: dict = field(default_factory=dict)
    """Of a ready message: `to` and `raw`, the flattened message (the email, or the webhook's
    JSON body; bytes as latin-1 text)."""
    sent_at: float = 0.0
    channel: str = "email"
    """The channel the contact policy chose (records written before SMS and push had
    adapters hold none: email)."""

    def encode(self) -> bytes:
        out = {"user": self.user, "state": self.state, "decision": self.decision,
               "reason": self.reason, "send_at": self.send_at, "sent_at": self.sent_at,
               "channel": self.channel}
        if self.state == READY:
            out["message"] = self.message
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, seq: int, raw: bytes) -> Recipient:
        d = json.loads(bytes(raw))
        return cls(seq, d["user"], d["state"], d["decision"], d["reason"], d["send_at"],
                   d.get("message", {}), d["sent_at"], d.get("channel", "email"))


def _erased(raw: bytes) -> bool:
    return bytes(raw).startswith(_ERASED_USER)


_ERASED_USER = b'{"user":"",'
"""How an erased recipient's record starts (`Recipient.encode` writes the user first)."""


def _count(job: dict, r: Recipient) -> None:
    if r.state == SENT:
        job["sent"] += 1
    elif r.state in (SUPPRESSED, FAILED):
        by = job[r.state]
        by[r.reason] = by.get(r.reason, 0) + 1


class SendRecords:
    def __init__(self, store: Store):
        self.store = store
        self._t = store.table("sends")

    def create(self, send_id: str, campaign_id: str, users: list[str], rates: dict[str, float],
               context: dict[str, float], owner: int) -> dict:
        job = {"campaign": campaign_id, "context": context, "rates": rates, "total": len(users),
               "sent": 0, SUPPRESSED: {}, FAILED: {}, "owner": owner, "started": time.time(),
               "finished": 0.0}

        def fn(txn):
            self._t.put(txn, send_job_key(send_id), json.dumps(job).encode())
            self._t.put_many(txn, [(send_user_key(send_id, i), Recipient(i, u).encode())
                                   for i, u in enumerate(users)])
        self.store.write(fn)
        return job

    def job(self, send_id: str) -> dict | None:
        raw = self.store.get("sends", send_job_key(send_id))
        return None if raw is None else json.loads(bytes(raw))

    def unfinished(self) -> list[str]:
        return [bytes(k)[len(SEND_JOB_PREFIX):].decode()
                for k, v in self.store.scan("sends", SEND_JOB_PREFIX)
                if not json.loads(bytes(v))["finished"]]

    def claim(self, send_id: str, owner: int, alive) -> dict | None:
        """Make `owner` the job's runner unless it is finished or another live process runs it
        (`alive(pid)`); the job, or None."""
        def fn(txn):
            raw = self._t.get(txn, send_job_key(send_id))
            job = json.loads(bytes(raw))
            if job["finished"] or (job["owner"] != owner and alive(job["owner"])):
                return None
            job["owner"] = owner
            self._t.put(txn, send_job_key(send_id), json.dumps(job).encode())
            return job
        return self.store.write(fn)

    def recipients(self, send_id: str) -> list[Recipient]:
        """Every recipient of an unfinished job, in audience order."""
        prefix = send_user_prefix(send_id)
        return [Recipient.decode(int(bytes(k)[len(prefix):]), v)
                for k, v in self.store.scan("sends", prefix)]

    def update(self, send_id: str, recipients: list[Recipient]) -> None:
        """Write the recipients' new states and count the settled ones, in one transaction. A
        recipient erased meanwhile (`erase_user`) is not written back: it is marked erased in
        memory too, so the caller skips it."""
        def fn(txn):
            key = send_job_key(send_id)
            job = json.loads(bytes(self._t.get(txn, key)))
            keys = [send_user_key(send_id, r.seq) for r in recipients]
            items = []
            for r, k, old in zip(recipients, keys, self._t.get_many(txn, keys)):
                if old is not None and _erased(old):
                    r.user, r.state, r.reason, r.message = "", SUPPRESSED, ERASED, {}
                    continue
                _count(job, r)
                items.append((k, r.encode()))
            self._t.put(txn, key, json.dumps(job).encode())
            self._t.put_many(txn, items)
        self.store.write(fn)

    def erased(self, send_id: str, seqs: list[int]) -> set[int]:
        """Which of these recipients were erased since the job read them (one read snapshot)."""
        keys = [send_user_key(send_id, seq) for seq in seqs]
        with self.store.read() as txn:
            raws = self._t.get_many(txn, keys)
        return {seq for seq, raw in zip(seqs, raws) if raw is not None and _erased(raw)}

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's records in every unfinished job lose the user id (and the
        message); one not yet settled counts as suppressed `erased`, so the counts still add
        up and a running or resumed job skips it. Inside the profile erasure's transaction.
        Scans the unfinished jobs' records (raw bytes first; a job's records are dropped when
        it finishes)."""
        marker = b'"user":' + json.dumps(user_id).encode() + b","
        found = [(k, Recipient.decode(0, v)) for k, v in self._t.scan_prefix(txn, SEND_USER_PREFIX)
                 if marker in bytes(v)]
        mine = [(k, r) for k, r in found if r.user == user_id]
        for key, r in mine:
            if r.state in (PENDING, READY):
                send_id = bytes(key)[len(SEND_USER_PREFIX):].rsplit(SEP, 1)[0].decode()
                r.state, r.reason = SUPPRESSED, ERASED
                self._count_erased(txn, send_id, r)
            r.user, r.decision, r.message = "", "", {}
            self._t.put(txn, key, r.encode())
        return len(mine)

    def _count_erased(self, txn, send_id: str, r: Recipient) -> None:
        key = send_job_key(send_id)
        job = json.loads(bytes(self._t.get(txn, key)))
        _count(job, r)
        self._t.put(txn, key, json.dumps(job).encode())

    def finish(self, send_id: str) -> None:
        def fn(txn):
            key = send_job_key(send_id)
            job = json.loads(bytes(self._t.get(txn, key)))
            job["finished"] = time.time()
            self._t.put(txn, key, json.dumps(job).encode())
            self._t.delete_prefix(txn, send_user_prefix(send_id))
        self.store.write(fn)
