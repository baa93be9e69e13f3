"""Message errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

__all__ = ["TemplateInvalid", "RenderFailed", "OverChannelLimit", "BadLink", "NotAMessageChannel",
           "LoggedOnAPlacement", "Transient", "Permanent", "DeliveryRefused",
           "DeliveryUnavailable", "DeadLetterNotFound", "RelayRefused",
           "BadAddress", "DeadLetterBusy", "NoLongerAllowed", "DeliveryInProgress",
           "DeliveryInDoubt", "MessageRecordDamaged", "DeadLetterDamaged", "SendRecordDamaged"]


class TemplateInvalid(InvalidArgument):
    """A variant's part does not compile, or names a variable the context never holds."""

    def __init__(self, variant: int, variant_id: str, part: str, line: int | None, problem: str):
        self.variant_id, self.part, self.line = variant_id, part, line
        at = f", line {line}" if line else ""
        super().__init__(f"variants[{variant}].content[{part!r}]",
                         f"template of variant {variant_id!r}, part {part!r}{at}: {problem}")


class RenderFailed(FailedPrecondition):
    """A template compiled but could not render for this user (e.g. an attribute it needs
    without a `default` filter). The message names variable and line, never the user's data."""

    def __init__(self, variant_id: str, part: str, line: int | None, problem: str):
        at = f", line {line}" if line else ""
        super().__init__(f"variant {variant_id!r}, part {part!r}{at}: {problem}")


class OverChannelLimit(FailedPrecondition):
    """A rendered part is longer than its channel allows (the `Limits` field `limit`, at most
    `most`). `reason` names variant, part and limit only: what a send counts its recipients
    under (`sending.failure`), one reason whatever each user's measure was."""

    def __init__(self, variant_id: str, part: str, limit: str, most: int, problem: str):
        self.part, self.limit, self.problem = part, limit, problem
        self.reason = f"variant {variant_id!r}, part {part!r}: over {limit} ({most})"
        super().__init__(f"variant {variant_id!r}, part {part!r}: {problem}")


class BadLink(FailedPrecondition):
    """A rendered link part (push `url`: the app opens it when the notification is tapped) is
    no link a client may open as is (`validation.link_problem`). The message never echoes it:
    it may hold the user's data."""

    def __init__(self, variant_id: str, part: str, problem: str):
        super().__init__(f"variant {variant_id!r}, part {part!r}: the rendered link {problem}")


class NotAMessageChannel(FailedPrecondition):
    def __init__(self, campaign_id: str, channel: str):
        super().__init__(f"campaign {campaign_id!r} is on channel {channel!r}: messages are "
                         "composed for email, sms and push campaigns only")


class LoggedOnAPlacement(FailedPrecondition):
    def __init__(self, decision_id: str, channel: str):
        super().__init__(f"the decision logged for this request_id ({decision_id}) chose channel "
                         f"{channel!r}, a placement, which carries no message (a ChooseVariant's "
                         "request_id reused?): compose with a new request_id")


class BadAddress(FailedPrecondition):
    """The user's address attribute is no address its channel can carry (an email address
    SMTP cannot: non-ASCII, whitespace, control characters, or none of name@domain; a phone
    number not in E.164, whose STOP reply could not be matched). `reason` (SendCampaign's
    failure reason) and the message never echo the address."""

    FORMS = {"email": "ASCII name@domain, no spaces or control characters, the domain's "
                      "labels joined by single dots",
             "sms": "E.164: + country code and number"}

    def __init__(self, channel: str, attribute: str):
        self.reason = f"bad {attribute} address"
        super().__init__(f"deliver: the user's `{attribute}` attribute is not an address the "
                         f"{channel} adapter can carry ({self.FORMS.get(channel, 'none')})")


class DeadLetterBusy(FailedPrecondition):
    """Another RetryDeadLetter of the same letter is running (in any worker: its claim is in
    the store): a second one would send the message twice."""

    def __init__(self, letter_id: str):
        super().__init__(f"dead letter {letter_id!r} is being retried by another call; list the "
                         "dead letters once it is done")


class NoLongerAllowed(FailedPrecondition):
    """A stored message that may not go now: the contact policy refuses it (the user opted
    out, was erased, or the address was put on the suppression list, since it was composed),
    its campaign was archived, or (between a send job's retries) the job was cancelled. No
    dead letter is made of it (RetryDeadLetter would send it after all); a dead letter that
    RetryDeadLetter finds refused stays, with the reason (a renewed opt-in may allow it)."""

    def __init__(self, reason: str, attempts: int = 0):
        """`attempts`: those that failed before the refusal (a retry's; 0: none was made), any
        of which may have reached the adapter (a timeout after the relay took the message)."""
        self.reason, self.attempts = reason, attempts
        tried = (f"; {attempts} earlier attempt(s) failed and may have reached the adapter"
                 if attempts else "")
        super().__init__(f"deliver: the contact policy refuses this message now ({reason}){tried}")


