"""A Locust task that raises before its call (not a gRPC failure: an empty users file, a count
of 0) makes no request; both locustfiles set the exit code themselves, and they set 0 over
Locust's own 1 for such errors when the calls that were made passed: the run measured part of
its load (the cold-start users, three methods of five) and passed."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PUBLIC_URL = ("--public-url", "https://loadtest.example")


@pytest.fixture(scope="module")
def server(module_server_process, demo_bundle):
    """One server for the module's runs: each run's verdict is of its own calls (task errors,
    refused calls, its p99), which an earlier run's writes do not change. Its output is read
    as it comes (`wait_logged` starts the reader): a run of refused calls logs a line per call
    (~250 KB for `--k 0`), which filled the unread pipe and blocked the server, so the next
    run's start Ping went unanswered and the stop took 24 s instead of 0.2 s."""
    served = module_server_process(bundle=demo_bundle, args=PUBLIC_URL)
    served.wait_logged("serving on")
    return served


def locust(server, locustfile: str, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", "2", "-r", "2",
         "-t", "3s", "--only-summary", "--stop-timeout", "2", "--host", server.target, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_recommend_tasks_that_raise_fail_the_run(server, tmp_path):
    """An empty --users-file: every known-user task raises IndexError, the 5% cold-start calls
    pass."""
    users = tmp_path / "users.txt"
    users.write_text("\n")
    code, out = locust(server, "loadtests/locustfile.py", "--users-file", str(users))
    assert code == 1, out[-4000:]
    assert "task errors (no request made): " in out and "empty sequence (File" in out, out[-4000:]


def test_mix_methods_whose_tasks_raise_fail_the_run(server):
    """--compose-users 0: GetProfile, ChooseVariant and ComposeMessage draw their user from an empty range."""
    code, out = locust(server, "loadtests/locust_mix.py", "--user-count", "1500",
                       "--item-count", "600", "--compose-users", "0", "--slo", "*=5000")
    assert code == 1, out[-4000:]
    assert "SLO missed: GetProfile: made no call" in out, out[-4000:]
    assert "task errors (no request made): " in out and "empty range" in out, out[-4000:]


def test_a_run_without_a_p99_target_does_not_name_one(server):
    """Failed calls without --p99-ms said "FAILED: p99 12.0 ms (target 0.0 ms)": a target of
    0 ms nobody set, read as the reason."""
    code, out = locust(server, "loadtests/locustfile.py", "--k", "0")  # every call refused
    assert code == 1, out[-4000:]
    assert "(no --p99-ms target)" in out and "target 0.0 ms" not in out, out[-4000:]


def test_a_run_over_its_p99_target_names_the_target_given(server):
    """A target under 0.05 ms (`--p99-ms 0.001`, the test suites' "no run can meet it") was
    printed "(target 0.0 ms)": the 0 ms target of nobody that the line above removed."""
    code, out = locust(server, "loadtests/locustfile.py", "--p99-ms", "0.001")
    assert code == 1, out[-4000:]
    assert "(target 0.001 ms), 0 failures" in out and "target 0.0 ms" not in out, out[-4000:]
