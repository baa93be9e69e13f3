"""bench_seen_ingest measures in a store of its own and leaves nothing behind (each run wrote
an LMDB store under the temporary directory and kept it)."""
import os

from tests.conftest import run_module


def test_the_bench_removes_its_store(tmp_path):
    out = run_module("loadtests.bench_seen_ingest", "--users", "20", "--items", "200",
                     "--batches", "2", env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=120)
    assert "us/event" in out.stdout
    assert list(tmp_path.iterdir()) == []
