"""CancelSend inside a running send job (`sending.SendJob`): how its runner learns of the
cancel and how it settles what is left.

CancelSend stamps the job's record `cancelled` (`sends.SendRecords.cancel`); the process
running the job is told at once when it took the call (`SendJob.cancel`), and otherwise finds
the stamp by reading the record every `CANCEL_POLL` seconds (`Cancellation.watch`). From then
nothing more is composed and no message starts; once every lane has ended (those being handed
over end as they end), the recipients not settled are settled suppressed `cancelled`, a chunk
of `SETTLE_CHUNK` a write transaction, each chunk's decisions withdrawn right after its write
(`Cancellation.settle`). A decision withdrawn for a stop the marketer made (`STANDING`) keeps
that reason (`withdrawal`), which stands as the answer to a repeat of its request.
"""
from __future__ import annotations

import asyncio

from .sends import ARCHIVED, CANCELLED, SUPPRESSED, Recipient, SendRecords

__all__ = ["Cancellation", "CANCEL_POLL", "SETTLE_CHUNK", "STANDING", "withdrawal"]

CANCEL_POLL = 1.0
"""Seconds between a running job's reads of its record for a CancelSend another process took."""
SETTLE_CHUNK = 1000
"""Recipients a cancelled job settles in one write transaction."""
STANDING = frozenset({ARCHIVED, CANCELLED})
"""Stops the marketer made: a decision withdrawn for one of these keeps it as its reason, so a
repeat of a ComposeMessage's request is answered it (suppressed) instead of deciding anew and
sending the message after all (`VariantChooser.withdraw`)."""


def withdrawal(decision: str, reason: str = ""):
    """The item `VariantChooser.withdraw` takes for `decision`, settled suppressed `reason`
    (`STANDING` ones stand as the answer to a repeat of its request)."""
    return (decision, None, reason) if reason in STANDING else decision


class Cancellation:
    def __init__(self, records: SendRecords, send_id: str, lanes: int, on_cancel):
        """A running job's cancel: `lanes` deliver its messages; `on_cancel()`: the job's
        `cancel`, called when `watch` finds the stamp (or the record gone)."""
        self.records, self.send_id, self.on_cancel = records, send_id, on_cancel
        self.requested = asyncio.Event()
        """CancelSend: nothing more is composed or starts going."""
        self._drained = asyncio.Event()
        """Every lane ended (`watch` stops)."""
        self._lanes_open = lanes
        self.reason = CANCELLED
        """What the recipients left are settled suppressed as: `cancelled`, or the stop's own
        reason (`BOUNCE_BREAKER`)."""

    def lane_ended(self) -> None:
        self._lanes_open -= 1
        if not self._lanes_open:
            self._drained.set()

    async def watch(self) -> None:
        """Read the job's record every `CANCEL_POLL` seconds until the lanes end: a CancelSend
        taken by another process (or its record gone) cancels the job here."""
        while not self._drained.is_set():
            try:
                await asyncio.wait_for(self._drained.wait(), CANCEL_POLL)
            except TimeoutError:
                job = await asyncio.to_thread(self.records.job, self.send_id)
                if job is None or job.get("cancelled"):
                    self.on_cancel()

    async def settle(self, rest: list[Recipient], withdraw) -> None:
        """Settle `rest` (the recipients not settled, each with its logged decision, if any)
        suppressed `reason` (`cancelled`) and withdraw their decisions (`withdraw`: nobody received those
        messages), in chunks of `SETTLE_CHUNK`, each chunk's decisions right after its write:
        a failure midway (the job resumes at the next start, which no longer sees the settled
        ones) leaves none pending, a kill at most the chunk between its write and its
        withdrawal (before, every chunk written)."""
        for r in rest:
            r.state, r.reason = SUPPRESSED, self.reason
        for at in range(0, len(rest), SETTLE_CHUNK):
            chunk = rest[at:at + SETTLE_CHUNK]
            await asyncio.to_thread(self.records.update, self.send_id, chunk)
            await withdraw([withdrawal(r.decision, self.reason) for r in chunk if r.decision])
