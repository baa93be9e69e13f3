"""Modules a worker imports in a thread once it serves, so that no call pays for them.

GetCampaignStats (`kernels.bandit_stats`, `kernels.abtest`) and SampleSize need `scipy.stats`,
which the worker does not import at start (~0.6 s of CPU, 1-2 s wall on a busy 2-core box:
start-up's readiness would wait for it). Imported by the first such call, it made that call take
0.8-1.8 s (then 4-16 ms), in every worker after every start.
"""
from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import Sequence

__all__ = ["STATISTICS", "preload"]

logger = logging.getLogger("tailor.preload")

STATISTICS = ("scipy.stats",)
"""What the campaign statistics import on their first call (scipy.integrate, scipy.optimize
and scipy.special come with it)."""


def preload(modules: Sequence[str]) -> threading.Thread:
    """Import `modules` in a daemon thread (a stop does not wait for it), then collect and
    freeze (`gc.freeze`) what they made, as start-up does before serving: left out of the
    freeze, scipy.stats's ~800 modules made every later full collection 15-100 ms
    (`server.impressions.stats`). The event loop keeps serving meanwhile (the thread yields the
    GIL every `gil_switch_interval_ms`); a call that needs a module being imported waits for
    the import, as it would have imported it itself."""
    thread = threading.Thread(target=_imported, args=(tuple(modules),), name="tailor-preload",
                              daemon=True)
    thread.start()
    return thread


def _imported(modules: tuple[str, ...]) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        for name in modules:
            importlib.import_module(name)
    except Exception:  # the first call that needs it imports it (and fails as it would have)
        logger.exception("preloading %s failed", ", ".join(modules))
        return
    gc.collect()
    gc.freeze()
    logger.info("preloaded %s in %.2f s (%.2f s of CPU)", ", ".join(modules),
                time.perf_counter() - wall, time.thread_time() - cpu)
