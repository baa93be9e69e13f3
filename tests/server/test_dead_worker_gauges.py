"""A worker of `--workers N` that is gone drops out of the `livesum` gauges the parent serves
(`tailor_detached_handovers`, the queue depth, the user cache): its last value, written to the
metrics dir, stayed in every scrape of the parent while the other workers drained. A real
spawned process writes the gauge and is SIGKILLed (as the OOM killer would)."""
import multiprocessing as mp

from prometheus_client import CollectorRegistry, multiprocess

from server.stop_bound import Stop
from server.supervisor import _worker_gone

DIES_HANDING_OVER = """
import os, signal
from server.metrics import DETACHED_HANDOVERS
DETACHED_HANDOVERS.inc()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _handovers(metrics_dir) -> float | None:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    return registry.get_sample_value("tailor_detached_handovers")


def test_a_dead_worker_s_hand_overs_leave_the_gauge(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    proc = mp.get_context("spawn").Process(target=exec, args=(DIES_HANDING_OVER,),
                                           name="tailor-worker-0")
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9 and _handovers(tmp_path) == 1  # written, then killed
    stop = Stop(5.0)
    stop.begin()  # the others are stopping: only its end is logged
    assert _worker_gone(proc, stop, lambda *_: None) == -9
    assert not _handovers(tmp_path)
