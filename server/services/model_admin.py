"""tailor.v1.ModelAdminService: push, status, rollback."""
from __future__ import annotations

import asyncio
import logging

from protos.tailor.v1 import model_admin_pb2 as pb
from protos.tailor.v1 import model_admin_pb2_grpc as pb_grpc

from ..errors import InvalidArgument, grpc_errors
from ..models import Bundle, BundleStaging, ModelRegistry, load_bundle

__all__ = ["ModelAdminServicer", "StatusConverter"]

logger = logging.getLogger("tailor.services.model_admin")


class StatusConverter:
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
        return pb.ModelStatus(active=StatusConverter.from_bundle(registry.active),
                              previous_version=registry.previous_version(),
                              available_versions=registry.available_versions())


class ModelAdminServicer(pb_grpc.ModelAdminServiceServicer):
    def __init__(self, registry: ModelRegistry, compute_threads: int = 1):
        self.registry = registry
        self.compute_threads = compute_threads

    @grpc_errors
    async def PushBundle(self, request_iterator, context) -> pb.ModelStatus:
        staging = BundleStaging(self.registry.bundles_dir)
        try:
            stage_only = None
            async for chunk in request_iterator:
                if stage_only is None:
                    stage_only = chunk.stage_only
                staging.write(chunk.path, chunk.offset, chunk.data)
            if stage_only is None:
                raise InvalidArgument("chunks", "the stream carried no bundle file")
            loop = asyncio.get_running_loop()
            bundle = await loop.run_in_executor(None, load_bundle, staging.dir, self.compute_threads)
            bundle.path = staging.publish()
        except BaseException:
            staging.discard()
            raise
        if not stage_only:
            await self.registry.install(bundle)
            if not await self.registry.wait_for_workers(bundle.version):
                logger.warning("not every worker reported bundle %s in time", bundle.version)
        return StatusConverter.status(self.registry)

    @grpc_errors
    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context) -> pb.ModelStatus:
        return StatusConverter.status(self.registry)

    @grpc_errors
    async def Rollback(self, request: pb.RollbackRequest, context) -> pb.ModelStatus:
        await self.registry.rollback(request.version)
        return StatusConverter.status(self.registry)
