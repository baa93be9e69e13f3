"""Locust's gRPC users give every call a deadline: a call the server never answers is a failure
the run reports, not a user stuck until the run ends with its call never counted (the p99 gate
then passed over the calls that did return)."""
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# A RecommendationService whose every fifth Recommend never answers (within the run); the others
# answer at once with an empty RecommendResponse.
HANGING = textwrap.dedent("""
    import itertools, threading, time
    from concurrent import futures
    import grpc

    count, lock = itertools.count(1), threading.Lock()

    def recommend(request, context):
        with lock:
            n = next(count)
        if n % 5 == 0:
            time.sleep(60)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(64))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "tailor.v1.RecommendationService",
        {"Recommend": grpc.unary_unary_rpc_method_handler(recommend)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
""")


def test_a_call_the_server_never_answers_fails_the_run():
    server = subprocess.Popen([sys.executable, "-c", HANGING], stdout=subprocess.PIPE, text=True)
    try:
        target = f"127.0.0.1:{server.stdout.readline().strip()}"
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless",
             "-u", "2", "-r", "2", "-t", "13s", "--stop-timeout", "1", "--only-summary",
             "--host", target, "--user-count", "100", "--p99-ms", "1000"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait(timeout=30)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-4000:]
    assert "DEADLINE_EXCEEDED" in out or "Deadline Exceeded" in out, out[-4000:]
