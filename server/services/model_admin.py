"""tailor.v1.ModelAdminService: push, status, rollback, canary promote/abort (the push workflow:
`models.admin`; the canary guardrails: `models.monitor`)."""
from __future__ import annotations

from protos.tailor.v1 import model_admin_pb2 as pb
from protos.tailor.v1 import model_admin_pb2_grpc as pb_grpc

from ..errors import grpc_errors
from ..models import Bundle, BundleChunk, BundlePusher, ModelRegistry
from ..models.monitor import CanaryMonitor, VersionFigures
from ..validation import check_version

__all__ = ["ModelAdminConverter", "ModelAdminServicer"]


class ModelAdminConverter:
    @staticmethod
    def to_chunk(msg: pb.BundleChunk) -> BundleChunk:
        return BundleChunk(msg.path, msg.offset, msg.data, msg.stage_only, msg.canary_percent)

    @staticmethod
    def from_bundle(bundle: Bundle | None) -> pb.LoadedBundle:
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
                               loaded_at=bundle.loaded_at)

    @staticmethod
    def from_figures(f: VersionFigures) -> pb.VersionShare:
        return pb.VersionShare(version=f.version, share=f.share, requests=f.counts.requests,
                               errors=f.counts.errors, p99_ms=f.counts.quantile_ms(),
                               impressions=f.impressions, clicks=f.clicks)

    @staticmethod
    def status(registry: ModelRegistry, monitor: CanaryMonitor) -> pb.ModelStatus:
        canary = registry.canary
        return pb.ModelStatus(active=ModelAdminConverter.from_bundle(registry.active),
                              previous_version=registry.previous_version(),
                              available_versions=registry.available_versions(),
                              canary=ModelAdminConverter.from_bundle(canary.bundle) if canary else None,
                              shares=[ModelAdminConverter.from_figures(f) for f in monitor.figures()],
                              guardrail=monitor.verdict_text())


class ModelAdminServicer(pb_grpc.ModelAdminServiceServicer):
    def __init__(self, registry: ModelRegistry, pusher: BundlePusher, monitor: CanaryMonitor):
        self.registry = registry
        self.pusher = pusher
        self.monitor = monitor

    @grpc_errors
    async def PushBundle(self, request_iterator, context) -> pb.ModelStatus:
        await self.pusher.push(ModelAdminConverter.to_chunk(c) async for c in request_iterator)
        return self._status()

    @grpc_errors
    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context) -> pb.ModelStatus:
        return self._status()

    @grpc_errors
    async def Rollback(self, request: pb.RollbackRequest, context) -> pb.ModelStatus:
        await self.registry.rollback(request.version)
        return self._status()

    @grpc_errors
    async def PromoteCanary(self, request: pb.CanaryRequest, context) -> pb.ModelStatus:
        await self.registry.end_canary(True, self._version(request))
        return self._status()

    @grpc_errors
    async def AbortCanary(self, request: pb.CanaryRequest, context) -> pb.ModelStatus:
        await self.registry.end_canary(False, self._version(request))
        return self._status()

    def _version(self, request: pb.CanaryRequest) -> str:
        if not request.version:
            return ""
        return check_version("version", request.version, self.registry.settings.limits.bundle_version_chars)

    def _status(self) -> pb.ModelStatus:
        return ModelAdminConverter.status(self.registry, self.monitor)
