"""Backup and restore of a data dir: one tar file, taken while servers run, put back while none do.

Archive layout (format 1), one tar file (gzip-compressed when its name ends in .gz or .tgz):

    tailor-backup.json    {"format": 1, "created": epoch s, "store_snapshot": epoch s,
                           "active_bundle": V or null, "bundles": [versions], "store_bytes": N}
    store/data.mdb        a compacted copy of the LMDB store: one committed state
    store/keyslots        the pads of the data keys (encryption at rest), copied after it
    bundles/<version>/    every bundle version on disk, the active one among them unless it
                          was gone before the backup began ("active_bundle_missing": true)

The store copy is one LMDB read transaction (`server.store.backup`), so profiles, events,
campaigns, decisions and the bundle pointer all come from the same instant; `store_snapshot` is
a time just before it began (`created`, when the copies were done, is later by the store's and
the bundles' copy time: a user erased in between is in the backup). Bundles are
immutable once imported; one that a concurrent push prunes while it is being copied is left
out, and the backup fails only if that was the version the store snapshot points at. A data
dir whose active version was missing already (removed by hand, lost) is backed up without it:
its servers serve the store without that bundle, and a backup is most needed then.

One module each: `copying` (the backup command), `staging` (its staging dir and the sweep of
those left), `archive` (the file's format and writing), `verify` (its reading and checks),
`restoring` (the restore command), `erasures` (what the restore erases again), `todo` (what it
tells the operator).
"""
from __future__ import annotations

from .archive import FORMAT, MANIFEST
from .copying import backup
from .restoring import restore
from .todo import left_behind

__all__ = ["backup", "restore", "left_behind", "FORMAT", "MANIFEST"]
