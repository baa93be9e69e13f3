"""tailor.v1.CampaignService."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import math

from kernels.bandits import HOLDOUT
from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc

from ..campaigns import (
    Campaign,
    Campaigns,
    CampaignSpec,
    Choice,
    PlanBatch,
    PlanRequest,
    RewardRule,
    SampleSizeAnswer,
    SampleSizeQuery,
    Variant,
)
from ..contact import FrequencyCap, QuietHours, SendWindow
from ..errors import grpc_errors
from ..limits import Limits
from ..profiles.schema import EVENT_TYPES
from ..security.interceptor import current_principal
from ..security.pii import PiiPolicy
from ..security.roles import PII_READER
from ..validation import check_count
from .streaming import in_chunks

__all__ = ["CampaignServicer", "CampaignConverter"]

_NAN = float("nan")
_PLAN_SLICE = 500
"""PlanCampaign decisions converted between two turns of the event loop (a batch may hold
`Limits.plan_batch_users`: converted at once, it would hold up every other call meanwhile)."""



def _num(x) -> float:
    return _NAN if x is None else float(x)


class CampaignConverter:
    @staticmethod
    def to_spec(msg: pb.CampaignSpec, limits: Limits) -> CampaignSpec:
        """`msg` as a CampaignSpec (`validated` checks it), its lists counted first: 1 million
        empty variants (4 MiB) took 5 s of the event loop to convert before the spec's own
        check refused them, as many rewards or frequency caps 2.4 s. Rewards take an event
        type each, once (`CampaignSpec._check_rewards`)."""
        check_count("variants", len(msg.variants), limits.campaign_variants)
        check_count("rewards", len(msg.rewards), len(EVENT_TYPES))
        check_count("frequency_caps", len(msg.frequency_caps), limits.campaign_frequency_caps)
        check_count("context_features", len(msg.context_features),
                    limits.campaign_context_features)
        q, w = msg.quiet_hours, msg.send_window
        return CampaignSpec(
            campaign_id=msg.campaign_id, name=msg.name,
            channel=msg.channel or (msg.channels[0] if msg.channels else "web"),
            purpose=msg.purpose or "marketing", channels=tuple(msg.channels),
            frequency_caps=tuple(FrequencyCap(c.channel, c.max, c.window_seconds)
                                 for c in msg.frequency_caps),
            quiet_hours=QuietHours(q.start, q.end, q.action),
            send_window=SendWindow(w.start_hour, w.end_hour),
            variants=tuple(Variant(v.id, dict(v.content), dict(v.features), v.weight)
                           for v in msg.variants),
            policy=msg.policy or "bernoulli_ts", params=dict(msg.params),
            rewards=tuple(RewardRule(r.event_type, r.value, r.use_event_value, r.cap)
                          for r in msg.rewards),
            reward_window_seconds=msg.reward_window_seconds, default_reward=msg.default_reward,
            context_features=tuple(msg.context_features), salt=msg.salt)

    @staticmethod
    def from_campaign(c: Campaign) -> pb.Campaign:
        s = c.spec
        spec = pb.CampaignSpec(
            campaign_id=s.campaign_id, name=s.name, channel=s.channel, policy=s.policy,
            params=s.params, reward_window_seconds=s.reward_window_seconds,
            default_reward=s.default_reward, context_features=s.context_features, salt=s.salt,
            variants=[pb.Variant(id=v.id, content=v.content, features=v.features, weight=v.weight)
                      for v in s.variants],
            rewards=[pb.RewardRule(event_type=r.event_type, value=r.value,
                                   use_event_value=r.use_event_value, cap=r.cap)
                     for r in s.rewards],
            purpose=s.purpose, channels=s.channels,
            frequency_caps=[pb.FrequencyCap(channel=c.channel, max=c.max,
                                            window_seconds=c.window_seconds)
                            for c in s.frequency_caps],
            quiet_hours=pb.QuietHours(start=s.quiet_hours.start, end=s.quiet_hours.end,
                                      action=s.quiet_hours.action if s.quiet_hours.active else ""),
            send_window=pb.SendWindow(start_hour=s.send_window.start_hour,
                                      end_hour=s.send_window.end_hour))
        return pb.Campaign(spec=spec, archived=c.archived, created_at=c.created_at,
                           updated_at=c.updated_at, revision=c.revision)

    @staticmethod
    def from_choice(c: Choice) -> pb.ChooseVariantResponse:
        return pb.ChooseVariantResponse(decision_id=c.decision_id, variant_id=c.variant_id,
                                        arm=c.arm, propensity=c.propensity, holdout=c.holdout,
                                        content=c.content, suppressed=c.suppressed,
                                        reason=c.reason, channel=c.channel, send_at=c.send_at)

    @staticmethod
    def to_plan_request(msg: pb.PlanCampaignRequest) -> PlanRequest:
        return PlanRequest(msg.campaign_id, msg.user_ids, msg.context)

    @staticmethod
    def plan_decisions(b: PlanBatch, lo: int, hi: int) -> list[pb.PlanDecision]:
        """The decisions of users lo..hi-1 of a PlanCampaign batch, with the contact
        policy's propensities as the decision log holds them (1 where the batch has none)."""
        decision, cut = pb.PlanDecision, slice(lo, hi)
        ones = itertools.repeat(1.0)
        pcs = ones if b.channel_propensities is None else b.channel_propensities[cut]
        pts = ones if b.send_at_propensities is None else b.send_at_propensities[cut]
        return [decision(user_id=u, decision_id=d, variant_id=v, arm=a, propensity=p,
                         holdout=a == HOLDOUT, channel=c, send_at=t, suppressed=bool(r),
                         reason=r, channel_propensity=pc, send_at_propensity=pt)
                for u, d, v, a, p, c, t, r, pc, pt in zip(
                    b.user_ids[cut], b.decision_ids[cut], b.variant_ids[cut], b.arms[cut],
                    b.propensities[cut], b.channels[cut], b.send_at[cut], b.reasons[cut],
                    pcs, pts)]

    @staticmethod
    def from_stats(campaign: Campaign, st: dict, counters: dict) -> pb.CampaignStats:
        ids = [v.id for v in campaign.spec.variants]
        made = counters["decisions"] + [0] * (len(ids) - len(counters["decisions"]))
        out = pb.CampaignStats(
            campaign_id=campaign.spec.campaign_id, policy=campaign.spec.policy,
            holdout_decisions=counters["holdout"], holdout_rewarded=counters["holdout_rewarded"],
            holdout_rewards=counters["holdout_rewards"], pending=counters["pending"],
            decisions_per_second=st["decisions_per_second"])
        for a, vid in enumerate(ids):
            out.variants.append(pb.VariantStats(
                variant_id=vid, decisions=made[a], pulls=st["pulls"][a], rewards=st["rewards"][a],
                mean=st["mean"][a], ci_low=st["ci_low"][a], ci_high=st["ci_high"][a],
                prob_best=st["prob_best"][a], expected_loss=st["expected_loss"][a]))
        for row in st.get("ab", []):
            out.ab.append(pb.AbRow(
                variant_id=ids[row["arm"]], control_id=ids[row["control"]], diff=row["diff"],
                ci_low=row["ci_low"], ci_high=row["ci_high"], statistic=row["statistic"],
                pvalue=row["pvalue"], prob_beat_control=_num(row["prob_beat_control"]),
                msprt_pvalue=row["msprt_pvalue"], srm_pvalue=_num(row["srm_pvalue"]),
                srm_mismatch=bool(row["srm_mismatch"]),
                seconds_to_significance=row["seconds_to_significance"]))
        return out

    @staticmethod
    def to_sample_size(msg: pb.GetSampleSizeRequest) -> SampleSizeQuery:
        which = msg.WhichOneof("baseline")
        return SampleSizeQuery(
            minimum_detectable_effect=msg.minimum_detectable_effect,
            baseline_rate=msg.baseline_rate if which == "baseline_rate" else None,
            baseline_mean=msg.baseline_mean if which == "baseline_mean" else None,
            variance=msg.variance, alpha=msg.alpha, power=msg.power, arms=msg.arms,
            allocation=tuple(msg.allocation))

    @staticmethod
    def from_sample_size(res: SampleSizeAnswer) -> pb.GetSampleSizeResponse:
        return pb.GetSampleSizeResponse(per_arm=res.per_arm, total=res.total,
                                        alpha_per_comparison=res.alpha_per_comparison,
                                        test=res.test)

    @staticmethod
    def from_record(rec: dict) -> pb.DecisionRecord:
        return pb.DecisionRecord(
            decision_id=rec["decision_id"], campaign_id=rec["campaign_id"], user_id=rec["user_id"],
            timestamp=rec["timestamp"], arm=rec["arm"], propensity=rec["propensity"],
            reward=rec["reward"] if rec["reward"] is not None else math.nan, context=rec["context"],
            position=rec.get("position", 0), variant_id=rec["variant_id"], status=rec["status"],
            reason=rec.get("reason", ""), channel=rec.get("channel", ""),
            send_at=rec.get("send_at", 0.0),
            channel_propensity=rec.get("channel_propensity", 1.0),
            send_at_propensity=rec.get("send_at_propensity", 1.0))


