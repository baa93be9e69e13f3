"""What writing a group of impressions costs the server process (its CPU, and how late the
event loop and a batch thread run meanwhile), with the log's writer process and without it:

    python -m loadtests.bench_impression_flush --answers 300 --flushes 40

Two `ImpressionLog`s, each on a real LMDB store (fsync on), a 100k-item stand-in catalog, k=10
answers of 20,000 users with request ids. `process`: the server's log, its flushes written by
its writer process (`ImpressionLog.start`); `thread`: the same log without one, its flushes
written by a thread of this process, where every flush was written before the writer process
(the old tree's bench: `PYTHONPATH=<old tree> python loadtests/bench_impression_flush.py` from
that tree). The two take turns: every `--period` seconds `--answers` answers are recorded into
one of them and flushed as `ImpressionLog.run` flushes them (`await flushed()`). Meanwhile a
probe on the loop sleeps 1 ms again and again (each wake-up takes the GIL back, as the gRPC
event loop does after every poll), and a thread does what the batch thread does between its
ONNX Runtime, FAISS and LMDB calls (10 GIL releases of 0.1 ms per batch); both record how late
they ran, counted for the writer that was flushing. Then, probe and thread stopped, `--flushes`
more flushes of each measure this process's CPU per flush (`time.process_time`, all its
threads) and the writer process's (`/proc/<pid>/stat`, clock ticks over all its flushes).
Printed per writer: CPU and wall per flush, lateness p50/p99/p99.9/max during the writes and
outside them; then the ratios. The switch interval is the server's
(`Settings.gil_switch_interval_ms`). `--writer thread|process` runs one alone.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from contract.items import item_code
from server.config import Settings
from server.ids import RandomIds
from server.impressions import ImpressionLog
from server.recommend.pipeline import RecQuery, RecResult
from server.security.secrets import Keyring
from server.store import Store

from .measure import positive

WRITERS = ("thread", "process")


class Catalog:
    """What the log reads of a bundle: its version, item ids and their codes."""

    def __init__(self, items: int):
        self.version, self.items = "bench", {"item_ids": np.array([f"i{n}" for n in range(items)])}
        self.item_codes = np.array([item_code(f"i{n}") for n in range(items)], np.int64)


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
    names = WRITERS if args.writer == "both" else (args.writer,)
    out = {n: {"windows": [], "walls": [], "cpu": [], "child": None} for n in names}
    with tempfile.TemporaryDirectory(prefix="flush-bench-") as tmp:
        logs = {n: ImpressionLog(Store(Path(tmp) / n, sync=True), Keyring.generate("user-id"),
                                 flush_seconds=3600, erasure=Keyring.generate("erasure"))
                for n in names}
        if "process" in logs:
            await logs["process"].start()
        for log in logs.values():
            _record(log, catalog, 10, rng)
            await log.flushed()  # the catalog's codes, once
        marks, stop = [], asyncio.Event()
        probe = asyncio.create_task(_probe(marks, stop))
        batches, halt = [], threading.Event()
        pipeline = threading.Thread(target=_pipeline, args=(batches, halt))
        pipeline.start()
        for i in range(args.flushes * len(names)):
            name = names[i % len(names)]
            _record(logs[name], catalog, args.answers, rng)
            await asyncio.sleep(args.period / 2)
            start = time.perf_counter()
            await logs[name].flushed()
            end = time.perf_counter()
            out[name]["windows"].append((start, end))
            out[name]["walls"].append(end - start)
            await asyncio.sleep(args.period / 2)
        stop.set()
        halt.set()
        await probe
        pipeline.join()
        for name in names:
            await _cpu(logs[name], catalog, rng, args, out[name])
        for log in logs.values():
            await log.close()
            log.store.close()
    out["marks"], out["batches"] = np.array(marks), np.array(batches)
    return out


async def _cpu(log: ImpressionLog, catalog: Catalog, rng, args, res: dict) -> None:
    """This process's CPU per flush, and the writer process's over all of them (quiet)."""
    child = _ticks(log.writer.pid) if log.writer is not None else None
    for _ in range(args.flushes):
        _record(log, catalog, args.answers, rng)
        await asyncio.sleep(args.period / 2)
        cpu = time.process_time()
        await log.flushed()
        res["cpu"].append(time.process_time() - cpu)
    if child is not None:
        res["child"] = (_ticks(log.writer.pid) - child) / os.sysconf("SC_CLK_TCK") / args.flushes


def _ticks(pid: int) -> int:
    """utime + stime of process `pid`, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


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
    p.add_argument("--answers", type=positive(int), default=300, help="answers per write (0.5 s at 600/s)")
    p.add_argument("--flushes", type=positive(int), default=40, help="writes per writer")
    p.add_argument("--period", type=float, default=0.1, help="seconds between writes")
    p.add_argument("--items", type=positive(int), default=100_000)
    p.add_argument("--writer", choices=(*WRITERS, "both"), default="both",
                   help="who writes the flushes: a thread of this process, the writer process")
    args = p.parse_args(argv)
    res = asyncio.run(_bench(args))
    for name in WRITERS:
        if name not in res:
            continue
        r = res[name]
        walls, cpu = np.array(r["walls"]) * 1000, np.array(r["cpu"]) * 1000
        child = f", writer process CPU {r['child'] * 1000:.2f} ms" if r["child"] is not None else ""
        print(f"{name}: {args.answers} answers per write, {args.flushes} writes: server process "
              f"CPU per flush p50 {np.median(cpu):.2f} ms (min {cpu.min():.2f}, max "
              f"{cpu.max():.2f}){child}, wall p50 {np.median(walls):.1f} ms (max {walls.max():.1f})")
        print(f"{name}: " + _summary(r, res["marks"], "event loop (1 ms sleeps)"))
        print(f"{name}: " + _summary(r, res["batches"], "batch thread (10 x 0.1 ms GIL releases)"))
    if all(n in res for n in WRITERS):
        print(_ratios(res))


def _ratios(res: dict) -> str:
    """process vs thread: CPU per flush, and the p99 lateness during writes."""
    def p99(name, marks):
        t, inside = marks[:, 0], np.zeros(len(marks), bool)
        for a, b in res[name]["windows"]:
            inside |= (t >= a - 0.001) & (t <= b)
        return np.percentile(marks[inside, 1] * 1000, 99)
    cpu = {n: np.median(res[n]["cpu"]) for n in WRITERS}
    loop = {n: p99(n, res["marks"]) for n in WRITERS}
    batch = {n: p99(n, res["batches"]) for n in WRITERS}
    return (f"process vs thread: server CPU per flush x{cpu['process'] / cpu['thread']:.3f}; "
            f"p99 lateness during writes, event loop {loop['thread']:.2f} -> "
            f"{loop['process']:.2f} ms, batch thread {batch['thread']:.2f} -> "
            f"{batch['process']:.2f} ms")


if __name__ == "__main__":
    main()
