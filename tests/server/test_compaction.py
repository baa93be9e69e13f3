"""`python -m server compact` swaps the compacted copy in with one rename: a crash at any point
leaves a whole store where servers look for it."""
import os

import pytest

from server.store import Store, compaction


@pytest.mark.parametrize("dies_at", [1, 2])
def test_a_compaction_dying_during_its_swap_leaves_the_store_whole(tmp_path, monkeypatch, dies_at):
    """It renamed `store` away, then the copy in: dying between the two renames left no
    `store/`, and the next server start made a new, empty one there (the data in `store.old`)."""
    store = Store(tmp_path / "data" / "store", sync=False)
    store.put("meta", b"kept", b"yes")
    store.close()
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == dies_at:
            raise SystemExit("killed")  # the process dies here
        real(src, dst)
    monkeypatch.setattr(compaction.os, "replace", replace)
    try:
        compaction.compact(tmp_path / "data")
    except SystemExit:
        pass
    monkeypatch.undo()
    store = Store(tmp_path / "data" / "store", sync=False)
    assert store.get("meta", b"kept") == b"yes"
    store.close()
    compaction.compact(tmp_path / "data")  # and the next compaction runs from there
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["store", "tailor.lock"]
