"""Campaign errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition, NotFound, ResourceExhausted

__all__ = ["CampaignNotFound", "DecisionNotFound", "CampaignArchived", "CampaignExists",
           "RewardConflict", "ImmutableField", "DecisionDamaged", "DecisionSuppressed",
           "PlanStreamTooLong",
           "PlanStreamsBusy", "PlanStreamIdle"]


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: str):
        super().__init__("campaign", campaign_id)


class DecisionNotFound(NotFound):
    def __init__(self, decision_id: str):
        super().__init__("decision", decision_id)


class CampaignExists(FailedPrecondition):
    def __init__(self, campaign_id: str):
        super().__init__(f"campaign {campaign_id!r} already exists (use UpdateCampaign)")


class CampaignArchived(FailedPrecondition):
    def __init__(self, campaign_id: str):
        super().__init__(f"campaign {campaign_id!r} is archived: it makes no more decisions")


class RewardConflict(FailedPrecondition):
    def __init__(self, decision_id: str, status: str, reward: float, wanted: float):
        if status == "default":  # `records.DEFAULT`: the window closed without a reward
            super().__init__(f"decision {decision_id!r} is past its reward window (the "
                             f"campaign's reward_window_seconds from its send), closed with the "
                             f"default reward {reward:g}; refusing {wanted:g}")
            return
        super().__init__(f"decision {decision_id!r} is already {status} with reward {reward:g}; "
                         f"refusing {wanted:g} (re-sending the same value is a no-op)")


class ImmutableField(FailedPrecondition):
    def __init__(self, field: str, why: str):
        super().__init__(f"{field} cannot change on update: {why} (create a new campaign)")


class DecisionDamaged(FailedPrecondition):
    """A decision whose stored record does not open or decode (`store.damaged`): it takes no
    reward, and no window of it closes."""

    def __init__(self, decision_id: str):
        super().__init__(f"decision {decision_id!r}: its record is damaged (does not open or "
                         "decode) and takes no reward; restore the store from a backup, or "
                         "erase its user (docs/operations.md, \"Damaged decision records\")")


class DecisionSuppressed(FailedPrecondition):
    def __init__(self, decision_id: str, reason: str):
        super().__init__(f"decision {decision_id!r} was suppressed ({reason}): nothing was sent, "
                         "so it takes no reward")


class PlanStreamTooLong(ResourceExhausted):
    def __init__(self, most: int):
        super().__init__(f"user_ids: more than {most} in one PlanCampaign stream "
                         "(Limits.plan_stream_users); split the audience over several streams")


class PlanStreamsBusy(ResourceExhausted):
    def __init__(self, most: int):
        super().__init__(f"this worker serves {most} PlanCampaign streams already "
                         "(Limits.plan_streams); retry once one ends")


class PlanStreamIdle(ResourceExhausted):
    def __init__(self, most: float):
        super().__init__(f"no PlanCampaign message for {most:g} s after the last answer "
                         "(Limits.plan_idle_seconds): the stream held a place of this worker's "
                         "plans; send the next batch sooner, or close the stream when done")
