"""The Locust files against a production-like server: TLS and a bearer token (docs/operations.md).

Over TLS the clients send the token as call credentials, a metadata plugin gRPC runs on a
thread of its own; under Locust's gevent (`grpc.experimental.gevent`) those calls hung: a run
of 20 users against such a server made ~340 calls in its first seconds, then none, every user's
call ending DEADLINE_EXCEEDED at its 10 s deadline (the server never saw them)."""
import subprocess
import sys

import pytest

from loadtests.bench import secured
from tests.conftest import ROOT, free_port

ROLES = ("decider", "tracker", "admin", "analyst")  # Recommend; the mix's calls and set-up


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    return secured(tmp_path_factory.mktemp("tls"), ROLES)


@pytest.fixture(scope="module")
def server(module_server_process, demo_bundle, secure):
    return module_server_process(bundle=demo_bundle, args=secure.flags,
                                 connection=secure.connection)


def run(server, locustfile: str, users: int, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", str(users), "-r",
         str(users), "-t", "4s", "--only-summary", "--stop-timeout", "2",
         "--host", f"localhost:{server.port}", "--call-timeout", "2", "--user-count", "1500",
         *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def locust(server, secure, locustfile: str, users: int, *args: str) -> tuple[int, str]:
    connection = secure.connection
    return run(server, locustfile, users, "--tls-ca", str(connection.tls_ca), "--token",
               connection.token, *args)


def test_locust_runs_against_a_tls_server_with_a_token(server, secure):
    code, out = locust(server, secure, "loadtests/locustfile.py", 20)
    assert code == 0 and "failures=0" in out and "DEADLINE_EXCEEDED" not in out, out[-4000:]
    code, out = locust(server, secure, "loadtests/locust_mix.py", 4, "--item-count", "600",
                       "--compose-users", "20",
                       "--weights", "ComposeMessage=0", "--slo", "*=5000")
    assert code == 0 and "DEADLINE_EXCEEDED" not in out, out[-4000:]
    assert "/ChooseVariant" in out and "/Recommend" in out, out[-4000:]


def failed_at_start(out: str) -> str:
    lines = [line for line in out.splitlines() if "FAILED at test start:" in line]
    assert len(lines) == 1 and "Traceback" not in out, out[-4000:]
    assert "--run-time limit reached" not in out, out[-4000:]
    assert "Error report" not in out, out[-4000:]  # no call of a user spawned before the stop
    return lines[0].split("FAILED at test start: ", 1)[1]


def test_a_run_without_the_token_or_the_ca_stops_at_its_start_naming_the_flag(server, secure):
    """Without --token a TLS server with an auth config answered every call UNAUTHENTICATED,
    without --tls-ca it closed every connection: 2,000 to 5,000 identical failures in 3 s and
    a multi-line error report each, run to its end."""
    code, out = run(server, "loadtests/locustfile.py", 2, "--tls-ca", str(secure.connection.tls_ca))
    assert code == 1
    assert failed_at_start(out).endswith(
        "give --token (or TAILOR_TOKEN) a token its auth config holds, or --cert/--key")
    code, out = run(server, "loadtests/locust_mix.py", 2, "--token", secure.connection.token)
    assert code == 1
    line = failed_at_start(out)
    assert line.startswith(f"cannot reach --host localhost:{server.port}: ") and line.endswith(
        "the server may serve TLS: give --tls-ca (its CA)"), line


def test_a_distributed_run_over_tls_spawns_its_users_and_exits_0(server, secure):
    """The master sends its options to each worker as msgpack, which holds no Path: with
    --tls-ca the spawn failed (`can not serialize 'PosixPath' object`) and no user started."""
    master_port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--worker",
         "--master-host", "127.0.0.1", "--master-port", str(master_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        code, out = locust(server, secure, "loadtests/locustfile.py", 4, "--master",
                           "--master-bind-host", "127.0.0.1", "--master-bind-port",
                           str(master_port), "--expect-workers", "1",
                           "--expect-workers-max-wait", "30")
        worker_out, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert "Traceback" not in out and "failures=0" in out, out[-4000:]
    assert code == 0, out[-4000:]
    assert worker.returncode == 0, worker_out[-4000:]
