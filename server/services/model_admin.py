"""tailor.v1.ModelAdminService: push, status, rollback (the push workflow: `models.admin`), drift
reports (`server.drift`)."""
from __future__ import annotations

from protos.tailor.v1 import model_admin_pb2 as pb
from protos.tailor.v1 import model_admin_pb2_grpc as pb_grpc

from ..drift import DriftMonitor, DriftReport
from ..errors import grpc_errors
from ..models import Bundle, BundleChunk, BundlePusher, ModelRegistry

__all__ = ["ModelAdminConverter", "ModelAdminServicer"]


class ModelAdminConverter:
    @staticmethod
    def to_chunk(msg: pb.BundleChunk) -> BundleChunk:
        return BundleChunk(msg.path, msg.offset, msg.data, msg.stage_only)

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
    def status(registry: ModelRegistry) -> pb.ModelStatus:
        return pb.ModelStatus(active=ModelAdminConverter.from_bundle(registry.active),
                              previous_version=registry.previous_version(),
                              available_versions=registry.available_versions())

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


class ModelAdminServicer(pb_grpc.ModelAdminServiceServicer):
    def __init__(self, registry: ModelRegistry, pusher: BundlePusher, drift: DriftMonitor):
        self.registry = registry
        self.pusher = pusher
        self.drift = drift

    @grpc_errors
    async def PushBundle(self, request_iterator, context) -> pb.ModelStatus:
        await self.pusher.push(ModelAdminConverter.to_chunk(c) async for c in request_iterator)
        return ModelAdminConverter.status(self.registry)

    @grpc_errors
    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context) -> pb.ModelStatus:
        return ModelAdminConverter.status(self.registry)

    @grpc_errors
    async def Rollback(self, request: pb.RollbackRequest, context) -> pb.ModelStatus:
        await self.registry.rollback(request.version)
        return ModelAdminConverter.status(self.registry)

    @grpc_errors
    async def GetDriftReport(self, request: pb.GetDriftReportRequest, context) -> pb.DriftReport:
        return ModelAdminConverter.from_drift(self.drift.report())
