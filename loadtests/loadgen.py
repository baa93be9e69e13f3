"""A lean gRPC load generator (grpc.aio, one or more processes) used by the benchmark for every
RPC alike, so their figures compare: closed loop (max throughput at a concurrency) and open loop
(Poisson arrivals at a fixed rate; a late reply never delays the next send, so server queueing
shows up in the latency).

In the open loop a call's latency runs from the moment it is handed to gRPC to its reply. The
generator's own lateness against the schedule (asyncio timers fire up to ~1 ms late: epoll waits
in whole milliseconds) is reported apart as `lag_p99_ms`, and `sched_p99_ms` is the p99 counted
from the scheduled time (lag included), so a generator that falls behind is visible. A call the
generator gives up on (DEADLINE_EXCEEDED after `CALL_TIMEOUT`) is an error, not a call, and its
latency (the deadline) is in `run_load`'s percentiles: it is the tail of a server that fell
behind, which a p99 of the answered calls alone would leave out.

One window for every generator process: each starts, connects and warms its connections, says
so, and waits; the calls start in all of them at once, and the window ends when the last one
has its last reply (before any closes its connections). `seconds` is that window (from the
common start to the last process's end), and `run_load(probe=...)` reads `probe()` at its two
ends, so what a bench reads around the calls (the server's CPU: loadtests/measure.py) covers
the calls counted and not the processes' start-up, the warm-up calls or the teardown."""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue as queue_module
import random
import time
from dataclasses import dataclass

import grpc
import numpy as np

from clients.transport import Connection
from protos.tailor.v1 import diagnostics_pb2, recommendation_pb2

__all__ = ["LoadResult", "run_load", "run_windows", "PING", "RECOMMEND", "ping_payloads",
           "recommend_payloads"]

PING = "/tailor.v1.DiagnosticsService/Ping"
RECOMMEND = "/tailor.v1.RecommendationService/Recommend"


@dataclass
class LoadResult:
    calls: int
    """Calls answered OK."""
    errors: int
    """Calls that failed, those given up on (DEADLINE_EXCEEDED) included."""
    seconds: float
    p50_ms: float
    p99_ms: float
    """p50 and p99 over the answered calls and those given up on (at their deadline)."""
    lag_p99_ms: float = 0.0
    """Open loop: p99 of (actual send - scheduled send)."""
    sched_p99_ms: float = 0.0
    """Open loop: p99 latency counted from the scheduled send time."""
    window: tuple = ()
    """`run_load(probe=...)`: (probe() when the calls started, probe() when the last ended)."""

    @property
    def qps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def ping_payloads() -> list[bytes]:
    return [diagnostics_pb2.PingRequest().SerializeToString()]


def recommend_payloads(users: list[str], k: int = 10, n: int = 4096) -> list[bytes]:
    rng = random.Random(7)
    return [recommendation_pb2.RecommendRequest(user_id=rng.choice(users), k=k, channel="web")
            .SerializeToString() for _ in range(n)]


PLAINTEXT = Connection()
CALL_TIMEOUT = 10.0
"""Seconds the generator gives each call."""

CONNECTIONS = 16
"""TCP connections per generator process, used round-robin. A server with several SO_REUSEPORT
workers gets each connection assigned to one worker by a hash: one connection per process can
leave a worker idle, and a few split unevenly (4 over 2 workers: 3:1 or worse in 62% of runs);
16 keep it near even (12:4 or worse in 8% of runs)."""


def _channels(target, connection):
    # a local subchannel pool per channel: otherwise channels to one target share a connection
    return [connection.aio_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)]


async def _warm_calls(channels, path, payload):
    """One multi-callable per channel, each called once (the connections warmed); replies
    stay raw bytes: every RPC is measured without client-side parsing."""
    calls = [ch.unary_unary(path, request_serializer=None, response_deserializer=None)
             for ch in channels]
    for call in calls:
        await call(payload, timeout=30)
    return calls


async def _drive(target, path, payloads, concurrency, duration, rate, seed, connection,
                 call_timeout=CALL_TIMEOUT, ready=None, report=None):
    """Warm the connections, call `ready()` (it returns once every generator is warm; a thread
    may block in it), drive the load, hand the result to `report` while the connections are
    still open, and return it: (latencies, lags, errors, seconds, start, end, timeouts), start
    and end on `time.monotonic` (one clock for every process of the machine); the latencies and
    lags hold the calls given up on (`timeouts` of them, among the errors)."""
    channels = _channels(target, connection)
    try:
        calls = await _warm_calls(channels, path, payloads[0])
        if ready is not None:
            await asyncio.to_thread(ready)
        result = await _drive_on(calls, payloads, concurrency, duration, rate, seed, call_timeout)
        if report is not None:
            report(result)
        return result
    finally:
        for ch in channels:
            await ch.close()


