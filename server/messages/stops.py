"""An SMS STOP or START at a number, as one place applies it to the profiles there.

Two things say a number's owner stopped the sender's texts: the owner's reply (`STOP` to the
inbound webhook, `server.http.sms`) and the provider's refusal of a text with a code saying
the carrier blocks the number (`webhook.OPTED_OUT_CODES`: Twilio's 21610, at the send or in a
status report, `reports.record_opt_out`). Both change every profile the address index holds at
the number (`PhoneIndex.lookup`, and `unnamed` for profiles stored before the index), not only
the one a message went to: several may share a phone (a 21610 report naming the message alone:
those at the number its user was last messaged at, `stop_texted`, not the one their profile
holds now, perhaps new and another profile's). A 21610 reaches only the profiles there that
hold the number (`_holding`, `PhoneIndex.found`): one indexed at it as a dead letter or a
deferred text went there after they moved to another keeps its texts, which no carrier
blocks, where a STOP reply reaches every profile indexed (their texts composed to it would
reach the person who said it). Nor does a 21610 close a purpose a profile opted in to after the
reported text went (`stop`'s `sent`: a START since is newer than the late report). A STOP that
is the keyword alone, and a 21610, close marketing and transactional texts (the carrier blocks
every text to the number until START; CTIA asks that nothing but the STOP's confirmation follow
it); a START reopens what such a stop closed (`stopped`), never a consent not given before
(`contact.consent.reopens`), nor what the user or operator withdrew by other means (SetConsent,
a one-click link, an `unsubscribe` event a client tracked), before or after the STOP, whatever
the times (`contact.consent.closed_by_stop`), all of it checked again in the write transaction
(`_rechecked`, `contact.consent.reopenable`: a withdrawal committed after the START read the
profiles was overwritten by its opt-in).
Before, a 21610 withdrew marketing alone: receipts and codes were composed and sent to a number
the carrier refuses, each a dead letter.

The profiles are written `CHUNK` a transaction per purpose (a STOP from a number 1,000
profiles share took 2,000 fsync'd writes, 7.2 s of the provider's call). A change is made only
to a profile that exists (`existing`): one erased since is never brought back.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

from ..config import DEFAULT_CONSENT
from ..contact.consent import (
    CARRIER_SOURCE,
    MARKETING,
    PURPOSES,
    REPLY_SOURCE,
    TRANSACTIONAL,
    closed_by_stop,
    need_of,
    reopens,
)
from ..interfaces import ConsentWriter, ProfileMetas
from ..profiles.damage import metas_or_none
from ..security.userref import user_ref
from .phones import PhoneIndex

__all__ = ["SmsStops", "CARRIER_SOURCE", "REPLY_SOURCE", "CHUNK", "stopped"]

logger = logging.getLogger("tailor.messages")

CHUNK = 500
"""Profiles a change writes per write transaction (`SmsStops._write`)."""


def stopped(meta) -> bool:
    """Whether the SMS transactional texts are closed by a STOP (a reply, or the carrier's
    21610) alone: what a START reopens. A transactional opt-out given elsewhere (SetConsent),
    before or after the STOP and dated either side of it, is not (`closed_by_stop`)."""
    return closed_by_stop(meta, "sms", TRANSACTIONAL)


class SmsStops:
    """Consent changes of every profile indexed at a number (`change`, `stop`, `stop_texted`)."""

    def __init__(self, phones: PhoneIndex, consent: ConsentWriter,
                 metas: ProfileMetas | None = None,
                 defaults: Mapping[str, str] = DEFAULT_CONSENT):
        """`metas` (the profiles' meta records) and `defaults` (Settings `consent_defaults`):
        a START re-opens only what a STOP closed (`contact.consent.reopens`)."""
        self.phones, self.consent, self.metas = phones, consent, metas
        self.defaults = dict(defaults)

    async def stop(self, number: str, dated: float, sent: float | None = None) -> int:
        """The carrier blocks `number` (a provider's 21610): `change` as a STOP texted alone
        from it, of the profiles indexed there that hold it (`_holding`); how many
        profiles changed. One indexed there that holds another number now (messaged at it
        before: a dead letter retried to it, a deferred text) is left alone: the carrier
        refuses what is composed to the blocked number, and nothing blocks theirs. `sent`:
        when the reported text went (None: not known): a profile opted in after it keeps its
        texts (`_rechecked`, `reports.record_opt_out`)."""
        tokens = await asyncio.to_thread(self.phones.unnamed, number)
        users = await asyncio.to_thread(self.phones.lookup, number)
        return self._logged(await self._changed(users, tokens, False, True, CARRIER_SOURCE,
                                                dated, self.phones.found(number), sent))

    async def stop_texted(self, user_id: str, dated: float, sent: float | None = None) -> int:
        """The carrier blocks the number `user_id` was last messaged at (a provider's 21610
        naming the message alone): `stop` of the profiles indexed there with them that hold
        it (`PhoneIndex.sharing`: the user's pointer, not the number their profile holds now,
        which may be a new one another profile shares and no carrier blocked); how many
        profiles changed (0 when no number is indexed for them). `sent`: as `stop`'s."""
        pointer = await asyncio.to_thread(self.phones.messaged, user_id)
        if pointer is None:
            return 0
        held = await asyncio.to_thread(self._held_number, user_id)
        tokens = await asyncio.to_thread(self.phones.unnamed, held, user_id)
        users = await asyncio.to_thread(self.phones.sharing, user_id, held)
        return self._logged(await self._changed(users, tokens, False, True, CARRIER_SOURCE,
                                                dated, frozenset({pointer}), sent))

    @staticmethod
    def _logged(change: tuple[set[str], int]) -> int:
        """Log a carrier STOP's users (by `user_ref`); how many profiles changed."""
        users, unnamed = change
        for user in sorted(users):
            logger.info("sms carrier STOP of %s", user_ref(user))
        return len(users) + unnamed

    def _held_number(self, user_id: str) -> str:
        """The number `user_id`'s profile holds ("" when none): read with their pointer, its
        entries under every key of the ring (`PhoneIndex.sharing`)."""
        return self.phones.held_in(self.metas.metas([user_id])[0]) if self.metas else ""

    async def change(self, number: str, opted_in: bool, only: bool, source: str,
                     dated: float) -> tuple[set[str], int]:
        """Opt every profile indexed at `number` out of (`opted_in` False) or back in to SMS,
        dated `dated`, source `source`; `only`: the opt-out is the keyword alone (marketing and
        transactional; otherwise marketing only). (The users changed, how many profiles
        indexed by token alone changed.)"""
        # the unnamed first: one named in between is then in `users` (`still_indexed`)
        tokens = await asyncio.to_thread(self.phones.unnamed, number)
        users = await asyncio.to_thread(self.phones.lookup, number)  # all who share it
        return await self._changed(users, tokens, opted_in, only, source, dated)

    async def _changed(self, users: list[str], tokens: list[bytes], opted_in: bool, only: bool,
                       source: str, dated: float, held: frozenset[str] | None = None,
                       sent: float | None = None) -> tuple[set[str], int]:
        """`change` of the profiles `users` and, by token alone, `tokens`; with `held` (the
        number's digests) only of those holding it (`_holding`); `sent`: `stop`'s."""
        metas = await asyncio.to_thread(metas_or_none, self.metas.metas, users) \
            if self.metas is not None else [None] * len(users)
        users, metas = await asyncio.to_thread(self._holding, users, metas, held)
        # `existing`: a change reaches a profile that exists, never brings one back (one erased
        # since, signed before or no profile since, is skipped)
        groups = self._grouped(users, metas, opted_in, only, source)
        changed = await self._write(groups, functools.partial(
            self.consent.set_consents, channel="sms", opted_in=opted_in, source=source,
            timestamp=dated, existing=True), self._rechecked(opted_in, only, source, sent))
        return changed, await self._change_unnamed(tokens, opted_in, only, source, dated, held,
                                                   sent)

    async def _change_unnamed(self, tokens: list[bytes], opted_in: bool, only: bool,
                              source: str, dated: float,
                              held: frozenset[str] | None = None,
                              sent: float | None = None) -> int:
        """The change of the profiles indexed at the number by token alone, `tokens` (stored
        before the index, their id nowhere in the store: `PhoneIndex.unnamed`; `held`: as
        `_changed`); how many changed."""
        if not tokens:
            return 0
        metas = await asyncio.to_thread(metas_or_none, self.metas.unnamed_metas, tokens) \
            if self.metas is not None else [None] * len(tokens)
        tokens, metas = await asyncio.to_thread(self._holding, tokens, metas, held)
        groups = self._grouped(tokens, metas, opted_in, only, source)
        changed = await self._write(groups, functools.partial(
            self.consent.set_unnamed_consents, channel="sms", opted_in=opted_in, source=source,
            still=self.phones.still_indexed, timestamp=dated),
            self._rechecked(opted_in, only, source, sent))
        if changed:
            logger.info("sms %s: %d unnamed profiles at the number", source, len(changed))
        return len(changed)

    def _holding(self, ids: list, metas: list, held: frozenset[str] | None) -> tuple[list, list]:
        """(`ids`, `metas`) of the profiles whose meta record holds a number `held` names
        (None: all of them; no meta records to read: all). Each spelling of a number is
        normalized and hashed once (0.2 ms each: 1,000 profiles at a number took 0.22 s)."""
        if held is None or self.metas is None:
            return ids, metas
        spelled: dict[str, bool] = {}
        kept = []
        for i, meta in zip(ids, metas):
            number = self.phones.held_in(meta)
            if number not in spelled:
                spelled[number] = bool(self.phones.found(number) & held)
            if spelled[number]:
                kept.append((i, meta))
        return [i for i, _ in kept], [meta for _, meta in kept]

    @staticmethod
    async def _write(groups: dict[str, list], write, rechecked) -> set:
        """`await write(ids, purpose=..., **rechecked(purpose))` of each purpose's profiles,
        `CHUNK` a call (one write transaction); the profiles changed."""
        changed = set()
        for purpose, ids in groups.items():
            for start in range(0, len(ids), CHUNK):
                changed.update(await write(ids[start:start + CHUNK], purpose=purpose,
                                           **rechecked(purpose)))
        return changed

    def _rechecked(self, opted_in: bool, only: bool, source: str, sent: float | None = None):
        """`rechecked(purpose)`: what the write transaction of a change checks again of each
        profile's meta record, as it stands then (`Profiles.set_consents`), so that a
        SetConsent or a one-click link committed after the profiles were read (`_grouped`)
        and before the write counts: a START writes only where the STOP handling alone still
        closes it and, for marketing where sms needs an opt-in, the history still holds one
        (`stopped_only`, `needs_opt_in`: `contact.consent.reopenable`, the rule `_purposes`
        read them by: a withdrawal committed in between was overwritten by the START's
        later-dated opt-in, and an opt-in pushed out of the bounded history in between was
        reopened all the same, a consent no longer on record); a 21610, and a STOP's
        transactional opt-out, only what is open (`open_only`: an opt-in committed in between
        stayed open, or the STOP was written over a withdrawal a START then reopened), and
        with `sent` (a 21610 for a text that went then) only where no opt-in is dated after
        it (`opted_in_after`: a START since is newer than what the carrier tells). No
        write transaction is held across an await: the check and the write are one
        transaction in the profiles' thread."""
        stopped_only = opted_in and self.metas is not None
        opt_in = stopped_only and need_of(self.defaults, "sms") == "opt_in"
        open_only = () if opted_in else PURPOSES if source == CARRIER_SOURCE \
            else (TRANSACTIONAL,) if only else ()

        after = {"opted_in_after": sent} if sent is not None and source == CARRIER_SOURCE else {}

        def rechecked(purpose: str) -> dict:
            return {"stopped_only": stopped_only, "open_only": purpose in open_only,
                    "needs_opt_in": opt_in and purpose == MARKETING, **after}
        return rechecked

    def _grouped(self, ids: list, metas: list, opted_in: bool, only: bool,
                 source: str) -> dict[str, list]:
        """{purpose: the profiles of `ids` whose `purpose` the change reaches} (`_purposes` of
        each one's meta record), marketing first."""
        groups: dict[str, list] = {"marketing": [], "transactional": []}
        for profile, meta in zip(ids, metas):
            for purpose in self._purposes(meta, opted_in, only, source):
                groups[purpose].append(profile)
        return {purpose: group for purpose, group in groups.items() if group}

    def _purposes(self, meta, opted_in: bool, only: bool, source: str) -> list[str]:
        """The purposes a change reaches for one profile: a STOP closes marketing and
        transactional texts (the carriers block the number: nothing but the STOP's
        confirmation may follow it), a transactional opt-out given elsewhere left as it is; a
        START reopens what a STOP closed, giving no consent not given before (`reopens`).
        `only`: the opt-out is the keyword alone (or the carrier's block); a reply merely
        starting with one ("Cancel my 3pm appointment") closes marketing only (carriers block
        the number on a single-word reply only). The carrier's 21610 (`source`
        `CARRIER_SOURCE`) closes only what is open: the provider reports the same block again
        (a status callback retried, or after the refusal at the send, each text to the number
        refused), which is no new choice of the user; written over the `unsubscribe` event's
        opt-out each time, it added a history entry per repeat. What a STOP finds closed
        already is read in its write (`_rechecked`), as is what a START finds closed by a
        STOP alone: the choice here only narrows which profiles a START writes."""
        if not opted_in and not only:
            return ["marketing"]
        if opted_in and self.metas is not None:
            return [p for p, ok in (("marketing", reopens(meta, "sms", self.defaults)),
                                    ("transactional", stopped(meta))) if ok]
        return ["marketing", "transactional"]
