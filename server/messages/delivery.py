"""Hand a composed message to its channel's adapter and record the send.

Only email has an adapter (SMTP, `smtp.SmtpSender`). Each delivered message records an
`email_sent` event carrying the decision id (event id `sent-<decision id>`, so a repeated
delivery of one decision is recorded once), which caps, rewards and attribution read.
"""
from __future__ import annotations

import time

from ..errors import FailedPrecondition
from ..interfaces import EventRecorder
from ..profiles import TrackedEvent
from .smtp import SmtpSender, build_email

__all__ = ["EmailDelivery"]


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
        """Hand `message` to the relay now and record its `email_sent` event."""
        if self.smtp is None:
            raise FailedPrecondition("deliver: no SMTP relay configured (--smtp-host)")
        await self.smtp.send(build_email(message, to, self.sender))
        await self.events.track([TrackedEvent(
            f"sent-{message.decision_id}", user_id, "email_sent", "email", message.campaign_id, "",
            0.0, time.time(), {"decision_id": message.decision_id})])

    async def close(self) -> None:
        if self.smtp is not None:
            await self.smtp.close()
