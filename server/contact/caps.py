"""Frequency caps: at most `max` contacts per user on a channel (or any, "*") within a window
of each contact's time, counted over every campaign.

A contact is a non-suppressed, non-holdout decision on a contact channel (email, sms, push),
at its send time, or a `<channel>_sent` event. A decision counts the contacts within the cap's
window on either side of its own send time: a send deferred to tomorrow morning limits the
contacts around tomorrow morning, not those of today. An event carrying a decision's id
(attribute `decision_id`) is the same contact as that decision and counts once. Web and app
decisions are placements, not contacts: they are neither capped nor counted.

Global caps (Settings `contact_frequency_caps`) are caps on marketing contacts: a
transactional campaign's decisions (receipts, password resets) are recorded as such (a fourth
element, "transactional") and only a campaign's own caps count them; a send event without a
decision id, whose purpose is unknown, counts as marketing.

The caps are enforced where decisions are logged (`campaigns.repository.log_decisions`, one
write transaction in the campaigns writer process; LMDB serializes write transactions across
processes), against the user's `ContactHistory` record, so two concurrent decisions cannot
both pass a cap of one. A decision of a campaign of several channels that its caps refuse
there (concurrent decisions chose the same channel from one read of the history) goes on the
first of its other allowed channels with room, when its caller gave them (`Admission.choices`).

A damaged history (its record does not open or decode: `store.damaged`) fails its own user,
never the batch it is read in: it cannot show that a cap has room, so a decision of that user
that a cap would check is refused (`CONTACT_HISTORY_DAMAGED`: a contact over a cap is worse
than one not made), one that no cap checks goes on uncounted, and a send, or a withdrawal, of
that user is not counted or dropped; every other user of the batch is served as if that one
were absent. The record is left as it is (never written over) until an operator restores it
or erases the user (docs/operations.md, "Damaged contact histories").
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import InvalidArgument
from ..limits import DEFAULT_LIMITS, Limits
from ..store import Store
from ..store.damaged import DAMAGED, read_each
from ..store.keys import contact_key
from ..validation import check_finite, check_known
from .errors import ContactHistoryDamaged
from .logging import logger

__all__ = ["FrequencyCap", "ContactHistory", "ContactLog", "Admission", "CONTACT_CHANNELS",
           "FREQUENCY_CAP", "CONTACT_HISTORY_DAMAGED", "Cap", "effective_caps"]

CONTACT_CHANNELS = ("email", "sms", "push")
FREQUENCY_CAP = "frequency_cap"
CONTACT_HISTORY_DAMAGED = "contact_history_damaged"
"""The reason of a decision refused because its user's contact history, which a cap of the
decision counts, is damaged (see the module docstring)."""
ANY = "*"
TRANSACTIONAL = "transactional"
Cap = tuple
"""(channel or "*", max, window seconds[, marketing only]): a cap as the writer process
receives it; a global cap carries a fourth element, True (`marketing_only`)."""


@dataclass(frozen=True)
class FrequencyCap:
    channel: str
    max: int
    window_seconds: float

    def checked(self, field: str, limits: Limits = DEFAULT_LIMITS) -> FrequencyCap:
        check_known(f"{field}.channel", self.channel, (*CONTACT_CHANNELS, ANY))
        if not 1 <= self.max <= limits.frequency_cap_max:
            raise InvalidArgument(f"{field}.max", f"must be in 1..{limits.frequency_cap_max}")
        window = check_finite(f"{field}.window_seconds", self.window_seconds)
        if not 0 < window <= limits.frequency_cap_window_seconds:
            raise InvalidArgument(f"{field}.window_seconds", "must be in (0, "
                                  f"{limits.frequency_cap_window_seconds:g}]")
        return self

    def as_tuple(self) -> Cap:
        return (self.channel, int(self.max), float(self.window_seconds))


def effective_caps(channel: str, campaign_caps: Iterable[FrequencyCap],
                   global_caps: Iterable[Cap]) -> tuple[Cap, ...]:
    """The caps a decision on `channel` must pass: the campaign's and the global ones that name
    the channel or "*" (none for a channel that is not a contact channel)."""
    if channel not in CONTACT_CHANNELS:
        return ()
    mine = [c.as_tuple() for c in campaign_caps]
    return tuple(c for c in (*mine, *map(marketing_only, global_caps)) if c[0] in (channel, ANY))


def marketing_only(cap: Cap) -> Cap:
    """`cap` counting marketing contacts alone (transactional ones left out)."""
    return (*cap[:3], True)


_compact_json = json.JSONEncoder(separators=(",", ":")).encode
"""`json.dumps(..., separators=...)` without building an encoder per call."""
_json_decode = json.JSONDecoder().decode
"""`json.loads` of a str without its keyword checks (`ContactHistory.decode`)."""
_PLAIN = re.compile(r'["\\\u0000-\u001f\u007f]').search
"""Finds a character JSON would escape in an ASCII string (None: the string is written as is)."""


class ContactHistory:
    """A user's recent contacts, [time, channel, decision id ("" for a send without one)], and
    a fourth element, "transactional", for a transactional campaign's decisions.

    Stored as JSON (record kind "contact_history"), pruned on every write to the longest cap
    window and the `frequency_cap_max` newest entries, so it stays small.
    """

    __slots__ = ("entries",)

    def __init__(self, entries: list | None = None):
        self.entries = entries if entries is not None else []

    @classmethod
    def decode(cls, raw: bytes | None) -> ContactHistory:
        """From its stored JSON (ASCII: `encode` escapes the rest), decoded as text:
        `json.loads` of bytes first guesses their encoding (~1 us of the ~4.5 a history of
        four entries took). ValueError (`UnicodeDecodeError`, `JSONDecodeError`): damaged. Its
        shape is not checked (+1.4 us a history of four entries): a byte changed on disk
        practically never leaves JSON of another shape, and a sealed record does not open."""
        return cls(_json_decode(raw.decode()) if raw else None)

    def encode(self) -> bytes:
        """Compact JSON; entries of plain ASCII strings (every decision's, most sends') are
        written directly, a fifth of `json.dumps`'s time (the same bytes: floats by `repr`)."""
        entries = self.entries
        if all(len(e) == 3 and type(e[0]) is float and e[0] - e[0] == 0.0
               and (e[1] + e[2]).isascii() and _PLAIN(e[1] + e[2]) is None for e in entries):
            return ("[" + ",".join([f'[{ts!r},"{ch}","{d}"]' for ts, ch, d in entries])
                    + "]").encode()
        return _compact_json(entries).encode()

    def exported(self) -> list[dict]:
        """The entries as the access export shows them, oldest first."""
        return [{"timestamp": e[0], "channel": e[1], "decision_id": e[2],
                 **({"purpose": TRANSACTIONAL} if len(e) > 3 else {})}
                for e in sorted(self.entries, key=lambda e: e[0])]

    def blocked_by(self, caps: Sequence[Cap], at: float) -> bool:
        """Whether one more contact at `at` would break one of `caps`: the contacts within a
        cap's window of `at`, before or after it (`|ts - at| < window`; entries after `at` are
        deferred or scheduled sends), are already `max` or more; a marketing-only cap leaves
        transactional contacts out."""
        for cap in caps:
            channel, most, window = cap[:3]
            marketing = len(cap) > 3 and cap[3]
            n = 0
            for e in self.entries:
                if abs(e[0] - at) < window and (e[1] == channel or channel == ANY) \
                        and not (marketing and len(e) > 3):
                    n += 1
            if n >= most:
                return True
        return False

    def add(self, ts: float, channel: str, decision_id: str = "",
            transactional: bool = False) -> bool:
        """Record a contact; False (nothing added) when `decision_id` is already counted."""
        if decision_id and self.entries and any(e[2] == decision_id for e in self.entries):
            return False
        self.entries.append([ts, channel, decision_id, TRANSACTIONAL] if transactional
                            else [ts, channel, decision_id])
        return True

    def prune(self, now: float, limits: Limits = DEFAULT_LIMITS) -> None:
        """Drop the contacts no window can reach from now on; past `frequency_cap_max` (no cap
        counts more), keep those nearest to now: sends scheduled far ahead must not push out
        the contacts of the last hours, which the next decisions count."""
        since = now - limits.frequency_cap_window_seconds
        kept = [e for e in self.entries if e[0] > since]
        if len(kept) > limits.frequency_cap_max:
            kept.sort(key=lambda e: abs(e[0] - now))
            kept = sorted(kept[:limits.frequency_cap_max], key=lambda e: e[0])
        self.entries = kept


