"""What writing a group of impressions costs, in process (its thread CPU, and how late the event
loop and a batch thread run meanwhile):

    python -m loadtests.bench_impression_flush --answers 300 --flushes 40
    PYTHONPATH=/tmp/before python loadtests/bench_impression_flush.py   # another tree's server/

An `ImpressionLog` on a real LMDB store (fsync on), a 100k-item stand-in catalog, k=10 answers
of 20,000 users with request ids. Every `--period` seconds `--answers` answers are recorded and
written as `ImpressionLog.run` writes them (`flush` in a thread). Meanwhile a probe on the loop
sleeps 1 ms again and again (each wake-up takes the GIL back, as the gRPC event loop does after
every poll), and a thread does what the batch thread does between its ONNX Runtime, FAISS and
LMDB calls (10 GIL releases of 0.1 ms per batch); both record how late they ran. Printed: the
flush's thread CPU and wall time per write, and the lateness p50/p99/p99.9/max during the
writes and outside them. The switch interval is the server's
(`Settings.gil_switch_interval_ms`).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from server.config import Settings
from server.ids import RandomIds
from server.impressions import ImpressionLog
from server.recommend.pipeline import RecQuery, RecResult
from server.security.secrets import Keyring
from server.store import Store


class Catalog:
    """What the log reads of a bundle: its version and item ids."""

    def __init__(self, items: int):
        self.version, self.items = "bench", {"item_ids": np.array([f"i{n}" for n in range(items)])}


async def _probe(marks: list, stop: asyncio.Event) -> None:
    """(time, lateness s) of every 1 ms sleep until `stop`."""
    pc = time.perf_counter
    while not stop.is_set():
        t = pc()
        await asyncio.sleep(0.001)
        marks.append((t, pc() - t - 0.001))


def _record(log: ImpressionLog, catalog: Catalog, n: int, rng) -> None:
    rid = RandomIds(16)
    for _ in range(n):
        rows = rng.integers(0, len(catalog.items["item_ids"]), 10)
        log.record(rid(), RecQuery(f"user{rng.integers(20_000)}", 10, channel="web"),
                   RecResult(rows, rng.random(10, np.float32), rows.astype(np.float32), False,
                             catalog))


def _pipeline(marks: list, stop) -> None:
    """A batch thread's pattern: 10 calls that release the GIL (0.1 ms each) per batch; records
    (time, lateness s) of each batch, as the 1 ms probe does for the loop."""
    pc = time.perf_counter
    while not stop.is_set():
        t = pc()
        for _ in range(10):
            time.sleep(0.0001)
        marks.append((t, pc() - t - 0.001))


async def _bench(args) -> dict:
    sys.setswitchinterval(Settings().gil_switch_interval_ms / 1000)
    rng, catalog = np.random.default_rng(1), Catalog(args.items)
    out = {"windows": [], "walls": [], "cpu": []}
    with tempfile.TemporaryDirectory(prefix="flush-bench-") as tmp:
        store = Store(Path(tmp) / "store", sync=True)
        log = ImpressionLog(store, Keyring.generate("user-id"), flush_seconds=3600)
        _record(log, catalog, 10, rng)
        log.flush()  # the catalog's codes, once

        def flush():
            cpu = time.thread_time()
            log.flush()
            out["cpu"].append(time.thread_time() - cpu)
        marks, stop = [], asyncio.Event()
        probe = asyncio.create_task(_probe(marks, stop))
        batches, halt = [], threading.Event()
        pipeline = threading.Thread(target=_pipeline, args=(batches, halt))
        pipeline.start()
        for _ in range(args.flushes):
            _record(log, catalog, args.answers, rng)
            await asyncio.sleep(args.period / 2)
            start = time.perf_counter()
            await asyncio.to_thread(flush)
            end = time.perf_counter()
            out["windows"].append((start, end))
            out["walls"].append(end - start)
            await asyncio.sleep(args.period / 2)
        stop.set()
        halt.set()
        await probe
        pipeline.join()
        store.close()
    out["marks"], out["batches"] = np.array(marks), np.array(batches)
    return out


def _summary(res: dict, marks: np.ndarray, what: str) -> str:
    t, late = marks[:, 0], marks[:, 1] * 1000
    inside = np.zeros(len(t), bool)
    for a, b in res["windows"]:
        inside |= (t >= a - 0.001) & (t <= b)
    def pct(x):
        return "/".join(f"{v:.2f}" for v in np.percentile(x, [50, 99, 99.9])) + f"/{x.max():.2f}"
    return (f"{what}: lateness during writes p50/p99/p99.9/max {pct(late[inside])} ms "
            f"({inside.sum()} runs), outside {pct(late[~inside])} ms")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_impression_flush",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answers", type=int, default=300, help="answers per write (0.5 s at 600/s)")
    p.add_argument("--flushes", type=int, default=40, help="writes")
    p.add_argument("--period", type=float, default=0.1, help="seconds between writes")
    p.add_argument("--items", type=int, default=100_000)
    args = p.parse_args(argv)
    res = asyncio.run(_bench(args))
    walls, cpu = np.array(res["walls"]) * 1000, np.array(res["cpu"]) * 1000
    print(f"{args.answers} answers per write, {args.flushes} writes: flush thread CPU p50 "
          f"{np.median(cpu):.2f} ms (min {cpu.min():.2f}, max {cpu.max():.2f}), wall p50 "
          f"{np.median(walls):.1f} ms (max {walls.max():.1f})")
    print(_summary(res, res["marks"], "event loop (1 ms sleeps)"))
    print(_summary(res, res["batches"], "batch thread (10 x 0.1 ms GIL releases)"))


if __name__ == "__main__":
    main()
