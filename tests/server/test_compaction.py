"""`python -m server compact` swaps the compacted copy in with one rename: a crash at any point
leaves a whole store where servers look for it."""
import os
import shutil

import pytest

from server.store import Store, compaction
from server.store.lmdb_store import open_env
from tests.conftest import run_module


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


@pytest.mark.parametrize("records", [0, 3])
def test_compacting_a_nearly_empty_store_does_not_make_it_bigger(tmp_path, records):
    """The store as a restore leaves it (LMDB's compacted copy, a backup's): compaction rewrote
    it a write transaction a table and two for an empty one, and each commit left pages the
    next did not reuse: 16 KiB grew to 36 KiB. Its records are all still there."""
    made = Store(tmp_path / "made", sync=False)
    made.put_many("events", [(b"e%d" % i, b"x" * 100) for i in range(records)])
    made.close()
    (tmp_path / "data" / "store").mkdir(parents=True)
    env = open_env(tmp_path / "made", readonly=True, lock=False)
    env.copy(str(tmp_path / "data" / "store"), compact=True)
    env.close()
    before, after = compaction.compact(tmp_path / "data")
    assert after <= before, (before, after)
    store = Store(tmp_path / "data" / "store", sync=False)
    assert [k for k, _ in store.scan("events")] == [b"e%d" % i for i in range(records)]
    store.close()


def test_compaction_on_a_disk_too_full_for_its_copy_changes_nothing_and_leaves_nothing(small_disk):
    """Compaction copies the live pages beside the store first. On a disk without room for that
    copy (when a store has grown is when one compacts) it died on an lmdb.DiskError traceback
    and left the partial copy in store.compacting, which kept the disk full: a server started
    next refused every write. Refused in one line, the partial copy removed, the store as it
    was."""
    from server.store import Store
    data = small_disk / "data"
    store = Store(data / "store", sync=False, map_size=16 << 20)
    store.put_many("events", [(b"k%05d" % i, os.urandom(500)) for i in range(13_000)])
    store.close()
    free = shutil.disk_usage(small_disk).free
    before = (data / "store" / "data.mdb").read_bytes()
    refused = run_module("server", "compact", "--data-dir", str(data), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(f"compact: cannot compact {data / 'store'}: no space left on "
                                     "its disk for the compacted copy"), refused.stderr
    assert sorted(p.name for p in data.iterdir()) == ["store", "tailor.lock"]
    assert shutil.disk_usage(small_disk).free == free
    assert (data / "store" / "data.mdb").read_bytes() == before


def test_a_compacted_store_keeps_no_byte_of_a_deleted_record(tmp_path):
    """LMDB's compacted copy (`env.copy(compact=True)`, what compaction used) copies the pages
    still in use whole, with the bytes a deleted record left in them: after deleting every
    tenth of 4,000 records, some of their keys were still in the compacted file. Compaction
    now writes the live records alone (`rewrite_records`)."""
    store = Store(tmp_path / "data" / "store", sync=False)
    names = [b"%032x" % (i * 2654435761 % (1 << 64)) for i in range(4000)]
    store.put_many("events", [(name + b"\x1fe", b"v" * 40) for name in names])
    for name in names[::10]:
        store.delete("events", name + b"\x1fe")
    store.close()
    compaction.compact(tmp_path / "data")
    raw = (tmp_path / "data" / "store" / "data.mdb").read_bytes()
    assert [n for n in names[::10] if n in raw] == []
    assert all(n in raw for i, n in enumerate(names) if i % 10)  # and every live one is


def test_one_record_commits_on_a_compacted_store_write_single_pages(tmp_path):
    """The compaction's fresh file stayed in the page cache in the folios its writes made, and
    the server opened next wrote a whole folio back for each page a commit rewrote (measured:
    bytes to storage over bytes LMDB wrote, 10.0 before, 1.7 with the file dropped from the
    cache, `growth.drop_cached`)."""
    from tests.server.test_store_growth import kilobyte_profiles, storage_per_rewrite
    store = kilobyte_profiles(tmp_path / "data" / "store")
    profiles = store.raw_table("profiles")
    store.write(lambda txn: [profiles.delete(txn, b"u%06d" % i) for i in range(0, 6_000, 3)])
    store.close()
    compaction.compact(tmp_path / "data")
    assert storage_per_rewrite(tmp_path / "data" / "store", (i for i in range(6_000) if i % 3)) < 3
