"""bench_decision_log's run removes its temporary store (tens of MB a run) however it ends: a
run stopped midway (Ctrl-C in a round of minutes, a writer that raises) left it in /tmp. It
counts a transaction's write calls."""
import os
import tempfile

import pytest

from loadtests import bench_decision_log
from server.campaigns import repository


class Stopped(Exception):
    """Stands for the KeyboardInterrupt of a run stopped by hand."""


def test_a_run_stopped_midway_leaves_no_store_behind(tmp_path, monkeypatch):
    def stopping(store):
        def stop(rows):
            raise Stopped
        return {"decisions": stop, "decision_batches": stop}

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(repository, "writer_functions", stopping)
    with pytest.raises(Stopped):
        bench_decision_log.run("choose", batch=1)
    assert list(tmp_path.iterdir()) == []


def test_a_run_counts_the_write_calls_of_a_transaction(tmp_path, monkeypatch):
    """The fourth figure is the process's write calls per measured transaction (`syscw`): a
    writer that makes exactly one `pwrite` a transaction reads 1.0 (warm-up calls left out)."""
    fd = os.open(tmp_path / "written", os.O_WRONLY | os.O_CREAT)

    def write(rows):
        os.pwrite(fd, b"x" * 64, 0)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(repository, "writer_functions",
                        lambda store: {"decisions": write, "decision_batches": write})
    try:
        assert bench_decision_log.run("choose", batch=1)[3] == 1.0
    finally:
        os.close(fd)
