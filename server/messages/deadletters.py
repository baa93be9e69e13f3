"""Dead letters: messages no adapter could deliver, kept in LMDB to be listed and retried.

A message becomes a dead letter when its adapter refused it for good (an SMTP 5xx reply, a
webhook's 4xx) or every attempt failed transiently (`retry.Retry`). The record (table `sends`,
`keys.dead_letter_key`, kind `dead_letter`) holds what a retry needs: the channel, the address,
the bytes as they were handed to the adapter (the flattened email, the webhook's JSON body), the
campaign, decision and user, the last reason and the attempts. Its id is
`<16-digit ms>.<8 hex>`, so the letters scan oldest first.

Each record is sealed under its user's data key (`Store.seal_for_user`: it names them and holds
their address and message), so once the user is erased its bytes on freed pages stay closed.

A retry claims its letter first (`claim`: one write transaction reads the letter and stamps
`claimed_until` and a fresh `claim` token), so of the retries that reach any worker at once only
one sends; the others are refused while the claim holds. The retry renews the claim while it
runs (`renew`, however long the relay takes), and ends by dropping the letter (sent) or writing
it back with the claim cleared (`release`). Both renewal and release act only while the token
is still the letter's: a retry whose claim lapsed (its worker stalled) and was taken by another
never writes over the new claim. A worker that dies mid-retry leaves a claim that lapses.

A letter whose message went is never sent again: its retry records the `<channel>_sent` event
(id `sent_event_id(decision)`, kept by the ingestion's idempotency entry) before it drops the
letter, and a retry first asks whether that event is recorded (`went`; if so it drops the
letter without sending). A drop that fails (a full store) then leaves a letter no retry sends,
whichever worker, whenever its claim lapses.

A letter is added only while its user's profile exists (`add(if_profile=True)`, checked in
its transaction): a user erased during the attempts leaves none.

Transaction rules: `add`, `claim`, `renew`, `release` and `drop` write one record each; `erase_user`
runs inside the profile erasure's transaction (a `UserEraser`, before the user's key is
shredded) and drops every letter of the user: a walk over the letters that opens none of the
others' (a sealed letter starts with its user's token), since after an outage there is one per
recipient and the erasure holds the store's write lock (20,000 letters of 10 kB took ~0.9 s
opened one by one; every writer waited).
`ListDeadLetters` shows a keyed reference of the user (`user_ref`), never the id or address.
"""
from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import asdict, dataclass, fields

from ..store import Store
from ..store.damaged import (
    DAMAGED,
    DEAD_LETTER,
    ERASE,
    EXPORT,
    LIST,
    RETRY,
    report_damaged,
)
from ..store.keys import (
    DEAD_LETTER_PREFIX,
    dead_letter_key,
    dedupe_key,
    ms_part,
    profile_meta_key,
)
from ..validation import server_event_id
from .errors import DeadLetterBusy, DeadLetterDamaged, MessageRecordDamaged
from .owned import STRAY, owned, read_sealed, with_messages

__all__ = ["DeadLetter", "DeadLetters", "sent_event_id"]


def sent_event_id(decision_id: str) -> str:
    """The event id of the `<channel>_sent` event of a decision's message (one per decision),
    an id no client's event may have (`validation.server_event_id`)."""
    return server_event_id("sent", decision_id)


