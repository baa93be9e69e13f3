"""A bench stopped by SIGTERM (`timeout 60 python -m loadtests...`) ran no `finally`: its server
drained, but its data dir stayed behind. `measure.start_server` makes SIGTERM unwind."""
import signal
import subprocess
import sys

from tests.conftest import ROOT

BENCH = """
import pathlib, sys, time
from loadtests import measure
left = pathlib.Path(sys.argv[1])
left.mkdir()
server = measure.start_server(["--help"])  # any child will do: the handler is what counts
server.wait()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    left.rmdir()
"""


def test_a_bench_stopped_by_sigterm_runs_its_cleanup(tmp_path):
    left = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", BENCH, str(left)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert left.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert not left.exists()
