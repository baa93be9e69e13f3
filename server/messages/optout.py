"""Unsubscribe events (TrackEvents) reach every profile at the user's address.

An `unsubscribe` event reported through TrackEvents (an email provider's list-unsubscribe
feed, a preference centre, an SMS provider's STOP report) opts its own user out in the
ingestion's transaction (`server.profiles.repository`). The address's owner asked, as with a
one-click link or a STOP reply (`server.http`), which reach every profile at the address; the
event reached only its user, and the next campaign mailed or texted the address through
another profile holding it (a guest checkout beside the account).

`SharedOptOut` is an `EventListener` with an outbox tag (`server.profiles.outbox`: a crash
after the ingestion's commit leaves the entry for the replay): for each unsubscribe event on
email or sms it opts out, marketing only, every other profile the address index
(`phones.AddressIndex`) holds at the user's address (the one they were last messaged at, and
the one their attribute holds now), dated at the event's time, source
`unsubscribe event (shared address)` (`sms carrier STOP (21610) event (shared address)` after
the server's own event of a 21610, marked `validation.STOP_MARK`: `contact.consent.event_source`), but not a
profile whose own opt-in is later than the event (an event imported or replayed late, or an
opt-in given after TrackEvents answered: checked in the transaction that writes the opt-out,
`keep_later_opt_in`, since a check made before it missed an opt-in stored in between); then
it clears the entry. The consent writes are idempotent (a change the current state already
says adds no history entry), so a replay that repeats them changes nothing.

It is `detached`: TrackEvents answers once the batch (with the event's own user's opt-out and
the entry) is committed, not once every other profile is written (`Profiles._commit`; `close`
waits for it). Before, the answer waited for one fsync'd write per profile at the address:
1.06 s for a placeholder address a thousand guest checkouts hold, against 0.016 s for a view.
The others are written `CHUNK` a transaction (`Profiles.set_consents`), not one each.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..contact.consent import event_source
from ..interfaces import ConsentWriter, ProfileMetas
from ..security.userref import user_ref
from ..store import Store, outbox
from ..store.outbox import Batch
from ..store.tokens import user_token
from ..validation import STOP_MARK, stop_sent
from .phones import AddressIndex

__all__ = ["SharedOptOut"]

logger = logging.getLogger("tailor.messages")

CHUNK = 500
"""Profiles opted out per write transaction."""


class SharedOptOut:
    """`EventListener`: unsubscribe events on a channel with an address index opt out every
    profile at their user's address."""

    outbox = b"shared-optout"
    """The tag of this listener's outbox entries (`server.profiles.outbox`)."""
    detached = True
    """TrackEvents does not wait for it (`Profiles._commit`): its entry makes it durable."""

    def __init__(self, store: Store, indexes: Sequence[AddressIndex], metas: ProfileMetas,
                 consent: ConsentWriter):
        self.store, self.metas, self.consent = store, metas, consent
        self.indexes = {i.channel: i for i in indexes}

    def follows(self, events: Sequence) -> list[int]:
        """The unsubscribe events on a channel with an address index."""
        return [i for i, ev in enumerate(events)
                if ev.type == "unsubscribe" and ev.channel in self.indexes]

    async def on_events(self, events: Sequence, batch: Batch) -> None:
        """Opt out the profiles sharing each event's address (those of the events the entry
        still names: an erasure takes its user's out), then clear the entry."""
        box = self.store.table("outbox")
        named = await asyncio.to_thread(self._named, box, batch.entry)
        for ev, key in zip(events, batch.event_keys):
            if key in named:
                await self._opt_out(ev)
        await asyncio.to_thread(self.store.write, lambda txn: outbox.claim(txn, box, batch.entry))

    def _named(self, box, entry: bytes) -> frozenset[bytes]:
        with self.store.read() as txn:
            stored = box.get(txn, entry)
        return frozenset(outbox.parsed(stored)[1]) if stored is not None else frozenset()

    async def _opt_out(self, ev) -> None:
        # the source and the send time by what the event's stored bytes keep (its STOP mark:
        # `validation`), so a replay of the entry, which rebuilds it from them, writes the same
        index = self.indexes[ev.channel]
        source = event_source(STOP_MARK in ev.attributes, shared=True)
        sent = stop_sent(ev.attributes)
        tokens = await asyncio.to_thread(self._unnamed, index, ev.user_id)  # first: one named
        users = await asyncio.to_thread(self._sharing, index, ev.user_id)  # since is here
        # `existing`: never brings one back; `keep_later_opt_in`: a profile whose own opt-in
        # is later than the event keeps it (an event imported or replayed late, or an opt-in
        # given since the answer: checked in the chunk's write, not when the users are read)
        for start in range(0, len(users), CHUNK):
            done = await self.consent.set_consents(users[start:start + CHUNK], ev.channel,
                                                   False, source,
                                                   timestamp=ev.timestamp, existing=True,
                                                   keep_later_opt_in=True,
                                                   opted_in_after=sent)
            logger.info("unsubscribe event of %s: %d other profiles opted out of %s too "
                        "(shared address)", user_ref(ev.user_id), len(done), ev.channel)
        for start in range(0, len(tokens), CHUNK):  # indexed by token alone (phones.UNNAMED)
            done = await self.consent.set_unnamed_consents(
                tokens[start:start + CHUNK], ev.channel, False, source,
                index.still_indexed, timestamp=ev.timestamp, keep_later_opt_in=True,
                opted_in_after=sent)
            logger.info("unsubscribe event of %s: %d unnamed profiles opted out of %s too "
                        "(shared address)", user_ref(ev.user_id), len(done), ev.channel)

    def _sharing(self, index: AddressIndex, user_id: str) -> list[str]:
        """The other profiles at the user's address (the one last indexed for them, and the
        one their attribute holds now)."""
        address = self._address(index, user_id)
        users = set(index.sharing(user_id, address)) | set(index.lookup(address))
        users.discard(user_id)
        return sorted(users)

    def _unnamed(self, index: AddressIndex, user_id: str) -> list[bytes]:
        """The tokens of the other profiles indexed by token alone at those addresses (the
        user's own entry may be one: its own opt-out is the event's, not the shared one)."""
        address = self._address(index, user_id)
        tokens = set(index.unnamed(address, user_id)) | set(index.unnamed(address))
        tokens.discard(user_token(user_id))
        return sorted(tokens)

    def _address(self, index: AddressIndex, user_id: str) -> str:
        return index.held_in(self.metas.metas([user_id])[0])