class Admission(NamedTuple):
    """One decision to check against its caps (and count, unless `counted` is False: a holdout
    is checked, so it stays comparable with the treated users, but receives nothing). A
    NamedTuple: the writer builds one per logged decision."""

    user_id: str
    channel: str
    at: float
    decision_id: str
    caps: tuple[Cap, ...]
    counted: bool = True
    transactional: bool = False
    """A transactional campaign's decision: recorded so, left out of marketing-only caps."""
    propensity: float = 1.0
    """The probability the contact policy had of choosing `channel`."""
    choices: tuple = ()
    """(channel, caps, propensity) of every channel the contact policy allowed, `channel`
    included, in the campaign's order, when the writer may fall back (`settled`); () when it
    may not: then `channel` over its caps is refused."""
    refused: frozenset[str] = frozenset()
    """Channels the contact policy refuses at the commit (consent withdrawn or address listed
    since the decision's read: `campaigns.recheck`): blocked as a full cap blocks."""

    def settled(self, blocked: Sequence[bool]) -> Admission | None:
        """This decision as the caps leave it (`blocked`: one flag per choice, whether its caps
        refuse it here): on its channel when that has room, else on the first choice with
        room, None when none has. Every blocked choice would have come to that first free one,
        so the probability of ending there is its own plus theirs (the policy's choice and this
        fallback together): logged with it, on a fallback or on the channel chosen alike."""
        free = next((c for c, b in zip(self.choices, blocked) if not b), None)
        if free is None:
            return None
        # (a channel not among the choices, never its caller's intent, counts as refused)
        mine = next((b for c, b in zip(self.choices, blocked) if c[0] == self.channel), True)
        if not mine and (free[0] != self.channel or not any(blocked)):
            return self
        mass = sum(c[2] for c, b in zip(self.choices, blocked) if b)
        return self._replace(channel=free[0], caps=free[1], propensity=min(free[2] + mass, 1.0),
                             choices=())


