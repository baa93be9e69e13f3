"""ComposeMessage's hand-overs, run apart from the call that asked for them.

A deliver's caller may give up mid-send: its deadline passes, it cancels, its connection
drops. gRPC then cancels the call's task, and before, the hand-over with it: the SMTP session
was dropped while the relay held the message (it kept it: the 250 was on its way), and the
request's delivery (`once.Once`) was kept in doubt, so a repeat of the request id was answered
that whether it went is not known, and its caller, told so, might send it again under a new
one. `Handovers.run` runs the hand-over as a task of its own, which the caller's cancellation
does not reach: it ends as it would have (bounded by the adapter's timeouts and the retries),
its outcome is kept against the request id (sent, refused, unavailable, withheld), and a
repeat is answered that, without a second send. RetryDeadLetter's retries run the same way:
cut, a retry wrote its letter back while the relay kept the message, and the next retry sent
it again.

A stopping server gives the hand-overs under way the calls' grace (`close`, beside the
calls' own), then cancels those still going, which are kept in doubt as before: their
message may have gone. Doubt stays for what is unknown: a hand-over cut by the stop, or by
the death of its process (its claim lapses).

`tailor_detached_handovers` is how many run apart now, `tailor_handovers_at_bound_total` how
many ran as part of their call because `most` already ran apart: before, nothing said the
bound was reached, and an SRE saw only "not known" answers to repeats.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from ..errors import TailorError
from ..metrics import DETACHED_HANDOVERS, HANDOVERS_AT_BOUND
from .logging import logger

__all__ = ["Handovers"]

T = TypeVar("T")


class Handovers:
    """The hand-overs under way in this process, at most `most` (`detached_deliveries`);
    `close` ends them within a bound."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._going: set[asyncio.Future] = set()
        self._closing = False

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` (a hand-over, from its claim to its kept outcome) as a task its caller
        giving up does not cancel; its outcome (or error) goes to the caller while it waits,
        and, once the caller is gone, its error's kind to the log. Once closing, `work` is
        awaited as part of the call (cancelled with it, at the end of the grace), as it is
        while `most` are under way."""
        if self._closing or len(self._going) >= self.most:
            if not self._closing:
                HANDOVERS_AT_BOUND.inc()
            return await work
        task = asyncio.ensure_future(work)
        self._going.add(task)
        DETACHED_HANDOVERS.inc()
        task.add_done_callback(self._ended)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # (also when it ended meanwhile: its error is read)
            task.add_done_callback(_unanswered)
            raise

    def _ended(self, task: asyncio.Future) -> None:
        self._going.discard(task)
        DETACHED_HANDOVERS.dec()

    async def close(self, wait: float) -> None:
        """Give the hand-overs under way (and those calls start meanwhile) `wait` seconds to
        end, then cancel the rest (their outcome kept in doubt) and wait until they kept it;
        how many it cut is logged (a warning: before, nothing said that messages were left in
        doubt). One a call starts later goes with the call (gRPC cancels those at the same
        time)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while self._going and (left := until - loop.time()) > 0:
            await asyncio.wait(list(self._going), timeout=left)
        self._closing = True
        going = list(self._going)
        cut = sum(task.cancel() for task in going)
        await asyncio.gather(*going, return_exceptions=True)
        if cut:  # else nothing says that messages were left in doubt (no id, no address)
            logger.warning("the stop cut %d hand-over(s) still going after its grace (%g s): "
                           "a ComposeMessage repeating one's request_id is answered that "
                           "whether it went is not known; a dead letter's retry is written "
                           "back, to retry", cut, wait)


def _unanswered(task: asyncio.Future) -> None:
    """Log how a hand-over whose caller had gone ended, when it raised: a `TailorError` (a
    refusal, the relay down; its outcome kept against its request id) by its kind only (its
    text may name an address); any other error (a defect) as the rpc layer logs one its
    caller hears as INTERNAL (`errors.abort`): an error, with its traceback. Before, that was
    at info, its kind alone."""
    if task.cancelled() or (err := task.exception()) is None:
        return
    if isinstance(err, TailorError):
        logger.info("a hand-over whose caller had gone ended: %s", type(err).__name__)
    else:
        logger.error("a hand-over whose caller had gone failed", exc_info=err)
