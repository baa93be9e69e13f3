"""The Locust files' start probe against a server with no bundle: its Ping passed, and a run
whose tasks call Recommend went on with thousands of identical FAILED_PRECONDITION failures to
its `-t`. One Recommend at start now stops the run with one line naming the refusal. A real
server process on loopback, plaintext, no token."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

from .test_locust_secured import failed_at_start


@pytest.fixture(scope="module")
def bare(module_server_process):
    return module_server_process()  # no --bundle


def run(server, locustfile: str, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", "2", "-r", "2",
         "-t", "4s", "--only-summary", "--stop-timeout", "2", "--host",
         f"127.0.0.1:{server.port}", "--call-timeout", "2", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("locustfile, args", [
    ("loadtests/locustfile.py", ()),
    ("loadtests/locust_mix.py", ("--no-setup",)),
])
def test_a_run_calling_recommend_stops_at_its_start_on_a_server_with_no_bundle(bare, locustfile,
                                                                                args):
    code, out = run(bare, locustfile, *args)
    assert code == 1, out[-4000:]
    line = failed_at_start(out)
    assert line.startswith("the server refuses Recommend, which the run's tasks call: "
                           "FAILED_PRECONDITION: no model bundle is loaded"), line
