"""A send job's hard-bounce breaker: a relay refusing most of an audience `550 5.1.1` is taken
for a misconfigured relay, not for that many dead mailboxes.

Each synchronous hard bounce at the relay lists the address and records the user's
`email_bounce` event (`Delivery._bounced`). A relay that answers 5.1.1 to every recipient (a
wrong smarthost, a recipient check against the wrong directory) listed a whole audience so,
and undoing it meant RemoveSuppression address by address. A job's breaker counts the
recipients it handed to the relay and those hard-bounced; once it has handed
`send_bounce_breaker_min` of them, more than `send_bounce_breaker_share` of them hard-bounced
trips it, and the job stops (`sending.SendJob._tripped`).

Its listings are held, not written, until the bound first clears, rather than written and
reverted on a trip: a revert would race the suppression listener that follows the bounce
event to the profile's address (`contact.Suppressions.on_events`, through the outbox), and
could not tell an address this job listed from one listed before for a reason of its own. A
trip drops the held ones (their dead letters stay, and RetryDeadLetter sends them once the relay
is fixed: nothing listed refuses them). Once the bound cleared, the held listings are written,
and later bounces are listed as they come (a trip after that stops the job but leaves those
listed). A job that ends below the minimum writes its held listings as it ends. A crash while
some are held loses them (their dead letters stay): at most the first
`send_bounce_breaker_min` recipients' worth.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["BounceBreaker"]

Listing = Callable[[], Awaitable[None]]


class BounceBreaker:
    def __init__(self, share: float, minimum: int):
        """`share`: the part of the recipients handed to the relay whose hard bounces trip it,
        once `minimum` were handed."""
        self.share, self.minimum = share, minimum
        self.handed = self.bounced = 0
        self.tripped = False
        self._held: list[Listing] | None = []
        """Listings not written yet; None once the bound cleared (they are written at once)."""

    async def list_or_hold(self, listing: Listing) -> None:
        """A hard bounce's listing (`Delivery.send_or_bury`): written now once the bound has
        cleared, else held; dropped once tripped."""
        if self._held is None:
            await listing()
        elif not self.tripped:
            self._held.append(listing)

    async def count(self, bounced: bool) -> bool:
        """Count a recipient handed to the relay (whether it hard-bounced); True when this one
        trips the breaker (then the held listings are dropped)."""
        if self.tripped:
            return False
        self.handed += 1
        self.bounced += bounced
        if self.handed < self.minimum:
            return False
        if self.bounced > self.share * self.handed:
            self.tripped, self._held = True, []
            return True
        await self.flush()
        return False

    async def flush(self) -> None:
        """Write the held listings (the bound cleared, or the job ended below the minimum);
        from now on each is written as it comes."""
        if self.tripped or self._held is None:
            return
        held, self._held = self._held, None
        for listing in held:
            await listing()
