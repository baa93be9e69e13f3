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
"""A waiting batch is counted with the next batch to come after this long; `report` and the
periodic `run` (every `check_seconds`) count whatever waits. Counts go to the window of the
time the first waiting batch came."""


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
        self._published: dict[str, set[str]] = {}
        """Features of each version whose `tailor_drift_psi` gauge was set."""
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
        """Keep one batch's values (the pipeline's hook; any thread), and count the track's
        waiting batches once they hold `PENDING_QUERIES` queries or the first of them has
        waited `PENDING_SECONDS`. Never raises: a failure here must not fail the batch it
        watches."""
        try:
            track = self._track(values.bundle)
        except Exception:  # keep answering
            self._failed(values.bundle.version)
            return
        if track.layout is None:
            return
        now, apart, due = self.clock(), None, None
        with self._lock:
            if track.pending and track.pending[0].bundle is not values.bundle:
                apart = self._take(track)  # an amended copy of the bundle: counted apart
            if not track.pending:
                track.since = now
            track.pending.append(values)
            track.queries += len(values.results)
            if track.queries >= PENDING_QUERIES or now - track.since >= PENDING_SECONDS:
                due = self._take(track)
        self._count(track, apart)
        self._count(track, due)

    def report(self) -> DriftReport:
        """The served bundle's drift over the rolling windows (every waiting batch counted
        first); also refreshes gauges and logs."""
        bundle = self.source.active
        if bundle is None:
            raise FailedPrecondition("no model bundle is loaded: nothing to report drift for")
        track = self._track(bundle)
        if track.layout is None or not self.enabled:
            self._retire(bundle.version)
            status = NO_REFERENCE if self.enabled else DISABLED
            return DriftReport(bundle.version, status, self.threshold, self.min_count,
                               self.window_seconds, self.windows, self.clock())
        self.flush()
        with self._lock:
            live, since = track.windows.total(self.clock())
        report = build_report(bundle.version, track.layout, live, since, threshold=self.threshold,
                              min_count=self.min_count, window_seconds=self.window_seconds,
                              windows=self.windows)
        self._publish(report)
        return report

    def flush(self) -> None:
        """Count the waiting batches of every track (`report` and the periodic `run` do): no
        batch waits longer than `check_seconds`, nor keeps a retired bundle referenced."""
        with self._lock:
            taken = [(t, self._take(t)) for t in self._tracks.values() if t.pending]
        for track, waiting in taken:
            self._count(track, waiting)

    @staticmethod
    def _take(track: _Track) -> tuple[list, float] | None:
        """(the track's waiting batches, when the first of them came), taken; None if none
        waits. The caller holds the lock."""
        if not track.pending:
            return None
        waiting = (track.pending, track.since)
        track.pending, track.queries = [], 0
        return waiting

    def _count(self, track: _Track, waiting: tuple[list, float] | None) -> None:
        """Add batches taken from `track` to the window of the time the first of them came.
        Never raises (a failure is logged, and those batches are not counted)."""
        if waiting is None:
            return
        batches, since = waiting
        try:
            counts = track.layout.count_many(batches)
        except Exception:
            self._failed(batches[0].bundle.version)
            return
        with self._lock:
            track.windows.add(counts, since)

    def _failed(self, version: str) -> None:
        """Log the exception being handled, at most once a minute."""
        now = time.monotonic()
        if now - self._failed_at > 60.0:
            self._failed_at = now
            logger.exception("counting batches for drift failed (bundle %s)", version)

    def _publish(self, report: DriftReport) -> None:
        """Gauges and warnings of the served version's report. A gauge holds the PSI of the
        live windows: `metrics.DRIFT_PSI_NO_VALUE` (-1, never NaN: the workers' gauges merge by
        max) while they hold fewer than `min_count` values of its feature (the report's "few
        values": sampling noise, which an alert on the gauge would fire on after every restart
        or push) or none, or for a version no longer served (not the last figure, which an
        alert would go on reading)."""
        self._retire(report.version)
        published = self._published.setdefault(report.version, set())
        for f in report.features:
            if math.isfinite(f.psi) and f.live_count >= self.min_count:
                metrics.report_drift(report.version, f.name, f.psi)
                published.add(f.name)
            elif f.name in published or math.isfinite(f.psi):
                metrics.report_drift(report.version, f.name, metrics.DRIFT_PSI_NO_VALUE)
                published.add(f.name)
            key = (report.version, f.name)
            if f.status == "drift" and key not in self._drifting:
                self._drifting.add(key)
                logger.warning("drift: bundle %s feature %s PSI %.3f >= %.3f over %d live values",
                               report.version, f.name, f.psi, self.threshold, f.live_count)
            elif f.status == "ok" and key in self._drifting:
                self._drifting.discard(key)
                logger.info("drift: bundle %s feature %s back to PSI %.3f < %.3f",
                            report.version, f.name, f.psi, self.threshold)

    def _retire(self, served: str) -> None:
        """No value (-1) for the gauges of every version but `served` (no longer served)."""
        for version in [v for v in self._published if v != served]:
            for name in self._published.pop(version):
                metrics.report_drift(version, name, metrics.DRIFT_PSI_NO_VALUE)
            self._drifting = {key for key in self._drifting if key[0] != version}

    async def run(self) -> None:
        """Report every `check_seconds` (gauges and warnings) until cancelled."""
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                self.flush()
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