async def _drive_on(calls, payloads, concurrency, duration, rate, seed, call_timeout):
    lat: list[float] = []
    lag: list[float] = []
    errors = timeouts = 0
    start, started = time.perf_counter(), time.monotonic()
    stop_at = start + duration

    async def one(i, scheduled):
        nonlocal errors, timeouts
        t0 = time.perf_counter()
        try:
            await calls[i % len(calls)](payloads[i % len(payloads)], timeout=call_timeout)
        except grpc.aio.AioRpcError as err:
            errors += 1
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            timeouts += 1  # given up on: its latency is the tail, kept for the percentiles
        lat.append(time.perf_counter() - t0)
        lag.append(t0 - scheduled)

    if rate:  # open loop
        await _poisson(rate, start, stop_at, seed, one)
    else:  # closed loop: `concurrency` callers back to back
        async def worker(offset):
            i = offset
            while time.perf_counter() < stop_at:
                await one(i, time.perf_counter())
                i += concurrency
        await asyncio.gather(*(worker(j) for j in range(concurrency)))
    return lat, lag, errors, time.perf_counter() - start, started, time.monotonic(), timeouts


async def _poisson(rate, start, stop_at, seed, call):
    """Open loop: Poisson arrivals at `rate`/s from `start` until `stop_at`, each one
    `call(i, scheduled time)` as its own task (a late reply never delays the next send); returns
    once every call has."""
    pending, t_next, i = set(), start, 0
    rng = random.Random(seed)
    while t_next < stop_at:
        delay = t_next - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(call(i, t_next))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        t_next += rng.expovariate(rate)
    await asyncio.gather(*pending)


def _proc(args, queue, go):
    """One generator process: ("ready", None) once warm, then ("done", result) or ("failed",
    what went wrong) on `queue`."""
    def report(result):
        lat, lag, errors, seconds, start, end, timeouts = result
        return (np.asarray(lat, np.float64), np.asarray(lag, np.float64), errors, start, end,
                timeouts)
    _run_reporting(_drive, args, queue, go, report)


def _run_reporting(drive, args, queue, go, pack) -> None:
    """`drive(*args, ready=..., report=...)` in a generator process, told on `queue`: ("ready",
    None) once warm (then waits for `go`), ("done", pack(result)), or ("failed", why) if it
    failed before its result (a failure while closing afterwards is not the parent's)."""
    reported = False

    def ready():
        queue.put(("ready", None))
        go.wait()

    def report(result):
        nonlocal reported
        queue.put(("done", pack(result)))
        reported = True
    try:
        asyncio.run(drive(*args, ready=ready, report=report))
    except BaseException as err:  # noqa: BLE001 - told to the parent, which raises it
        if not reported:
            why = (f"{err.code().name}: {err.details()}" if isinstance(err, grpc.aio.AioRpcError)
                   else f"{type(err).__name__}: {err}")
            queue.put(("failed", why))


