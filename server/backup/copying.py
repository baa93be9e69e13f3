"""The backup command: the store snapshot and the bundles copied into a staging dir, then
archived (`archive.write_tar`), while servers run (the data dir's shared lock)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ..durable import Unconfirmed, make_dirs, reported
from ..errors import FailedPrecondition
from ..store import lock_data_dir
from ..store.backup import read_value, snapshot_store
from ..store.errors import out_of_space
from ..store.keys import BUNDLE_ACTIVE
from ..store.lock import check_restore_finished, locked_dir
from .archive import FORMAT, MANIFEST, write_tar
from .staging import staging_dir, sweep_leftovers

__all__ = ["backup"]


def backup(data_dir: Path, out: Path, unconfirmed: Callable[[Unconfirmed], None] | None = None
           ) -> dict:
    """Write a backup of `data_dir` to the file `out` (atomically); returns its manifest.
    `out`'s directory not synced after its rename is `Unconfirmed`, handed to `unconfirmed`
    when given (the command prints the manifest of the backup done, with the warning),
    raised otherwise."""
    check_restore_finished(data_dir)
    if not (data_dir / "store" / "data.mdb").exists():
        raise FileNotFoundError(f"no Tailor store under {data_dir}")
    if out.is_dir():
        raise FailedPrecondition(f"{out} is a directory: --out names the backup file to write "
                                 f"(e.g. {out / 'tailor.tar.gz'})")
    _check_out(out)
    _make_out_dir(out.parent)
    lock = lock_data_dir(data_dir, exclusive=False)  # servers share it; compaction must wait
    sweep_leftovers(out.parent)
    staging, held = staging_dir(out.parent)
    try:
        return _backup(data_dir, out, staging, unconfirmed)
    except BaseException as err:
        if out_of_space(err):  # the partial archive is removed (`write_tar`), the staging
            shutil.rmtree(staging, ignore_errors=True)  # copy here: then what is free is known
            raise FailedPrecondition(
                f"no space left on the disk of {out.parent} for the backup (it stages a copy of "
                f"the store's live pages, then writes the archive: up to twice the store's "
                f"{(data_dir / 'store' / 'data.mdb').stat().st_size} bytes; "
                f"{shutil.disk_usage(out.parent).free} free); nothing written"
            ) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if held is not None:
            os.close(held)
        lock.close()


def _check_out(out: Path) -> None:
    """`out` names a new file or a regular one: the archive is written beside it and renamed
    over the name, so anything else there was replaced by a regular file, the backup said
    done (as root, `--out /dev/stdout` replaced the /dev/stdout symlink with the archive; a
    FIFO a reader waited on became a file)."""
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise FailedPrecondition(
            f"{out} is not a regular file (a symlink, pipe or device): the backup is written "
            "beside it and renamed over its name, so --out names a new or regular file (write "
            "one, then copy or stream it where it goes)")


def _make_out_dir(directory: Path) -> None:
    """Make `directory` (the archive's name on disk is as good as its own). A new one whose
    parent cannot be synced stops the backup before anything is written: its `Unconfirmed`
    would reach the command's report as a backup done, with no archive."""
    try:
        make_dirs(directory)
    except Unconfirmed as err:
        raise FailedPrecondition(f"{directory} was made, but {err.directory} could not be "
                                 f"synced ({err.strerror}): a power loss may take it, and the "
                                 "backup with it; nothing was backed up") from None


def _backup(data_dir: Path, out: Path, staging: Path,
            unconfirmed: Callable[[Unconfirmed], None] | None) -> dict:
    """The store snapshot and the bundles staged in `staging`, archived to `out`."""
    stored = _stored_versions(data_dir / "bundles")  # before the snapshot names its active one
    snapshot = time.time()  # before its read transaction: erasures from then on may be missing
    store_bytes = snapshot_store(data_dir / "store", staging / "store")
    active = _active_version(staging / "store")
    versions = _copy_bundles(data_dir / "bundles", staging / "bundles")
    if active is not None and active not in versions and active in stored:
        raise FailedPrecondition(f"bundle {active} (the active one in the store snapshot) was "
                                 "removed while the backup ran; run the backup again")
    manifest = {"format": FORMAT, "created": time.time(), "store_snapshot": snapshot,
                "active_bundle": active, "bundles": versions, "store_bytes": store_bytes}
    if active is not None and active not in versions:  # gone before the backup began: the
        manifest["active_bundle_missing"] = True  # servers serve without it, the store is kept
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    with reported(unconfirmed):  # the archive is in place
        write_tar(staging, out)
    return manifest


def _active_version(store_dir: Path) -> str | None:
    raw = read_value(store_dir, "meta", BUNDLE_ACTIVE)
    return raw.decode() if raw else None


def _stored_versions(src: Path) -> set[str]:
    """The complete bundle versions under `src` now (a manifest each)."""
    try:
        return {p.name for p in src.iterdir() if (p / "manifest.json").is_file()}
    except OSError:  # no bundles dir
        return set()


def _copy_bundles(src: Path, dest: Path) -> list[str]:
    """Copy every complete bundle version; returns the versions copied. Under the bundles
    directory's shared lock: a scrub rewriting a bundle's users.npz and manifest finishes first
    (a copy between its two renames held a manifest that does not match the users.npz)."""
    dest.mkdir(parents=True)
    if not src.is_dir():
        return []
    with locked_dir(src, shared=True):
        return _copy_each(src, dest)


def _copy_each(src: Path, dest: Path) -> list[str]:
    copied = []
    for path in sorted(src.iterdir()):
        if path.name.startswith(".") or not (path / "manifest.json").is_file():
            continue  # an import in progress, or not a bundle
        try:
            shutil.copytree(path, dest / path.name, copy_function=_link_or_copy)
        except (FileNotFoundError, shutil.Error):  # pruned while we copied it
            shutil.rmtree(dest / path.name, ignore_errors=True)
            continue
        copied.append(path.name)
    return copied


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # bundle files never change once imported
    except OSError:
        shutil.copy2(src, dst)
