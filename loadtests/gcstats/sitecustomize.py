"""Garbage-collector figures of a serving process, for the benches (not imported by the server).

Put this folder first on the server's PYTHONPATH and name an output prefix; every process started
as `python -m server` then records, from its `gc.freeze()` at start (server/app.py) to its exit,
each collection's generation and its thread CPU time (what a pause costs on a quiet machine; the
wall time also counts the OS scheduler), the objects left in the oldest generation at each full
collection, and the modules imported after the freeze (their objects are walked by every full
collection). It writes PREFIX.<pid>.json at exit; `python -m loadtests.gcstats PREFIX` prints them:

    TAILOR_GC_STATS=/tmp/gc/run PYTHONPATH=loadtests/gcstats:$PWD python -m loadtests.bench ...
    python -m loadtests.gcstats /tmp/gc/run
"""
import atexit
import gc
import json
import os
import sys
import time

_OUT = os.environ.get("TAILOR_GC_STATS")

if _OUT and sys.orig_argv[1:3] == ["-m", "server"]:
    _state = {"since": time.time(), "modules": set(sys.modules), "started": 0.0}
    _runs: list[tuple[int, float, float, int]] = []
    """(generation, thread CPU seconds, wall seconds, oldest-generation size or 0) per collection."""

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _state["started"], _state["wall"] = time.thread_time(), time.perf_counter()
            return
        size = len(gc.get_objects(2)) if info["generation"] == 2 else 0
        _runs.append((info["generation"], time.thread_time() - _state["started"],
                      time.perf_counter() - _state["wall"], size))

    _freeze = gc.freeze

    def _freeze_and_restart() -> None:
        _freeze()
        _runs.clear()
        _state.update(since=time.time(), modules=set(sys.modules))

    def _write() -> None:
        late = sorted(set(sys.modules) - _state["modules"])
        with open(f"{_OUT}.{os.getpid()}.json", "w") as fh:
            json.dump({"seconds": time.time() - _state["since"], "runs": _runs,
                       "late_modules": late}, fh)

    gc.callbacks.append(_on_gc)
    gc.freeze = _freeze_and_restart
    atexit.register(_write)
