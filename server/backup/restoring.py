"""The restore command: the backup extracted and checked in a staging dir (`verify`), the
erasures made after it carried in and applied (`erasures`), what the operator must still do
(`todo`), then the copy swapped in, on disk before it is named, while no server runs (the data
dir's exclusive lock)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ..durable import Unconfirmed, confirm, fsync_tree, reported, write_file
from ..errors import FailedPrecondition
from ..store import lock_data_dir
from ..store.errors import out_of_space
from ..store.growth import drop_cached
from ..store.lock import RESTORING, restore_again
from .erasures import carry_erasures, carry_suppressions, erase_carried, keys_checked
from .todo import erase_again
from .verify import extract

__all__ = ["restore"]

_OURS = ("tailor.lock", RESTORING, ".replaced-store", ".replaced-bundles")
"""What an empty data dir may hold: the lock file and leftovers of an interrupted restore."""


def restore(archive: Path, data_dir: Path, force: bool = False,
            erasure: Sequence[tuple[str, bytes]] = (),
            master: Sequence[tuple[str, bytes]] = (),
            unconfirmed: Callable[[Unconfirmed], None] | None = None) -> dict:
    """Put the backup `archive` into `data_dir`; returns its manifest.

    Refused while a server (or a compaction) holds `data_dir`, and when `data_dir` already has
    content unless `force`, which replaces its `store/` and `bundles/` (nothing else). The
    replaced store's tombstones that the backup lacks or holds older (users erased after it was
    taken) are carried into the restored store (`carry_erasures`), with the suppression list's
    entries the backup lacks (`carry_suppressions`: the erasures' keep-outs, bounces listed
    since; `suppressions_after_backup` counts them) and, before it is swapped in,
    those users are erased from it again, their tokens found by what their tombstones keep
    under the `erasure` keyring's keys (`erasure`: (kid, key), `store.reerase`). The manifest
    returned says how many were carried
    (`erasures_after_backup`, None when not known: no store replaced, or unreadable), erased
    again (`erased_again`, `records_erased_again`) or not linked to any record
    (`erasures_not_linked`: tombstones written before they kept what finds the records, or under
    a key not in `erasure`), and what the operator must still do (`erase_again`). `master`:
    the `encryption` keyring, with which the erasure again also reads the sealed records
    DeleteProfile reads before it deletes them (`store.opener`: it lowers the campaigns'
    pending counters, `pending_corrected`, and settles send jobs' recipients by their state;
    without it those are counted in `pending_not_corrected` and `send_states_unread`).
    A restore is done once its staging dir is gone from `data_dir`: `data_dir` not synced after
    that is `Unconfirmed`, handed to `unconfirmed` when given (the command reports the restore
    with its warning), raised otherwise; not synced after a rename of the swap, which the next
    step relies on, it stops there (FailedPrecondition: run it again).
    """
    if not archive.is_file():
        raise FileNotFoundError(f"no backup file {archive}")
    lock = lock_data_dir(data_dir, exclusive=True, restoring=True)
    try:
        present = sorted(p.name for p in data_dir.iterdir() if p.name not in _OURS)
        staging = data_dir / RESTORING
        if present and not force:
            if staging.exists():
                raise FailedPrecondition(f"a restore into {data_dir} did not finish ({RESTORING} "
                                         f"is there) and it holds {', '.join(present)}: "
                                         f"{restore_again(data_dir)}")
            raise FailedPrecondition(f"{data_dir} is not empty ({', '.join(present)}); restore "
                                     "into an empty dir, or pass --force to replace its store and bundles")
        unknown = _unknown_before(staging)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            manifest = extract(archive, staging)
            replaced = _replaced_store(data_dir)
            carried = carry_erasures(replaced, staging / "store")
            listed = carry_suppressions(replaced, staging / "store") if carried is not None else 0
            erasure = keys_checked(replaced, staging / "store", erasure, carried)
            if unknown is not None or carried is None:
                carried = None
                unknown = _mark_unknown(staging, unknown or (
                    "unreadable" if (replaced / "data.mdb").exists() else "none"))
            manifest.update(erase_carried(staging, carried, erasure, master))
            manifest["suppressions_after_backup"] = listed
            manifest["erase_again"] = erase_again(
                manifest["erasures_not_linked"], unknown == "unreadable", manifest, bool(master))
        except BaseException as err:  # nothing replaced yet: the data dir is as it was
            shutil.rmtree(staging, ignore_errors=True)
            if out_of_space(err):  # not the backup's fault: said so, not "cannot be read"
                raise FailedPrecondition(
                    f"no space left on the disk of {data_dir} to restore {archive} (its store "
                    f"copy and bundles are extracted there first; "
                    f"{shutil.disk_usage(data_dir).free} bytes free); nothing was replaced"
                ) from None
            raise
        # Interrupted from here on (Ctrl-C, an error), `staging` stays: the mark that this
        # restore did not finish, which every command refuses until it is run again.
        try:
            _swap_in(staging, data_dir)
        except Unconfirmed as err:
            raise FailedPrecondition(
                f"{err.directory} could not be synced during the swap ({err.strerror}): the "
                f"restore did not finish ({RESTORING} is kept); {restore_again(data_dir)}"
            ) from err
        shutil.rmtree(staging, ignore_errors=True)
        with reported(unconfirmed):  # restored all the same
            confirm(data_dir)  # the mark gone: a power loss does not bring it back
        return manifest
    finally:
        lock.close()


_UNKNOWN = "erasures-unknown"
"""In a restore's staging dir, before its swap: why it could not know who was erased after the
backup (`none`: no store replaced; `unreadable`). A restore killed midway and run again would
otherwise take the copy it had swapped in for the store it replaces, find no erasure missing
from the backup, and answer 0 and nothing to do (measured: a user erased after the backup,
restored into a fresh dir, killed between its renames: 0, null, her 3 events served)."""


def _unknown_before(staging: Path) -> str | None:
    """What an unfinished restore into this data dir recorded (`_UNKNOWN`), or None."""
    try:
        return (staging / _UNKNOWN).read_text() or None
    except OSError:
        return None


def _mark_unknown(staging: Path, why: str) -> str:
    """Record in `staging` (on disk before any rename) why erasures are not known; returns it."""
    write_file(staging / _UNKNOWN, why)  # its name too
    return why


def _replaced_store(data_dir: Path) -> Path:
    """The store this restore replaces: `store/`, or, when a restore killed midway had moved it
    aside already, `.replaced-store`."""
    live, aside = data_dir / "store", data_dir / ".replaced-store"
    return aside if not live.exists() and aside.exists() else live


def _swap_in(staging: Path, data_dir: Path) -> None:
    """Rename the extracted `store` and `bundles` into `data_dir`, each on disk (every file and
    directory fsynced) before it is named there: a power loss just after a restore leaves the
    old store or the whole new one, never a `store/` whose data.mdb was not written out. The
    data.mdb is then dropped from the page cache (`growth.drop_cached`: extracted in tarfile's
    16 KiB copies, it was cached in 4-page folios, and the first server wrote one back whole for
    each page a commit rewrote: 90 KiB to storage a one-record commit, against 33)."""
    (staging / "bundles").mkdir(exist_ok=True)
    for name in ("store", "bundles"):
        fsync_tree(staging / name)
    drop_cached(staging / "store" / "data.mdb")
    for name in ("store", "bundles"):
        old = data_dir / f".replaced-{name}"
        shutil.rmtree(old, ignore_errors=True)
        if (data_dir / name).exists():
            os.replace(data_dir / name, old)
        os.replace(staging / name, data_dir / name)
        confirm(data_dir)  # the rename on disk before the replaced copy is deleted
        shutil.rmtree(old, ignore_errors=True)
