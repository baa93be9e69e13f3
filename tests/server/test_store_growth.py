"""The data file is extended and cached ahead of LMDB's growth (`server.store.growth`): past
the last page in use, reading as zeros there; the store reads the same after reopening, and
writes go on where the fill fails or cannot run."""
import os

import pytest

from server.store import Store, growth
from server.store.growth import MAX_AHEAD, MIN_AHEAD

pytestmark = pytest.mark.skipif(not growth.GrowthFill.supported(), reason="Linux only")


def _used_and_size(store: Store) -> tuple[int, int]:
    used = (store.env.info()["last_pgno"] + 1) * store.env.stat()["psize"]
    return used, os.path.getsize(store.path / "data.mdb")


def _fill(store: Store, users: range) -> None:
    store.write(lambda txn: [store.raw_table("profiles").put(txn, f"user-{i:06d}".encode(),
                                                              os.urandom(300)) for i in users])


def test_a_written_store_keeps_zeros_filled_ahead_of_its_last_page(tmp_path):
    store = Store(tmp_path / "s", sync=False)
    try:
        for lo in range(0, 30_000, 1_000):
            _fill(store, range(lo, lo + 1_000))
            store.write(lambda txn: None)  # fills, then commits nothing (LMDB writes nothing)
            used, size = _used_and_size(store)
            assert size - used >= min(MAX_AHEAD, max(MIN_AHEAD, used // 8)) // 2
        with open(store.path / "data.mdb", "rb") as f:
            f.seek(used)
            assert f.read() == bytes(size - used)  # nothing but zeros past the pages in use
        assert used > 8 << 20  # the store outgrew the first fills
    finally:
        store.close()
    again = Store(tmp_path / "s", sync=False)
    try:
        with again.read() as txn:
            assert again.raw_table("profiles").count(txn) == 30_000
    finally:
        again.close()


def test_a_read_only_store_writes_nothing(tmp_path):
    Store(tmp_path / "s", sync=False).close()
    size = os.path.getsize(tmp_path / "s" / "data.mdb")
    ro = Store(tmp_path / "s", readonly=True)
    ro.close()
    assert os.path.getsize(tmp_path / "s" / "data.mdb") == size


def test_writes_go_on_when_the_fill_fails_and_it_is_tried_again_later(tmp_path, monkeypatch):
    calls = []

    def full(fd, offset, length):
        calls.append(offset)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(growth.os, "posix_fallocate", full)
    store = Store(tmp_path / "s", sync=False)
    try:
        for lo in range(0, 6_000, 100):  # 60 transactions of ~10 pages each
            _fill(store, range(lo, lo + 100))
        # not at every transaction: again once the store grew by half a margin (32 pages)
        assert 1 <= len(calls) < 30
        with store.read() as txn:
            assert store.raw_table("profiles").count(txn) == 6_000
    finally:
        store.close()


def test_a_store_opens_and_writes_where_the_fill_cannot_run(tmp_path, monkeypatch):
    monkeypatch.delattr(growth.os, "posix_fadvise")
    store = Store(tmp_path / "s", sync=False)
    try:
        _fill(store, range(100))
        used, size = _used_and_size(store)
        assert size == used  # LMDB's own growth only
    finally:
        store.close()
