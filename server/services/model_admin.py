"""tailor.v1.ModelAdminService: push, status, rollback, canary promote/abort (the push workflow:
`models.admin`; the canary guardrails: `models.monitor`), drift reports (`server.drift`), and the
online metrics per version (`server.impressions`).

A push and a rollback that succeed each add an audit line of their own (`models/push`,
`models/rollback`) with the version they served and, for a push, how (`mode`: active, canary,
stage-only; `new_catalog`): the auth interceptor's line of the call names the method and its
status only, and before, nothing in the audit log said which version an operator put in."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from protos.tailor.v1 import model_admin_pb2 as pb
from protos.tailor.v1 import model_admin_pb2_grpc as pb_grpc

from ..config import Settings
from ..drift import DriftMonitor, DriftReport
from ..errors import grpc_errors
from ..impressions import Impressions, ModelStatsRow, Rate
from ..impressions.export import ExportedImpression
from ..impressions.records import UNKNOWN_POSITION
from ..models import Bundle, BundleChunk, BundlePusher, ModelRegistry
from ..models.monitor import CanaryMonitor, VersionFigures
from ..security.interceptor import current_principal
from ..security.pii import PiiPolicy
from ..security.roles import PII_READER
from ..validation import check_version
from .auditing import audit_line
from .streaming import in_chunks

__all__ = ["ModelAdminConverter", "ModelAdminServicer"]


def _trained(bundle: Bundle) -> int:
    return bundle.ranker_candidates


class ModelAdminConverter:
    @staticmethod
    def to_chunk(msg: pb.BundleChunk) -> BundleChunk:
        return BundleChunk(msg.path, msg.offset, msg.data, msg.stage_only, msg.canary_percent,
                           msg.new_catalog)

    @staticmethod
    def from_bundle(bundle: Bundle | None, candidates: Callable[[Bundle], int]) -> pb.LoadedBundle:
        """`candidates`: the count Recommend serves `bundle` with (`Recommender.candidates`)."""
        if bundle is None:
            return pb.LoadedBundle()
        metrics = {}
        for section, values in bundle.manifest.metrics.items():
            if isinstance(values, dict):
                metrics.update({f"{section}.{k}": float(v) for k, v in values.items()
                                if isinstance(v, (int, float))})
            elif isinstance(values, (int, float)):
                metrics[section] = float(values)
        return pb.LoadedBundle(version=bundle.version, index_type=bundle.index_type,
                               n_items=bundle.n_items, dim=bundle.dim,
                               has_ranker=bundle.ranker is not None, metrics=metrics,
                               loaded_at=bundle.loaded_at, ranker_candidates=candidates(bundle))

    @staticmethod
    def from_figures(f: VersionFigures) -> pb.VersionShare:
        return pb.VersionShare(version=f.version, share=f.share, requests=f.counts.requests,
                               errors=f.counts.errors, p99_ms=f.counts.quantile_ms(),
                               impressions=f.impressions, clicks=f.clicks)

    @staticmethod
    def status(registry: ModelRegistry, monitor: CanaryMonitor,
               candidates: Callable[[Bundle], int]) -> pb.ModelStatus:
        canary, active = registry.canary, registry.active
        loaded = ModelAdminConverter.from_bundle
        return pb.ModelStatus(active=loaded(active, candidates) if active else None,
                              previous_version=registry.previous_version(),
                              available_versions=registry.available_versions(),
                              canary=loaded(canary.bundle, candidates) if canary else None,
                              shares=[ModelAdminConverter.from_figures(f) for f in monitor.figures()],
                              guardrail=monitor.verdict_text(),
                              fallback=ModelAdminConverter.from_fallback(registry.fell_back()))

    @staticmethod
    def from_fallback(record: dict | None) -> pb.BundleFallback | None:
        """`ModelRegistry.fell_back`'s record ({from, to, at}), None when there is none."""
        if record is None:
            return None
        return pb.BundleFallback(from_version=record["from"], to_version=record["to"],
                                 at=float(record.get("at", 0.0)))


    @staticmethod
    def from_rate(rate: Rate) -> pb.Rate:
        return pb.Rate(value=rate.value, low=rate.low, high=rate.high, k=rate.k)

    @staticmethod
    def from_stats(rows: list[ModelStatsRow]) -> pb.ModelStats:
        rate = ModelAdminConverter.from_rate
        return pb.ModelStats(rows=[pb.ModelChannelStats(
            model_version=r.model_version, channel=r.channel, impressions=r.impressions,
            cold_start=r.cold_start, clicked=r.clicked, clicks=r.clicks, carted=r.carted,
            conversions=r.conversions, revenue=r.revenue, ctr=[rate(c) for c in r.ctr],
            conversion_rate=rate(r.conversion_rate), revenue_per_mille=rate(r.revenue_per_mille),
            first_seen=r.first_seen, last_seen=r.last_seen) for r in rows])

    @staticmethod
    def from_impression(row: ExportedImpression) -> pb.Impression:
        imp = row.impression
        first = imp.first_click
        out = pb.Impression(
            request_id=row.request_id, user_ref=row.user_ref, user_id=row.user_id,
            timestamp=imp.timestamp, model_version=imp.model_version, channel=imp.channel,
            context=imp.context, cold_start=imp.cold_start,
            first_click=0 if first < 0 else -1 if first == UNKNOWN_POSITION else first + 1,
            clicks=imp.clicks, add_to_carts=imp.add_to_carts, purchases=imp.purchases,
            revenue=imp.revenue)
        add = out.items.add
        for pos, (item_id, score, bits) in enumerate(zip(row.item_ids, imp.scores.tolist(),
                                                         imp.outcomes.tolist())):
            add(item_id=item_id, position=pos + 1, score=score, clicked=bool(bits & 1),
                carted=bool(bits & 2), purchased=bool(bits & 4))
        return out

    @staticmethod
    def from_drift(report: DriftReport) -> pb.DriftReport:
        features = [pb.FeatureDrift(name=f.name, psi=f.psi, status=f.status,
                                    live_count=f.live_count, reference_count=f.reference_count,
                                    categorical=f.categorical, edges=f.edges,
                                    reference_share=f.reference_share, live_share=f.live_share)
                    for f in report.features]
        return pb.DriftReport(version=report.version, status=report.status,
                              threshold=report.threshold, min_count=report.min_count,
                              window_seconds=report.window_seconds, windows=report.windows,
                              since=report.since, features=features)


