"""Hand a composed message to its channel's adapter and record the send.

Only email has an adapter (SMTP, `smtp.SmtpSender`). Each delivered message records an
`email_sent` event carrying the decision id (event id `sent-<decision id>`, so a repeated
delivery of one decision is recorded once), which caps, rewards and attribution read.
SendCampaign uses the parts separately: `flatten` (at composition), `relay` (the bytes stored
before delivery), and `record_sent` (its events, in batches).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from email.policy import compat32
from email.utils import parseaddr

from ..errors import FailedPrecondition
from ..interfaces import EventRecorder
from ..profiles import TrackedEvent
from .smtp import SmtpSender, build_email

__all__ = ["EmailDelivery", "sent_event"]

_WIRE = compat32.clone(linesep="\r\n", max_line_length=998)
"""CRLF lines; headers folded only past RFC 5322's hard limit (a List-Unsubscribe link folded
at 78 would come back with a leading space from some parsers)."""


def sent_event(campaign_id: str, decision_id: str, user_id: str, at: float) -> TrackedEvent:
    """The `email_sent` event of a delivered message (its id fixed by the decision)."""
    return TrackedEvent(f"sent-{decision_id}", user_id, "email_sent", "email", campaign_id, "",
                        0.0, at, {"decision_id": decision_id})


class EmailDelivery:
    def __init__(self, smtp: SmtpSender | None, sender: str, events: EventRecorder):
        self.smtp, self.sender, self.events = smtp, sender, events

    async def deliver(self, message, user_id: str, attributes) -> bool:
        """Send `message` now; False (nothing sent) when it is scheduled for later."""
        if message.channel != "email":
            raise FailedPrecondition(f"deliver: no delivery adapter for {message.channel} yet "
                                     "(email only)")
        if self.smtp is None:
            raise FailedPrecondition("deliver: no SMTP relay configured (--smtp-host)")
        if message.send_at > time.time():
            return False  # the contact policy deferred it (quiet hours): not now
        to = attributes.get("email", "")
        if not to:
            raise FailedPrecondition("deliver: the user has no `email` attribute")
        await self.send_email(message, user_id, to)
        return True

    async def send_email(self, message, user_id: str, to: str) -> None:
        """Hand `message` to the relay now and record its `email_sent` event (`deliver` has
        checked that there is a relay)."""
        await self.relay(to, self.flatten(message, to), self.smtp)
        await self.events.track([sent_event(message.campaign_id, message.decision_id, user_id,
                                            time.time())])

    def flatten(self, message, to: str) -> bytes:
        """The message as the bytes the relay gets."""
        return build_email(message, to, self.sender).as_bytes(policy=_WIRE)

    def connection(self) -> SmtpSender:
        """Another connection to the relay (SendCampaign's lanes; the caller closes it)."""
        if self.smtp is None:
            raise FailedPrecondition("deliver: no SMTP relay configured (--smtp-host)")
        return SmtpSender(self.smtp.config)

    async def relay(self, to: str, data: bytes, via: SmtpSender) -> None:
        """Hand flattened bytes to the relay over `via` (no event: see `record_sent`)."""
        await via.send_bytes(parseaddr(self.sender)[1], to, data)

    async def record_sent(self, events: Sequence[TrackedEvent], batch: int) -> None:
        for at in range(0, len(events), batch):
            await self.events.track(events[at:at + batch])

    async def close(self) -> None:
        if self.smtp is not None:
            await self.smtp.close()
