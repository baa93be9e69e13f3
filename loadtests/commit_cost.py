"""What a one-record commit costs: bytes to storage (fsync on, `/proc/self/io`) in four cases,
and the writing thread's CPU (fsync off).

    python -m loadtests.commit_cost after-txn 300 1000 3000 [--dir D]
    python -m loadtests.commit_cost after-compact [--dir D]
    python -m loadtests.commit_cost after-extract [--keep-cached] [--dir D]
    python -m loadtests.commit_cost after-abort [--dir D]
    python -m loadtests.commit_cost cpu [--dir D]

A one-record commit rewrites a few pages, but the kernel writes back whole folios: a commit costs
what the page cache holds its pages in (`server/store/growth.py`; docs/performance.md, fill2 and
rr18f). `after-txn N`: a young store (20 small commits), one transaction of N users of 1 KB,
then 300 one-record rewrites of those users. `after-compact`: 12,000 users of 1 KB, a third of
them deleted, the store compacted (`compaction.compact`, which drops the file from the cache
since rr18f), then 60 rewrites. `after-extract`: the same 12,000 users tarred and extracted
with tarfile as a restore does, then dropped from the cache (`--keep-cached`: not), then 60
rewrites. `after-abort`: a transaction of 300,000 puts of 1,900 bytes aborted (LMDB spills
its dirty pages into the file: about 1.2 GB of disk for a moment), then 200 commits of 8 new
users each. Each prints KiB to storage a commit and the ratio to the bytes LMDB handed to
`write()`. `cpu`: thread CPU a one-record commit, fsync off, best of 5 x 3,000.

In process, no server, no network; the store goes in a temp dir under `--dir` (its disk is
the one measured: on tmpfs, a common /tmp, nothing is, and a warning says so; removed after,
on Ctrl-C and SIGTERM too: `timeout 60 python -m ...`); seconds each (`after-abort`: tens).
To measure another tree (it uses `Store`, `raw_table`, `write`, `usage`, `compaction.compact`
and `loadtests.measure.stop_on_sigterm`), run this file as a script with PYTHONPATH at that
tree: `PYTHONPATH=<tree> python loadtests/commit_cost.py ...` (with `-m`, the current
directory's `server` comes first).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loadtests.measure import stop_on_sigterm
from server.store import Store, compaction

__all__ = ["after_abort", "after_compact", "after_extract", "after_txn", "commit_cpu", "main"]

USERS = 12_000
VALUE = 1_000


def _io() -> tuple[int, int]:
    """This process's (write_bytes, wchar): bytes sent to storage, bytes handed to write()."""
    with open("/proc/self/io") as f:
        d = dict(line.split(": ") for line in f.read().splitlines())
    return int(d["write_bytes"]), int(d["wchar"])


def _rewrites(store_dir: Path, keys: list[int], n: int) -> tuple[float, float]:
    """(KiB to storage a commit, storage / written) over `n` one-record commits, fsync on."""
    store = Store(store_dir, sync=True)
    table = store.raw_table("profiles")
    try:
        before = _io()
        for i in keys[:n]:
            store.write(lambda txn, i=i: table.put(txn, f"u{i:06d}".encode(), os.urandom(VALUE)))
        after = _io()
    finally:
        store.close()
    stored, written = after[0] - before[0], after[1] - before[1]
    return stored / n / 1024, stored / max(written, 1)


def _fill(store_dir: Path, users: int = USERS) -> None:
    """`users` users of 1 KB, in transactions of 1,000, fsync off."""
    store = Store(store_dir, sync=False)
    table = store.raw_table("profiles")
    for lo in range(0, users, 1_000):
        store.write(lambda txn, lo=lo: [table.put(txn, f"u{i:06d}".encode(), os.urandom(VALUE))
                                        for i in range(lo, min(lo + 1_000, users))])
    store.close()


