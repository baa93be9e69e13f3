"""The server as a user runs it: `python -m server` with several workers, the client CLI,
`python -m training push`, and a headless Locust run with a p99 target."""
import json
import re
import subprocess
import sys

import grpc
import pytest

from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from tests.conftest import ROOT, run_module


@pytest.fixture(scope="module")
def served_process(module_server_process, demo_bundle):
    """`python -m server --workers 2` on a free port, shared by the module's tests (a push, CLI
    calls, Recommend load, a second server refused its port: none reads what another changed)."""
    return module_server_process(bundle=demo_bundle, workers=2)


@pytest.fixture(scope="module")
def served(served_process):
    """The shared server's host:port."""
    return served_process.target


def _versions_across_connections(target, n=8):
    versions = set()
    for i in range(n):  # separate channels land on different worker processes
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            reply = pb_grpc.RecommendationServiceStub(ch).Recommend(pb.RecommendRequest(user_id=f"{i}", k=3))
            versions.add(reply.model_version)
    return versions


def test_workers_share_the_port_and_follow_a_push(served, second_bundle, demo_manifest):
    assert _versions_across_connections(served) == {demo_manifest["version"]}
    out = run_module("training", "push", str(second_bundle), "--server", served)
    new_version = json.loads((second_bundle / "manifest.json").read_text())["version"]
    assert new_version in out.stdout
    assert _versions_across_connections(served, 12) == {new_version}


def test_rollback_promote_and_abort_return_once_every_worker_follows(
        server_process, demo_bundle, second_bundle, demo_manifest):
    """As a push does: right after Rollback, PromoteCanary or AbortCanary returns, no worker
    answers with the version it left (the workers poll the store every 2 s here)."""
    from clients import TailorClient
    served = server_process(bundle=demo_bundle, workers=2,
                            env={"TAILOR_BUNDLE_POLL_SECONDS": "2", "TAILOR_CANARY_AUTO_PROMOTE": "false"})
    new_version = json.loads((second_bundle / "manifest.json").read_text())["version"]
    with TailorClient(served.target, timeout=60) as client:
        client.push_bundle(second_bundle)
        assert client.rollback().active.version == demo_manifest["version"]
        assert _versions_across_connections(served.target, 12) == {demo_manifest["version"]}
        client.push_bundle(second_bundle, canary_percent=50)
        assert client.promote_canary().active.version == new_version
        assert _versions_across_connections(served.target, 12) == {new_version}
        client.push_bundle(demo_bundle, canary_percent=50)
        assert len(_versions_across_connections(served.target, 12)) == 2
        assert client.abort_canary().canary is None
        assert _versions_across_connections(served.target, 12) == {new_version}


def test_cli_recommend_prints_json(served):
    out = run_module("clients", "recommend", "--server", served, "--user", "3", "-k", "4")
    reply = json.loads(out.stdout)
    assert len(reply["items"]) == 4 and reply["model_version"]


def test_cli_reports_bad_input(served):
    out = run_module("clients", "recommend", "--server", served, "--user", "3", "-k", "0", check=False)
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr


