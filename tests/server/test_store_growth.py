"""The data file is filled ahead of LMDB's growth (`server.store.growth`): page by page, past
the last page in use, with zeros only there; the store reads the same after reopening."""
import os

from server.store import Store
from server.store.growth import MAX_AHEAD, MIN_AHEAD


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