class CampaignServicer(pb_grpc.CampaignServiceServicer):
    def __init__(self, campaigns: Campaigns, pii: PiiPolicy):
        self.campaigns = campaigns
        self.pii = pii

    @grpc_errors
    async def CreateCampaign(self, request: pb.CreateCampaignRequest, context) -> pb.Campaign:
        spec = CampaignConverter.to_spec(request.spec, self.campaigns.limits)
        return CampaignConverter.from_campaign(await self.campaigns.create(spec))

    @grpc_errors
    async def UpdateCampaign(self, request: pb.UpdateCampaignRequest, context) -> pb.Campaign:
        spec = CampaignConverter.to_spec(request.spec, self.campaigns.limits)
        return CampaignConverter.from_campaign(await self.campaigns.update(spec))

    @grpc_errors
    async def ArchiveCampaign(self, request: pb.ArchiveCampaignRequest, context) -> pb.Campaign:
        return CampaignConverter.from_campaign(await self.campaigns.archive(request.campaign_id))

    @grpc_errors
    async def GetCampaign(self, request: pb.GetCampaignRequest, context) -> pb.Campaign:
        return CampaignConverter.from_campaign(await self.campaigns.get(request.campaign_id))

    @grpc_errors
    async def ListCampaigns(self, request: pb.ListCampaignsRequest,
                            context) -> pb.ListCampaignsResponse:
        found, after = await self.campaigns.list(request.include_archived, request.page_size,
                                                 request.page_token)
        return pb.ListCampaignsResponse(
            campaigns=[CampaignConverter.from_campaign(c) for c in found], next_page_token=after)

    @grpc_errors
    async def ChooseVariant(self, request: pb.ChooseVariantRequest,
                            context) -> pb.ChooseVariantResponse:
        rid = request.request_id
        choice = await self.campaigns.choose(
            request.campaign_id, request.user_id, request.context, request_id=rid,
            caller=current_principal().name if rid else "")
        return CampaignConverter.from_choice(choice)

    @grpc_errors
    async def ReportReward(self, request: pb.ReportRewardRequest,
                           context) -> pb.ReportRewardResponse:
        out = await self.campaigns.report(request.decision_id, request.reward)
        return pb.ReportRewardResponse(campaign_id=out.campaign_id, variant_id=out.variant_id,
                                       duplicate=out.duplicate)

    @grpc_errors
    async def GetCampaignStats(self, request: pb.GetCampaignStatsRequest,
                               context) -> pb.CampaignStats:
        return CampaignConverter.from_stats(*await self.campaigns.stats(request.campaign_id))

    @grpc_errors
    async def GetSampleSize(self, request: pb.GetSampleSizeRequest,
                            context) -> pb.GetSampleSizeResponse:
        answer = await self.campaigns.sample_size(CampaignConverter.to_sample_size(request))
        return CampaignConverter.from_sample_size(answer)

    @grpc_errors
    async def PlanCampaign(self, request_iterator, context):
        requests = (CampaignConverter.to_plan_request(r) async for r in request_iterator)
        # Closed here, not when collected: a stream cancelled while an answer is written still
        # withdraws the batches decided ahead of it before the server's writers close.
        async with contextlib.aclosing(self.campaigns.plan(requests)) as batches:
            async for batch in batches:
                out = pb.PlanCampaignResponse()
                for lo in range(0, len(batch), _PLAN_SLICE):  # other calls run between slices
                    if lo:
                        await asyncio.sleep(0)
                    out.decisions.extend(CampaignConverter.plan_decisions(batch, lo, lo + _PLAN_SLICE))
                batch.handed()  # to the transport: kept (a stream cancelled before: withdrawn)
                yield out

    @grpc_errors
    async def ExportDecisions(self, request: pb.ExportDecisionsRequest, context):
        hidden: dict[str, range | list[int]] | None = (
            None if current_principal().has(PII_READER) else {})
        records = self.campaigns.export(request.campaign_id, request.start, request.end,
                                        request.include_pending, request.include_suppressed)
        # Read in a thread, a snapshot at a time: a campaign's records sit among every other
        # campaign's, which the scan reads past (~7 us each) without a turn of the event loop.
        async for chunk in in_chunks(records):
            for rec in chunk:
                out = CampaignConverter.from_record(rec)
                if hidden is not None and out.context:
                    positions = hidden.get(out.campaign_id)
                    if positions is None:
                        positions = hidden[out.campaign_id] = self.campaigns.pii_positions(
                            out.campaign_id, self.pii.is_pii)
                    for i in positions:
                        if i >= len(out.context):
                            break
                        out.context[i] = _NAN
                yield out
