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
counts always match the records; `claim` reads and sets the owners of jobs in one
transaction, so of several workers starting at once one resumes a job. `finish` stamps the job and drops its
recipients' records (they name users; the counts stay). A ComposeMessage the contact policy
deferred is a job of its own (`jobs.SendJobs.schedule`): its one recipient is written `ready`,
the job holds `due` (its send_at: it is started then), and `finish` keeps its record (counts,
no user) for `kept` seconds (a request id's window), so its progress and a repeat of its
request say how it ended: an expiry key (`send_expiry_key`) each, and each finish drops up to
`EXPIRE_PER_FINISH` expired ones (one a deferred message kept for good would pile up; before,
it was dropped at once and GetSendProgress answered NOT_FOUND). A recipient's record is sealed under
their data key (`Store.seal_for_user`), so its bytes on freed pages stay closed once the user's
key is shredded. DeleteProfile reaches the records of unfinished jobs (`erase_user`, a
`UserEraser`, run before the shred; only the user's records are opened: `owned`): an unsettled
recipient is counted suppressed `erased` and the record is deleted; a missing or unreadable
record is an erased recipient, which `update` never writes back. A deferred ComposeMessage's
job is its one recipient's alone (its id names their decision): it is deleted whole, and a
job running meanwhile settles and finishes without writing it back.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field

from ..processes import process_started
from ..store import Store
from ..store.damaged import (
    CANCEL,
    DAMAGED,
    ERASE,
    EXPORT,
    RESUME,
    SEND,
    report_damaged,
)
from ..store.keys import (
    SEND_EXPIRY_PREFIX,
    SEND_JOB_PREFIX,
    SEND_USER_PREFIX,
    SEP,
    send_expiry_key,
    send_job_key,
    send_user_key,
    send_user_prefix,
)
from .errors import MessageRecordDamaged, SendRecordDamaged
from .owned import STRAY, owned, read_sealed, with_messages

__all__ = ["SendRecords", "Recipient", "settle_erased", "send_id_of", "PENDING", "READY",
           "SENT", "SUPPRESSED", "FAILED", "ERASED", "ARCHIVED", "CANCELLED", "BOUNCE_BREAKER",
           "stopped_by"]

PENDING, READY, SENT, SUPPRESSED, FAILED = "pending", "ready", "sent", "suppressed", "failed"
ERASED = "erased"
"""The suppressed reason of a recipient whose profile was deleted before the message went."""
ARCHIVED = "archived"
"""The suppressed reason of a recipient whose campaign was archived before the message went."""
CANCELLED = "cancelled"
"""The suppressed reason of a recipient whose job was cancelled (CancelSend) before it went."""
BOUNCE_BREAKER = "bounce_breaker"
"""The suppressed reason of a recipient whose job its hard-bounce breaker stopped before it went
(`breaker.BounceBreaker`)."""
EXPIRE_PER_FINISH = 8
"""Expired kept jobs (finished deferred ComposeMessages') a finish deletes at most."""
DUE_MARGIN = 1.0
"""Seconds before its send_at from which a deferred ComposeMessage's job is left to its runner
to cancel (`cancel`): a message starts going at its send_at at the earliest (`sending`), and a
cancel's transaction commits well within this, so one settled in the call was not on its way."""


def stopped_by(job: dict) -> str:
    """What a cancelled job's recipients left are settled suppressed as: its record's
    `stopped_by` (`CANCELLED`, `BOUNCE_BREAKER`). A record stamped before that was kept
    (send_job layout 3) has none and reads as before, `CANCELLED`."""
    return job.get("stopped_by") or CANCELLED


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
    items: list = field(default_factory=list)
    """Of a ready message: the ids of the items its `recommend()` calls put in it (checked
    against the catalog before it goes: `SendJob._deliver`)."""

    def shed(self) -> None:
        """Let go of the flattened message and its items (its record keeps them while it is
        `ready`: `body` reads them back), keeping the address: a message waiting for its
        send_at, or settled."""
        if "raw" in self.message:
            self.message = {"to": self.message["to"]}
        self.items = []

    def encode(self) -> bytes:
        out = {"user": self.user, "state": self.state, "decision": self.decision,
               "reason": self.reason, "send_at": self.send_at, "sent_at": self.sent_at,
               "channel": self.channel}
        if self.state == READY:
            out["message"], out["items"] = self.message, self.items
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, seq: int, raw: bytes) -> Recipient:
        d = json.loads(bytes(raw))
        return cls(seq, d["user"], d["state"], d["decision"], d["reason"], d["send_at"],
                   d.get("message", {}), d["sent_at"], d.get("channel", "email"),
                   d.get("items", []))


def _decode(key: bytes, raw: bytes) -> Recipient:
    """A recipient's record as opened (its place read from `key`)."""
    return Recipient.decode(int(key.rsplit(SEP, 1)[1]), raw)


def send_id_of(key: bytes) -> str:
    """The send id of a recipient's record key (`send_user_key`)."""
    return key[len(SEND_USER_PREFIX):].rsplit(SEP, 1)[0].decode()


def settle_erased(txn, sends, send_id: str, r: Recipient | None) -> bool:
    """The job of erased recipient `r` (in table `sends`; also the restore's, offline:
    `store.reerase`): a deferred ComposeMessage's (`due`, `r` its one recipient; its id names
    their decision) is deleted whole; another counts `r` suppressed `erased` unless it was
    settled. `r` None: a record whose state cannot be read (sealed under a key the restore
    cannot open): not counted, as a job counts a recipient whose record it cannot open.
    True when it deleted the job."""
    key = send_job_key(send_id)
    raw = sends.get(txn, key)
    if raw is None:
        return False
    job = json.loads(bytes(raw))
    if "due" in job:
        return sends.delete(txn, key)
    if r is not None and r.state in (PENDING, READY):
        r.state, r.reason = SUPPRESSED, ERASED
        _count(job, r)
        sends.put(txn, key, json.dumps(job).encode())
    return False


def _count(job: dict, r: Recipient) -> None:
    if r.state == SENT:
        job["sent"] += 1
    elif r.state in (SUPPRESSED, FAILED):
        by = job[r.state]
        by[r.reason] = by.get(r.reason, 0) + 1


class SendRecords:
    def __init__(self, store: Store, kept: float = 3600.0, exported: int = 2 << 20):
        """`kept`: seconds a finished deferred ComposeMessage's job record is kept
        (`Limits.request_id_window_seconds`: as long as a repeat of its request may ask);
        `exported`: most bytes of the ready messages in an access export
        (`Limits.profile_export_message_bytes`)."""
        self.store, self.kept, self.exported = store, kept, exported
        self._t = store.table("sends")

    def create(self, send_id: str, campaign_id: str, users: list[str | Recipient],
               rates: dict[str, float], context: dict[str, float], owner: int, terms: str = "",
               due: float = 0.0) -> tuple[dict, bool]:
        """(the job, True) once stored; (the job already stored under `send_id`, False) if
        there is one (a repeat of a request id: `jobs.SendJobs.start`), in the same
        transaction, so of two concurrent repeats one creates it. `users`: ids (pending) or
        recipients composed already, stored as they are (a deferred ComposeMessage's);
        `terms`: the digest of what the request asked (audience, rates, context), kept to tell
        a repeat from a reuse of its id; `due`: when a deferred ComposeMessage's job is to
        start (its send_at), dropped whole when it finishes."""
        job = {"campaign": campaign_id, "context": context, "rates": rates, "total": len(users),
               "sent": 0, SUPPRESSED: {}, FAILED: {}, "owner": owner,
               "owner_started": process_started(owner), "started": time.time(),
               "finished": 0.0, **({"terms": terms} if terms else {}),
               **({"due": due} if due else {})}
        recipients = [u if isinstance(u, Recipient) else Recipient(i, u)
                      for i, u in enumerate(users)]

        def fn(txn):
            known = self._t.get(txn, send_job_key(send_id))
            if known is not None:
                return json.loads(bytes(known)), False
            self._t.put(txn, send_job_key(send_id), json.dumps(job).encode())
            self._t.put_many(txn, [self._sealed(txn, send_id, r) for r in recipients])
            return job, True
        return self.store.write(fn)

    def job(self, send_id: str) -> dict | None:
        raw = self.store.get("sends", send_job_key(send_id))
        return None if raw is None else json.loads(bytes(raw))

    def unfinished(self) -> list[str]:
        return [bytes(k)[len(SEND_JOB_PREFIX):].decode()
                for k, v in self.store.scan("sends", SEND_JOB_PREFIX)
                if not json.loads(bytes(v))["finished"]]

    def claim(self, send_ids: list[str], owner: int, alive) -> dict[str, dict]:
        """Make `owner` the runner of each job unless it is gone, finished or another live
        process runs it (`alive(pid, started)`, `processes.owner_alive`: the owner's pid and
        when it started, None in records written before that was kept), in one transaction
        (a restart after a night of deferred ComposeMessages claims thousands of jobs: one
        fsync'd transaction each took 7 ms); {send id: job} of those claimed."""
        started, answers = process_started(owner), {}

        def owned(job) -> bool:  # a dead owner usually left many jobs: asked once
            key = (job["owner"], job.get("owner_started"))
            if key not in answers:
                answers[key] = alive(*key)
            return answers[key]

        def fn(txn):
            out = {}
            for send_id in send_ids:
                raw = self._t.get(txn, send_job_key(send_id))
                job = None if raw is None else json.loads(bytes(raw))
                if job is None or job["finished"] or (job["owner"] != owner and owned(job)):
                    continue
                job["owner"], job["owner_started"] = owner, started
                self._t.put(txn, send_job_key(send_id), json.dumps(job).encode())
                out[send_id] = job
            return out
        return self.store.write(fn)

    def recipients(self, send_id: str, bodies: bool = True) -> list[Recipient]:
        """Every recipient of an unfinished job, in audience order; `bodies` False: a ready one
        without its flattened message (`Recipient.shed`; a job reads each back when it is
        due: `body`), read one record at a time. One that does not open or decode (damaged:
        its user, state and message unknown) is left out and logged: the job goes on without
        it (neither composed nor sent, nor counted: GetSendProgress keeps it pending)."""
        prefix, out, damaged = send_user_prefix(send_id), [], 0
        with self.store.read() as txn:
            for key, stored in self._t.items(txn, prefix):
                if not key.startswith(prefix):
                    break
                seq = int(bytes(key)[len(prefix):])
                r = read_sealed(self.store, txn, bytes(key), stored,
                                functools.partial(Recipient.decode, seq))
                if r is DAMAGED:
                    damaged += 1
                elif r is not None:  # None: the recipient was erased meanwhile (key shredded)
                    out.append(r)
                    if not bodies:
                        r.shed()
        report_damaged(damaged, SEND, RESUME, f"left out of send {send_id}, neither sent nor "
                       "counted")
        return out

    def body(self, send_id: str, r: Recipient) -> bool:
        """Read `r`'s flattened message back from its `ready` record (`Recipient.shed` let it
        go); False when there is none to send: the recipient was erased, or settled."""
        key = send_user_key(send_id, r.seq)
        with self.store.read() as txn:
            raw = self.store.open_for_user(txn, key, self._t.get(txn, key))
        stored = None if raw is None else Recipient.decode(r.seq, raw)
        if stored is None or stored.state != READY:
            return False
        r.message, r.items = stored.message, stored.items
        return True

    def _sealed(self, txn, send_id: str, r: Recipient) -> tuple[bytes, bytes]:
        """A recipient's record, sealed under their data key (it names them and may hold the
        composed message): erasing them makes it unreadable at once (`Store.seal_for_user`)."""
        key = send_user_key(send_id, r.seq)
        return key, self.store.seal_for_user(txn, r.user, key, r.encode())

    def update(self, send_id: str, recipients: list[Recipient]) -> None:
        """Write the recipients' new states and count the settled ones, in one transaction. A
        recipient erased meanwhile (`erase_user`) is not written back: it is marked erased in
        memory too, so the caller skips it."""
        def fn(txn):
            key = send_job_key(send_id)
            raw = self._t.get(txn, key)  # None: a deferred message's job, erased whole
            job = None if raw is None else json.loads(bytes(raw))
            keys = [send_user_key(send_id, r.seq) for r in recipients]
            items = []
            for r, k, old in zip(recipients, keys, self._t.get_many(txn, keys)):
                if job is None or self._gone(txn, k, old):
                    r.user, r.state, r.reason, r.message = "", SUPPRESSED, ERASED, {}
                    continue
                _count(job, r)
                items.append(self._sealed(txn, send_id, r))
            if job is not None:
                self._t.put(txn, key, json.dumps(job).encode())
                self._t.put_many(txn, items)
        self.store.write(fn)

    def erased(self, send_id: str, seqs: list[int]) -> set[int]:
        """Which of these recipients were erased since the job read them (one read snapshot)."""
        keys = [send_user_key(send_id, seq) for seq in seqs]
        with self.store.read() as txn:
            return {seq for seq, key, raw in zip(seqs, keys, self._t.get_many(txn, keys))
                    if self._gone(txn, key, raw)}

    def _gone(self, txn, key: bytes, stored: bytes | None) -> bool:
        """Whether a recipient was erased: every recipient has a record from the job's start,
        and erasure deletes it (or, for one written after, shreds the key it is sealed under)."""
        return self.store.open_for_user(txn, key, stored) is None

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's records in every unfinished job are deleted; one not yet
        settled counts as suppressed `erased` first, so the counts still add up and a running or
        resumed job skips it. Inside the profile erasure's transaction, before the user's data
        key is shredded (the records are read through it). Walks the unfinished jobs' records
        (a job's records are dropped when it finishes), opening only the user's (`owned`); a
        plain record met that does not decode and names nobody (`owned.stray`: it may be
        theirs, its user-id text hit) is deleted too, its job left as it is (a job leaves out
        a record it cannot read), counted and logged."""
        found = list(owned(self.store, txn, self._t, SEND_USER_PREFIX, user_id, _decode,
                           erasing=True))
        for key, r in found:
            if r is not STRAY:
                self._erased(txn, send_id_of(key), None if r is DAMAGED else r)
            self._t.delete(txn, key)
        report_damaged(sum(r is DAMAGED or r is STRAY for _, r in found), SEND, ERASE,
                       "deleted by an erasure (the erased user's, or naming no user)")
        return sum(r is not STRAY for _, r in found)

    def export_user(self, user_id: str) -> dict[str, object]:
        """`UserExporter`: {"messages": [...]}, the user's records in unfinished sends (a
        deferred ComposeMessage's, a SendCampaign's recipients), each with its send id,
        decision, channel, state (pending, ready: composed and waiting, or settled), reason,
        send_at, address and `message` (oldest job first): a ready one's composed bytes,
        rendered for them (the email, or the webhook's JSON body; `with_messages`: up to
        `exported` bytes in all), None for the others."""
        with self.store.read() as txn:
            mine = sorted(self._mine(txn, user_id), key=lambda kr: (
                self._started(txn, send_id_of(kr[0])), kr[0]))
        if any(r is DAMAGED for _, r in mine):
            report_damaged(1, SEND, EXPORT, "an access export refused")
            raise MessageRecordDamaged("send records")
        return {"messages": with_messages([
            {"send_id": send_id_of(key), "decision_id": r.decision, "channel": r.channel,
             "state": r.state, "reason": r.reason, "send_at": r.send_at,
             "to": r.message.get("to", "")} for key, r in mine],
            [r.message.get("raw") for _, r in mine], self.exported)}

    def _started(self, txn, send_id: str) -> float:
        """When job `send_id` was stored: the export lists the oldest first (its records' keys
        sort by send id, a random or hashed one: a later job's came first, and the bound kept
        its message and withheld the older one's)."""
        raw = self._t.get(txn, send_job_key(send_id))
        return 0.0 if raw is None else json.loads(bytes(raw))["started"]

    def _mine(self, txn, user_id: str):
        """(key, recipient) of each of the user's records in unfinished jobs, opening no other
        user's (`owned`); a damaged one's recipient `DAMAGED`."""
        return owned(self.store, txn, self._t, SEND_USER_PREFIX, user_id, _decode)

    def _erased(self, txn, send_id: str, r: Recipient) -> None:
        settle_erased(txn, self._t, send_id, r)

    def cancel(self, send_id: str, reason: str = CANCELLED) -> tuple[dict | None, str]:
        """CancelSend: (the job, stamped `cancelled` unless it finished or was cancelled
        before; None: no such job, the decision id to withdraw or ""), in one transaction.
        `reason`: why it stops, kept as `stopped_by` (`BOUNCE_BREAKER` when its breaker
        tripped) so that a resume after a crash settles the rest under it (`stopped_by`); a
        job stopped before keeps its first reason.
        A deferred ComposeMessage's job (`due`) not due within `DUE_MARGIN` is settled here
        too: its one recipient, unless settled, counts suppressed `cancelled`, and the job
        finishes (its process's timer then finds it done). Any other job's recipients are
        settled by its runner (`sending.SendJob`), which knows what it is handing to the relay
        (a deferred message due now may be on its way: settled here, it arrived counted
        `cancelled` with its decision withdrawn; a large job's records opened here would hold
        the write lock for seconds)."""
        def fn(txn):
            key, now = send_job_key(send_id), time.time()
            raw = self._t.get(txn, key)
            job = None if raw is None else json.loads(bytes(raw))
            if job is None or job["finished"] or job.get("cancelled"):
                return job, ""
            job["cancelled"], job["stopped_by"], decision = now, reason, ""
            settled = job.get("due", 0.0) > now + DUE_MARGIN  # none of it can be going yet
            if settled:
                decision = self._cancel_one(txn, send_id, job)
            self._t.put(txn, key, json.dumps(job).encode())
            if settled:
                self._finish(txn, send_id, job, now)
            return job, decision
        return self.store.write(fn)

    def _cancel_one(self, txn, send_id: str, job: dict) -> str:
        """Count a deferred message's recipient suppressed `cancelled` unless settled (or
        erased: no record); its decision id when it counted it."""
        key = send_user_key(send_id, 0)
        r = read_sealed(self.store, txn, key, self._t.get(txn, key), functools.partial(
            _decode, key))
        if r is DAMAGED:
            report_damaged(1, SEND, CANCEL, f"CancelSend of {send_id} refused")
            raise SendRecordDamaged(send_id)
        if r is None or r.state not in (PENDING, READY):
            return ""
        r.state, r.reason = SUPPRESSED, CANCELLED
        _count(job, r)
        return r.decision

    def finish(self, send_id: str) -> None:
        """Stamp the job finished and drop its recipients' records; a deferred ComposeMessage's
        job (`due`) is kept `kept` seconds (its expiry key), and up to `EXPIRE_PER_FINISH`
        expired ones go."""
        def fn(txn):
            raw = self._t.get(txn, send_job_key(send_id))  # None: a deferred message's job,
            # erased whole
            self._finish(txn, send_id, None if raw is None else json.loads(bytes(raw)),
                         time.time())
        self.store.write(fn)

    def _finish(self, txn, send_id: str, job: dict | None, now: float) -> None:
        if job is not None and not job["finished"]:  # (a deferred one cancelled: done)
            job["finished"] = now
            self._t.put(txn, send_job_key(send_id), json.dumps(job).encode())
            if "due" in job:
                self._t.put(txn, send_expiry_key(now + self.kept, send_id), b"")
                self._expire(txn, now)
        self._t.delete_prefix(txn, send_user_prefix(send_id))

    def _expire(self, txn, now: float) -> None:
        """Delete up to `EXPIRE_PER_FINISH` kept jobs whose time is up (oldest first)."""
        gone, due = [], send_expiry_key(now, "")
        for key, _ in self._t.items(txn, SEND_EXPIRY_PREFIX):
            key = bytes(key)
            if not key.startswith(SEND_EXPIRY_PREFIX) or key >= due or \
                    len(gone) == EXPIRE_PER_FINISH:
                break
            gone.append(key)
        for key in gone:
            self._t.delete(txn, key)
            self._t.delete(txn, send_job_key(key.rsplit(SEP, 1)[1].decode()))
