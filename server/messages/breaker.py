"""A send job's hard-bounce breaker: a relay refusing most of an audience `550 5.1.1` is taken
for a misconfigured relay, not for that many dead mailboxes.

Each synchronous hard bounce at the relay lists the address and records the user's
`email_bounce` event (`Delivery._bounced`). A relay that answers 5.1.1 to every recipient (a
wrong smarthost, a recipient check against the wrong directory) listed a whole audience so,
and undoing it meant RemoveSuppression address by address; so did an SMS provider answering
21211 (invalid 'To') to every number an adapter mangled (`webhook.NUMBER_GONE_CODES`). A job
has a breaker per such channel (email, sms), each judging the last
`send_bounce_breaker_min` recipients it handed to the relay (provider): more than
`send_bounce_breaker_share` of them hard-bounced trips it, and the job stops
(`sending.SendJob._tripped`). Over the last ones, not the whole job: a relay that goes bad in
the middle of a large job trips it as soon, where a share of the whole job would wait for as
many bounces as there were deliveries before.

A bounce's listing is held, not written, until `send_bounce_breaker_min` more recipients were
handed without a trip (or the job ends), rather than written and reverted on a trip: a revert
would race the suppression listener that follows the bounce event to the profile's address
(`contact.Suppressions.on_events`, through the outbox), and could not tell an address this job
listed from one listed before for a reason of its own. A trip drops the held ones, which are
all the bounces the stretch that tripped it made (their dead letters stay, and RetryDeadLetter
sends them once the relay is fixed: nothing listed refuses them). A job that ends, stops for
a shutdown, or ends with an error (it resumes at the next start, which sends no bounced message
again: dropped, they were lost for good), writes the held listings then (the bound not judged:
genuine bounces); a listing that fails is logged and the others still go. A crash
while some are held loses them (their dead letters stay): at most the last
`send_bounce_breaker_min` recipients' worth.
"""
from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable

from .logging import logger

__all__ = ["BounceBreaker"]

Listing = Callable[[], Awaitable[None]]


class BounceBreaker:
    def __init__(self, share: float, minimum: int):
        """`share`: the part of the last `minimum` recipients handed to the relay whose hard
        bounces trip it."""
        self.share, self.minimum = share, minimum
        self.handed = self.bounced = 0
        """Recipients handed to the relay, and those of them that hard-bounced, in the job."""
        self.tripped = False
        self._last: collections.deque[bool] = collections.deque()
        """Whether each of the last `minimum` handed hard-bounced."""
        self._last_bounced = 0
        """How many of `_last` did: kept as they come and go, not summed at each count (a
        sum over the window, on the loop, at every message of a job)."""
        self._held: collections.deque[tuple[int, Listing]] = collections.deque()
        """(`handed` when it bounced, its listing) not written yet, oldest first."""

    async def list_or_hold(self, listing: Listing) -> None:
        """A hard bounce's listing (`Delivery.send_or_bury`), held until `minimum` more were
        handed without a trip; dropped once tripped; written at once by a breaker that never
        trips (`share` 1: holding would only delay it, and lose it in a crash)."""
        if self.share >= 1:
            await _write(listing)
        elif not self.tripped:
            self._held.append((self.handed, listing))

    async def count(self, bounced: bool) -> bool:
        """Count a recipient handed to the relay (whether it hard-bounced); True when this one
        trips the breaker (then the held listings are dropped), else write the listings held
        for `minimum` recipients."""
        if self.tripped:
            return False
        self.handed += 1
        self.bounced += bounced
        self._last.append(bounced)
        self._last_bounced += bounced
        if len(self._last) > max(self.minimum, 1):
            self._last_bounced -= self._last.popleft()
        if self.handed >= self.minimum and self._last_bounced > self.share * len(self._last):
            self.tripped = True
            self._held.clear()
            return True
        while self._held and self._held[0][0] <= self.handed - self.minimum:
            await _write(self._held.popleft()[1])
        return False

    async def flush(self) -> None:
        """Write the held listings: the job ended or stops (the bound not judged on them)."""
        while self._held and not self.tripped:
            await _write(self._held.popleft()[1])


async def _write(listing: Listing) -> None:
    """One held listing. A failure is logged (its kind only: the text may hold the address)
    and the others still go: it ran in the lane's `count` (outside the recipient's own try,
    so it ended the job's TaskGroup) or in `flush` (a shutdown's, for every job at once).
    `Delivery._bounced` logs a TailorError itself; this is anything else."""
    try:
        await listing()
    except Exception as err:  # noqa: BLE001 - one listing never stops the job; no PII logged
        logger.error("a held bounce listing failed: %s", type(err).__name__)
