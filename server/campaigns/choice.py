"""A decision as callers see it (`Choice`), and one whose record is still being committed
(`PendingChoice`).

A decision is answered only after its record is committed (fsync on): the frequency caps are
checked in that write transaction, so a decision over a cap comes back from the commit as
suppressed, with the cap as its reason, or, when its caller let the writer fall back on the
other channels the contact policy allowed (ChooseVariant), on another channel
(`records.Fallback`). Everything else about the decision (id, arm, variant, send time) is known
before the commit. `Campaigns.decide` queues the record and returns
a `PendingChoice` at once, so a caller with work to do on the chosen variant (ComposeMessage
renders it) does that work while the commit is in flight, then awaits `logged()` before it
answers; `Campaigns.choose` (ChooseVariant) is `decide(...)` then `logged()` at once.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from kernels import bandits as B

from ..contact import damage as contact_damage
from ..contact.caps import CONTACT_HISTORY_DAMAGED
from ..profiles import damage as profile_damage
from .records import NO_ARM, Fallback

__all__ = ["Choice", "PendingChoice", "report_refused"]


class Choice(NamedTuple):
    """One decision as the servicer answers it (a NamedTuple: one per ChooseVariant call, built
    in a third of a frozen dataclass's time)."""

    decision_id: str
    arm: int
    propensity: float
    variant_id: str
    content: dict
    suppressed: bool = False
    reason: str = ""
    channel: str = ""
    send_at: float = 0.0

    @property
    def holdout(self) -> bool:
        return self.arm == B.HOLDOUT

    def capped(self, reason: str) -> Choice:
        """This decision refused by a frequency cap (`reason`): no arm, no variant."""
        return Choice(self.decision_id, NO_ARM, 0.0, "", {}, True, reason, self.channel,
                      self.send_at)


class PendingChoice:
    """A decision whose record is queued for the decision log (see the module docstring).

    `choice` is the decision as it stands before the commit: final unless the commit finds it
    over a frequency cap (suppressed, or on a fallback channel; a decision the contact policy
    already suppressed stays as it is).
    `logged()` waits for the commit and returns the final `Choice`; the decision is counted
    (`count(campaign_id, outcome)`) then. A caller that gives up before awaiting it calls
    `cancel()` (the record is then left out if its batch has not started yet). `profile`:
    (feature state, meta record, live seen-set or None) of the user as the contact policy read
    them, when the caller asked for them (`Campaigns.decide(profile=True)`, `seen=True` for the
    seen-set) and the policy read the profile; else None. `request`: the digest of the
    caller's request id (b"": none); when the writer finds it answered before, `logged()`
    returns that decision (`replay` of its logged record) instead of this one (not counted).
    `user_id`: the decision's user, reported (`report_refused`) when the commit refuses the
    decision because that user's contact history or meta record is damaged.
    """

    __slots__ = ("campaign_id", "choice", "profile", "request", "_committed", "_outcome",
                 "_count", "_replay", "_user_id")

    def __init__(self, campaign_id: str, choice: Choice, committed: asyncio.Future,
                 outcome: str, count: Callable[[str, str], None], profile: tuple | None = None,
                 request: bytes = b"", replay: Callable[[dict], Choice] | None = None,
                 user_id: str = ""):
        self.campaign_id, self.choice, self.profile = campaign_id, choice, profile
        self._committed, self._outcome, self._count = committed, outcome, count
        self.request, self._replay, self._user_id = request, replay, user_id

    async def logged(self, on_cancel: Callable[[asyncio.Future], None] | None = None) -> Choice:
        """The decision once its record is committed (suppressed if over a cap). Cancelled
        meanwhile: the commit is cancelled (the record is left out if its batch has not started
        yet), or, with `on_cancel`, left running and its future handed to `on_cancel`."""
        if on_cancel is None:
            reason = await self._committed
        else:
            try:
                reason = await asyncio.shield(self._committed)
            except asyncio.CancelledError:
                on_cancel(self._committed)
                raise
        choice = self.choice
        if reason.__class__ is dict:  # a repeated request id: the decision logged for it
            return self._replay(reason)
        if reason.__class__ is Fallback:  # over its channel's caps, logged on another
            self._count(self.campaign_id, self._outcome)
            return choice._replace(channel=reason.channel)
        if reason and not choice.suppressed:  # over a frequency cap, found where it was logged
            report_refused(reason, self._user_id)
            self._count(self.campaign_id, "suppressed")
            return choice.capped(reason)
        self._count(self.campaign_id, self._outcome)
        return choice

    @property
    def committed(self) -> asyncio.Future:
        """The commit: its answer is "" (logged pending), a `Fallback` (logged pending on
        another channel), a suppression reason, or the record a repeated request id was
        answered (a dict). For a caller that gave up after queueing
        the decision, to withdraw it once it is logged (`Campaigns.abandon`)."""
        return self._committed

    def cancel(self) -> None:
        """Give up on the decision (e.g. the caller was cancelled before awaiting `logged`)."""
        if not self._committed.cancel() and not self._committed.cancelled():
            self._committed.exception()  # done already: a failed commit is not left unread


def report_refused(reason: str, user_id: str) -> None:
    """Report the damage behind a decision the commit refused for `reason`: its user's contact
    history (`CONTACT_HISTORY_DAMAGED`) or meta record (`PROFILE_DAMAGED`, found by the
    writer's re-check: `recheck`) unreadable. The writer process has no metrics: its answers
    say."""
    if reason == CONTACT_HISTORY_DAMAGED:
        contact_damage.report_damaged([user_id], contact_damage.DECISION)
    elif reason == profile_damage.PROFILE_DAMAGED:
        profile_damage.report_damaged([user_id], profile_damage.META, profile_damage.DECISION)