@dataclass
class DeadLetter:
    channel: str
    campaign: str
    decision: str
    user: str
    to: str
    data: str
    """The bytes handed to the adapter: the email as latin-1 text, or the webhook's JSON."""
    reason: str = ""
    attempts: int = 0
    at: float = 0.0
    id: str = ""
    claimed_until: float = 0.0
    """While a retry sends it: the time its claim lapses (0: none; older records lack it)."""
    claim: str = ""
    """While a retry sends it: that retry's token ("" none; older records lack it)."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        """A stored letter; keys this code does not know are left out (a later layout's)."""
        stored = json.loads(bytes(raw))
        return cls(**{k: stored[k] for k in _FIELDS if k in stored})


_FIELDS = tuple(f.name for f in fields(DeadLetter))


class DeadLetters:
    def __init__(self, store: Store, exported: int = 2 << 20):
        """`exported`: most bytes of the letters' messages in an access export
        (`Limits.profile_export_message_bytes`)."""
        self.store, self.exported = store, exported
        self._t, self._profiles = store.table("sends"), store.table("profiles")
        self._dedupe = store.table("dedupe")

    def add(self, letter: DeadLetter, if_profile: bool = False) -> str:
        """Keep `letter` (its time and id are set here); its id. `if_profile`: only while its
        user's profile (meta record) exists, checked in the write transaction: "" (nothing
        kept) for a user erased during the attempts, whose letters the erasure dropped (this
        one would keep their address and message for good)."""
        letter.at = letter.at or time.time()
        letter.id = f"{ms_part(letter.at).decode()}.{secrets.token_hex(4)}"

        def fn(txn):
            if if_profile and self._profiles.get(txn, profile_meta_key(letter.user)) is None:
                return ""
            self._put(txn, letter)
            return letter.id
        return self.store.write(fn)

    def list(self, limit: int, channel: str = "") -> list[DeadLetter]:
        """The newest `limit` letters (of `channel`, if given), newest first: a walk back from
        the newest, one letter at a time, that stops once it has them (a relay down during a
        large SendCampaign leaves a letter per recipient, each with its whole message). A
        letter that does not open or decode (damaged: `store.damaged`) is left out and logged,
        not a failed listing."""
        out: list[DeadLetter] = []
        damaged = 0
        with self.store.read() as txn:
            for key, stored in self._t.walk_back(txn, DEAD_LETTER_PREFIX):
                if len(out) == limit:
                    break
                letter = read_sealed(self.store, txn, bytes(key), stored, DeadLetter.decode)
                if letter is DAMAGED:
                    damaged += 1
                    continue
                if letter is not None and (not channel or letter.channel == channel):
                    out.append(letter)
        report_damaged(damaged, DEAD_LETTER, LIST, "left out of a listing; restore the store "
                       "or erase their users")
        return out

    def get(self, letter_id: str) -> DeadLetter | None:
        with self.store.read() as txn:
            return self._read(txn, letter_id)

    def claim(self, letter_id: str, until: float, now: float) -> DeadLetter | None:
        """The letter, claimed for a retry until `until`; None if there is no such letter.
        Raises `DeadLetterBusy` while another retry's claim holds (any worker's)."""
        def fn(txn):
            letter = self._read(txn, letter_id)
            if letter is None:
                return None
            if letter.claimed_until > now:
                raise DeadLetterBusy(letter_id)
            letter.claimed_until, letter.claim = until, token
            self._put(txn, letter)
            return letter
        token = secrets.token_hex(8)
        return self.store.write(fn)

    def went(self, letter: DeadLetter) -> bool:
        """Whether `letter`'s message was delivered since it was kept: its decision's
        `<channel>_sent` event is recorded (a retry that sent it, but could not drop it; or
        another delivery of the same decision)."""
        with self.store.read() as txn:
            return self._dedupe.get(txn, dedupe_key(sent_event_id(letter.decision))) is not None

    def renew(self, letter: DeadLetter, until: float) -> bool:
        """The claim of `letter` (as `claim` returned it) extended to `until`; False (nothing
        written) when the claim is no longer its retry's (lapsed and taken by another retry)
        or the letter is gone (its user erased)."""
        def fn(txn):
            stored = self._read(txn, letter.id)
            if stored is None or stored.claim != letter.claim:
                return False
            stored.claimed_until = until
            self._put(txn, stored)
            return True
        renewed = self.store.write(fn)
        if renewed:
            letter.claimed_until = until
        return renewed

    def release(self, letter: DeadLetter) -> bool:
        """A claimed letter written back unclaimed (a failed or refused retry: its new reason
        and attempts); False (nothing written) when it is gone meanwhile (its user erased) or
        its claim is no longer this retry's (another retry holds it now)."""
        unclaimed = DeadLetter(**{**asdict(letter), "claimed_until": 0.0, "claim": ""})

        def fn(txn):
            stored = self._read(txn, letter.id)
            if stored is None or stored.claim != letter.claim:
                return False
            self._put(txn, unclaimed)
            return True
        return self.store.write(fn)

    def _read(self, txn, letter_id: str) -> DeadLetter | None:
        """The letter in `txn`'s snapshot; None if there is none or its user was erased.
        Raises `DeadLetterDamaged` if it does not open or decode (a retry of it is refused)."""
        key = dead_letter_key(letter_id)
        letter = read_sealed(self.store, txn, key, self._t.get(txn, key), DeadLetter.decode)
        if letter is DAMAGED:
            report_damaged(1, DEAD_LETTER, RETRY, f"a retry of {letter_id} refused")
            raise DeadLetterDamaged(letter_id)
        return letter

    def _put(self, txn, letter: DeadLetter) -> None:
        key = dead_letter_key(letter.id)
        self._t.put(txn, key, self.store.seal_for_user(txn, letter.user, key, letter.encode()))

    def drop(self, letter_id: str) -> bool:
        return self.store.delete("sends", dead_letter_key(letter_id))

    DROP_CHUNK = 1000
    """Letters deleted per write transaction by `drop_before`."""

    def drop_before(self, cutoff: float) -> int:
        """Retention: the letters kept before `cutoff` (the time their id starts with: when
        the message first failed) go, `DROP_CHUNK` a write transaction (a letter's key alone
        says: none is opened); how many. A retry of one under way that fails writes nothing
        back (`release`: gone); one that succeeds records its send as before."""
        end = dead_letter_key(ms_part(cutoff).decode())

        def fn(txn):
            doomed = list(itertools.islice(itertools.takewhile(
                lambda k: k < end, self._t.keys_from(txn, DEAD_LETTER_PREFIX)), self.DROP_CHUNK))
            return sum(int(self._t.delete(txn, bytes(k))) for k in doomed)
        total = 0
        while n := self.store.write(fn, erasure=True):
            total += n
        return total

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's letters, inside the profile erasure's transaction (which
        holds the store's write lock): found without opening the others (`owned`), and each
        plain letter met that does not decode and names nobody (`owned.stray`: it may be
        theirs, its user-id text hit), counted and logged."""
        found = list(owned(self.store, txn, self._t, DEAD_LETTER_PREFIX, user_id, _decode,
                           erasing=True))
        report_damaged(sum(got is DAMAGED or got is STRAY for _, got in found), DEAD_LETTER,
                       ERASE, "deleted by an erasure (the erased user's, or naming no user)")
        return sum(int(self._t.delete(txn, k)) and got is not STRAY for k, got in found)

    def export_user(self, user_id: str) -> dict[str, object]:
        """`UserExporter`: {"dead_letters": [...]}, the user's letters oldest first, each with
        its id, channel, campaign, decision, address, reason, attempts, time and `message`: the
        bytes handed to the adapter (the email, or the webhook's JSON body), rendered for them
        (`with_messages`: up to `exported` bytes in all)."""
        with self.store.read() as txn:
            mine = [d for _, d in owned(self.store, txn, self._t, DEAD_LETTER_PREFIX, user_id,
                                        _decode)]
        if any(d is DAMAGED for d in mine):
            report_damaged(1, DEAD_LETTER, EXPORT, "an access export refused")
            raise MessageRecordDamaged("dead letters")
        return {"dead_letters": with_messages([
            {"id": d.id, "channel": d.channel, "campaign_id": d.campaign,
             "decision_id": d.decision, "to": d.to, "reason": d.reason,
             "attempts": d.attempts, "at": d.at} for d in mine], [d.data for d in mine],
            self.exported)}


def _decode(key: bytes, raw: bytes) -> DeadLetter:
    return DeadLetter.decode(raw)
