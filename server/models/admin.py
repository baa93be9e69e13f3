"""The push workflow: stage an uploaded bundle, validate it, publish it, and (unless staged
only) swap it in and wait for every worker to follow."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass

from ..errors import InvalidArgument
from .bundle import Bundle
from .registry import ModelRegistry
from .staging import BundleStaging

__all__ = ["BundleChunk", "BundlePusher"]

logger = logging.getLogger("tailor.models.admin")


@dataclass(frozen=True, slots=True)
class BundleChunk:
    """Bytes of one bundle file at `offset`; `stage_only` counts in the first chunk only."""

    path: str
    offset: int
    data: bytes
    stage_only: bool = False


class BundlePusher:
    def __init__(self, registry: ModelRegistry, compute_threads: int = 1,
                 max_bytes: int = 8 << 30):
        self.registry = registry
        self.compute_threads = compute_threads
        self.max_bytes = max_bytes

    async def push(self, chunks: AsyncIterable[BundleChunk]) -> Bundle:
        """Receive, validate and publish a bundle; activate it unless the first chunk says
        `stage_only`. A bundle that fails anywhere before publishing leaves nothing behind."""
        staging = BundleStaging(self.registry.bundles_dir, self.max_bytes,
                                self.registry.settings.limits)
        try:
            stage_only = None
            async for chunk in chunks:
                if stage_only is None:
                    stage_only = chunk.stage_only
                staging.write(chunk.path, chunk.offset, chunk.data)
            if stage_only is None:
                raise InvalidArgument("chunks", "the stream carried no bundle file")
            staging.manifest()  # a bad manifest is refused before anything is loaded
            loop = asyncio.get_running_loop()
            bundle = await loop.run_in_executor(None, self.registry.load, staging.dir,
                                                self.compute_threads)
            bundle.path = staging.publish()
        except BaseException:
            staging.discard()
            raise
        if not stage_only:
            await self.registry.install(bundle)
            if not await self.registry.wait_for_workers(bundle.version):
                logger.warning("not every worker reported bundle %s in time", bundle.version)
        return bundle
