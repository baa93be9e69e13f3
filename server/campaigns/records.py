"""`DecisionRecord`: one ChooseVariant decision, as the handler logs it.

The handler builds it; the campaigns writer process writes it (`CampaignRepository.log_decisions`,
through `decision_codec.encode_record`) packed, every field but the caps and `transactional`:
the decision log, which the reward paths and `export` read back as a dict (with the
`rewarded_at` / `event_reward` they add).

It crosses to the writer process as a plain tuple (`tuple(record)`, rebuilt with
`DecisionRecord._make`): pickle writes a tuple in C, with no class reference and no
Python-level `__getnewargs__`. Built with positional fields (keyword binding of 13 fields costs
about 2 us), a record on the wire costs the event loop no more than the 13-key dict it replaced
(build + pickle per decision, batches of 1/16/64: 6.8/3.8/3.7 us vs 9.5/3.9/3.8 us for the dict;
pickled as itself, a NamedTuple costs 15/9.5/7.6 us) and about half the bytes.

The contact-policy fields (channel, send_at, reason, caps) have defaults, so a record built with
the first 13 fields stays valid; records stored before them lack those keys (readers use
`.get`).

`RewardRequest` / `RewardOutcome`: a reward on its way to the same writer process, and what it
resolved.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kernels.bandits import HOLDOUT

from ..contact.caps import CONTACT_CHANNELS, Admission
from .decision_codec import encode_record

__all__ = ["DecisionRecord", "Fallback", "RewardRequest", "RewardOutcome", "PENDING", "REWARDED",
           "DEFAULT", "SUPPRESSED", "NO_ARM", "WITHDRAWN", "DUPLICATE", "ERASED", "logged_pending"]

PENDING, REWARDED, DEFAULT, SUPPRESSED = "pending", "rewarded", "default", "suppressed"
"""A decision's status: waiting for its reward, rewarded, closed with the default reward, or
refused by the contact policy (which takes no reward)."""
NO_ARM = -2
"""The arm of a suppressed decision (no variant chosen or sent)."""
WITHDRAWN = "withdrawn"
"""The reason of a suppressed decision that was logged but never answered (a PlanCampaign
stream that ended first: `plan`, or a ChooseVariant whose caller gave up); it counted toward
nothing."""
ERASED = "erased"
"""The reason of a decision made before its user's erasure and committed after it: answered
suppressed, stored nowhere (`repository.log_decisions`)."""
DUPLICATE = "duplicate"
"""The reason of a PlanCampaign user the stream named before (decided at their first mention:
`plan`)."""


class DecisionRecord(NamedTuple):
    decision_id: str
    campaign_id: str
    user_id: str
    timestamp: float
    """Unix seconds of the decision."""
    arm: int
    """The variant's index, or `kernels.bandits.HOLDOUT`."""
    propensity: float
    """The probability the policy had of choosing `arm`."""
    reward: float | None
    """None until the decision is rewarded."""
    context: list[float]
    """The campaign's context features (its `context_features`, in order)."""
    position: int
    variant_id: str
    """"" for a holdout."""
    status: str
    """`PENDING` when logged (`SUPPRESSED` when the contact policy refused it)."""
    deadline: float
    """Unix seconds at which the reward window closes."""
    linear: bool
    """Whether the policy is linear (rewards then update it with the context)."""
    channel: str = ""
    """The channel the contact policy chose."""
    send_at: float = 0.0
    """When to send (unix seconds; 0 = now)."""
    reason: str = ""
    """Why the decision is suppressed (`status` "suppressed"); "" otherwise."""
    caps: tuple = ()
    """Frequency caps the writer enforces (`contact.caps.Cap` tuples); not stored."""
    channel_propensity: float = 1.0
    """Probability the contact policy had of choosing `channel` (1: no choice)."""
    send_at_propensity: float = 1.0
    """Probability the contact policy had of choosing `send_at`'s slot (1: no send window)."""
    transactional: bool = False
    """Whether the campaign is transactional (its contact is left out of the global, marketing
    caps); not stored."""
    request: bytes = b""
    """The digests of the request id the decision answers (`requests.request_digest`: keyed,
    then unkeyed; b"": none); not stored: the writer answers a repeat of it with the decision
    logged for it."""
    choices: tuple = ()
    """(channel, caps, propensity) of every channel the contact policy allowed, `channel`
    included, in the campaign's order (`cache.Entry.choices`), for the writer to fall back on
    when `channel` is over its caps at the commit, or refused there by the contact policy
    (`recheck`) (`contact.caps.Admission.settled`); not stored."""
    recheck: tuple = ()
    """What the writer checks again of the contact policy at the commit (consent, listed
    addresses: `recheck.recheck_of`; () for nothing); not stored."""

    def suppressed(self, reason: str) -> DecisionRecord:
        """This decision refused by the contact policy: no arm, variant or propensity."""
        return self._replace(arm=NO_ARM, propensity=0.0, variant_id="", status=SUPPRESSED,
                             reason=reason, caps=(), choices=(), recheck=())

    def to_bytes(self) -> bytes:
        """The stored bytes (record kind "decision", `decision_codec`): the fields but caps."""
        return encode_record(self)

    def admission(self) -> Admission | None:
        """What the frequency-cap check of this decision needs (None: not a contact)."""
        if self.status != PENDING or self.channel not in CONTACT_CHANNELS:
            return None
        return Admission(self.user_id, self.channel, self.send_at or self.timestamp,
                         self.decision_id, self.caps, self.arm != HOLDOUT, self.transactional,
                         self.channel_propensity, self.choices)

    def settled(self, admitted: Admission) -> DecisionRecord:
        """This decision on the channel, with the propensity, its admission settled on."""
        return self._replace(channel=admitted.channel, caps=admitted.caps,
                             channel_propensity=admitted.propensity, choices=())


class Fallback(NamedTuple):
    """The writer's answer for a decision whose channel or channel propensity the caps changed
    at the commit (`DecisionRecord.choices`): logged pending, as decided, on `channel`."""

    channel: str
    channel_propensity: float


def logged_pending(answer) -> bool:
    """Whether the writer's answer for one decision (`CampaignRepository.log_decisions`: "",
    a suppression reason, a `Fallback`, or a repeated request's record) says it was logged
    pending (to withdraw when nobody received it)."""
    return not answer or answer.__class__ is Fallback


@dataclass(frozen=True)
class RewardRequest:
    """An explicit reward (`event_type` empty) or a tracked event naming a decision."""

    decision_id: str
    reward: float = 0.0
    user_id: str = ""
    event_type: str = ""
    event_value: float = 0.0


@dataclass(frozen=True)
class RewardOutcome:
    campaign_id: str
    variant_id: str
    duplicate: bool = False
