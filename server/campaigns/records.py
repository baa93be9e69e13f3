"""`DecisionRecord`: one ChooseVariant decision, as the handler logs it.

The handler builds it; the campaigns writer process writes it (`CampaignRepository.log_decisions`,
through `encode_decision`) as the JSON object of its fields, in field order: the decision log,
which the reward paths and `export` read back as a dict (with the `rewarded_at` / `event_reward`
they add).

It crosses to the writer process as a plain tuple (`tuple(record)`, rebuilt with
`DecisionRecord._make`): pickle writes a tuple in C, with no class reference and no
Python-level `__getnewargs__`. Built with positional fields (keyword binding of 13 fields costs
about 2 us), a record on the wire costs the event loop no more than the 13-key dict it replaced
(build + pickle per decision, batches of 1/16/64: 6.8/3.8/3.7 us vs 9.5/3.9/3.8 us for the dict;
pickled as itself, a NamedTuple costs 15/9.5/7.6 us) and about half the bytes.

The contact-policy fields (channel, send_at, reason, caps) have defaults, so a record built with
the first 13 fields stays valid; records stored before them lack those keys (readers use
`.get`).
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["DecisionRecord"]


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
    """`repository.PENDING` when logged."""
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