class ContactLog:
    """The `contacts` table: one `ContactHistory` per user. Every method runs inside the
    caller's write transaction (`Store.write`), reading and writing only through it. A user
    whose history is damaged fails alone (the module docstring); it is never written."""

    def __init__(self, store: Store, limits: Limits = DEFAULT_LIMITS):
        self._t = store.table("contacts")
        self.limits = limits

    def admit(self, txn, rows: Sequence[Admission], now: float) -> list[Admission | str | None]:
        """Each row as its caps leave it, in order: itself, or, with choices, on the channel
        and with the propensity `Admission.settled` gives; None when refused, or the reason
        it was refused for when that is not a cap (`CONTACT_HISTORY_DAMAGED`). Passing
        counted rows are recorded, so a later row of the same user in the batch sees them.
        One read of each user's history and one write of each changed one, for the whole
        batch."""
        histories = self._read(txn, [row.user_id for row in rows])
        changed, out, uncounted = {}, [], 0
        for row in rows:
            h = histories[row.user_id]
            if h is None:
                row = _without_history(row)
                uncounted += row.__class__ is Admission and row.counted
            elif row.choices:
                row = row.settled([c[0] in row.refused or bool(c[1]) and h.blocked_by(c[1], row.at)
                                   for c in row.choices])
            elif row.channel in row.refused or row.caps and h.blocked_by(row.caps, row.at):
                row = None
            if h is not None and row is not None and row.counted and \
                    h.add(row.at, row.channel, row.decision_id, row.transactional):
                changed[row.user_id] = h
            out.append(row)
        if uncounted:
            logger.warning("%d decisions without a cap made without counting their contacts: "
                           "their users' contact histories are damaged", uncounted)
        self.save(txn, changed, now)
        return out

    def add_sends(self, txn, sends: Iterable[tuple[str, str, float, str]], now: float
                  ) -> list[str]:
        """Record `<channel>_sent` events (user, channel, time, decision id or ""); a send
        naming an already counted decision adds nothing. Returns the users whose sends were
        not counted: their histories are damaged."""
        histories, _, damaged = self.with_sends(txn, sends)
        self.save(txn, histories, now)
        return damaged

    def with_sends(self, txn, sends: Iterable[tuple[str, str, float, str]]
                   ) -> tuple[dict[str, ContactHistory], int, list[str]]:
        """`add_sends` up to its write (nothing written: `save` them): ({user: history, read in
        `txn`, with their sends added}, the contacts added, the users whose histories are
        damaged: their sends left out, and their histories)."""
        sends = list(sends)
        histories = self._read(txn, [user_id for user_id, _, _, _ in sends])
        added = 0
        for user_id, channel, ts, decision_id in sends:
            h = histories[user_id]
            if h is not None:
                added += h.add(ts, channel, decision_id)
        damaged = [u for u, h in histories.items() if h is None]
        if damaged:
            histories = {u: h for u, h in histories.items() if h is not None}
        return histories, added, damaged

    def forget(self, txn, decisions: dict[str, set[str]], now: float) -> int:
        """Drop the contacts of decisions withdrawn before anyone received them ({user:
        decision ids}); returns the contacts dropped (none of a damaged history)."""
        histories, changed, dropped = self._read(txn, list(decisions)), {}, 0
        for user_id, ids in decisions.items():
            h = histories[user_id]
            if h is None:
                logger.warning("the contacts of %d withdrawn decisions not dropped: their "
                               "user's contact history is damaged", len(ids))
                continue
            kept = [e for e in h.entries if e[2] not in ids]
            if len(kept) < len(h.entries):
                dropped += len(h.entries) - len(kept)
                h.entries, changed[user_id] = kept, h
        self.save(txn, changed, now)
        return dropped

    def histories(self, txn, user_ids: Sequence[str]) -> dict[str, ContactHistory | None]:
        """{user: history} of `user_ids`, read in `txn` (a read transaction will do: the
        decision path reads them to choose a channel the caps leave free); None for a damaged
        one (the writer refuses that user's capped decisions: `admit`)."""
        return self._read(txn, user_ids)

    def history(self, txn, user_id: str) -> ContactHistory:
        """The user's history; `ContactHistoryDamaged` if it is damaged."""
        (h,) = self._read(txn, [user_id]).values()
        if h is None:
            raise ContactHistoryDamaged()
        return h

    def _read(self, txn, user_ids: Sequence[str]) -> dict[str, ContactHistory | None]:
        """{user: history, None when damaged} of `user_ids` (each once), read together
        (`store.damaged.read_each`)."""
        users = list(dict.fromkeys(user_ids))
        read = read_each(self._t, txn, [contact_key(u) for u in users], ContactHistory.decode)
        return {u: None if h is DAMAGED else h for u, h in zip(users, read)}

    def save(self, txn, histories: dict[str, ContactHistory], now: float) -> None:
        """Each history pruned and written, all in one `put_many` (one cursor; with
        encryption, the users' data keys looked up or made together)."""
        items = []
        for user_id, h in histories.items():
            h.prune(now, self.limits)
            items.append((contact_key(user_id), h.encode()))
        if items:
            self._t.put_many(txn, items)


def _without_history(row: Admission) -> Admission | str | None:
    """`row` of a user whose history is damaged, as `ContactLog.admit` answers it: a choice a
    cap checks is blocked (nothing shows it has room), so is one the contact policy refuses
    now; on the first free one (uncounted, as the caller checks), or, when none is, refused:
    `CONTACT_HISTORY_DAMAGED` if a cap blocked one, else None (the policy's refusal)."""
    if row.choices:
        settled = row.settled([c[0] in row.refused or bool(c[1]) for c in row.choices])
        capped = any(c[1] for c in row.choices)
    else:
        refused = row.channel in row.refused
        settled, capped = (None if refused or row.caps else row), not refused and bool(row.caps)
    return CONTACT_HISTORY_DAMAGED if settled is None and capped else settled
