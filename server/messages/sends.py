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
recipients' records (they name users; the counts stay). A recipient's record is sealed under
their data key (`Store.seal_for_user`): after DeleteProfile it reads as absent (not sent), and
its bytes on freed pages stay closed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..store import Store
from ..store.keys import SEND_JOB_PREFIX, send_job_key, send_user_key, send_user_prefix

__all__ = ["SendRecords", "Recipient", "PENDING", "READY", "SENT", "SUPPRESSED", "FAILED"]

PENDING, READY, SENT, SUPPRESSED, FAILED = "pending", "ready", "sent", "suppressed", "failed"


@dataclass
class Recipient:
    seq: int
    user: str
    state: str = PENDING
    decision: str = ""
    reason: str = ""
    send_at: float = 0.0
    message: dict = field(default_factory=dict)
    """Of a ready message: `to` and `raw`, the flattened message (bytes as latin-1 text)."""
    sent_at: float = 0.0

    def encode(self) -> bytes:
        out = {"user": self.user, "state": self.state, "decision": self.decision,
               "reason": self.reason, "send_at": self.send_at, "sent_at": self.sent_at}
        if self.state == READY:
            out["message"] = self.message
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, seq: int, raw: bytes) -> Recipient:
        d = json.loads(bytes(raw))
        return cls(seq, d["user"], d["state"], d["decision"], d["reason"], d["send_at"],
                   d.get("message", {}), d["sent_at"])


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
            self._t.put_many(txn, [self._sealed(txn, send_id, Recipient(i, u))
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
        prefix, out = send_user_prefix(send_id), []
        with self.store.read() as txn:
            for key, stored in self._t.scan_prefix(txn, prefix):
                raw = self.store.open_for_user(txn, bytes(key), stored)
                if raw is not None:  # None: the recipient was erased meanwhile (key shredded)
                    out.append(Recipient.decode(int(bytes(key)[len(prefix):]), raw))
        return out

    def _sealed(self, txn, send_id: str, r: Recipient) -> tuple[bytes, bytes]:
        """A recipient's record, sealed under their data key (it names them and may hold the
        composed message): erasing them makes it unreadable at once (`Store.seal_for_user`)."""
        key = send_user_key(send_id, r.seq)
        return key, self.store.seal_for_user(txn, r.user, key, r.encode())

    def update(self, send_id: str, recipients: list[Recipient]) -> None:
        """Write the recipients' new states and count the settled ones, in one transaction."""
        def fn(txn):
            key = send_job_key(send_id)
            job = json.loads(bytes(self._t.get(txn, key)))
            for r in recipients:
                _count(job, r)
            self._t.put(txn, key, json.dumps(job).encode())
            self._t.put_many(txn, [self._sealed(txn, send_id, r) for r in recipients])
        self.store.write(fn)

    def finish(self, send_id: str) -> None:
        def fn(txn):
            key = send_job_key(send_id)
            job = json.loads(bytes(self._t.get(txn, key)))
            job["finished"] = time.time()
            self._t.put(txn, key, json.dumps(job).encode())
            self._t.delete_prefix(txn, send_user_prefix(send_id))
        self.store.write(fn)