def _synced(path: Path, drop: bool) -> None:
    """fsync `path`, then drop it from the page cache if `drop` (else it stays cached as written)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def after_txn(work: Path, users: int) -> tuple[float, float]:
    """One-record rewrites after one transaction of `users` users of 1 KB (fill2's case)."""
    store = Store(work / "store", sync=True)
    table = store.raw_table("profiles")
    try:
        for i in range(20):  # a young store: a few small commits
            store.write(lambda txn, i=i: table.put(txn, f"seed-{i:04d}".encode(), os.urandom(300)))
        store.write(lambda txn: [table.put(txn, f"u{i:06d}".encode(), os.urandom(VALUE))
                                 for i in range(users)])
    finally:
        store.close()
    rnd = random.Random(0)
    keys = [rnd.randrange(users) for _ in range(300)]
    return _rewrites(work / "store", keys, 300)


def after_compact(work: Path) -> tuple[float, float]:
    """One-record rewrites on a store compaction just rewrote (rr18f's case)."""
    _fill(work / "store")
    store = Store(work / "store", sync=False)
    table = store.raw_table("profiles")
    for i in range(0, USERS, 3):  # deletions: something to compact away
        store.write(lambda txn, i=i: table.delete(txn, f"u{i:06d}".encode()))
    store.close()
    compaction.compact(work)
    keys = [i for i in range(USERS) if i % 3]
    random.Random(7).shuffle(keys)
    return _rewrites(work / "store", keys, 60)


def after_extract(work: Path, keep_cached: bool) -> tuple[float, float]:
    """One-record rewrites on a store extracted from a tar in tarfile's copies (rr18f's case)."""
    _fill(work / "a" / "store")
    with tarfile.open(work / "b.tar", "w") as tar:
        tar.add(work / "a" / "store" / "data.mdb", arcname="store/data.mdb")
    shutil.rmtree(work / "a")  # its cache goes with it
    with tarfile.open(work / "b.tar") as tar:
        tar.extractall(work / "r", filter="data")
    _synced(work / "r" / "store" / "data.mdb", drop=not keep_cached)
    keys = list(range(USERS))
    random.Random(7).shuffle(keys)
    return _rewrites(work / "r" / "store", keys, 60)


class _Abort(Exception):
    pass


def after_abort(work: Path) -> tuple[float, float]:
    """Growth commits after an aborted transaction that spilled (more than 2^17 dirty pages)."""
    store = Store(work / "store", sync=True, map_size=4 << 30)
    table = store.raw_table("profiles")

    def big(txn):
        for i in range(300_000):
            table.put(txn, b"spill-%010d" % i, b"x" * 1_900)
        raise _Abort
    try:
        store.write(lambda txn: table.put(txn, b"a", b"b"))
        try:
            store.write(big)
        except _Abort:
            pass
        print(f"after the abort: {store.usage()['used']} bytes used, data.mdb "
              f"{(work / 'store' / 'data.mdb').stat().st_size} bytes")
        before = _io()
        for k in range(200):  # grows the store by ~1.6 MiB, into the spilled region
            store.write(lambda txn, k=k: [table.put(txn, b"user-%03d-%02d" % (k, j),
                                                    os.urandom(900)) for j in range(8)])
        after = _io()
    finally:
        store.close()
    stored, written = after[0] - before[0], after[1] - before[1]
    return stored / 200 / 1024, stored / max(written, 1)


def commit_cpu(work: Path) -> list[float]:
    """Thread CPU (us) a one-record commit, fsync off: each of 5 runs of 3,000."""
    store = Store(work / "store", sync=False)
    table = store.raw_table("profiles")
    value, runs = os.urandom(300), []
    try:
        for _ in range(5):
            t0 = time.thread_time()
            for i in range(3_000):
                store.write(lambda txn, i=i: table.put(txn, b"k%05d" % (i % 500), value))
            runs.append((time.thread_time() - t0) / 3_000 * 1e6)
    finally:
        store.close()
    return runs


def _in_temp(parent: str | None, run: Callable[[Path], object]):
    work = Path(tempfile.mkdtemp(prefix="commit-writeback-", dir=parent))
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.commit_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=("after-txn", "after-compact", "after-extract", "after-abort",
                                    "cpu"))
    p.add_argument("users", type=int, nargs="*", default=[300, 1000, 3000],
                   help="after-txn: the large transaction's users, one run each (at most 20,000)")
    p.add_argument("--keep-cached", action="store_true",
                   help="after-extract: leave the file cached as extracted")
    p.add_argument("--dir", default=None, help="where the temp store goes (its disk is measured)")
    args = p.parse_args(argv)
    if any(not 0 < n <= 20_000 for n in args.users):
        p.error("users: each between 1 and 20,000")
    if args.case == "cpu":
        runs = _in_temp(args.dir, commit_cpu)
        print("us a commit:", " ".join(f"{us:.1f}" for us in runs), f"(best {min(runs):.1f})")
        return 0
    if args.case == "after-txn":
        cases = [(f"after a transaction of {n} users", lambda w, n=n: after_txn(w, n))
                 for n in args.users]
    elif args.case == "after-extract":
        how = "cached as extracted" if args.keep_cached else "dropped"
        cases = [(f"after-extract, {how}", lambda w: after_extract(w, args.keep_cached))]
    else:
        cases = [(args.case, after_compact if args.case == "after-compact" else after_abort)]
    for label, run in cases:
        kib, ratio = _in_temp(args.dir, run)
        print(f"{label}: {kib:.1f} KiB to storage a commit ({ratio:.1f} x written)")
        if kib == 0:  # tmpfs (a common /tmp): no disk under the store, so no figure
            print(f"commit_cost: nothing reached storage: {args.dir or tempfile.gettempdir()} "
                  "is not on a disk (tmpfs?); pass --dir on the disk to measure",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    stop_on_sigterm()  # `timeout` unwinds the `finally` that removes the store (up to 1.2 GB)
    raise SystemExit(main())
