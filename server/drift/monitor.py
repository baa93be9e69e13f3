"""Live drift monitoring: histograms of Recommend traffic per served bundle, PSI, gauges, warnings.

`observe` is the Recommend pipeline's hook (`recommend_batch(observe=...)`): it runs in the batch
thread after the batch is answered and keeps the batch until `PENDING_QUERIES` queries (or
`PENDING_SECONDS`) have come; then the batches' values are counted into the bundle's layout
together, with a few vectorised numpy calls, and added to the current window under a lock.
`report` counts what waits, then sums the rolling windows and computes the PSI per feature; it
also sets the `tailor_drift_psi` gauges and logs a warning when a feature crosses the threshold
(and a note when it falls back), so the periodic `run` keeps both fresh between GetDriftReport
calls. Each worker process counts the traffic it serves: its report and gauges describe that
share of the traffic.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import metrics
from ..errors import FailedPrecondition
from .layout import DriftLayout
from .logging import logger
from .report import DISABLED, NO_REFERENCE, DriftReport, build_report
from .window import RollingCounts

if TYPE_CHECKING:
    from ..config import Settings
    from ..interfaces import BundleSource
    from ..models import Bundle
    from ..recommend.pipeline import BatchValues

__all__ = ["DriftMonitor"]


PENDING_QUERIES = 32
"""Queries whose batches wait to be counted together (`DriftLayout.count_many`): under load
most Recommend batches hold one or two calls, and counting each alone cost about 45 us of
numpy calls, mostly fixed."""
PENDING_SECONDS = 1.0
"""Longest a waiting batch goes uncounted while traffic is light (checked as batches come;
`report` counts whatever waits)."""


@dataclass
class _Track:
    """One bundle version's layout (None: no reference), live windows, and the batches
    waiting to be counted (all of one `Bundle` object) with how many queries they hold."""

    layout: DriftLayout | None
    windows: RollingCounts | None
    pending: list = field(default_factory=list)
    queries: int = 0
    since: float = 0.0


class DriftMonitor:
    def __init__(self, source: BundleSource, *, window_seconds: float = 300.0, windows: int = 12,
                 threshold: float = 0.2, min_count: int = 500, check_seconds: float = 30.0,
                 enabled: bool = True, clock=time.time):
        self.source = source
        self.enabled = enabled
        self.window_seconds, self.windows = float(window_seconds), int(windows)
        self.threshold, self.min_count = float(threshold), int(min_count)
        self.check_seconds = float(check_seconds)
        self.clock = clock
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._drifting: set[tuple[str, str]] = set()
        self._task: asyncio.Task | None = None
        self._failed_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings, source: BundleSource) -> DriftMonitor:
        return cls(source, window_seconds=settings.drift_window_seconds,
                   windows=settings.drift_windows, threshold=settings.drift_psi_warning,
                   min_count=settings.drift_min_count, check_seconds=settings.drift_check_seconds,
                   enabled=settings.drift_enabled)

    def _track(self, bundle: Bundle) -> _Track:
        track = self._tracks.get(bundle.version)
        if track is not None:
            return track
        refs = bundle.manifest.drift
        layout = DriftLayout(refs, len(bundle.category_code)) if refs else None
        new = _Track(layout, RollingCounts(layout.size, self.window_seconds, self.windows)
                     if layout else None)
        with self._lock:  # the served bundle and the one before it (a batch may still use it)
            track = self._tracks.get(bundle.version)
            if track is not None:  # another thread made it meanwhile
                return track
            self._tracks = {v: t for v, t in self._tracks.items()
                            if v == getattr(self.source.active, "version", None)}
            self._tracks[bundle.version] = track = new
        for skipped in [s for s in layout.slots if s.skipped] if layout else ():
            logger.warning("bundle %s: drift of %s not tracked (%s)", bundle.version,
                           skipped.ref.name, skipped.skipped)
        return track

    def observe(self, values: BatchValues) -> None:
        """Count one batch's values (the pipeline's hook; any thread). Never raises: a failure
        here must not fail the batch it watches."""
        try:
            track = self._track(values.bundle)
            if track.layout is None:
                return
            now, apart, batches = self.clock(), [], []
            with self._lock:
                if track.pending and track.pending[0].bundle is not values.bundle:
                    apart = self._take(track)  # an amended copy of the bundle: counted apart
                if not track.pending:
                    track.since = now
                track.pending.append(values)
                track.queries += len(values.results)
                if track.queries >= PENDING_QUERIES or now - track.since >= PENDING_SECONDS:
                    batches = self._take(track)
            self._count(track, apart, now)
            self._count(track, batches, now)
        except Exception:  # keep answering; say why, at most once a minute
            now = time.monotonic()
            if now - self._failed_at > 60.0:
                self._failed_at = now
                logger.exception("counting a batch for drift failed (bundle %s)",
                                 values.bundle.version)

    def report(self) -> DriftReport:
        """The served bundle's drift over the rolling windows; also refreshes gauges and logs."""
        bundle = self.source.active
        if bundle is None:
            raise FailedPrecondition("no model bundle is loaded: nothing to report drift for")
        track = self._track(bundle)
        if track.layout is None or not self.enabled:
            status = NO_REFERENCE if self.enabled else DISABLED
            return DriftReport(bundle.version, status, self.threshold, self.min_count,
                               self.window_seconds, self.windows, self.clock())
        now = self.clock()
        with self._lock:
            batches = self._take(track)
        self._count(track, batches, now)
        with self._lock:
            live, since = track.windows.total(now)
        report = build_report(bundle.version, track.layout, live, since, threshold=self.threshold,
                              min_count=self.min_count, window_seconds=self.window_seconds,
                              windows=self.windows)
        self._publish(report)
        return report

    @staticmethod
    def _take(track: _Track) -> list:
        """The track's waiting batches, taken (the caller holds the lock)."""
        batches, track.pending, track.queries = track.pending, [], 0
        return batches

    def _count(self, track: _Track, batches: list, now: float) -> None:
        """Add `batches` (taken from `track`) to the window of `now`."""
        if batches:
            counts = track.layout.count_many(batches)
            with self._lock:
                track.windows.add(counts, now)

    def _publish(self, report: DriftReport) -> None:
        for f in report.features:
            if math.isfinite(f.psi):
                metrics.report_drift(report.version, f.name, f.psi)
            key = (report.version, f.name)
            if f.status == "drift" and key not in self._drifting:
                self._drifting.add(key)
                logger.warning("drift: bundle %s feature %s PSI %.3f >= %.3f over %d live values",
                               report.version, f.name, f.psi, self.threshold, f.live_count)
            elif f.status == "ok" and key in self._drifting:
                self._drifting.discard(key)
                logger.info("drift: bundle %s feature %s back to PSI %.3f < %.3f",
                            report.version, f.name, f.psi, self.threshold)

    async def run(self) -> None:
        """Report every `check_seconds` (gauges and warnings) until cancelled."""
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                if self.source.active is not None:
                    self.report()
            except Exception:  # keep monitoring; say why
                logger.exception("drift check failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
