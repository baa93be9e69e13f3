"""The data file is extended and cached ahead of LMDB's growth (`server.store.growth`): past
the last page in use, reading as zeros there; the store reads the same after reopening, and
writes go on where the fill fails or cannot run. What a transaction writes past the filled
region, and what an aborted one left past the last page, is cached again a page a folio: later
one-page commits send single pages to storage, not the large folios LMDB's runs of pages make
(`/proc/self/io`, on a kernel that caches the file in large folios: ext4 since Linux 6.16)."""
import os
import random
import subprocess
import sys

import pytest

from server.store import Store, growth
from server.store.growth import MAX_AHEAD, MIN_AHEAD

pytestmark = pytest.mark.skipif(not growth.GrowthFill.supported(), reason="Linux only")


def _used_and_size(store: Store) -> tuple[int, int]:
    used = (store.env.info()["last_pgno"] + 1) * store.env.stat()["psize"]
    return used, os.path.getsize(store.path / "data.mdb")


def _fill(store: Store, users: range, size: int = 300) -> None:
    store.write(lambda txn: [store.raw_table("profiles").put(txn, f"user-{i:06d}".encode(),
                                                              os.urandom(size)) for i in users])


def _io() -> tuple[int, int]:
    """This process's bytes sent to storage (`write_bytes`: a dirtied folio counts whole) and
    bytes handed to write calls (`wchar`: what LMDB wrote)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["write_bytes"]), int(fields["wchar"])


def _storage_per_byte_written(store: Store, commit, commits: int) -> float:
    """Bytes to storage over bytes LMDB wrote, over `commits` calls of `commit` (fsync on)."""
    storage, written = _io()
    for _ in range(commits):
        commit()
    storage, written = _io()[0] - storage, _io()[1] - written
    if not storage:
        pytest.skip("no write accounting here (/proc/self/io write_bytes stays 0)")
    return storage / written


def kilobyte_profiles(store_dir, users: int = 6_000) -> Store:
    """A store (fsync off) holding `users` profiles of 1 KB, written 1,000 a transaction: open,
    for the caller to change further and close."""
    store = Store(store_dir, sync=False)
    profiles = store.raw_table("profiles")
    for lo in range(0, users, 1_000):
        store.write(lambda txn, lo=lo: [profiles.put(txn, b"u%06d" % i, os.urandom(1_000))
                                        for i in range(lo, lo + 1_000)])
    return store


def storage_per_rewrite(store_dir, users) -> float:
    """`_storage_per_byte_written` of 40 one-profile rewrites (fsync on) of a sample of
    `users` in the store at `store_dir` (a copy a compaction or a restore made)."""
    store = Store(store_dir, sync=True)
    try:
        profiles = store.raw_table("profiles")
        keys = iter(random.Random(7).sample(list(users), 40))

        def rewrite_one():
            key = b"u%06d" % next(keys)
            store.write(lambda txn: profiles.put(txn, key, os.urandom(1_000)))
        return _storage_per_byte_written(store, rewrite_one, 40)
    finally:
        store.close()


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


def test_commits_go_on_when_caching_their_pages_again_fails_and_say_so_once(
        tmp_path, monkeypatch, caplog):
    store = Store(tmp_path / "s", sync=False)
    try:
        def failing(fd, offset, length, advice):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(growth.os, "posix_fadvise", failing)  # the fill's drops, from now
        with caplog.at_level("WARNING", logger="tailor.store"):
            for lo in range(0, 6_000, 100):  # 60 transactions, each past the (unfilled) region
                _fill(store, range(lo, lo + 100))
        said = [r for r in caplog.records if "cache again" in r.getMessage()]
        assert len(said) == 1
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


def test_one_page_commits_after_a_transaction_past_the_margin_write_single_pages(tmp_path):
    store = Store(tmp_path / "s", sync=True)
    try:
        _fill(store, range(20))
        _fill(store, range(1_000, 2_000), size=1_000)  # ~2 MiB: past the 256 KiB margin
        keys = random.Random(7).sample(range(1_000, 2_000), 40)

        def rewrite_one():  # an update: LMDB rewrites a leaf, its branches and the freelist
            key = f"user-{keys.pop():06d}".encode()
            store.write(lambda txn: store.raw_table("profiles").put(txn, key, os.urandom(1_000)))
        # measured: 5.6 before (112 KiB to storage a commit, for 20 written), 1.4 after (28)
        assert _storage_per_byte_written(store, rewrite_one, 40) < 2
    finally:
        store.close()


def test_a_transaction_as_large_as_the_largest_seen_stays_inside_the_filled_region(tmp_path):
    store = Store(tmp_path / "s", sync=False)
    try:
        _fill(store, range(1_000), size=1_000)  # ~2 MiB on a young store: past its margin
        filled = []  # the file's size once the next transaction began: allocated and cached
        store.write(lambda txn: (filled.append(os.path.getsize(store.path / "data.mdb")),
                                 _fill_in(store, txn, range(1_000, 2_000))))
        used, _ = _used_and_size(store)
        assert used <= filled[0]  # LMDB wrote no page the fill had not cached first
    finally:
        store.close()


def _fill_in(store: Store, txn, users: range) -> None:
    for i in users:
        store.raw_table("profiles").put(txn, f"user-{i:06d}".encode(), os.urandom(1_000))


def test_pages_an_aborted_transaction_left_past_the_last_page_are_cached_again(tmp_path):
    """LMDB writes part of a transaction's pages before its commit once it dirtied more than
    2^17 of them ("spills"), in runs of up to 64 pages; aborted, it leaves them past the last
    page in use (and the file that long). A transaction that large is too slow for a test: the
    pages are written here as LMDB's spill writes them."""
    store = Store(tmp_path / "s", sync=True)
    try:
        _fill(store, range(20))
        used, size = _used_and_size(store)
        fd = os.open(store.path / "data.mdb", os.O_WRONLY)
        try:
            for offset in range(size, size + (2 << 20), 64 << 12):
                os.pwritev(fd, [os.urandom(4096)] * 64, offset)
        finally:
            os.close(fd)
        users = iter(range(1_000, 10_000))

        def grow():  # a few new users a commit: new pages at the end, into those left behind
            store.write(lambda txn: _fill_in(store, txn, [next(users) for _ in range(4)]))
        # measured: 4.0 before (99 KiB a commit, for 24: the fill took the file's size as
        # filled), 1.3 after (32)
        assert _storage_per_byte_written(store, grow, 100) < 2
        assert _used_and_size(store)[0] > size  # the commits did reach the pages left behind
    finally:
        store.close()