class DeliveryInProgress(FailedPrecondition):
    """A ComposeMessage repeating a request whose message an earlier call is still handing
    over: sending it too would make two messages."""

    def __init__(self):
        super().__init__("deliver: an earlier call with this request_id is still being "
                         "delivered; repeat the call once it is done for its outcome")


class DeliveryInDoubt(FailedPrecondition):
    """A ComposeMessage repeating a request whose earlier call stopped while its message was
    being handed over (the server's stop cut it after its grace, or its worker died; a caller
    giving up does not stop it: `handovers`): it may have gone, so it is not sent again."""

    def __init__(self):
        super().__init__("deliver: an earlier call with this request_id stopped while its "
                         "message was being handed over; whether it went is not known, so it "
                         "is not sent again (compose with a new request_id to send another)")


class ScheduledNotSent(FailedPrecondition):
    """A repeat of a ComposeMessage request whose deferred message did not go at its send_at
    (the adapter refused it or every retry failed: a dead letter keeps it; or it could not be
    rendered again): the repeat says so rather than `scheduled`."""

    def __init__(self, channel: str, reason: str):
        super().__init__(f"deliver: the {channel} message scheduled by this request_id did not "
                         f"go at its send_at ({reason})")


class Transient(Exception):
    """An adapter's failure worth retrying (an SMTP 4xx reply, a webhook's 5xx or 429, a
    timeout, a refused or dropped connection). `reason` is short and names no one."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Permanent(Exception):
    """An adapter's failure that a retry would not change (an SMTP 5xx reply, a webhook's 4xx).
    `bounced`: the relay said the address itself does not take mail (a hard bounce);
    `opted_out`: the provider said the address's owner opted out of the sender (an SMS STOP
    to the carrier, `webhook.OPTED_OUT_CODES`)."""

    def __init__(self, reason: str, bounced: bool = False, opted_out: bool = False):
        super().__init__(reason)
        self.reason, self.bounced, self.opted_out = reason, bounced, opted_out


class DeliveryRefused(FailedPrecondition):
    """The relay or provider refused the message for good; it is kept as a dead letter.
    `bounced`: `Permanent.bounced` (the address is then put on the suppression list);
    `opted_out`: `Permanent.opted_out` (the user's opt-out is then recorded)."""

    def __init__(self, channel: str, reason: str, attempts: int, bounced: bool = False,
                 opted_out: bool = False):
        self.reason, self.attempts, self.bounced = reason, attempts, bounced
        self.opted_out = opted_out
        super().__init__(f"deliver: the {channel} adapter refused the message ({reason})")


class RelayRefused(FailedPrecondition):
    """The SMTP relay refused Tailor's own session (its login, say): no email would go."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"send: the SMTP relay refused Tailor's session ({reason}): check "
                         "smtp_username and smtp_password (TAILOR_SMTP_USERNAME, "
                         "TAILOR_SMTP_PASSWORD), and smtp_security; no job was started")


class DeliveryUnavailable(Unavailable):
    """Every attempt failed transiently; the message is kept as a dead letter."""

    def __init__(self, channel: str, reason: str, attempts: int):
        self.reason, self.attempts = reason, attempts
        super().__init__(f"deliver: the {channel} adapter failed {attempts} time(s), last: {reason}")


class DeadLetterNotFound(NotFound):
    def __init__(self, letter_id: str):
        super().__init__("dead letter", letter_id)


_REPAIR = ("restore the store from a backup, or erase the user (docs/operations.md, \"Damaged "
           "dead letters and send records\")")


class MessageRecordDamaged(FailedPrecondition):
    """One of a user's dead letters or send records does not open or decode (`store.damaged`):
    an access export may leave nothing out, so it refuses (naming no user or address)."""

    def __init__(self, what: str):
        super().__init__(f"one of the user's {what} is damaged (does not open or decode); "
                         + _REPAIR)


class DeadLetterDamaged(FailedPrecondition):
    """RetryDeadLetter of a letter that does not open or decode: what it would send is unknown."""

    def __init__(self, letter_id: str):
        super().__init__(f"dead letter {letter_id!r}: its record is damaged (does not open or "
                         "decode), so it cannot be retried; " + _REPAIR.replace(
                             "the user", "its user"))


class SendRecordDamaged(FailedPrecondition):
    """CancelSend of a deferred message whose recipient's record does not open or decode: its
    state and decision are unknown (the job, when due, leaves it out: nothing goes)."""

    def __init__(self, send_id: str):
        super().__init__(f"send {send_id!r}: its recipient's record is damaged (does not open "
                         "or decode), so it cannot be cancelled (nor will it be sent: a job "
                         "leaves out a record it cannot read); " + _REPAIR.replace(
                             "the user", "its recipient"))
