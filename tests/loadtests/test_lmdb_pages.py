"""lmdb_pages labels every page of a real LMDB file with its tree and kind: the counts match
LMDB's own stat() of each table, big values' overflow pages included."""
import os
from collections import Counter

import lmdb

from loadtests import lmdb_pages


def test_every_page_of_every_table_is_labelled_as_lmdb_counts_them(tmp_path):
    env = lmdb.open(str(tmp_path), map_size=64 << 20, max_dbs=4)
    small, big = env.open_db(b"small"), env.open_db(b"big")
    with env.begin(write=True) as txn:
        for i in range(20_000):  # depth 3: a root, branches and leaves
            txn.put(b"k%08d" % i, os.urandom(40), db=small)
        for i in range(30):  # each value on overflow pages of its own
            txn.put(b"b%02d" % i, os.urandom(9_000), db=big)
    with env.begin(write=True) as txn:  # frees pages: the free list has a tree
        for i in range(0, 20_000, 7):
            txn.delete(b"k%08d" % i, db=small)
    with env.begin() as txn:
        stats = {"small": txn.stat(small), "big": txn.stat(big), lmdb_pages.MAIN: env.stat()}
    labels, tables = lmdb_pages.page_map(tmp_path, env.stat()["psize"])
    env.close()

    counts = Counter(labels.values())
    assert set(tables) == {"small", "big"}
    for tree, stat in stats.items():
        assert counts[(tree, "root")] + counts[(tree, "branch")] == stat["branch_pages"]
        assert counts[(tree, "leaf")] == stat["leaf_pages"]
        assert counts[(tree, "overflow")] == stat["overflow_pages"]
    assert stats["small"]["depth"] == 3 and stats["big"]["overflow_pages"] == 90
    assert counts[(lmdb_pages.FREE, "leaf")] >= 1
    assert lmdb_pages.tally([0, 10**9], labels) == Counter({("(meta)", "meta"): 1, ("?", "?"): 1})
