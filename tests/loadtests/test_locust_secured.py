"""The Locust files against a production-like server: TLS and a bearer token (docs/operations.md).

Over TLS the clients send the token as call credentials, a metadata plugin gRPC runs on a
thread of its own; under Locust's gevent (`grpc.experimental.gevent`) those calls hung: a run
of 20 users against such a server made ~340 calls in its first seconds, then none, every user's
call ending DEADLINE_EXCEEDED at its 10 s deadline (the server never saw them)."""
import subprocess
import sys

from loadtests.bench import secured
from tests.conftest import ROOT

ROLES = ("decider", "tracker", "admin", "analyst")  # Recommend; the mix's calls and set-up


def locust(server, secure, locustfile: str, users: int, *args: str) -> tuple[int, str]:
    connection = secure.connection
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", str(users), "-r",
         str(users), "-t", "4s", "--only-summary", "--stop-timeout", "2",
         "--host", f"localhost:{server.port}",
         "--tls-ca", str(connection.tls_ca), "--token", connection.token, "--call-timeout", "2",
         "--user-count", "1500", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_locust_runs_against_a_tls_server_with_a_token(server_process, demo_bundle, tmp_path):
    secure = secured(tmp_path, ROLES)
    server = server_process(bundle=demo_bundle, args=secure.flags, connection=secure.connection)
    code, out = locust(server, secure, "loadtests/locustfile.py", 20)
    assert code == 0 and "failures=0" in out and "DEADLINE_EXCEEDED" not in out, out[-4000:]
    code, out = locust(server, secure, "loadtests/locust_mix.py", 4, "--item-count", "600",
                       "--weights", "ComposeMessage=0", "--slo", "*=5000")
    assert code == 0 and "DEADLINE_EXCEEDED" not in out, out[-4000:]
    assert "/ChooseVariant" in out and "/Recommend" in out, out[-4000:]
