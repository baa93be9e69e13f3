"""A ComposeMessage with `deliver` and a `request_id` hands its message over once.

A repeat of the request (a retry whose answer was lost: the channel retries UNAVAILABLE, a
caller repeats after a timeout) is answered the decision logged for it (`campaigns.requests`);
sending that message again would reach the person twice (an email under the same Message-ID,
which many receivers do not drop; an SMS or push with nothing to drop it by), and a failed
delivery repeated would make its attempts, and its dead letter, again. So the delivery's state
is kept in the request's entry, in the store (any worker): the call that claims it
(`claim_delivery`) sends, the others are answered from it:

    sent          delivered (its `<channel>_sent` event recorded again: a no-op by event id,
                  or the one a crash lost before it was recorded)
    scheduled     the contact policy deferred it, and its send job is stored
                  (`jobs.SendJobs.schedule`): it goes at its send_at, from that job alone;
                  a repeat reads that job's record for how it ended (delivered, stopped,
                  refused by the adapter) while it is kept
    refused,      the error the first call answered (DeliveryRefused / DeliveryUnavailable,
    unavailable   with its reason and attempts); its dead letter is there to retry
    withheld      NoLongerAllowed (FAILED_PRECONDITION, its reason and the attempts that failed
                  before it): the contact policy refused it before a retry (the user opted out
                  during a backoff); nothing was kept
    sending       DeliveryInProgress (FAILED_PRECONDITION): the first call is still at it
    doubt         DeliveryInDoubt (FAILED_PRECONDITION): the first call stopped mid-send
                  (cut by the server's stop after its grace, or its claim lapsed: its
                  worker died; the call renews it every third of its time while it sends),
                  so it may have gone. Not for a caller giving up: its hand-over goes on
                  apart from the call (`handovers.Handovers`) and keeps its outcome

The state lives as long as the request id is remembered (`request_id_window_seconds`); a call
without a request id keeps none.
"""
from __future__ import annotations

import asyncio

from ..interfaces import VariantChooser
from .errors import (
    DeliveryInDoubt,
    DeliveryInProgress,
    DeliveryRefused,
    DeliveryUnavailable,
    NoLongerAllowed,
)

__all__ = ["Once"]


class Once:
    """The delivery of one request's message (`request`: its digest, `PendingChoice.request`)."""

    def __init__(self, campaigns: VariantChooser, request: bytes, decision_id: str,
                 channel: str):
        self.campaigns, self.request, self.decision_id = campaigns, request, decision_id
        self.channel = channel

    async def claim(self, until: float) -> float | None:
        """None when this call is to send (claimed until `until`); the handover time of the
        first call's delivery when it went, or the send_at it was scheduled for (a decision
        the policy deferred is always scheduled, one it did not always sent now: each call of
        a request takes the same way); raises the first call's outcome otherwise."""
        state = await self.campaigns.claim_delivery(self.request, self.decision_id, until)
        if state is None:
            return None
        if state["s"] in ("sent", "scheduled"):
            return state["t"]
        if state["s"] == "refused":
            raise DeliveryRefused(self.channel, state["r"], state["n"])
        if state["s"] == "unavailable":
            raise DeliveryUnavailable(self.channel, state["r"], state["n"])
        if state["s"] == "withheld":
            raise NoLongerAllowed(state["r"], state.get("n", 0))
        if state["s"] == "sending":
            raise DeliveryInProgress()
        raise DeliveryInDoubt()

    async def renew(self, until: float) -> bool:
        """Extend this call's claim to `until` (a send slower than the claim: behind the shared
        SMTP connection, a slow relay); False when the delivery is no longer being made."""
        return await self.campaigns.renew_delivery(self.request, self.decision_id, until)

    async def scheduled(self, send_at: float) -> None:
        """Keep that this call stored the message's send job, for `send_at`."""
        await asyncio.shield(self.campaigns.settle_delivery(
            self.request, self.decision_id, {"s": "scheduled", "t": send_at}))

    async def settle(self, handed: float | None, err: Exception | None) -> None:
        """Keep the outcome of this call's delivery: sent at `handed`, or kept as a dead letter
        (`err`), or neither (it stopped mid-send, cut by the server's stop: in doubt).
        Shielded: a stop cutting the send does not leave the claim to lapse into a doubt
        it need not be."""
        if handed is not None:
            state = {"s": "sent", "t": handed}
        elif isinstance(err, DeliveryRefused):
            state = {"s": "refused", "r": err.reason, "n": err.attempts}
        elif isinstance(err, DeliveryUnavailable):
            state = {"s": "unavailable", "r": err.reason, "n": err.attempts}
        elif isinstance(err, NoLongerAllowed):
            state = {"s": "withheld", "r": err.reason, "n": err.attempts}
        else:
            state = {"s": "doubt"}
        await asyncio.shield(self.campaigns.settle_delivery(self.request, self.decision_id,
                                                            state))