def test_the_fill_caches_its_region_where_sync_file_range_does_not_exist(tmp_path, monkeypatch):
    """A kernel or sandbox without `sync_file_range` (ENOSYS) failed every fill after its
    `fallocate`: the file ran ahead uncached, as without the fill, and the log said the file
    could not be extended. The region past the last page holds no dirty page to write back
    (and the kernel drops none), so the fill goes on without it."""
    import ctypes
    import errno

    def missing(*args):
        ctypes.set_errno(errno.ENOSYS)
        return -1
    monkeypatch.setattr(growth, "_SYNC_FILE_RANGE", missing)
    store = Store(tmp_path / "s", sync=False)
    try:
        for lo in range(0, 3_000, 100):
            _fill(store, range(lo, lo + 100))
        used, _ = _used_and_size(store)
        assert store._fill.filled - used >= MIN_AHEAD // 2  # filled, not only allocated
    finally:
        store.close()


OTHER_WRITER = """
import os, random, sys
from server.store import Store
store = Store(sys.argv[1], sync=True)
profiles = store.raw_table("profiles")
for r in range(3):  # large transactions first (a writer child's): its margin grows to 8 MiB
    store.write(lambda txn: [profiles.put(txn, b"w%d%06d" % (r, i), os.urandom(1_000))
                             for i in range(3_000)])
print("ready", flush=True)
sys.stdin.readline()
store.write(lambda txn: [profiles.put(txn, b"b%06d" % i, os.urandom(1_000)) for i in range(200)])
print("committed", flush=True)
sys.stdin.readline()
def io():
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["write_bytes"]), int(fields["wchar"])
before = io()
for k in random.Random(7).sample(range(200), 40):
    store.write(lambda txn: profiles.put(txn, b"b%06d" % k, os.urandom(1_000)))
after = io()
print(after[0] - before[0], after[1] - before[1], flush=True)
store.close()
"""


def test_a_commit_landing_in_another_process_repair_still_writes_single_pages(tmp_path,
                                                                              monkeypatch):
    """`after_commit` runs outside LMDB's write lock. Its drop reached the folio boundary past
    the last page in use, into the region another process (with a larger margin, so it did not
    fill again) had cached a page a folio; that process's commit landing between the drop and
    the read wrote into uncached pages, in large folios, and each later one-record rewrite of
    its records sent a whole folio to storage (measured: 5.97 times the bytes LMDB wrote
    before, 1.39 after). The other process's commit is run from inside the repair's read here,
    the interleaving the lock allows."""
    from tests.conftest import ROOT
    store = Store(tmp_path / "s", sync=True)
    _fill(store, range(20))
    store.close()
    other = subprocess.Popen([sys.executable, "-c", OTHER_WRITER, str(tmp_path / "s")],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "ready\n"
        store = Store(tmp_path / "s", sync=True)
        real_read, real_after = growth.GrowthFill._read, growth.GrowthFill.after_commit
        inside, landed = [], []

        def read(fill, start, end):
            if inside and not landed:  # the repair's drop is done: the other commit lands
                landed.append(True)
                other.stdin.write("go\n")
                other.stdin.flush()
                assert other.stdout.readline() == "committed\n"
            return real_read(fill, start, end)

        def after_commit(fill, env, began):
            inside.append(True)
            try:
                real_after(fill, env, began)
            finally:
                inside.clear()
        monkeypatch.setattr(growth.GrowthFill, "_read", read)
        monkeypatch.setattr(growth.GrowthFill, "after_commit", after_commit)
        try:  # ~2 MiB: past this process's margin, inside the other's
            _fill(store, range(1_000, 2_800), size=1_000)
        finally:
            store.close()
        assert landed
        other.stdin.write("go\n")
        other.stdin.flush()
        storage, written = map(int, other.stdout.readline().split())
        if not storage:
            pytest.skip("no write accounting here (/proc/self/io write_bytes stays 0)")
        assert storage / written < 2
    finally:
        other.stdin.close()
        assert other.wait(60) == 0
