"""Bounces and complaints of a decision's email, as one place records them: the relay's
synchronous hard bounce (`Delivery._bounced`) and the provider's report
(`server.http.delivery_events`); and the SMS provider's refusal of a number that takes no texts
(`sms_bounce`, `webhook.NUMBER_GONE_CODES`), the same way.

Each lists the address named, and records the user's `email_bounce` / `email_complaint` event
(`report_event`: id `tailor:<type>-<decision id>`, so both of one message count once), which caps and
attribution read and the suppression list follows to the user's `email` attribute of the
moment (`contact.Suppressions.on_events`). A bounce of an address the profile no longer holds
records no event: it would list the profile's new address, which did not bounce (a dead letter
to the old one retried, a message composed before the change, a report of an old message).
A provider's refusal saying the number's owner stopped the sender's texts (21610,
`record_opt_out`) stops the number as the owner's STOP reply does (`stops.SmsStops`) and
records the user's `unsubscribe` event.
The event of a profile stored under an id refused since its message went (a C1, bidirectional
or format character: `validation.refused_since`) is refused as every event of such an id but
an unsubscribe is: the address its profile holds is listed without it
(`Suppressions.list_held`), so a complaint or bounce of a message sent before is not lost.
"""
from __future__ import annotations

from ..contact.addresses import CHANNEL_KIND
from ..contact.suppression import SUPPRESSING_EVENTS
from ..interfaces import EventRecorder
from ..profiles import TrackedEvent
from ..validation import STOP_MARK, STOP_SENT, server_event_id

__all__ = ["report_event", "record_report", "opt_out_event", "record_opt_out"]


def report_event(event_type: str, campaign_id: str, decision_id: str, user_id: str,
                 at: float) -> TrackedEvent:
    """The `email_bounce` / `email_complaint` event of a decision's email (`sms_bounce` of its
    text), its id fixed by the type and the decision: the relay's refusal and the provider's
    report of the same message count once. On its type's channel."""
    channel = event_type.split("_", 1)[0]
    return TrackedEvent(server_event_id(event_type, decision_id), user_id, event_type, channel,
                        campaign_id, "", 0.0, at, {"decision_id": decision_id}, by_server=True)


async def record_report(events: EventRecorder, suppressions, event_type: str, address: str,
                        user_id: str | None, campaign_id: str, decision_id: str,
                        at: float) -> bool:
    """List `address` ("": not named) on `suppressions` (`contact.Suppressions`; None: not)
    and record `user_id`'s `report_event` (None: the message's user is not known), unless it is
    a bounce of an address their profile no longer holds (`Suppressions.holds`). `at`: the
    event's time, taken before the user was known to be there (a user erased since is not
    brought back: the ingestion refuses it as late). Whether the event was recorded."""
    kind, reason = SUPPRESSING_EVENTS[event_type]
    if address and suppressions is not None:
        await suppressions.add(kind, address, reason)
    if user_id is None or (address and reason == "bounce" and suppressions is not None
                           and not await suppressions.holds(user_id, kind, address)):
        return False
    tracked = await events.track([report_event(event_type, campaign_id, decision_id, user_id, at)])
    if not tracked.rejected:
        return True
    # refused: the user was erased since (no profile: nothing listed), or their id holds a
    # character refused since their message went (docs/privacy.md: only an unsubscribe of
    # such an id is taken); the address their profile holds is listed all the same
    if suppressions is not None:
        await suppressions.list_held(user_id, kind, reason, at)
    return False


def opt_out_event(channel: str, campaign_id: str, decision_id: str, user_id: str,
                  at: float, sent: float | None = None) -> TrackedEvent:
    """The `unsubscribe` event on `channel` of a provider's refusal saying the user opted out
    of the sender (an SMS STOP to the carrier: `webhook.OPTED_OUT_CODES`), its id fixed by the
    decision (a retried dead letter refused again counts once). It takes the path every
    unsubscribe event takes: the user opted out in the ingestion's transaction
    (`profiles.repository`), every other profile at the address after it
    (`messages.optout.SharedOptOut`); but it carries the server's mark (`validation.STOP_MARK`,
    kept in the stored event), so those opt-outs are a STOP's, which a START reopens, where a
    client's unsubscribe event is the user's withdrawal (`contact.consent.event_source`).
    `sent`: when the text went (`validation.STOP_SENT`, kept in the event: an opt-in since
    is left open by its opt-outs, in the ingestion and a replay alike)."""
    attributes = {"decision_id": decision_id, STOP_MARK: "carrier"}
    if sent is not None:
        attributes[STOP_SENT] = repr(sent)
    return TrackedEvent(server_event_id(f"unsubscribe-{channel}", decision_id), user_id,
                        "unsubscribe", channel, campaign_id, "", 0.0, at, attributes,
                        by_stop=True, by_server=True)


async def record_opt_out(events: EventRecorder, suppressions, channel: str, address: str,
                         user_id: str | None, campaign_id: str, decision_id: str,
                         at: float, stops=None, sent: float | None = None) -> bool:
    """Record a provider's refusal saying the user opted out of the sender on `channel`.

    On sms with `stops` (`stops.SmsStops`) the number is stopped first as a STOP texted alone
    from it stops it: every profile the index holds at `address` that holds it (when not
    named, the number `user_id` was last messaged at, `SmsStops.stop_texted`: not the one
    their profile holds, perhaps new, another profile's) has its marketing and transactional
    texts closed, since the carrier blocks every text to it until START (a 21610 closed
    marketing alone before, and receipts went on to a number that refuses them). Then
    `user_id`'s `opt_out_event` on `channel` is recorded (None: the message's user is not
    known), unless their profile holds another address than `address` ("": not named) on it
    (`Suppressions.holds`; `suppressions` None: not checked): a refusal for a number they no
    longer hold says nothing of the one they hold. The provider's refusal at the send
    (`Delivery`) and its later status report (`http.delivery_events`) alike. Whether the
    event was recorded.

    `sent`: when the reported text went (its `<channel>_sent` event's time; None: not known,
    or refused at the send, which is now). A 21610 tells the number was opted out when the
    text went, not when the report comes: a profile whose opt-in (a START, SetConsent) is
    dated after `sent` opted back in since, and the report is stale for it: neither the
    STOP nor the event's opt-out closes it (`opted_in_after`), though the event is recorded
    (its unsubscribe, for the record). A profile with no later opt-in is closed as before."""
    if channel == "sms" and stops is not None and address:
        await stops.stop(address, at, sent)
    elif channel == "sms" and stops is not None and user_id is not None:
        await stops.stop_texted(user_id, at, sent)
    if user_id is None or (address and suppressions is not None and not await
                           suppressions.holds(user_id, CHANNEL_KIND[channel], address)):
        return False
    tracked = await events.track([opt_out_event(channel, campaign_id, decision_id, user_id, at,
                                                 sent)])
    return not tracked.rejected  # refused: the user erased since, or no profile holds the id
