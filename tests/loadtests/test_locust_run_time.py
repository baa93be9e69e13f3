"""`--run-time` counts from the run's start, however long the start-up blocked (options.py
`_run_time_from_now`). Before, Locust armed it on the gevent loop's clock as it stood before the
start-up: a start-up longer than the run time ended the run at its first call."""
import os
import socket
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, free_port

LOCUSTFILE = textwrap.dedent('''
    import gevent.monkey
    from locust import User, constant, events, task

    @events.init.add_listener  # registered before loadtests.options' listeners, as a
    def _blocking_start_up(**_):  # locustfile's own set-up would be
        gevent.monkey.get_original("time", "sleep")(1.5)  # blocks the loop, as imports do

    import loadtests.options  # noqa: E402,F401  (the locustfiles' start-up)

    class Caller(User):
        wait_time = constant(0.1)

        @task
        def call(self):
            self.environment.events.request.fire(request_type="x", name="call", response_time=1,
                                                 response_length=0, exception=None, context={})
''')


def test_the_run_time_counts_from_the_start_not_from_before_a_blocking_start_up(tmp_path):
    locustfile = tmp_path / "blocking_start_up.py"
    locustfile.write_text(LOCUSTFILE)
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "1", "-r", "1",
         "-t", "1s", "--only-summary", "--host", f"127.0.0.1:{free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    calls = next(line for line in out.splitlines() if line.strip().startswith("Aggregated"))
    assert int(calls.split()[1]) >= 4, out[-3000:]  # ~10 in 1 s at 0.1 s apart; 1 before


def test_a_run_time_that_ends_during_the_start_ping_says_so():
    """A server that accepts but never answers: the start's Ping waits out its deadline (here
    8 s), -t ends the run first, and the run ended 'FAILED: p99 inf ms, 0 failures' with no
    word of the Ping."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless", "-u",
             "1", "-r", "1", "-t", "2s", "--only-summary", "--call-timeout", "8", "--host",
             f"127.0.0.1:{silent.getsockname()[1]}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    (line,) = [x for x in out.splitlines() if "FAILED" in x]
    assert "FAILED at test start: the start's Ping to --host 127.0.0.1:" in line, out[-3000:]
