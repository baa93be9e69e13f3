"""Which tree each page of an LMDB data file belongs to: a named table's, the main tree's (the
tables' records) or the free list's, and whether it is a root, branch, leaf or overflow page.

    python -m loadtests.lmdb_pages STORE_DIR [PGNO ...]

Without page numbers, prints each tree's pages by kind (they match LMDB's own `stat()` of each
table); with them (the pages a commit wrote: the offsets of its `pwrite64` calls and of the runs
of its `writev` calls, divided by the page size, as `strace -e trace=pwrite64,writev,lseek`
shows them), tallies those pages by tree and kind. A commit writes every page it dirtied, so
the tally of the pages written right after a commit is what that commit cost, per table (docs/
performance.md, stop 61). Reads the file as LMDB 0.9 lays it out on a 64-bit machine (the
version py-lmdb bundles); no LMDB call, so it reads a store a server holds open. A page a
later commit freed or reused is labelled as it is now: map right after the commit.
"""
from __future__ import annotations

import argparse
import collections
import struct
import sys
from pathlib import Path

__all__ = ["page_map", "tally", "main"]

_BRANCH, _LEAF, _LEAF2 = 0x01, 0x02, 0x20
"""Page flags (`mp_flags`)."""
_BIGDATA, _SUBDATA, _DUPDATA = 0x01, 0x02, 0x04
"""Leaf node flags: the value on overflow pages, a named table's record, sorted duplicates."""
_HEADER = 16
"""A page's header: page number, pad, flags, lower and upper bounds of its free space."""
_NONE = 0xFFFF_FFFF_FFFF_FFFF
"""The root of an empty tree (`P_INVALID`)."""
FREE, MAIN = "(free list)", "(main: table records)"


def _db(buf: bytes, offset: int) -> dict:
    """An `MDB_db` record (48 bytes): depth, page counts, entries, root."""
    _, flags, depth, branch, leaf, overflow, entries, root = struct.unpack_from(
        "<IHHQQQQQ", buf, offset)
    return {"flags": flags, "depth": depth, "branch_pages": branch, "leaf_pages": leaf,
            "overflow_pages": overflow, "entries": entries, "root": root}


def _nodes(data: bytes, base: int):
    """(offset in the file, lo, hi, flags, key size) of every node of the page at `base`."""
    lower, = struct.unpack_from("<H", data, base + 12)
    for i in range((lower - _HEADER) >> 1):
        offset, = struct.unpack_from("<H", data, base + _HEADER + 2 * i)
        yield (base + offset, *struct.unpack_from("<HHHH", data, base + offset))


def _walk(data: bytes, psize: int, root: int, tree: str, out: dict, tables: dict | None) -> None:
    """Label every page of the tree at `root` in `out` ({page: (tree, kind)}); the main tree's
    leaves name the tables (into `tables`: {name: its `MDB_db`})."""
    stack = [] if root == _NONE else [(root, 0)]
    while stack:
        page, level = stack.pop()
        base = page * psize
        flags, = struct.unpack_from("<H", data, base + 10)
        if flags & _BRANCH:
            out[page] = (tree, "root" if level == 0 else "branch")
            stack.extend((lo | hi << 16 | fl << 32, level + 1)
                         for _, lo, hi, fl, _ in _nodes(data, base))
            continue
        out[page] = (tree, "leaf")
        if flags & _LEAF2:
            continue
        for node, _, _, fl, ksize in _nodes(data, base):
            value = node + 8 + ksize
            if fl & _BIGDATA:
                first, = struct.unpack_from("<Q", data, value)
                count, = struct.unpack_from("<I", data, first * psize + 12)
                out.update(dict.fromkeys(range(first, first + count), (tree, "overflow")))
            elif tables is not None and fl & _SUBDATA and not fl & _DUPDATA:
                tables[data[node + 8:value].decode()] = _db(data, value)


def page_map(store: Path | str, psize: int = 4096) -> tuple[dict[int, tuple[str, str]], dict]:
    """({page number: (tree, kind)} of every page in use, {table: its `MDB_db` record}) of the
    data file in `store` (a directory, or `data.mdb` itself), as of its last commit (the newer
    of the two meta pages)."""
    path = Path(store)
    data = (path / "data.mdb" if path.is_dir() else path).read_bytes()
    metas = [(struct.unpack_from("<Q", data, m * psize + 144)[0], m) for m in (0, 1)]
    base = max(metas)[1] * psize
    out: dict[int, tuple[str, str]] = {0: ("(meta)", "meta"), 1: ("(meta)", "meta")}
    tables: dict[str, dict] = {}
    _walk(data, psize, _db(data, base + 40)["root"], FREE, out, None)
    _walk(data, psize, _db(data, base + 88)["root"], MAIN, out, tables)
    for name, db in tables.items():
        _walk(data, psize, db["root"], name, out, None)
    return out, tables


def tally(pages, labels: dict[int, tuple[str, str]]) -> collections.Counter:
    """{(tree, kind): how many of `pages`} ("?" for a page not in use now)."""
    return collections.Counter(labels.get(p, ("?", "?")) for p in pages)


def main(argv=None) -> int:
    from .measure import positive
    p = argparse.ArgumentParser(prog="python -m loadtests.lmdb_pages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", type=Path, help="the store directory (or its data.mdb)")
    p.add_argument("pages", type=int, nargs="*", help="page numbers to tally (default: all)")
    p.add_argument("--page-size", type=positive(int), default=4096)
    args = p.parse_args(argv)
    labels, _ = page_map(args.store, args.page_size)
    counts = tally(args.pages or labels, labels)
    for (tree, kind), n in sorted(counts.items()):
        print(f"{tree:24s} {kind:9s} {n:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
