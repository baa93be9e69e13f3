"""tailor.v1.MessagingService."""
from __future__ import annotations

from protos.tailor.v1 import messaging_pb2 as pb
from protos.tailor.v1 import messaging_pb2_grpc as pb_grpc

from ..errors import grpc_errors
from ..messages.compose import Composer, Message
from ..messages.deadletters import DeadLetter
from ..messages.delivery import Delivery
from ..messages.jobs import SendJobs, SendProgress
from ..security.interceptor import current_principal
from ..security.pii import PiiPolicy
from ..security.roles import PII_READER
from ..security.userref import user_ref

__all__ = ["MessagingServicer", "MessageConverter"]


class MessageConverter:
    @staticmethod
    def from_message(m: Message) -> pb.Message:
        out = pb.Message(campaign_id=m.campaign_id, decision_id=m.decision_id,
                         variant_id=m.variant_id, channel=m.channel, send_at=m.send_at,
                         suppressed=m.suppressed, reason=m.reason, holdout=m.holdout,
                         parts=m.parts, headers=m.headers, unsubscribe_url=m.unsubscribe_url,
                         delivered=m.delivered, scheduled=m.scheduled, send_id=m.send_id)
        if m.sms:
            out.sms.CopyFrom(pb.SmsLength(encoding=m.sms["sms_encoding"], units=m.sms["sms_units"],
                                          segments=m.sms["sms_segments"]))
        return out

    @staticmethod
    def from_progress(p: SendProgress) -> pb.SendProgress:
        return pb.SendProgress(
            send_id=p.send_id, campaign_id=p.campaign_id, total=p.total, sent=p.sent,
            suppressed=sum(p.suppressed.values()), suppressed_by_reason=p.suppressed,
            failed=sum(p.failed.values()), failed_by_reason=p.failed, pending=p.pending,
            done=p.finished_at > 0, started_at=p.started_at, finished_at=p.finished_at,
            cancelled_at=p.cancelled_at, stopped_by=p.stopped_by)


    @staticmethod
    def from_dead_letter(d: DeadLetter) -> pb.DeadLetter:
        return pb.DeadLetter(id=d.id, channel=d.channel, campaign_id=d.campaign,
                             decision_id=d.decision, user_ref=user_ref(d.user), reason=d.reason,
                             attempts=d.attempts, at=d.at)


class MessagingServicer(pb_grpc.MessagingServiceServicer):
    def __init__(self, composer: Composer, sends: SendJobs, delivery: Delivery, pii: PiiPolicy):
        """`pii`: how a preview masks a real user's attributes for a caller without `pii-reader`
        (a composed message carries them unmasked: it is what the user receives)."""
        self.composer, self.sends, self.delivery, self.pii = composer, sends, delivery, pii

    @grpc_errors
    async def ComposeMessage(self, request: pb.ComposeMessageRequest, context) -> pb.Message:
        rid = request.request_id
        message = await self.composer.compose(request.campaign_id, request.user_id,
                                              request.context, request.deliver, rid,
                                              current_principal().name if rid else "")
        return MessageConverter.from_message(message)

    @grpc_errors
    async def PreviewMessage(self, request: pb.PreviewMessageRequest, context) -> pb.Message:
        message = await self.composer.preview(
            request.campaign_id, request.variant_id, request.user_id,
            dict(request.sample_attributes), tuple(request.sample_interests), request.channel,
            None if current_principal().has(PII_READER) else self.pii)
        return MessageConverter.from_message(message)

    @grpc_errors
    async def SendCampaign(self, request: pb.SendCampaignRequest, context) -> pb.SendProgress:
        rid = request.request_id
        progress = await self.sends.start(request.campaign_id, list(request.user_ids),
                                          dict(request.rate_per_second), dict(request.context),
                                          request_id=rid,
                                          caller=current_principal().name if rid else "")
        return MessageConverter.from_progress(progress)

    @grpc_errors
    async def GetSendProgress(self, request: pb.GetSendProgressRequest,
                              context) -> pb.SendProgress:
        return MessageConverter.from_progress(await self.sends.progress(request.send_id))

    @grpc_errors
    async def CancelSend(self, request: pb.CancelSendRequest, context) -> pb.SendProgress:
        return MessageConverter.from_progress(await self.sends.cancel(request.send_id))

    @grpc_errors
    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                              context) -> pb.ListDeadLettersResponse:
        letters = await self.delivery.dead_letters(request.limit, request.channel)
        return pb.ListDeadLettersResponse(
            letters=[MessageConverter.from_dead_letter(d) for d in letters])

    @grpc_errors
    async def RetryDeadLetter(self, request: pb.RetryDeadLetterRequest, context) -> pb.DeadLetter:
        return MessageConverter.from_dead_letter(
            await self.delivery.retry_dead_letter(request.id))
