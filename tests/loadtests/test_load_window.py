"""The load generator's window is the calls' own: a bench's CPU reading (loadtests/measure.py)
leaves out the generator's start-up, its warm-up calls and the connections' handshakes, and with
several generator processes `seconds` spans every process's calls (they start together)."""
import json
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from loadtests.loadgen import CONNECTIONS, run_load
from loadtests.measure import measure

CALL, TIMES, SEEN = "/t.Load/Call", "/t.Load/Times", "/t.Load/Seen"
WARM_CPU = 0.1

# A gRPC server whose first call on each connection (the generator's warm-up call) burns
# WARM_CPU seconds of CPU, and whose other calls cost next to nothing; it keeps the arrival
# time (time.monotonic, one clock for the machine) and the request of every call after a
# connection's first. A call whose request is b"slow" takes 11 s, past the generator's deadline.
SERVER = textwrap.dedent("""
    import json, sys, threading, time
    from concurrent import futures
    import grpc

    WARM_CPU = float(sys.argv[1])
    seen, arrivals, requests, lock = set(), [], [], threading.Lock()

    def call(request, context):
        now = time.monotonic()
        with lock:
            first = context.peer() not in seen
            seen.add(context.peer())
            if not first:
                arrivals.append(now)
                requests.append(request.decode())
        if first:
            end = time.thread_time() + WARM_CPU
            while time.thread_time() < end:
                pass
        if request == b"slow":  # past the generator's deadline
            time.sleep(11)
        return b""

    def times(request, context):
        with lock:
            return json.dumps([min(arrivals), max(arrivals), len(arrivals)]).encode()

    def seen_requests(request, context):
        with lock:
            return json.dumps(requests).encode()

    server = grpc.server(futures.ThreadPoolExecutor(32))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Load", {
        "Call": grpc.unary_unary_rpc_method_handler(call),
        "Times": grpc.unary_unary_rpc_method_handler(times),
        "Seen": grpc.unary_unary_rpc_method_handler(seen_requests)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
""")


@pytest.fixture
def warm_burner():
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(WARM_CPU)], stdout=subprocess.PIPE,
                            text=True)
    try:
        yield proc.pid, f"127.0.0.1:{proc.stdout.readline().strip()}"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_cpu_window_leaves_out_the_warm_up_calls(warm_burner):
    pid, target = warm_burner
    m = measure("Call", pid, target, CALL, [b""], concurrency=2, duration=0.5)
    # the CONNECTIONS warm-up calls burn 16 x 0.1 = 1.6 s; the calls measured, a few hundred
    # us each on this Python server, about half a core over the 0.5 s
    assert m.load.calls > 100 and m.load.errors == 0
    assert m.cpu_seconds < CONNECTIONS * WARM_CPU / 2, m.cpu_seconds


def test_several_generator_processes_share_one_window(warm_burner):
    _, target = warm_burner
    result = run_load(target, CALL, [b""], concurrency=4, duration=0.5, procs=4)
    with grpc.insecure_channel(target) as ch:
        first, last, n = json.loads(ch.unary_unary(TIMES)(b"", timeout=10))
    assert n == result.calls
    # every counted call arrived inside the window the QPS divides by
    assert last - first <= result.seconds + 1e-3, (last - first, result.seconds)


def test_generator_processes_send_different_requests(warm_burner):
    """With --procs N each process cycled the same payload list from its start: N copies of
    each request (a second ReportReward of a decision writes nothing; a second Recommend of a
    user hits the user cache), so the figures were of a cheaper mix than one process sends."""
    _, target = warm_burner
    payloads = [str(i).encode() for i in range(100_000)]  # more than a 0.3 s run sends
    result = run_load(target, CALL, payloads, concurrency=4, duration=0.3, procs=2)
    with grpc.insecure_channel(target) as ch:
        sent = json.loads(ch.unary_unary(SEEN)(b"", timeout=10))
    assert len(sent) == result.calls > 100
    assert len(set(sent)) == len(sent)


def test_interleaved_cpu_per_call_leaves_out_the_warm_up_calls():
    """`bench --interleave`: each server's CPU per call over the run (its idle windows in it by
    design), but not its 16 warm-up calls nor the generator's start-up."""
    from loadtests.bench import Secured, interleave_pair

    procs = [subprocess.Popen([sys.executable, "-c", SERVER, str(WARM_CPU)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        servers = [{"tag": f" [{name}]", "srv": SimpleNamespace(
            process=proc, target=f"127.0.0.1:{proc.stdout.readline().strip()}")}
            for name, proc in zip("AB", procs)]
        args = SimpleNamespace(interleave=0.2, window_pairs=2)
        run = interleave_pair(servers, CALL, [b""], 300.0, args, Secured())
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
    assert run["errors"] == [0, 0]
    # 1.6 s of warm-up over ~120 calls a server would be ~13,000 us a call; the calls
    # themselves cost a few hundred us each (the idle windows add about as much)
    assert max(run["cpu_us"]) < 3000, run["cpu_us"]


def test_calls_past_the_deadline_are_in_the_open_loop_percentiles():
    """At a fixed rate a server that falls behind answers late or not at all: a call the
    generator gives up on (DEADLINE_EXCEEDED, at 1 s here) is the tail, not a call to leave out."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, "0"], stdout=subprocess.PIPE, text=True)
    try:
        target = f"127.0.0.1:{proc.stdout.readline().strip()}"
        payloads = [b"fast"] * 9 + [b"slow"]  # one call in ten never answers in time
        result = run_load(target, CALL, payloads, rate=60.0, duration=1.0, concurrency=1,
                          call_timeout=1.0)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert result.errors >= 3  # the slow ones, counted apart from the calls
    assert result.p99_ms >= 1_000 and result.sched_p99_ms >= 1_000  # the deadline
    assert result.p50_ms < 1000


def test_interleaved_windows_keep_the_calls_past_the_deadline():
    """`bench --interleave` compares two servers' p99 window by window: a server that leaves
    calls unanswered past the deadline must not look the faster for it."""
    from loadtests.loadgen import run_windows

    proc = subprocess.Popen([sys.executable, "-c", SERVER, "0"], stdout=subprocess.PIPE, text=True)
    try:
        target = f"127.0.0.1:{proc.stdout.readline().strip()}"
        payloads = [b"fast"] * 9 + [b"slow"]
        got = run_windows([target, target], CALL, payloads, rate=60.0, window=0.5, windows=2,
                          call_timeout=1.0)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    per_target, errors = got[0], got[2]
    assert sum(errors) >= 3
    pooled = np.concatenate([x for wins in per_target for x in wins])
    assert np.percentile(pooled, 99) >= 1.0  # seconds: the deadline


def test_a_generator_that_cannot_connect_is_reported_at_once(warm_burner):
    """A TLS generator against a plaintext server fails its warm-up: the run says why within
    seconds (it waited 120 s for a queue.Empty), and no other generator process runs on."""
    from clients.transport import Connection

    _, target = warm_burner
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="^load generator process failed: UNAVAILABLE: "):
        run_load(target, CALL, [b""], concurrency=2, duration=30, procs=2,
                 connection=Connection(tls=True))
    assert time.monotonic() - started < 20
