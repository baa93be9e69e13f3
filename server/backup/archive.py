"""The backup file: its format (one tar file, gzip-compressed when its name ends in .gz or
.tgz, with a manifest `MANIFEST`), and the archive written out whole or not at all, on disk
under its name before a backup says it is done (`durable.replace`), readable by its writer's
account only (mode 0600: it holds the store and the data keys' pads)."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

from .. import durable
from ..store.datakeys import SLOTS_FILE

__all__ = ["FORMAT", "MANIFEST", "TOP_LEVEL", "write_tar"]

FORMAT = 1
MANIFEST = "tailor-backup.json"
TOP_LEVEL = (MANIFEST, "store", "bundles")
"""The entries at the top of a backup file; anything else in one is refused."""


def write_tar(staging: Path, out: Path) -> None:
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    partial = staging / f"{out.name}.partial"  # in the locked staging dir (`staging_dir`)
    try:
        with _private(partial) as raw, tarfile.open(fileobj=raw, mode=mode) as tar:
            tar.add(staging / MANIFEST, arcname=MANIFEST)
            tar.add(staging / "store" / "data.mdb", arcname="store/data.mdb")
            if (staging / "store" / SLOTS_FILE).exists():  # the data keys' pads (store.datakeys)
                tar.add(staging / "store" / SLOTS_FILE, arcname=f"store/{SLOTS_FILE}")
            tar.add(staging / "bundles", arcname="bundles")
        durable.replace(partial, out)  # the name on disk too, before the backup says it is done
    except BaseException:  # a full disk, an interrupt: no half-written archive left behind
        partial.unlink(missing_ok=True)
        raise



def _private(path: Path):
    """`path` opened for writing, mode 0600 whatever the umask: a backup holds the store and the
    data keys' pads (`store/keyslots`, 0600 on disk), and written with the umask's 0644 every
    user of the host could read them out of it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a file left there before keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")
