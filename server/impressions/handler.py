"""Transport-agnostic impressions domain: the log, the feedback join and the online metrics.

`Impressions` is what `server.app` wires: the Recommend path's sink (`log.record`), an
`EventListener` (the join), a `UserEraser`, a `UserExporter` (ExportProfile), the retention
sweep's `drop_expired`, and the GetModelStats query.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..background import Background
from ..config import Settings
from ..errors import InvalidArgument
from ..interfaces import BundleSource
from ..profiles.schema import CHANNELS
from ..security.pii import PiiPolicy
from ..security.secrets import Keyring
from ..store import Store, outbox
from ..store.outbox import Batch
from ..validation import check_count, check_id, check_known, check_range, check_window
from .export import ExportedImpression, ImpressionExport, user_impressions_page
from .join import ImpressionJoin
from .log import ImpressionLog
from .logging import logger
from .records import POSITIONS
from .stats import ALL, DEFAULT_KS, UNSPECIFIED, ModelStats, ModelStatsRow
from .writer import forget_erased

__all__ = ["Impressions"]

MAX_KS = 16
"""Most cut-offs one GetModelStats may ask CTR@k for."""


def join_retry_seconds(settings: Settings) -> float:
    """When an unmatched event is tried again: with several workers, after another worker has
    had time to write what it buffered (two of its flush intervals); with one, never (a join
    writes this worker's buffer first)."""
    return 2 * settings.impression_flush_seconds if settings.workers > 1 else 0.0


class Impressions:
    def __init__(self, settings: Settings, store: Store, ring: Keyring,
                 erasure: Keyring | None = None, bundles: BundleSource | None = None,
                 user_ids: Callable[[], Iterable[str]] = tuple):
        """`erasure`: the tombstones' keyring (buffered impressions of users erased since are
        not written); `bundles`, `user_ids`: what the export names items and users by (the
        registry; the profiles' ids)."""
        self.settings = settings
        self.enabled = settings.impression_log
        self.log = ImpressionLog(store, ring, flush_seconds=settings.impression_flush_seconds,
                                 flush_records=settings.impression_flush_records,
                                 buffer_max=settings.impression_buffer_max, erasure=erasure,
                                 writer_nice=settings.impression_writer_nice,
                                 pii=PiiPolicy(settings.pii_keys),
                                 repeat_seconds=settings.impression_repeat_seconds)
        self.join = ImpressionJoin(self.log, settings.attribution_window_seconds,
                                   retry_s=join_retry_seconds(settings),
                                   most=settings.limits.join_impressions)
        self.exporter = ImpressionExport(self.log, bundles, user_ids) if bundles else None
        self.stats = ModelStats(store)
        """`stats.counts(version)`: (impressions, impressions with a click) for the canary."""
        self._tasks: list[asyncio.Task] = []
        self._background = Background()
        """The stats reports; `close` waits for one under way (in its thread)."""

    @property
    def sink(self) -> ImpressionLog | None:
        """What the Recommend path records answers into (None when the log is off)."""
        return self.log if self.enabled else None

    async def start(self) -> None:
        """Start the writer process and the flushes (the log on), and the stats reports."""
        if self.enabled:
            await self.log.start()
            self._tasks.append(asyncio.create_task(self.log.run()))
        self._background.every(self.settings.store_metrics_seconds,
                               lambda: asyncio.to_thread(self.stats.report),
                               "reporting model stats failed", log=logger)

    # -- EventListener, UserEraser, UserExporter, retention --------------------------------
    outbox = b"impressions"
    """The tag of this listener's outbox entries (`server.profiles.outbox`)."""

    def follows(self, events: Sequence) -> list[int]:
        """`EventListener`: the events that may join (none while the log is off)."""
        return self.join.follows(events) if self.enabled else []

    async def on_events(self, events: Sequence, batch: Batch) -> None:
        if self.enabled:
            await self.join.on_events(events, batch)
        else:  # an entry written while the log was on: nothing joins now
            box = self.log.store.table("outbox")
            await asyncio.to_thread(self.log.store.write,
                                    lambda txn: outbox.claim(txn, box, batch.entry))

    def before_write(self) -> bool:
        """Before an ingestion's write that joins in its transaction (`in_write`): this
        worker's buffered answers written, so the join finds them; False (logged) when that
        failed: the batch's join then runs after the commit instead (`on_events`)."""
        try:
            self.log.flush()
        except Exception:
            logger.exception("writing impressions before a join failed (it runs after the "
                             "batch's commit instead)")
            return False
        return True

    def in_write(self, txn, pairs: Sequence[tuple], entry: bytes):
        """`EventListener`'s part in the ingestion's write transaction `txn`: join (event,
        events key) pairs there (`ImpressionJoin.in_write`; None: not done, `on_events` will)."""
        return self.join.in_write(txn, pairs, entry)

    async def after_write(self, done, entry: bytes) -> None:
        """Once the ingestion that joined (`in_write` gave `done`) has committed."""
        self.join.after_write(*done, entry)

    def erase_ahead(self, user_id: str) -> int:
        return self.log.erase_ahead(user_id)

    def erase_user(self, txn, user_id: str) -> int:
        return self.log.erase_user(txn, user_id)

    def forget_erased(self, erased: Callable | None = None) -> None:
        """`Tombstones.watch`: new tombstones were read; the user ids cached beside their
        impression-key digests go (`writer.forget_erased`)."""
        forget_erased()

    def export_user(self, user_id: str) -> dict[str, object]:
        """`UserExporter`: {"impressions": [...], "impressions_next": offset or None}, the
        answers shown to the user that the log holds (`export.impression_document`), the log
        switched off or not: the newest page (`export_page`)."""
        return self.export_page(user_id, 0)

    def export_page(self, user_id: str, offset: int) -> dict[str, object]:
        """`UserExporter.export_page`: the page of the user's impressions from `offset`, newest
        first, at most `Limits.profile_export_impression_bytes` of JSON in the document."""
        most = self.settings.limits.profile_export_impression_bytes
        if self.exporter is None:  # no bundle source: items named by their codes
            page, after = user_impressions_page(self.log, user_id, {}, offset, most)
        else:
            page, after = self.exporter.user_page(user_id, offset, most)
        return {"impressions": page, "impressions_next": after}

    async def drop_expired(self, cutoff: float) -> int:
        """Retention: impressions shown before `cutoff` (>= 0, `server.retention`) go."""
        return await asyncio.to_thread(self.log.drop_before, cutoff)

    # -- GetModelStats -------------------------------------------------------------------------
    async def model_stats(self, model_version: str = "", channel: str = "",
                          ks: Sequence[int] = (), confidence: float = 0.0) -> list[ModelStatsRow]:
        """Rows per version and channel (validated query; `ks` default 1, 5, 10)."""
        check_count("ks", len(ks), MAX_KS)
        for k in ks:
            check_range("ks", k, 1, POSITIONS - 1)
        if confidence and not 0.5 <= confidence < 1.0:
            raise InvalidArgument("confidence", f"{confidence:g} is not in [0.5, 1)")
        if model_version:
            check_id("model_version", model_version, self.settings.limits.id_bytes)
        if channel:
            check_known("channel", channel, (ALL, UNSPECIFIED, *CHANNELS))
        if self.enabled:
            await self.log.flushed()  # this worker's latest answers count too
        return await asyncio.to_thread(self.stats.rows, model_version, channel,
                                       tuple(ks) or DEFAULT_KS, confidence or 0.95)

    async def export(self, start: float = 0.0, end: float = 0.0) -> Iterator[ExportedImpression]:
        """The log with joined outcomes, items and users named (ExportImpressions), this
        worker's buffered answers written first."""
        check_window(start, end, self.settings.limits.latest_timestamp)
        if self.exporter is None:
            return iter(())
        if self.enabled:
            await self.log.flushed()
        return self.exporter.rows(start, end, await asyncio.to_thread(self.exporter.names))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._background.stop()
        self.join.close()
        await self.log.close()
