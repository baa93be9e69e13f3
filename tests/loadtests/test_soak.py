"""`python -m loadtests.soak` for a few seconds against a real server (TLS, token, 2 workers):
it samples the whole process tree and the data dir, loses no accepted event, and stops the
server with SIGINT; and the sampler's own figures, on a process tree whose figures are known."""
import json
import os
import subprocess
import sys
import time

from loadtests.soak import process_figures, process_tree
from tests.conftest import ROOT


def test_a_short_soak_samples_the_tree_and_loses_nothing(demo_bundle, tmp_path):
    out = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.soak", "--minutes", "0.15", "--every", "2", "--idle", "3",
         "--users", "2", "--rate", "5", "--bundle", str(demo_bundle), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["calls"] > 20, summary
    assert summary["events_accepted"] > 0 and summary["events_lost"] == 0, summary
    assert summary["stop_rc"] == 0 and summary["stop_s"] < 60, summary
    roles = summary["points"]["end"]["roles"]
    assert roles["worker"]["n"] == 2 and roles["writer"]["n"] >= 1, roles
    assert all(r["fds"] > 0 and r["anon_mb"] > 0 for r in roles.values()), roles
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 4, len(samples)  # load 9 s and idle 3 s, every 2 s
    assert any(k.startswith("tailor_batch_queue_depth") for k in samples[-1]["metrics"]), samples[-1]
    assert any(name.endswith("data.mdb") for name in samples[-1]["files"]), samples[-1]["files"]
    assert not (out / "data").exists()  # removed without --keep-data


def test_the_sampler_finds_a_child_and_counts_its_open_files(tmp_path):
    code = "import sys, time; fs = [open(sys.argv[1], 'w') for _ in range(7)]; time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "f")])
    try:
        deadline, figures = time.monotonic() + 10, None
        while time.monotonic() < deadline and not (figures and figures["fds"] >= 10):
            time.sleep(0.05)
            figures = process_figures(child.pid)
        assert child.pid in process_tree(os.getpid())
        assert figures["fds"] == 3 + 7, figures  # stdin, stdout, stderr and its 7 files
        assert figures["role"] == "main" and figures["threads"] == 1, figures
    finally:
        child.kill()
        child.wait()
    assert process_figures(child.pid) is None