def _collect(queue, workers, want: str, timeout: float) -> list:
    """One `want` message from each of `workers`; RuntimeError if one failed or died first."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < len(workers):
        try:
            kind, body = queue.get(timeout=1.0)
        except queue_module.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:  # killed (a signal) before it said anything; an exception it tells
                raise RuntimeError(f"a load generator process exited with {dead[0]}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"load generator: no {want!r} from every process in "
                                   f"{timeout:.0f} s") from None
            continue
        if kind == "failed":
            raise RuntimeError(f"load generator process failed: {body}")
        out.append(body)
    return out


@contextlib.contextmanager
def _reaped(workers):
    """Joins the generator processes on the way out; if the block failed (one of them did, or
    the parent was interrupted), kills them first, before those still waiting start a load."""
    try:
        yield
    except BaseException:
        for w in workers:
            w.kill()
        raise
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
                w.join()


def _share(payloads: list[bytes], i: int, procs: int) -> list[bytes]:
    """Process `i`'s requests: every `procs`-th from the `i`-th, so the processes send different
    ones (the same ones at once would hit caches, and repeat a ReportReward that then writes
    nothing); all of them if there are fewer than processes."""
    return payloads[i::procs] if len(payloads) >= procs else payloads


def run_load(target: str, path: str, payloads: list[bytes], *, concurrency: int = 32,
             duration: float = 10.0, rate: float = 0.0, procs: int = 1,
             connection: Connection = PLAINTEXT, probe=None,
             call_timeout: float = CALL_TIMEOUT) -> LoadResult:
    """Call the unary method `path` at `target` for `duration` seconds, cycling over `payloads`
    (serialized requests; with `procs` > 1 each process over its own share): closed loop at
    `concurrency`, or open loop at `rate` calls/s, over `connection` (TLS, token; plaintext by
    default). Every process's calls start together once all are warm; `probe()` (if given) is
    read then and when the last call has ended (`LoadResult.window`); each call is given up on
    after `call_timeout` seconds."""
    ctx = mp.get_context("spawn")
    queue, go = ctx.Queue(), ctx.Event()
    per_conc = max(1, concurrency // procs)
    workers = [ctx.Process(target=_proc, args=((target, path, _share(payloads, i, procs),
                                                per_conc, duration, rate / procs, 11 + i,
                                                connection, call_timeout), queue, go))
               for i in range(procs)]
    for w in workers:
        w.start()
    with _reaped(workers):
        _collect(queue, workers, "ready", 120)
        before = probe() if probe is not None else None
        go.set()
        parts = _collect(queue, workers, "done", duration + 120)
        after = probe() if probe is not None else None
    window = (before, after) if probe is not None else ()
    lat = np.concatenate([p[0] for p in parts])
    lag = np.concatenate([p[1] for p in parts])
    seconds = max(p[4] for p in parts) - min(p[3] for p in parts)
    errors, answered = sum(p[2] for p in parts), len(lat) - sum(p[5] for p in parts)
    if not len(lat):
        return LoadResult(0, errors, seconds, float("nan"), float("nan"), window=window)
    p50, p99 = np.percentile(lat, [50, 99]) * 1000  # the calls given up on included
    lag_p99, sched_p99 = 0.0, 0.0
    if rate:
        lag_p99, sched_p99 = np.percentile(lag, 99) * 1000, np.percentile(lat + lag, 99) * 1000
    return LoadResult(answered, errors, seconds, float(p50), float(p99), float(lag_p99),
                      float(sched_p99), window)


def _window_target(w: int, n: int) -> int:
    """Which of `n` targets window `w` goes to: for two, each pair of windows is A,B or B,A in
    turn (A B B A A B ...), so neither always follows the other; for more, round robin."""
    return (w + (w // 2) % 2) % 2 if n == 2 else w % n


async def _drive_windows(targets, path, payloads, rate, window, windows, seed, connection,
                         call_timeout=CALL_TIMEOUT, ready=None, report=None):
    """As `_drive`: `ready()` once every connection is warm, `report(result)` before they
    close."""
    channels = [_channels(t, connection) for t in targets]
    try:
        calls = [await _warm_calls(chans, path, payloads[0]) for chans in channels]
        if ready is not None:
            await asyncio.to_thread(ready)
        lat = [[[] for _ in range(windows)] for _ in targets]
        lag: list[float] = []
        errors, timeouts = [0] * len(targets), [0] * len(targets)

        async def one(i, scheduled):
            w = int((scheduled - start) // window)
            who = _window_target(w, len(targets))
            t0 = time.perf_counter()
            try:
                await calls[who][i % CONNECTIONS](payloads[i % len(payloads)],
                                                  timeout=call_timeout)
            except grpc.aio.AioRpcError as err:
                errors[who] += 1
                if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    return
                timeouts[who] += 1  # given up on: in its window's latencies, as in `run_load`
            lat[who][w].append(time.perf_counter() - t0)
            lag.append(t0 - scheduled)

        start = time.perf_counter()
        await _poisson(rate, start, start + window * windows, seed, one)
        mine = [[np.asarray(lat[t][w], np.float64) for w in range(windows)
                 if _window_target(w, len(targets)) == t] for t in range(len(targets))]
        result = mine, np.asarray(lag, np.float64), errors, timeouts
        if report is not None:
            report(result)
        return result
    finally:
        for chans in channels:
            for ch in chans:
                await ch.close()


def _windows_proc(args, queue, go):
    """`_proc`'s protocol for `_drive_windows`."""
    _run_reporting(_drive_windows, args, queue, go, lambda result: result)


def run_windows(targets: list[str], path: str, payloads: list[bytes], *, rate: float,
                window: float, windows: int, connection: Connection = PLAINTEXT, seed: int = 11,
                probe=None, call_timeout: float = CALL_TIMEOUT):
    """One open-loop schedule at `rate` calls/s over `windows` windows of `window` seconds, each
    window's calls sent to one of `targets` in turn (for two: A B B A A B ...), from one generator
    process: the targets meet the same load and, window by window, the same machine. Returns
    (per target, the latency arrays in seconds of the windows it was sent, in order, the calls
    given up on at the deadline included; the generator's lag behind its schedule in seconds;
    errors per target; of those, the calls given up on per target), and with `probe` a fifth
    item: (probe() once every connection is warm, probe() after the last reply), as
    `run_load`'s `window`."""
    ctx = mp.get_context("spawn")
    queue, go = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_windows_proc, args=((targets, path, payloads, rate, window, windows,
                                                    seed, connection, call_timeout), queue, go))
    proc.start()
    with _reaped([proc]):
        _collect(queue, [proc], "ready", 120)
        before = probe() if probe is not None else None
        go.set()
        (out,) = _collect(queue, [proc], "done", window * windows + 120)
        after = probe() if probe is not None else None
    return out if probe is None else (*out, (before, after))
