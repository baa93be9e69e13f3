"""bench_decision_log's run removes its temporary store (tens of MB a run) however it ends: a
run stopped midway (Ctrl-C in a round of minutes, a writer that raises) left it in /tmp."""
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
