"""The push workflow: stage an uploaded bundle, validate it, publish it, and (unless staged
only) swap it in, or start it as a canary, and wait for every worker to follow."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from ..contexts import carried
from ..errors import FailedPrecondition, InvalidArgument
from ..store.errors import out_of_space
from ..validation import check_range
from .bundle import Bundle, BundleInvalid
from .registry import ModelRegistry
from .staging import BundleDiskFull, BundleStaging

__all__ = ["BundleChunk", "BundlePusher"]

logger = logging.getLogger("tailor.models.admin")

MIN_CANARY_PERCENT = 0.01
"""Smallest canary share in percent (and 100 minus it the largest: a full push serves all)."""


@dataclass(frozen=True, slots=True)
class BundleChunk:
    """Bytes of one bundle file at `offset`; `stage_only`, `canary_percent` (0: none) and
    `new_catalog` (it may share no item id with the serving bundle) count in the first chunk
    only."""

    path: str
    offset: int
    data: bytes
    stage_only: bool = False
    canary_percent: float = 0.0
    new_catalog: bool = False


async def _off_loop(fn, *args):
    """`fn(*args)` in a thread: disk work (a chunk's write, the fsyncs, the load and its id
    rewrite) that a slow disk would otherwise make every call of this worker wait for. A push
    cancelled meanwhile waits for it to end before it removes what it wrote."""
    future = asyncio.get_running_loop().run_in_executor(None, carried(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _ended(future)
        raise


async def _ended(future: asyncio.Future) -> None:
    """Wait for `future` however often the push is cancelled meanwhile (a stop cancels it when
    its grace ends, then the worker's loop as it shuts down), and retrieve its outcome (the
    cancellation is what the push ends on)."""
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()


class BundlePusher:
    def __init__(self, registry: ModelRegistry, compute_threads: int = 1,
                 outcomes: Callable[[str], tuple[int, int]] | None = None):
        self.registry = registry
        self.compute_threads = compute_threads
        self.outcomes = outcomes
        """(impressions, clicked impressions) per version from the impression log, when it is
        on: a canary's baseline (its guardrails count outcomes from its start)."""
        self._under_way: set[asyncio.Task] = set()
        """The pushes running (their calls' tasks), which a stop waits for (`settled`)."""

    async def settled(self) -> None:
        """Wait for the pushes under way to end: at a stop, once the calls are cancelled, a
        push's thread (a write, the fsyncs, the load) and its removal of what it stored, which
        needs the store open, run to their end before the store closes."""
        if self._under_way:
            await asyncio.wait(self._under_way)

    async def push(self, chunks: AsyncIterable[BundleChunk]) -> Bundle:
        """Receive, validate and publish a bundle; activate it unless the first chunk says
        `stage_only`. A bundle refused before it serves (in validation, or as it swaps in or
        starts as a canary) leaves nothing behind: a version it stored goes (`unpublish`); one
        that fills the disk is RESOURCE_EXHAUSTED (`BundleDiskFull`)."""
        task = asyncio.current_task()
        self._under_way.add(task)
        try:
            return await self._push(chunks)
        finally:
            self._under_way.discard(task)

    async def _push(self, chunks: AsyncIterable[BundleChunk]) -> Bundle:
        staging = BundleStaging(self.registry.bundles_dir, self.registry.settings.limits)
        try:
            bundle, stage_only, canary = await self._stored(staging, chunks)
            split = await self._started(bundle, stage_only, canary)
        except BaseException as err:
            await _off_loop(self._undone, staging)
            if isinstance(err, OSError) and out_of_space(err):  # a write, fsync or the id rewrite
                raise BundleDiskFull(self.registry.bundles_dir, staging.received) from None
            raise
        finally:
            staging.release()
        if split is not None:
            if not await self.registry.wait_for_workers(split.stable, canary_id=split.id):
                logger.warning("not every worker reported canary %s in time", bundle.version)
        elif not stage_only:
            if not await self.registry.wait_for_workers(bundle.version):
                logger.warning("not every worker reported bundle %s in time", bundle.version)
        return bundle

    def _undone(self, staging: BundleStaging) -> None:
        """Remove what a push refused or cancelled wrote: its upload, and the version it stored
        unless another push of it holds it. Blocking (a large upload): run it in a thread."""
        staging.discard()
        if staging.created and staging.alone():
            self.registry.unpublish(staging.version)

    async def _stored(self, staging: BundleStaging, chunks: AsyncIterable[BundleChunk]
                      ) -> tuple[Bundle, bool, float]:
        """(the bundle received into `staging`, loaded, checked and published; stage only;
        canary share). The disk's work runs in threads (`_off_loop`)."""
        stage_only, canary, new_catalog = None, 0.0, False
        async for chunk in chunks:
            if stage_only is None:
                stage_only, canary = chunk.stage_only, self._canary_share(chunk)
                new_catalog = chunk.new_catalog
            await _off_loop(staging.write, chunk.path, chunk.offset, chunk.data)
        if stage_only is None:
            raise InvalidArgument("chunks", "the stream carried no bundle file")
        manifest = staging.manifest()  # a bad manifest is refused before anything is loaded
        await _off_loop(staging.check_decoded, manifest)
        bundle = await _off_loop(self.registry.load, staging.dir, self.compute_threads)
        if not stage_only and not new_catalog:
            await _off_loop(self._check_catalog, bundle)
        bundle.path = await _off_loop(staging.publish)
        return bundle, stage_only, canary

    def _check_catalog(self, bundle: Bundle) -> None:
        """Refuse a bundle that shares no item id with the one serving: trained on another
        catalog (the demo world's, another shop's, ids of another scheme), it would answer every
        user with items their tracked events never name. A deliberate change of catalog (a first
        push of one's own bundle onto the demo bundle meets this) says so by name
        (``new_catalog``, ``--new-catalog``), or goes in two steps: ``--stage-only``, then a
        rollback to the staged version by name; the message names both."""
        active = self.registry.active
        if active is None or any(iid in active.item_row for iid in bundle.item_row):
            return
        raise BundleInvalid(
            "items.npz", f"none of its {bundle.n_items} item ids is in the catalog of the "
            f"serving bundle {active.version!r} ({active.n_items} items; e.g. "
            f"{next(iter(bundle.item_row))!r} pushed, {next(iter(active.item_row))!r} served): "
            "a bundle trained on another catalog? To change catalogs on purpose (as from the "
            "demo bundle to your own), push it again with --new-catalog (with or without "
            "--canary), or with --stage-only, then `python -m clients rollback --version "
            f"{bundle.version}`")

    async def _started(self, bundle: Bundle, stage_only: bool, canary: float):
        """Serve the published `bundle`: as a canary (its split), else to all (None), unless
        stage only."""
        if canary:
            return await self.registry.start_canary(bundle, canary, self.outcomes)
        if not stage_only:
            await self.registry.install(bundle)
        return None

    def _canary_share(self, first: BundleChunk) -> float:
        """The share of users (0..1) the first chunk asks the bundle to serve as a canary; a
        running canary refuses another before any byte is stored."""
        if not first.canary_percent:
            return 0.0
        check_range("canary_percent", first.canary_percent, MIN_CANARY_PERCENT,
                    100.0 - MIN_CANARY_PERCENT)
        if first.stage_only:
            raise InvalidArgument("canary_percent", "a stage-only push cannot start a canary")
        running = self.registry.canary_record()
        if running is not None:
            raise FailedPrecondition(f"canary {running.version!r} is running: promote or abort "
                                     "it first")
        self.registry.current()  # a canary needs an active version to compare with
        return first.canary_percent / 100.0
