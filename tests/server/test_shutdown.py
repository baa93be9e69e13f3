"""SIGTERM drains a real `python -m server`: health NOT_SERVING first (new calls still served for
TAILOR_DRAIN_SECONDS), then new calls are refused while a call in flight finishes, its events
are committed, and the process exits 0. A SIGTERM during the start drains too."""
import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc as dpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from tests.conftest import ROOT, _children, _descendants, free_port, server_settings, serving

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def event(eid: str) -> pb.Event:
    return pb.Event(event_id=eid, user_id="drain-user", type="view", timestamp=time.time() - 5)


def health(target: str):
    """The health answer of a fresh connection, or the status code that refused it."""
    with grpc.insecure_channel(target) as ch:
        try:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError as err:
            return err.code()


def ping(target: str):
    with grpc.insecure_channel(target) as ch:
        try:
            dpb_grpc.DiagnosticsServiceStub(ch).Ping(dpb.PingRequest(), timeout=2)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()


def wait_for(condition, what: str, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def received(metrics_port: int) -> bool:
    """The server has the first message of the TrackEventStream (its /metrics says so)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return any(line.startswith("grpc_server_msg_received_total{") and 'grpc_method="TrackEventStream"'
               in line and line.endswith(" 1.0") for line in text.splitlines())


def _two_workers(tmp_path, **env) -> subprocess.Popen:
    """`python -m server --workers 2` on a new data dir (`env`: more variables), its output
    piped (text)."""
    args = [sys.executable, "-m", "server", "--port", str(free_port()), "--workers", "2",
            "--data-dir", str(tmp_path / "d")]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets"), **env}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _serving_workers(proc: subprocess.Popen) -> tuple[list[int], list[str]]:
    """(the pids of `_two_workers`' workers once both serve, the output lines read so far)."""
    seen, deadline = [], time.time() + 120
    while sum("serving on" in line for line in seen) < 2 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
    return [pid for pid in _children(proc.pid) if b"spawn_main" in _cmdline(pid)], seen


@contextlib.contextmanager
def _two_serving(tmp_path, **env):
    """`_two_workers` once both workers serve: yields (the process, the workers' pids, the
    output lines read so far, every process under the parent then). At the end, on a failure
    too, none of them is left behind, nor what the workers started since (`_kill_all`)."""
    proc = _two_workers(tmp_path, **env)
    workers, seen = _serving_workers(proc)
    everyone = _descendants(proc.pid)
    try:
        assert len(workers) == 2, "".join(seen)
        yield proc, workers, seen, everyone
    finally:
        _kill(everyone)
        _kill_all(proc, workers)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_the_call_in_flight_finish_and_refuses_new_ones(server_process, tmp_path, workers):
    env = {"TAILOR_GRACE_SECONDS": "30", "TAILOR_DRAIN_SECONDS": "1.5",
           "TAILOR_STOP_SECONDS": "60", "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    server = server_process(workers=workers, env=env)
    release = threading.Event()

    def batches():
        yield pb.TrackEventsRequest(events=[event("d0")])
        release.wait(30)
        yield pb.TrackEventsRequest(events=[event("d1")])
    with grpc.insecure_channel(server.target) as ch:
        reply = pb_grpc.ProfileServiceStub(ch).TrackEventStream.future(batches(), timeout=60)
        wait_for(lambda: received(server.metrics_port), "the first message")
        os.kill(server.proc.pid, signal.SIGTERM)
        wait_for(lambda: health(server.target) == NOT_SERVING, "health NOT_SERVING")
        assert ping(server.target) == grpc.StatusCode.OK  # draining: still served
        wait_for(lambda: ping(server.target) == grpc.StatusCode.UNAVAILABLE, "new calls refused")
        assert server.proc.poll() is None  # still running: the stream is in flight
        release.set()
        assert reply.result().accepted == 2
    assert server.proc.wait(timeout=30) == 0
    log = server.stop()
    assert "draining" in log

    assert asyncio.run(_exported(tmp_path)) == ["d0", "d1"]  # the writers flushed both


async def _exported(tmp_path) -> list[str]:
    """The event ids a server on `server_process`'s data dir (its secrets beside it) exports:
    a server in this process (what the stop left on disk is read, not how a process starts:
    a `python -m server` start here cost ~2-3 s of CPU)."""
    async with serving(server_settings(tmp_path, None)) as (_, ch):
        exported = pb_grpc.ProfileServiceStub(ch).ExportEvents(pb.ExportEventsRequest())
        return sorted([e.event_id async for e in exported])


@pytest.mark.parametrize("after", ["the first log line", "serving on"])
def test_sigterm_during_the_start_drains_instead_of_killing(tmp_path, after):
    """Signals arrive blocked until handled: a SIGTERM as soon as the server logs (in the middle
    of its start) or right after its "serving on" line drains it; it never dies of it (-15)."""
    args = [sys.executable, "-m", "server", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = [proc.stdout.readline()]
    while after != "the first log line" and "serving on" not in lines[-1] and lines[-1]:
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out[-2000:]
    assert "draining" in out


def test_sigterm_while_the_workers_start_drains_them(tmp_path):
    """With --workers, a SIGTERM once the parent has started its workers (and multiprocessing's
    resource tracker), before they handle signals: the parent forwards it, and each worker,
    which got the stop signals blocked, drains once started instead of dying of it (-15)."""
    proc = _two_workers(tmp_path)
    deadline = time.time() + 60
    while len(_children(proc.pid)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out[-3000:]
    assert out.count("draining") == 2, out[-3000:]


def test_a_worker_killed_while_the_workers_start_stops_the_server_at_once(tmp_path):
    """A worker that dies before it is up (an OOM kill, a crash) must not leave the others
    waiting for it at the start barrier (they used to wait 300 s, deaf to the parent's SIGTERM):
    the parent stops them at once and exits non-zero."""
    proc = _two_workers(tmp_path)
    deadline = time.time() + 60
    workers: list[int] = []
    while len(workers) < 2 and proc.poll() is None and time.time() < deadline:
        workers = [pid for pid in _children(proc.pid) if b"spawn_main" in _cmdline(pid)]
        time.sleep(0.005)
    os.kill(workers[0], signal.SIGKILL)
    started = time.time()
    try:
        out, _ = proc.communicate(timeout=60)
    finally:  # on a failure, leave no server behind
        _kill_all(proc, workers[1:])
    assert proc.returncode == 1, out[-3000:]
    assert time.time() - started < 30, out[-3000:]
    assert "exited with -9" in out and out.count("draining") == 1, out[-3000:]


def test_a_worker_stopped_alone_stops_the_server(tmp_path):
    """A stop signal sent to one worker only (`kill <worker pid>`) drains it and it exits 0; the
    parent used to act on non-zero exits only, so the port went on one worker short, its
    health SERVING. Now the parent stops the other and exits non-zero (a restart)."""
    with _two_serving(tmp_path) as (proc, workers, _, _):
        os.kill(workers[0], signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out[-3000:]
    assert "exited with 0; stopping the others" in out and out.count("draining") == 2, out[-3000:]


def _kill_all(proc: subprocess.Popen, workers: list[int]) -> None:
    """SIGKILL the workers' children, the workers and the parent (those still there)."""
    _kill([c for w in workers for c in _children(w)] + workers + [proc.pid])


def _kill(pids) -> None:
    """Leave none of `pids` behind (a test's `finally`, on a failure): SIGKILL each still
    there, then SIGCONT (one the test stopped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.partition(b"=") for item in f.read().split(b"\0") if item]
    return {k.decode(): v.decode() for k, _, v in pairs}


def _wait_at(gate, worker: int, out) -> None:
    out.put(gate.wait(worker))


def test_a_worker_killed_at_the_start_gate_hangs_no_one():
    """A worker SIGKILLed while it waits for the others (the OOM killer mid-start) holds no
    lock: the parent's abort returns at once, and a worker arriving after gives up at once
    (with a multiprocessing Barrier, the parent's abort waited for the dead waiter forever)."""
    import multiprocessing as mp

    from server.worker import StartGate
    ctx = mp.get_context("spawn")
    gate, out = StartGate(ctx, 2), ctx.Queue()
    first = ctx.Process(target=_wait_at, args=(gate, 0, out))
    first.start()
    deadline = time.time() + 60
    while not gate._up[0] and time.time() < deadline:  # it waits at the gate
        time.sleep(0.01)
    assert gate._up[0] and first.is_alive()
    os.kill(first.pid, signal.SIGKILL)
    first.join(10)
    began = time.time()
    gate.abort()
    second = ctx.Process(target=_wait_at, args=(gate, 1, out))
    second.start()
    assert out.get(timeout=60) is False
    second.join(10)
    assert time.time() - began < 30 and second.exitcode == 0
    stopping = StartGate(ctx, 2)  # a worker told to stop while it waits gives up too
    assert stopping.wait(0, stopped=lambda: True) is False


def test_a_worker_killed_while_the_server_drains_makes_the_exit_non_zero(tmp_path):
    """After a stop signal the parent ignored how its workers ended: one SIGKILLed (the OOM
    killer) or crashing mid-drain, its calls in flight cut, and the server still exited 0, a
    clean stop to the service manager. Now that worker's end is logged and the exit is 1."""
    with _two_serving(tmp_path, TAILOR_DRAIN_SECONDS="3") as (proc, workers, seen, _):
        proc.send_signal(signal.SIGTERM)
        while "draining" not in (line := proc.stdout.readline()):  # both drain 3 s
            seen.append(line)
            assert line, "".join(seen)
        os.kill(workers[1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out[-3000:]
    assert "exited with -9 while the server stopped" in out, out[-3000:]


def test_the_whole_stop_ends_within_stop_seconds_whatever_still_runs(tmp_path):
    """A worker SIGKILLed leaves its zygote and writers to the parent, which waited 10 s for
    them to exit (then up to 10 s more killing them), and a worker that does not end its drain
    (stopped here: hung) was waited for for ever, past any service manager's stop timeout
    (Kubernetes' 30 s), whose SIGKILL then left them all. The whole stop takes at most
    TAILOR_STOP_SECONDS: what still runs near its end is killed and reaped."""
    with _two_serving(tmp_path, TAILOR_STOP_SECONDS="3",
                      TAILOR_GRACE_SECONDS="1") as (proc, workers, _, everyone):
        (zygote,) = _children(workers[1])
        for writer in _children(zygote):  # they see no end of their stdin
            os.kill(writer, signal.SIGSTOP)
        os.kill(workers[0], signal.SIGSTOP)  # it drains nothing
        os.kill(workers[1], signal.SIGKILL)
        began = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - began
    assert proc.returncode == 1, out[-3000:]
    assert took < 3 + 1.5, out[-3000:]  # the parent's own exit after the bound, on a busy host
    assert ("1 workers still stopping 2 s after the stop began (stop_seconds 3): killing them"
            in out), out[-3000:]
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in everyone),
             "every process under the parent to be reaped", timeout=5)


@pytest.mark.parametrize("stopped", ["zygote", "writers", None])
def test_one_worker_stops_within_stop_seconds_whatever_still_runs(tmp_path, stopped):
    """A server of one worker had no bound on its stop: its writers stopped (hung), it waited
    30 s for each to exit (60 s), its zygote stopped, 5 s for each exit to be reported, and
    left the writers to PID 1 (zombies where that does not reap), past a service manager's
    stop timeout. Now what still runs 1 s before TAILOR_STOP_SECONDS is killed and reaped, and
    the exit is 1; a stop with nothing stuck still exits 0, at once. The kill ends the main
    thread's waits (a writer's exit), and it logged `stopped` after the kill's line, a clean
    stop to whoever reads the log's end; it no longer does once the bound is being enforced."""
    args = [sys.executable, "-m", "server", "--port", str(free_port()), "--data-dir",
            str(tmp_path / "d")]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets"),
           "TAILOR_STOP_SECONDS": "3", "TAILOR_GRACE_SECONDS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = [proc.stdout.readline()]
    while "serving on" not in seen[-1] and seen[-1]:
        seen.append(proc.stdout.readline())
    zygote = wait_for(lambda: _children(proc.pid), "the writers' zygote", timeout=60)[0]
    writers = wait_for(lambda: len(_children(zygote)) == 2 and _children(zygote), "the writers",
                       timeout=60)
    everyone = [zygote, *writers]
    try:
        for pid in {"zygote": [zygote], "writers": writers, None: []}[stopped]:
            os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - began
        left = [pid for pid in everyone if os.path.exists(f"/proc/{pid}")]  # zombies too
    finally:  # on a failure, leave no server behind
        _kill(everyone + [proc.pid])
    killed = "still stopping 2 s after the stop began (stop_seconds 3): killing the writer"
    clean = re.findall(r"tailor\.workers: stopped$", out, re.M)  # the main thread's last line
    if stopped is None:
        assert proc.returncode == 0 and took < 2 and killed not in out, out[-3000:]
        assert clean, out[-3000:]
    else:
        assert proc.returncode == 1, out[-3000:]
        assert took < 3 + 1.5, out[-3000:]  # the exit after the bound, on a busy host
        assert killed in out, out[-3000:]
        assert not clean, out[-3000:]  # the kill ended its waits: no clean stop to claim
    assert not left, f"left behind: {left}\n{out[-3000:]}"


_STUCK = """
import asyncio, signal, subprocess, sys, threading
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # as `serve` does
from server.stop_bound import StopWatch

async def stuck():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    StopWatch({signal.SIGINT, signal.SIGTERM}, lambda _: loop.call_soon_threadsafe(stop.set), 2.0)
    child = subprocess.Popen(["sleep", "60"])
    print(child.pid, flush=True)
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # the loop stuck in C for ever: none of its callbacks runs

asyncio.run(stuck())
"""


def test_the_stop_bound_holds_with_the_event_loop_stuck():
    """The bound is a thread of its own that takes the stop signals: an event loop stuck in C
    (a lock never released) neither keeps it from starting nor from ending the process, with
    what it started killed and reaped, 1 s before `stop_seconds` (2 here)."""
    proc = subprocess.Popen([sys.executable, "-c", _STUCK], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        child = int(proc.stdout.readline())
        time.sleep(0.2)  # the loop is stuck by now
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert 0.9 < took < 1 + 1.5, out
    assert "still stopping 1 s after the stop began (stop_seconds 2)" in out, out
    assert not os.path.exists(f"/proc/{child}"), "the child left behind"


def test_a_stop_bound_under_the_drain_and_grace_is_refused():
    """The server (or its workers) would be killed while its calls still had their grace; one
    worker had no bound, and took any."""
    from pydantic import ValidationError

    from server.config import Settings, settings_error
    for workers in (2, 1):
        with pytest.raises(ValidationError) as refused:
            Settings(workers=workers, drain_seconds=2, grace_seconds=5, stop_seconds=7)
        assert settings_error(refused.value) == (
            "stop_seconds (TAILOR_STOP_SECONDS): Value error, the stop must outlast "
            "drain_seconds + grace_seconds (7 s) by more than 1 s (got 7)")


def test_a_stop_bound_past_a_day_is_refused():
    """`inf` or 1e10 were accepted, and one worker's bound (a sleep of that long) failed in its
    thread at the stop: an OverflowError traceback, and no bound."""
    from pydantic import ValidationError

    from server.config import Settings, settings_error
    for value in ("inf", "1e10", "86400.5"):
        with pytest.raises(ValidationError) as refused:
            Settings(stop_seconds=value)
        assert settings_error(refused.value) == (
            "stop_seconds (TAILOR_STOP_SECONDS): Input should be less than or equal to 86400 "
            f"(got {value!r})")
    assert Settings(stop_seconds=86400).stop_seconds == 86400


def test_a_stop_bound_that_kills_the_workers_within_their_grace_is_refused():
    """The parent kills the workers still stopping 1 s before the bound: one under drain +
    grace + 1 s was accepted, and cut calls still within their grace (7.5 s here: killed at
    6.5, the grace ending at 7)."""
    from pydantic import ValidationError

    from server.config import Settings
    for workers in (2, 1):
        with pytest.raises(ValidationError, match="by more than 1 s"):
            Settings(workers=workers, drain_seconds=2, grace_seconds=5, stop_seconds=7.5)
        assert Settings(workers=workers, drain_seconds=2, grace_seconds=5,
                        stop_seconds=8.5).stop_seconds == 8.5


@pytest.mark.parametrize("sends", [{"smtp_host": "relay.example"},
                                   {"sms_webhook_url": "https://sms.example/hook"},
                                   {"push_webhook_url": "https://push.example/hook"}],
                         ids=["relay", "sms", "push"])
def test_a_stop_bound_that_cuts_a_message_being_handed_over_is_refused(sends):
    """A stopping server gives the messages being handed over the larger of the relay's and
    the webhooks' timeouts after the calls' grace; a bound that killed sooner (the parent's
    kill of a worker, one worker's own) cut that hand-off, and the message went again when its
    job resumed (measured: stop_seconds 3, grace 1, a relay answering in 4 s). The compose
    example's 12 s with a 5 s grace and a relay added was such a bound (5 + 10 + 1 = 16)."""
    from pydantic import ValidationError

    from server.config import Settings, settings_error
    for workers in (2, 1):
        with pytest.raises(ValidationError) as refused:
            Settings(workers=workers, grace_seconds=5, stop_seconds=12, **sends)
        assert settings_error(refused.value) == (
            "stop_seconds (TAILOR_STOP_SECONDS): Value error, with a relay or webhook to send "
            "through, the stop must outlast drain_seconds + grace_seconds + the hand-off of a "
            "message being sent (the larger of smtp_timeout_seconds and webhook_timeout_seconds) "
            "(15 s) by more than 1 s: killed sooner, that message is sent again when its job "
            "resumes (got 12.0)")
        with pytest.raises(ValidationError, match=r"\(33 s\) by more than 1 s"):
            Settings(workers=workers, drain_seconds=1, grace_seconds=2, webhook_timeout_seconds=30,
                     stop_seconds=34, **sends)
        assert Settings(workers=workers, drain_seconds=1, grace_seconds=2,
                        webhook_timeout_seconds=30, stop_seconds=34.5, **sends).stop_seconds == 34.5
    assert Settings(grace_seconds=5, stop_seconds=12).stop_seconds == 12  # nothing to hand over


@pytest.fixture(scope="module")
def parent_killed(tmp_path_factory):
    """`python -m server --workers 2` whose parent is SIGKILLed once both workers serve, shared
    by the test of the workers' own stop and that of the metrics dir the parent leaves (one
    start of two workers less). Its temp dir (TMPDIR) holds, from before its start, the
    `tailor-metrics-*` dirs of other parents: `running` (its `owner.lock` held, by `holder`,
    till the module ends), `gone` (its lock free), `unlocked` (an older Tailor's) and
    `elsewhere` (another host's). What it saw: `started`, the metrics dirs once both served
    (`gone_then`: whether `gone` was still there); `out`, the whole output, read once every
    worker (and writer) had exited and closed it."""
    from server.processes import OWNER_LOCK, host_id
    tmp = tmp_path_factory.mktemp("parent-killed")
    scratch = tmp / "tmp"
    scratch.mkdir()
    running = scratch / f"tailor-metrics-{host_id()}.1.1-running"  # pid 1: says nothing
    gone = scratch / f"tailor-metrics-{host_id()}.{os.getpid()}.1-gone"  # pid alive: says nothing
    unlocked = scratch / f"tailor-metrics-{host_id()}.999999999.1-older"
    elsewhere = scratch / "tailor-metrics-0badc0de.1.1-elsewhere"  # another host's pid 1
    for made in (running, gone, unlocked, elsewhere):
        made.mkdir()
    (gone / OWNER_LOCK).touch()
    holder = subprocess.Popen(  # the parent of another server, still running: holds its lock
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\ntime.sleep(1800)", str(running / OWNER_LOCK)],
        stdout=subprocess.PIPE, text=True)  # killed at the module's end: held past the tests between
    try:
        assert holder.stdout.readline() == "held\n"
        out: list[str] = []
        with _two_serving(tmp, TMPDIR=str(scratch)) as (proc, _, _, _):
            started, gone_then = _metrics_dirs(scratch), gone.exists()
            proc.kill()
            proc.wait(10)
            # the workers and their writer processes hold the output pipe: EOF once all are gone
            reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
            reader.start()
            wait_for(lambda: not reader.is_alive(), "the workers to exit", timeout=60)
        yield SimpleNamespace(tmp=tmp, scratch=scratch, kept={running, unlocked, elsewhere},
                              started=started, gone_then=gone_then, out=out[0])
    finally:
        holder.kill()
        holder.wait()


def test_the_workers_stop_when_the_parent_is_killed(parent_killed):
    """The parent SIGKILLed (`kill -9`, the OOM killer) forwards no stop signal: its workers
    served on, unsupervised (no restart when one dies, no metrics), and a server started again
    beside them shared the port with them. Each worker now drains once its parent is gone."""
    out = parent_killed.out
    assert out.count("the parent process is gone: stopping this worker") == 2, out[-3000:]
    assert out.count("tailor.workers: stopped") == 2, out[-3000:]


def test_a_worker_whose_parent_is_killed_stops_within_stop_seconds(tmp_path):
    """The parent's bound (TAILOR_STOP_SECONDS) was the only one a worker of `--workers N` had:
    with the parent SIGKILLed, a worker whose writers did not exit (stopped here: hung) drained
    for a minute, unsupervised. It now ends its stop within the bound itself, as one worker
    does: its writers and zygote killed and reaped, exit 1; the other stops cleanly."""
    out: list[str] = []
    metrics_dir = None
    try:
        with _two_serving(tmp_path, TAILOR_STOP_SECONDS="3",
                          TAILOR_GRACE_SECONDS="1") as (proc, workers, _, everyone):
            metrics_dir = _environ(workers[0]).get("PROMETHEUS_MULTIPROC_DIR")
            zygote = wait_for(lambda: _children(workers[1]), "the writers' zygote")[0]
            hung = wait_for(lambda: len(_children(zygote)) == 2 and _children(zygote),
                            "the writers")
            everyone += _descendants(proc.pid)
            for writer in hung:
                os.kill(writer, signal.SIGSTOP)
            proc.kill()
            proc.wait(10)
            began = time.monotonic()
            # the workers and their writer processes hold the output pipe: EOF once all are gone
            reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
            reader.start()
            reader.join(15)
            took = time.monotonic() - began
            left = [pid for pid in [zygote, *hung] if os.path.exists(f"/proc/{pid}")
                    and _state(pid) != "Z"]  # a zombie of a PID 1 that does not reap is gone
    finally:  # nor the metrics dir the parent left
        if metrics_dir and os.path.basename(metrics_dir).startswith("tailor-metrics-"):
            shutil.rmtree(metrics_dir, ignore_errors=True)
    assert out and took < 3 + 1.5, (took, "".join(out)[-3000:])
    assert out[0].count("the parent process is gone: stopping this worker") == 2, out[0][-3000:]
    assert out[0].count("still stopping 2 s after the stop began (stop_seconds 3): killing the "
                        "writer processes and exiting 1") == 1, out[0][-3000:]
    assert out[0].count("tailor.workers: stopped") == 1, out[0][-3000:]
    assert not left, f"left behind: {left}\n{out[0][-3000:]}"


def _state(pid: int) -> str:
    """A process's state letter (`Z`: a zombie), "" once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat[stat.rindex(b")") + 2:].split()[0].decode()


def test_the_metrics_dir_a_killed_parent_left_is_removed_at_the_next_start(parent_killed):
    """The parent of `--workers N` SIGKILLed (the OOM killer, a stop timeout) leaves its
    `tailor-metrics-*` dir (the workers' sample files) in the temp dir: on Kubernetes an emptyDir
    that outlives container restarts, one more dir each time. The next start removes those whose
    owner's lock (`owner.lock`) it can take, never one whose lock is held (a running parent, of
    any pid namespace), nor one without a lock (an older Tailor's) or another host's. The
    first start, and the parent's kill, are `parent_killed`'s."""
    scratch, kept = parent_killed.scratch, parent_killed.kept
    left = parent_killed.started - kept
    assert len(left) == 1 and not parent_killed.gone_then
    assert all(d.is_dir() for d in left)
    with _two_serving(parent_killed.tmp, TMPDIR=str(scratch)) as (again, _, _, _):
        assert len(_metrics_dirs(scratch) - kept) == 1
        assert not left & _metrics_dirs(scratch)
        assert all(d.is_dir() for d in kept)
        again.terminate()
        out, _ = again.communicate(timeout=60)
    assert again.returncode == 0, out[-3000:]
    assert _metrics_dirs(scratch) == kept


def _metrics_dirs(parent):
    return set(parent.glob("tailor-metrics-*"))


def test_signals_after_a_sigterm_leave_a_clean_stop_clean(tmp_path):
    """A SIGINT after the SIGTERM (Ctrl-C, a second `kill`) or a SIGHUP (a reload by name)
    that reached a worker once it had stopped, as it exited, killed it (-2, -1: the event
    loop's handlers were gone) or broke its exit off (KeyboardInterrupt in the zygote's
    close), and the parent logged a worker cut mid-drain and exited 1; one that reached the
    parent as it exited killed it. A stop that drained everything exits 0, whatever follows."""
    sent = threading.Event()

    def signal_until_gone():
        for i in itertools.count():
            try:
                proc.send_signal(signal.SIGHUP if i % 3 == 2 else signal.SIGINT)
            except ProcessLookupError:
                return
            sent.set()
            time.sleep(0.005)
            if proc.poll() is not None:
                return
    with _two_serving(tmp_path) as (proc, _, _, _):
        proc.send_signal(signal.SIGTERM)
        spammer = threading.Thread(target=signal_until_gone, daemon=True)
        spammer.start()
        out, _ = proc.communicate(timeout=60)
        spammer.join(10)
    assert sent.is_set()
    assert proc.returncode == 0, out[-3000:]
    assert out.count("tailor.workers: stopped") == 2, out[-3000:]
    assert "Traceback" not in out and "while the server stopped" not in out, out[-3000:]


def test_the_stop_bound_holds_with_the_log_stream_full(tmp_path):
    """The bound's own log line went first, through the logging handler's lock: with the log
    stream full (a pipe nobody reads: a stuck log collector, `| less`), the main thread held
    that lock, blocked in its "draining" line, and the bound's thread waited behind it, so
    nothing was killed and the server never exited. It now ends the stop all the same."""
    with _serving_into_a_pipe(tmp_path) as (proc, read, write, everyone):
        _read_until(read, b"serving on", 1)
        zygote = wait_for(lambda: _children(proc.pid), "the writers' zygote", timeout=60)[0]
        everyone += [zygote, *wait_for(lambda: len(_children(zygote)) == 2 and _children(zygote),
                                       "the writers", timeout=60)]
        took, left = _stopped_with_the_log_full(proc, write, everyone)
    _assert_stopped_within_the_bound(proc, took, left)


@contextlib.contextmanager
def _serving_into_a_pipe(tmp_path, *flags: str):
    """A server (TAILOR_STOP_SECONDS=3, grace 1 s) logging into a pipe the test reads, or
    fills (`_fill`): yields the process, the pipe's read and write ends, and a list the test
    adds the server's processes to; at the end (on a failure too) none of them is left
    behind, nor the server, and the pipe is closed."""
    read, write = os.pipe()
    args = [sys.executable, "-m", "server", "--port", str(free_port()), *flags, "--data-dir",
            str(tmp_path / "d")]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets"),
           "TAILOR_STOP_SECONDS": "3", "TAILOR_GRACE_SECONDS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=write, stderr=write)
    everyone: list[int] = []
    try:
        yield proc, read, write, everyone
    finally:
        _kill([*everyone, proc.pid])
        proc.wait(timeout=10)
        os.close(read)
        os.close(write)


def _assert_stopped_within_the_bound(proc, took: float, left: list) -> None:
    """The stop took at most TAILOR_STOP_SECONDS (3, and 1.5 s for a busy host), exit 1,
    nothing left behind (`_stopped_with_the_log_full`)."""
    assert took < 3 + 1.5 and proc.returncode == 1, (took, proc.returncode)
    assert not left, f"left behind: {left}"


def _read_until(read: int, line: bytes, times: int) -> bytes:
    """What the pipe gives until `line` came `times` times."""
    seen = b""
    while seen.count(line) < times:
        chunk = os.read(read, 65536)
        assert chunk, seen[-3000:]
        seen += chunk
    return seen


def _stopped_with_the_log_full(proc, write: int, everyone: list[int]) -> tuple[float, list]:
    """SIGTERM `proc` with its log pipe full (`_fill`), wait 10 s at most: how long it took,
    and which of `everyone` are left (zombies too: pid, state, parent) after up to 5 s more
    for the last of them to be reaped (as `test_the_whole_stop...` waits: on a loaded host a
    SIGKILLed grandchild could still be in /proc just as the parent's exit was seen)."""
    _fill(write)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    took = time.monotonic() - began
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in everyone) and time.monotonic() < deadline:
        time.sleep(0.05)
    return took, [(pid, _state(pid), _parent(pid)) for pid in everyone
                  if os.path.exists(f"/proc/{pid}")]


def _parent(pid: int) -> int | None:
    """A process's parent pid, None once gone (who was left to reap a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def _fill(write: int) -> None:
    """Fill the pipe whose write end is `write`: the server's next log line blocks."""
    fill = os.open(f"/proc/self/fd/{write}", os.O_WRONLY | os.O_NONBLOCK)  # the server's end
    with contextlib.suppress(BlockingIOError):  # stays blocking (its own description)
        while True:
            os.write(fill, b"x" * 4096)
    os.close(fill)


def test_the_parent_of_workers_holds_the_bound_with_the_log_stream_full(tmp_path):
    """The parent of `--workers N` logs its kill (`N workers still stopping ...`) on its main
    thread, before it kills: with the log stream full it blocked there, killing nothing and
    never exiting (a worker stopped here: only the parent can end it). Its bound now holds
    all the same: what still runs at its end is killed and reaped, and the exit is 1."""
    with _serving_into_a_pipe(tmp_path, "--workers", "2") as (proc, read, write, everyone):
        seen = _read_until(read, b"serving on", 2)
        workers = [pid for pid in _children(proc.pid) if b"spawn_main" in _cmdline(pid)]
        assert len(workers) == 2, seen[-3000:]
        for worker in workers:  # each worker's zygote and its two writers
            zygote = wait_for(lambda w=worker: _children(w), "a worker's zygote", timeout=60)[0]
            wait_for(lambda z=zygote: len(_children(z)) == 2, "its writers", timeout=60)
        everyone += _descendants(proc.pid)
        os.kill(workers[0], signal.SIGSTOP)
        took, left = _stopped_with_the_log_full(proc, write, everyone)
    _assert_stopped_within_the_bound(proc, took, left)


def test_a_worker_stopped_past_worker_hang_seconds_is_killed_and_the_server_exits_1(tmp_path):
    """A worker stopped (`kill -STOP`) or stuck with its event loop blocked took half the new
    connections and answered none, while health (the other worker) said SERVING and nothing was
    logged. Past `worker_hang_seconds` the parent kills it, and its exit stops the server as a
    crash does (exit 1, for the service manager to restart it); a shorter pause is left alone."""
    with _two_serving(tmp_path, TAILOR_WORKER_HANG_SECONDS="3", TAILOR_STOP_SECONDS="5",
                      TAILOR_GRACE_SECONDS="1") as (proc, workers, _, everyone):
        os.kill(workers[0], signal.SIGSTOP)  # a pause within the bound
        time.sleep(1)
        os.kill(workers[0], signal.SIGCONT)
        time.sleep(3)
        assert proc.poll() is None
        os.kill(workers[0], signal.SIGSTOP)
        began = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - began
    assert proc.returncode == 1, out[-3000:]
    assert re.search(rf"worker tailor-worker-\d \(pid {workers[0]}\) has not run its event loop for "
                     r"\d+ s \(worker_hang_seconds 3: stopped, or hung\): killing it", out), out[-3000:]
    assert "exited with -9; stopping the others" in out, out[-3000:]
    assert took < 3 + 1 + 5 + 2, out[-3000:]  # the bound, a look a second, the stop's bound
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in everyone),
             "every process under the parent to be reaped", timeout=5)


def test_a_whole_server_paused_past_worker_hang_seconds_kills_no_worker(tmp_path):
    """Every process of the server stopped at once (Ctrl-Z then `fg`, `docker pause`, a cgroup
    freeze, a VM paused) and resumed past `worker_hang_seconds`: the parent, running again
    before its workers, took their stamps from before the pause for silence and killed them,
    stopping a server nothing was wrong with (exit 1). Time the parent itself did not run
    counts for no worker."""
    with _two_serving(tmp_path, TAILOR_WORKER_HANG_SECONDS="3") as (proc, _, _, under):
        everyone = [proc.pid, *under]
        for pid in everyone:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(5)
        os.kill(proc.pid, signal.SIGCONT)  # the parent runs first, as it may after a thaw
        time.sleep(0.5)
        for pid in everyone[1:]:
            with contextlib.suppress(ProcessLookupError):  # killed meanwhile: the failure below
                os.kill(pid, signal.SIGCONT)
        time.sleep(3)
        assert proc.poll() is None, proc.communicate(timeout=30)[0][-3000:]
        target = f"127.0.0.1:{proc.args[proc.args.index('--port') + 1]}"
        assert [ping(target) for _ in range(4)] == [grpc.StatusCode.OK] * 4
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "killing it" not in out, out[-3000:]


def test_a_worker_hang_bound_under_three_heartbeats_is_refused():
    """A bound of a heartbeat or two would take a worker busy for a moment for hung and stop
    the whole server; 0 turns the check off."""
    from pydantic import ValidationError

    from server.config import Settings
    for fine in (0, 3, 20):
        assert Settings(worker_hang_seconds=fine).worker_hang_seconds == fine
    with pytest.raises(ValidationError, match="1 s is less than 3 s, three heartbeats"):
        Settings(worker_hang_seconds=1)