@pytest.mark.slow
def test_locust_headless_exit_code_follows_the_p99_target(served, tmp_path):
    def locust(p99):
        return subprocess.run(
            [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless", "-u", "8",
             "-r", "8", "-t", "4s", "--host", served, "--user-count", "1500", "--p99-ms", str(p99),
             "--only-summary"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    relaxed = locust(5000)
    assert relaxed.returncode == 0, relaxed.stderr[-2000:]
    assert "tailor.v1.RecommendationService/Recommend" in relaxed.stdout + relaxed.stderr
    strict = locust(0.001)
    assert strict.returncode == 1, strict.stderr[-2000:]


def test_a_worker_that_dies_stops_the_server_and_what_it_left_is_reaped(server_process):
    """The parent waits for every worker at once: the last one started dying (here) stops the
    others as the first one's death does, rather than leaving fewer workers behind a SERVING port.

    Its zygote and writers went to the nearest subreaper: PID 1 otherwise, which in a container
    without an init that reaps left each a zombie. The parent, a subreaper, reaps them: those
    that exit as their socket and stdin close, and, killed after `_ORPHANS_SECONDS`, a writer
    that does not (stopped here)."""
    import os
    import signal
    import time

    from server.batching.zygote import _subreaper
    from tests.conftest import _children, _descendants
    assert _subreaper()  # what the parent leaves comes to this process, to be seen (and reaped)
    served = server_process(workers=2)
    workers = sorted(p for p in _children(served.proc.pid)
                     if "spawn_main" in open(f"/proc/{p}/cmdline").read())
    assert len(workers) == 2
    left = _descendants(workers[-1])
    (zygote,) = _children(workers[-1])
    assert len(left) >= 3 and len(_children(zygote)) == 2  # its zygote and its two writers
    under = len(left)
    os.kill(_children(zygote)[0], signal.SIGSTOP)  # sees no end of its stdin: killed
    os.kill(workers[-1], signal.SIGKILL)  # tailor-worker-1: started last
    deadline = time.time() + 60
    while served.proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert served.proc.returncode == 1
    deadline = time.monotonic() + 5
    while (left := [p for p in left if os.path.exists(f"/proc/{p}")]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # not to be left as this process's zombies either
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    assert left == []
    log = served.stop()
    assert "worker tailor-worker-1 exited with -9; stopping the others" in log
    assert "1 processes left by workers that died still ran after 10 s: killing them" in log
    reaped = re.search(r"reaped (\d+) processes left by workers that died", log)
    assert reaped and 1 <= int(reaped[1]) <= under  # its zygote reaps a writer that ends first


def test_a_second_server_with_workers_on_the_port_of_a_running_one_is_refused(served_process,
                                                                            tmp_path):
    """The workers bind with SO_REUSEPORT, which the kernel grants to every socket of the same
    user that asks for it: a second `--workers N` server started by mistake on the port of a
    running one (another data dir) used to start and take a share of the connections, its
    calls reading and writing the other store. A port in use is refused, as with one worker.
    (The running one is the module's: refused, the second server changes nothing of it.)"""
    import os
    import time
    first = served_process
    args = [sys.executable, "-m", "server", "--port", str(first.port), "--workers", "2",
            "--data-dir", str(tmp_path / "second")]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets2")}
    second = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = second.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        second.terminate()
        out, _ = second.communicate(timeout=60)
    assert second.returncode == 2, out[-3000:]
    assert f"could not listen on 127.0.0.1:{first.port}: the port is in use" in out, out[-3000:]
    assert "spawn_main" not in out and "serving on" not in out  # refused before any worker
    time.sleep(0.1)
    assert first.proc.poll() is None  # the running server is untouched


def test_the_port_stays_taken_from_the_parents_check_until_the_workers_listen(tmp_path):
    """The parent checks that nothing listens on the port, then spawns the workers, which bind
    it (SO_REUSEPORT) a second or more later. A second server checking in between found the
    port free and started too: both then shared it (each connection landing on one of two
    stores). The parent holds the port from its check on, in a way the workers' bind shares
    and another server's check does not."""
    import errno
    import os
    import socket
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.conftest import free_port
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(scratch), "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--workers", "2",
                             "--data-dir", str(tmp_path / "data")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(scratch.glob("tailor-metrics-*")):  # made right after the port check
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        with socket.socket() as probe, pytest.raises(OSError) as taken:  # another server's check
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        while True:  # and the workers still bind it and serve
            assert proc.poll() is None and time.monotonic() < deadline + 60
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    status = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]


def test_more_workers_than_cpus_start_with_a_warning_and_leave_no_process_behind(server_process):
    """64 workers on the 2-CPU box started without a word, were not serving 36 s later, and
    their stop took the whole stop bound. The server still serves, and says what to change.

    Every process under the parent is gone (reaped) once it has stopped. multiprocessing's
    resource tracker (the parent's child) exited a moment after it, when its pipe closed, and
    was left to the nearest subreaper or PID 1: a zombie wherever that does not reap. (One
    server checks both: a start with workers is what each needs, and the stop's cost.)"""
    import os
    import time

    from server.batching.zygote import _subreaper
    from tests.conftest import _descendants
    assert _subreaper()  # what the stop leaves comes to this process, to be seen (and reaped)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # the server inherits one CPU
    try:
        served = server_process(workers=2)
    finally:
        os.sched_setaffinity(0, cpus)
    served.wait_logged("--workers 2 is more than the 1 CPU(s) this server may run on")
    under = _descendants(served.proc.pid)
    assert len(under) >= 3  # the tracker and the two workers (with their zygotes and writers)
    assert "give --workers 1 or fewer (TAILOR_WORKERS)" in served.stop()
    assert served.proc.returncode == 0
    deadline = time.monotonic() + 5
    while (left := [p for p in under if os.path.exists(f"/proc/{p}")]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # not to be left as this process's zombies either
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    assert left == []