async def _noting_first(request_iterator, first: list[BundleChunk]
                        ) -> AsyncIterator[BundleChunk]:
    """The push's chunks, the first one also put in `first` (it says how to serve the bundle)."""
    async for msg in request_iterator:
        chunk = ModelAdminConverter.to_chunk(msg)
        if not first:
            first.append(chunk)
        yield chunk


class ModelAdminServicer(pb_grpc.ModelAdminServiceServicer):
    def __init__(self, registry: ModelRegistry, pusher: BundlePusher, monitor: CanaryMonitor,
                 drift: DriftMonitor, stats: Impressions | None = None, pii: PiiPolicy | None = None,
                 candidates: Callable[[Bundle], int] | None = None, audit=None):
        self.registry = registry
        self.pusher = pusher
        self.monitor = monitor
        self.drift = drift
        self.stats = stats
        """The impression log and its metrics (GetModelStats, ExportImpressions); None: none
        are kept (empty answers)."""
        self.pii = pii or PiiPolicy(Settings.model_fields["pii_keys"].default)
        """Masks PII values of logged Recommend contexts for callers without `pii-reader`."""
        self.candidates = candidates or _trained
        """The ranker candidates Recommend serves a bundle with (`Recommender.candidates`;
        the bundle's trained count when not given)."""
        self.audit = audit
        """The audit log (`record(principal, method, target, status, request_id, **details)`)
        the push and rollback lines go to; None: none written."""

    @grpc_errors
    async def PushBundle(self, request_iterator, context) -> pb.ModelStatus:
        first: list[BundleChunk] = []
        bundle = await self.pusher.push(_noting_first(request_iterator, first))
        how = first[0]
        mode = "stage-only" if how.stage_only else "canary" if how.canary_percent else "active"
        await audit_line(self.audit, "models/push", version=bundle.version, mode=mode,
                         canary_percent=f"{how.canary_percent:g}",
                         new_catalog=int(how.new_catalog))
        return self._status()

    @grpc_errors
    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context) -> pb.ModelStatus:
        return self._status()

    @grpc_errors
    async def Rollback(self, request: pb.RollbackRequest, context) -> pb.ModelStatus:
        bundle = await self.registry.rollback(request.version)
        await audit_line(self.audit, "models/rollback", version=bundle.version)
        return self._status()

    @grpc_errors
    async def PromoteCanary(self, request: pb.CanaryRequest, context) -> pb.ModelStatus:
        await self.registry.end_canary(True, self._version(request), wait=True)
        return self._status()

    @grpc_errors
    async def AbortCanary(self, request: pb.CanaryRequest, context) -> pb.ModelStatus:
        await self.registry.end_canary(False, self._version(request), wait=True)
        return self._status()

    def _version(self, request: pb.CanaryRequest) -> str:
        if not request.version:
            return ""
        return check_version("version", request.version, self.registry.settings.limits.bundle_version_chars)

    def _status(self) -> pb.ModelStatus:
        return ModelAdminConverter.status(self.registry, self.monitor, self.candidates)

    @grpc_errors
    async def GetModelStats(self, request: pb.GetModelStatsRequest, context) -> pb.ModelStats:
        if self.stats is None:
            return pb.ModelStats()
        rows = await self.stats.model_stats(request.model_version, request.channel,
                                            list(request.ks), request.confidence)
        return ModelAdminConverter.from_stats(rows)

    @grpc_errors
    async def ExportImpressions(self, request: pb.ExportImpressionsRequest, context):
        if self.stats is None:
            return
        masked = not current_principal().has(PII_READER)
        # the whole log's keys are read past: in a thread, some rows at a time
        async for chunk in in_chunks(await self.stats.export(request.start, request.end)):
            for row in chunk:
                msg = ModelAdminConverter.from_impression(row)
                if masked and msg.context:
                    self.pii.mask_map(msg.context)
                yield msg

    @grpc_errors
    async def GetDriftReport(self, request: pb.GetDriftReportRequest, context) -> pb.DriftReport:
        return ModelAdminConverter.from_drift(self.drift.report())
