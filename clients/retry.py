"""Retries of UNAVAILABLE, done by gRPC itself from the channel's service config: the channel
retries with jittered exponential backoff within each call's deadline, and never once a reply
has started. A call the server handled may still be repeated: an UNAVAILABLE status with no
reply before it (the campaigns writer lost a batch it may have committed, a proxy dropped the
answer, a relay down when a message was handed over) is retried. The decision calls
(ChooseVariant, ComposeMessage) carry a `request_id` for that: the retry resends it and the
server answers the decision logged for it (`server.campaigns.requests`; with `deliver`, the
first call's delivery outcome, without sending again: `server.messages.once`); SendCampaign's
`request_id` names its job, so a retry is answered that job's progress; TrackEvents' event ids
dedupe the same way, and Recommend's `x-request-id` (the clients send a new one a call) makes a
retried answer showing the same items one impression, not two (`server.impressions.repeats`);
UpsertItems and RemoveItems repeated store the same items again (the catalog's sequence moves
once more).
Not retried: streaming calls from the client (PushBundle,
TrackEventStream, AttributeStream, PlanCampaign: gRPC could replay only the first 256 KiB it
buffers, and a plan answered in part is already logged), RetryDeadLetter, which sends with
no key to dedupe it (answered UNAVAILABLE after its attempts, with the relay down, a retry
makes them again), and the calls whose repeat is not the same call: Rollback (a repeat goes
one version further back than the first went),
PromoteCanary and AbortCanary (a repeat is refused: "no canary is running"), CreateCampaign
(a repeat is refused: "already exists"). Those end UNAVAILABLE when their answer is lost: look
(`status`, `campaign list`) before making them again."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import grpc

__all__ = ["RetryPolicy", "channel_options"]

SERVICES = ("RecommendationService", "ModelAdminService", "DiagnosticsService", "ProfileService",
            "AttributionService", "CampaignService", "AuditService", "MessagingService",
            "CatalogService")
NOT_RETRIED = (("ModelAdminService", "PushBundle"), ("ProfileService", "TrackEventStream"),
               ("AttributionService", "AttributeStream"), ("CampaignService", "PlanCampaign"),
               ("MessagingService", "RetryDeadLetter"), ("ModelAdminService", "Rollback"),
               ("ModelAdminService", "PromoteCanary"), ("ModelAdminService", "AbortCanary"),
               ("CampaignService", "CreateCampaign"))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    """Calls in all, the first included (gRPC allows at most 5)."""
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    retry_on: frozenset = field(default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE}))

    def service_config(self) -> str:
        """The policy as a gRPC service config (JSON) for every Tailor service and health."""
        names = [{"service": f"tailor.v1.{s}"} for s in SERVICES] + [{"service": "grpc.health.v1.Health"}]
        retry = {"name": names, "retryPolicy": {
            "maxAttempts": self.attempts, "initialBackoff": f"{self.initial_backoff}s",
            "maxBackoff": f"{self.max_backoff}s", "backoffMultiplier": 2,
            "retryableStatusCodes": sorted(code.name for code in self.retry_on)}}
        # a method named on its own overrides its service's entry: these get no retryPolicy
        once = {"name": [{"service": f"tailor.v1.{s}", "method": m} for s, m in NOT_RETRIED]}
        return json.dumps({"methodConfig": [retry, once]})


def channel_options(policy: RetryPolicy | None, max_message_bytes: int) -> list[tuple[str, object]]:
    """Channel options for a client: message size limits and the retry service config (`policy`
    None: no retries)."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    if policy is None or policy.attempts <= 1:
        return [*options, ("grpc.enable_retries", 0)]
    return [*options, ("grpc.enable_retries", 1), ("grpc.service_config", policy.service_config())]
