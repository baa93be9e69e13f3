"""The rewrite of a restored store copy after its re-erasure: the deleted records' bytes stay
on the pages LMDB freed, so data.mdb is replaced by a fresh file of its live records."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..compaction import rewrite_records

__all__ = ["rewrite", "room"]

_FRESH = ".rewritten"
"""Where, inside the copy's directory, `rewrite` writes the fresh file before it replaces
data.mdb (inside: the same filesystem, and gone with the staging dir if the restore dies)."""

def rewrite(store_dir: Path) -> None:
    """Replace the copy's data.mdb by a fresh file of its live records only
    (`compaction.rewrite_records`): the deleted records' bytes (their users' tokens in keys,
    sealed values) stay on the pages LMDB freed, and in the pages a compacted copy keeps
    (measured on 20,000 users, 207 erased: 207 of their tokens in the file after the
    deletions, 59 in LMDB's compacted copy, 0 in this rewrite)."""
    fresh = store_dir / _FRESH
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    rewrite_records(store_dir, fresh, room(store_dir))
    # a staging copy's: on disk (`durable.fsync_tree`) before the restore names it (`_swap_in`)
    os.replace(fresh / "data.mdb", store_dir / "data.mdb")
    shutil.rmtree(fresh)


def room(store_dir: Path) -> int:
    """A map size for the copy's deletions (pages are copied before they are freed)."""
    size = (store_dir / "data.mdb").stat().st_size
    return 2 * size + (64 << 20)
