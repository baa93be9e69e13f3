"""Every kernel bench answers --help with its usage and runs nothing."""
import subprocess
import sys

import pytest

BENCHES = ["bench_attribution", "bench_bandits", "bench_context", "bench_features"]


@pytest.mark.parametrize("bench", BENCHES)
def test_help_shows_usage_without_running(bench):
    proc = subprocess.run([sys.executable, "-m", f"kernels.{bench}", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout[:200]
    assert " us" not in proc.stdout  # no figures: the bench did not run
