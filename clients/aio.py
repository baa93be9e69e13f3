"""`AsyncTailorClient`: the asyncio twin of `TailorClient` for the hot calls (recommend, track,
choose/reward, compose (and deliver), profile, health), over one `grpc.aio` channel. Retries of
UNAVAILABLE are left to gRPC's service config, as in the blocking client (`clients.retry`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import campaign_pb2_grpc as camp_grpc
from protos.tailor.v1 import diagnostics_pb2 as diag_pb
from protos.tailor.v1 import diagnostics_pb2_grpc as diag_grpc
from protos.tailor.v1 import messaging_pb2_grpc as msg_grpc
from protos.tailor.v1 import profile_pb2 as prof_pb
from protos.tailor.v1 import profile_pb2_grpc as prof_grpc
from protos.tailor.v1 import recommendation_pb2_grpc as rec_grpc

from .campaign_results import Message
from .client import (
    Recommendations,
    TailorClient,
    TailorError,
    compose_timeout,
    event_from_dict,
    named_request,
    new_request_id,
)
from .profile_results import Profile
from .results import Choice, Reward, TrackResult
from .retry import RetryPolicy, channel_options
from .transport import Connection

__all__ = ["AsyncTailorClient"]

class AsyncTailorClient:
    """`async with AsyncTailorClient("host:port") as client: await client.recommend("u1")`."""

    def __init__(self, target: str, *, timeout: float = 2.0, tls_ca: str | Path | None = None,
                 cert: str | Path | None = None, key: str | Path | None = None,
                 token: str | None = None, max_message_bytes: int = 64 << 20,
                 retry: RetryPolicy | None = None, tls: bool = False, insecure: bool = False):
        """As `TailorClient`: `tls_ca` (or `tls`: the system's roots) turns TLS on; a token
        goes in plaintext only to a loopback `target` unless `insecure`."""
        self.target, self.timeout = target, timeout
        connection = Connection(*(Path(p) if p else None for p in (tls_ca, cert, key)), token=token,
                                tls=tls, insecure=insecure)
        self._channel = connection.aio_channel(
            target, options=channel_options(retry or RetryPolicy(), max_message_bytes))
        self._rec = rec_grpc.RecommendationServiceStub(self._channel)
        self._profiles = prof_grpc.ProfileServiceStub(self._channel)
        self._campaigns = camp_grpc.CampaignServiceStub(self._channel)
        self._messaging = msg_grpc.MessagingServiceStub(self._channel)
        self._diag = diag_grpc.DiagnosticsServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncTailorClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, fn, request, timeout: float | None, metadata=None):
        try:
            return await fn(request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            raise TailorError(err.code(), err.details() or "") from None

    async def recommend(self, user_id: str, k: int = 10, *, channel: str = "",
                        categories: Sequence[str] = (), exclude: Sequence[str] = (),
                        context: dict[str, str] | None = None,
                        timeout: float | None = None) -> Recommendations:
        req = TailorClient._request(user_id, k, channel, categories, exclude, context)
        return Recommendations.from_pb(await self._call(self._rec.Recommend, req, timeout,
                                                        named_request()))

    async def track_batch(self, events: Sequence[dict], timeout: float | None = None) -> TrackResult:
        req = prof_pb.TrackEventsRequest(events=[event_from_dict(e) for e in events])
        return TrackResult.from_pb(await self._call(self._profiles.TrackEvents, req, timeout))

    async def get_profile(self, user_id: str, max_events: int = 0,
                          timeout: float | None = None) -> Profile:
        req = prof_pb.GetProfileRequest(user_id=user_id, max_events=max_events)
        return Profile.from_pb(await self._call(self._profiles.GetProfile, req, timeout))

    async def choose_variant(self, campaign_id: str, user_id: str,
                             context: dict[str, float] | None = None,
                             timeout: float | None = None) -> Choice:
        req = camp_pb.ChooseVariantRequest(campaign_id=campaign_id, user_id=user_id,
                                           context={k: float(v) for k, v in (context or {}).items()},
                                           request_id=new_request_id())
        return Choice.from_pb(await self._call(self._campaigns.ChooseVariant, req, timeout))

    async def compose_message(self, campaign_id: str, user_id: str,
                              context: dict[str, float] | None = None,
                              timeout: float | None = None, *, deliver: bool = False,
                              request_id: str | None = None) -> Message:
        """As `TailorClient.compose_message` (with `deliver`, handed over once per request id;
        its deadline at least `DELIVER_TIMEOUT` unless `timeout` is given)."""
        req = TailorClient._compose_request(campaign_id, user_id, context, deliver, request_id)
        return Message.from_pb(await self._call(self._messaging.ComposeMessage, req,
                                                compose_timeout(timeout, deliver, self.timeout)))

    async def report_reward(self, decision_id: str, reward: float, timeout: float | None = None) -> Reward:
        req = camp_pb.ReportRewardRequest(decision_id=decision_id, reward=reward)
        return Reward.from_pb(await self._call(self._campaigns.ReportReward, req, timeout))

    async def ping(self, timeout: float | None = None) -> None:
        await self._call(self._diag.Ping, diag_pb.PingRequest(), timeout)

    async def health(self, service: str = "", timeout: float | None = None) -> str:
        """The server's (or `service`'s) status name: SERVING, NOT_SERVING, ..."""
        reply = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
