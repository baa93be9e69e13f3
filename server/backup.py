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
"""
from __future__ import annotations

import collections
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import contract
from contract.erasure import digest

from .errors import FailedPrecondition
from .models.scrub import scrub_restored
from .processes import OWNER_LOCK, hold_dir, host_id, owner_alive, process_started, remove_if_owner_gone
from .store import lock_data_dir
from .store.backup import add_missing, check_copy, read_prefix, read_value, snapshot_store
from .store.datakeys import SLOTS_FILE
from .store.errors import out_of_space
from .store.keys import (
    BUNDLE_ACTIVE,
    ERASURE_CHECK_PREFIX,
    TOMBSTONE_COUNT,
    TOMBSTONE_PREFIX,
    tombstone_parts,
)
from .store.lock import RESTORING, check_restore_finished, locked_dir
from .store.reerase import COUNTS, found_by, impressions_found, key_check, reerase, tokens_found
from .store.rekey import KEY_VERSION, KEY_VERSION_KEY

__all__ = ["backup", "restore", "left_behind", "FORMAT", "MANIFEST"]

FORMAT = 1
MANIFEST = "tailor-backup.json"
_TOP_LEVEL = (MANIFEST, "store", "bundles")
_OURS = ("tailor.lock", RESTORING, ".replaced-store", ".replaced-bundles")
"""What an empty data dir may hold: the lock file and leftovers of an interrupted restore."""


def backup(data_dir: Path, out: Path) -> dict:
    """Write a backup of `data_dir` to the file `out` (atomically); returns its manifest."""
    check_restore_finished(data_dir)
    if not (data_dir / "store" / "data.mdb").exists():
        raise FileNotFoundError(f"no Tailor store under {data_dir}")
    if out.is_dir():
        raise FailedPrecondition(f"{out} is a directory: --out names the backup file to write "
                                 f"(e.g. {out / 'tailor.tar.gz'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(data_dir, exclusive=False)  # servers share it; compaction must wait
    _sweep_leftovers(out.parent)
    staging, held = _staging_dir(out.parent)
    try:
        return _backup(data_dir, out, staging)
    except BaseException as err:
        if out_of_space(err):  # the partial archive is removed (`_write_tar`), the staging
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


def _backup(data_dir: Path, out: Path, staging: Path) -> dict:
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
    _write_tar(staging, out)
    return manifest


def restore(archive: Path, data_dir: Path, force: bool = False,
            erasure: Sequence[tuple[str, bytes]] = (),
            master: Sequence[tuple[str, bytes]] = ()) -> dict:
    """Put the backup `archive` into `data_dir`; returns its manifest.

    Refused while a server (or a compaction) holds `data_dir`, and when `data_dir` already has
    content unless `force`, which replaces its `store/` and `bundles/` (nothing else). The
    replaced store's tombstones that the backup lacks or holds older (users erased after it was
    taken) are carried into the restored store (`_carry_erasures`) and, before it is swapped in,
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
    """
    if not archive.is_file():
        raise FileNotFoundError(f"no backup file {archive}")
    lock = lock_data_dir(data_dir, exclusive=True, restoring=True)
    try:
        present = sorted(p.name for p in data_dir.iterdir() if p.name not in _OURS)
        if present and not force:
            raise FailedPrecondition(f"{data_dir} is not empty ({', '.join(present)}); restore "
                                     "into an empty dir, or pass --force to replace its store and bundles")
        staging = data_dir / RESTORING
        unknown = _unknown_before(staging)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            manifest = _extract(archive, staging)
            replaced = _replaced_store(data_dir)
            carried = _carry_erasures(replaced, staging / "store")
            erasure = _keys_checked(replaced, staging / "store", erasure, carried)
            if unknown is not None or carried is None:
                carried = None
                unknown = _mark_unknown(staging, unknown or (
                    "unreadable" if (replaced / "data.mdb").exists() else "none"))
            manifest.update(_erase_carried(staging, carried, erasure, master))
            manifest["erase_again"] = _erase_again(
                manifest["erasures_not_linked"], unknown == "unreadable", manifest)
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
        _swap_in(staging, data_dir)
        shutil.rmtree(staging, ignore_errors=True)
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
    (staging / _UNKNOWN).write_text(why)
    _fsync_path(staging / _UNKNOWN)
    _fsync_path(staging)  # its name too
    return why


def _replaced_store(data_dir: Path) -> Path:
    """The store this restore replaces: `store/`, or, when a restore killed midway had moved it
    aside already, `.replaced-store`."""
    live, aside = data_dir / "store", data_dir / ".replaced-store"
    return aside if not live.exists() and aside.exists() else live


def _carry_erasures(live: Path, restored: Path) -> list[tuple[bytes, bytes]] | None:
    """Copy the tombstones of the store being replaced (`live`) that the `restored` copy lacks,
    or holds with an earlier erasure (a user erased before the backup, back, and erased again
    after it): users erased after the backup, whose records are back with it. Their tombstones
    keep what they decide (old bundle rows masked, training filtered; docs/privacy.md) and the
    hash that finds the records (`_erase_carried`). The tombstones carried (key, value); None
    when it is not known: no live store (a restore into another data dir) or one that cannot
    be read (then nothing is carried: a damaged store is what restores are for)."""
    if not (live / "data.mdb").exists():
        return None
    tombstones = read_prefix(live, "meta", TOMBSTONE_PREFIX)
    if tombstones is None:
        return None
    carried = set(add_missing(restored, "meta", tombstones, counter=TOMBSTONE_COUNT,
                              newer=_erased_later))
    return [(key, value) for key, value in tombstones if key in carried]


def _keys_checked(live: Path, restored: Path, ring: Sequence[tuple[str, bytes]],
                  carried: list | None) -> list[tuple[str, bytes]]:
    """The keys of the `erasure` keyring `ring` that the store being replaced (`live`) does not
    know as other keys under the same id (`reerase.key_check`, stored with the first tombstone
    under each key id): with another deployment's secrets, whose key ids can match, the
    carried tombstones found nobody and the restore said there was nothing left to do. Their
    tombstones then count as not linked, for the operator. The checks go with the carried
    tombstones into the `restored` copy."""
    if carried is None:
        return list(ring)
    checks = read_prefix(live, "meta", ERASURE_CHECK_PREFIX) or []
    add_missing(restored, "meta", checks)
    known = {key[len(ERASURE_CHECK_PREFIX):].decode(): bytes(value) for key, value in checks}
    return [(kid, key) for kid, key in ring if known.get(kid, key_check(key)) == key_check(key)]


def _erased_later(stored: bytes, live: bytes) -> bool:
    """Whether the live store's tombstone is of a later erasure than the backup's (False for
    a value that is not a tombstone record)."""
    try:
        return json.loads(live)["at"] > json.loads(stored)["at"]
    except (ValueError, TypeError, KeyError):
        return False


def _erase_carried(staging: Path, carried: list[tuple[bytes, bytes]] | None,
                   ring: Sequence[tuple[str, bytes]],
                   master: Sequence[tuple[str, bytes]] = ()) -> dict:
    """Erase again, in the restored copy under `staging`, the users of the tombstones
    `carried` over, found among the copy's tokens by the hash each tombstone keeps under its
    key of the `erasure` keyring `ring` (layout tombstone 2): their store records
    (`store.reerase`) and their rows in the restored bundles, which name users by the same
    tokens (`scrub_restored`: the erasure that queued them for the scrub is not in the
    backup); the manifest's counts. A tombstone
    written before (`found_by` null or absent), under a key `ring` lacks, or carried into a
    copy whose keys still hold raw ids (key version 1, a backup of an old Tailor) cannot find
    its user's records: counted in `erasures_not_linked`, for the operator (`_erase_again`)."""
    if carried is None:
        return {"erasures_after_backup": None, "erased_again": 0, "records_erased_again": 0,
                "bundle_rows_erased_again": 0, "sends_erased_again": 0,
                "send_jobs_erased_again": 0, "impressions_erased_again": 0,
                "pending_corrected": 0, "pending_not_corrected": 0, "send_states_unread": 0,
                "erasures_not_linked": None, "impressions_not_linked": None}
    store_dir = staging / "store"
    if read_value(store_dir, "meta", KEY_VERSION_KEY) != b"%d" % KEY_VERSION:
        ring = ()  # keys of raw ids (re-keyed at the first open): no token to find yet
    kids, wanted = {kid for kid, _ in ring}, collections.defaultdict(dict)
    for key, value in carried:
        if (hashed := _found_by_of(value)) is not None and (kid := tombstone_parts(key)[0]) in kids:
            wanted[kid][hashed] = _erased_time(value)
    tokens = tokens_found(store_dir, wanted, ring)
    shown, linked = _impressions_wanted(carried, kids)
    removed = reerase(store_dir, tokens, _named_by(carried, ring),
                      impressions_found(store_dir, shown, ring), master)
    rows = scrub_restored(staging / "bundles", _erasure_times(tokens, wanted, ring))
    return {"erasures_after_backup": len(carried), "erased_again": len(tokens),
            "records_erased_again": sum(n for name, n in removed.items() if name not in COUNTS),
            "bundle_rows_erased_again": rows,
            "sends_erased_again": removed["sends"], "send_jobs_erased_again": removed["send_jobs"],
            "impressions_erased_again": removed["impressions"],
            "pending_corrected": removed["pending_corrected"],
            "pending_not_corrected": removed["pending_unread"],
            "send_states_unread": removed["sends_unread"],
            "erasures_not_linked": len(carried) - sum(map(len, wanted.values())),
            "impressions_not_linked": len(carried) - linked}


def _impressions_wanted(carried: list[tuple[bytes, bytes]],
                        kids: set[str]) -> tuple[dict[str, set[str]], int]:
    """({kid: the `impressions_by` hashes of the `carried` tombstones under key `kid`}, how
    many tombstones gave some): one written before layout 3 of `tombstone` (`impressions_by`
    null), or under a key id the restore's ring lacks, finds none of its user's impressions."""
    shown: dict[str, set[str]] = collections.defaultdict(set)
    linked = 0
    for key, value in carried:
        found = _record_of(value).get("impressions_by")
        if isinstance(found, list) and (kid := tombstone_parts(key)[0]) in kids:
            shown[kid].update(h for h in found if isinstance(h, str))
            linked += 1
    return shown, linked


def _record_of(tombstone: bytes) -> dict:
    """A tombstone's value as a dict ({} when it is not a JSON object)."""
    try:
        record = json.loads(tombstone)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _named_by(carried: list[tuple[bytes, bytes]], ring: Sequence[tuple[str, bytes]]):
    """Whether a user id is one the `carried` tombstones name (their key: the id's HMAC under
    key `kid` of the `erasure` keyring `ring`): how the restore finds the send records and
    dead letters of a store without encryption at rest, which hold the id in their JSON
    rather than start with the user's token. A key that is not `tombstone␟<kid>␟<digest>`
    names nobody."""
    digests = collections.defaultdict(set)
    for key, _ in carried:
        try:
            kid, hashed = tombstone_parts(key)
        except ValueError:
            continue
        digests[kid].add(hashed)
    keys = [(key, digests[kid]) for kid, key in ring if digests.get(kid)]
    return lambda user_id: any(digest(key, user_id) in found for key, found in keys)


def _erased_time(tombstone: bytes) -> float:
    """When a tombstone's user was erased (its `at`; 0.0 when it does not say)."""
    try:
        return float(json.loads(tombstone)["at"])
    except (ValueError, TypeError, KeyError):
        return 0.0


def _erasure_times(tokens: list[bytes], wanted: dict[str, dict[str, float]],
                   ring: Sequence[tuple[str, bytes]]) -> dict[bytes, float]:
    """{token: erasure time} of the `tokens` found by the hashes `wanted` ({kid: {hash: at}}):
    the scrub cuts a bundle's row only when the erasure is after the bundle's data cutoff."""
    times = {}
    for token in tokens:
        times[token] = max(wanted[kid].get(found_by(key, token), 0.0)
                           for kid, key in ring if kid in wanted)
    return times


def _found_by_of(tombstone: bytes) -> str | None:
    """The hash of its user's token a tombstone's value keeps; None: none (or not a record)."""
    hashed = _record_of(tombstone).get("found_by")
    return hashed if isinstance(hashed, str) and hashed else None


def _erase_again(unlinked: int | None, replaced: bool, manifest: dict) -> str | None:
    """What the operator must do about users erased after the store snapshot of the backup
    `manifest` describes whose records are back with it: the `unlinked` ones, whose tombstones
    were carried over but found none of their records (`_erase_carried`), or all of them when
    `unlinked` is None (not known: no store replaced, or
    one that could not be read, `replaced`); None when there is nothing to do."""
    if unlinked == 0:
        return None
    since = _replay_since(manifest)
    if unlinked is not None:
        why = (f"{unlinked} user(s) erased after the backup have their records back (their "
               "tombstones were carried over, but the restore could not find their records: "
               "written before tombstones kept what finds them, under an 'erasure' key it "
               "was not given (--secrets-dir) or was given another key under the same id, "
               "or into a backup whose keys hold raw ids)")
    elif replaced:
        why = "the replaced store could not be read, so users erased after the backup are not known"
    else:
        why = ("no store was replaced, so users erased after the backup are not known here "
               "(restore over the live data dir with --force to carry their tombstones)")
    return (f"{why}: before serving, call DeleteProfile again for every user whose erasure was "
            f"requested since {since}; a user with nothing back answers records_deleted 0")


def left_behind(manifest: dict) -> list[str]:
    """What a restore's re-erasure could not reach, a line each for the operator (counts only,
    no user; each also in the JSON): impressions of tombstones that keep nothing that finds
    them (`impressions_not_linked`), and the re-erased users' records it could not open
    without the `encryption` keyring (`pending_not_corrected`, `send_states_unread`)."""
    lines = []
    if manifest.get("impressions_not_linked"):
        lines.append(f"{manifest['impressions_not_linked']} tombstone(s) found none of their "
                     "users' impressions (written before tombstones kept what finds them, or "
                     "under an 'erasure' key not given): those stay until impression retention "
                     "drops them, unless DeleteProfile is called for those users again")
    if manifest.get("pending_not_corrected"):
        lines.append(f"{manifest['pending_not_corrected']} pending decision(s) of re-erased "
                     "users could not be read (no 'encryption' keyring in --secrets-dir): their "
                     "campaigns' pending counters still count them")
    if manifest.get("send_states_unread"):
        lines.append(f"{manifest['send_states_unread']} send record(s) of re-erased users "
                     "could not be read (no 'encryption' keyring in --secrets-dir): their "
                     "SendCampaign jobs do not count them suppressed 'erased'")
    return lines


def _replay_since(manifest: dict) -> str:
    """From when erasure requests are to be replayed: the store snapshot's time (UTC, floored
    to the second). A backup an older Tailor wrote recorded only `created`, taken after its
    store and bundles were copied: users erased while they were are in it too."""
    if "store_snapshot" in manifest:
        return f"{_utc(manifest['store_snapshot'])} (the backup's store snapshot)"
    return (f"a little before {_utc(manifest['created'])} (the end of the backup: the Tailor "
            "that wrote it did not record when its store snapshot was taken; take the time its "
            "backup command started)")


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


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


_host = host_id


def _owner() -> str:
    """`<host>.<pid>.<start ticks>` of this process (`processes`): in the names of what a
    backup writes beside its output before it is done, so a later backup on the same host
    tells a dead one's (another host's pids say nothing here: those are left alone)."""
    pid = os.getpid()
    return f"{_host()}.{pid}.{process_started(pid) or 0}"


_LEFTOVER = re.compile(r"(?:\.tailor-backup-|.+\.tailor-)([0-9a-f]{8})\.(\d+)\.(\d+)"
                       r"(?:-.+|\.partial)", re.DOTALL)
"""A staging dir `.tailor-backup-<host>.<pid>.<start>-*` or an archive
`<name>.tailor-<host>.<pid>.<start>.partial` (written beside the output by older versions)."""


def _staging_dir(parent: Path) -> tuple[Path, int | None]:
    """A new staging dir `.tailor-backup-<owner>-*` in `parent`, and the fd of the lock this
    process holds on it till the backup ends (`processes.hold_dir`; its partial archive is
    written inside). Made under a name no sweep matches, locked, then renamed: no other backup
    ever finds it without its lock."""
    made = Path(tempfile.mkdtemp(prefix=".tailor-backup-new-", dir=parent))
    held = hold_dir(str(made))
    try:
        staging = parent / f".tailor-backup-{_owner()}-{made.name[len('.tailor-backup-new-'):]}"
        os.rename(made, staging)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        if held is not None:
            os.close(held)
        raise
    return staging, held


def _sweep_leftovers(directory: Path) -> None:
    """Remove the staging dirs and partial archives that backups of this host killed midway
    left in `directory` (their process is gone): each holds up to a whole store copy. A
    staging dir with an `owner.lock` goes only once its lock can be taken: a pid says nothing
    of a backup in another pid namespace sharing the directory and the hostname (another
    container of the pod), whose running staging dir went. Those of older versions (no lock;
    their partial archives beside the output) are judged by their pid."""
    for path in directory.iterdir():
        match = _LEFTOVER.fullmatch(path.name)
        if match is None or match[1] != _host():
            continue
        if path.is_dir() and (path / OWNER_LOCK).exists():
            remove_if_owner_gone(str(path))
        elif owner_alive(int(match[2]), int(match[3]) or None):
            continue
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _write_tar(staging: Path, out: Path) -> None:
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    partial = staging / f"{out.name}.partial"  # in the locked staging dir (`_staging_dir`)
    try:
        with tarfile.open(partial, mode) as tar:
            tar.add(staging / MANIFEST, arcname=MANIFEST)
            tar.add(staging / "store" / "data.mdb", arcname="store/data.mdb")
            if (staging / "store" / SLOTS_FILE).exists():  # the data keys' pads (store.datakeys)
                tar.add(staging / "store" / SLOTS_FILE, arcname=f"store/{SLOTS_FILE}")
            tar.add(staging / "bundles", arcname="bundles")
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out)
        _fsync_path(out.parent)  # the name on disk too, before the backup says it is done
    except BaseException:  # a full disk, an interrupt: no half-written archive left behind
        partial.unlink(missing_ok=True)
        raise


def _extract(archive: Path, staging: Path) -> dict:
    try:
        return _extract_tar(archive, staging)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        if out_of_space(err):
            raise  # the data dir's disk is full, not the file damaged (`restore` says so)
        # cut short (a full disk, an interrupted copy) or not a tar file at all
        raise FailedPrecondition(f"{archive} cannot be read as a backup ({err})") from None


def _extract_tar(archive: Path, staging: Path) -> dict:
    with tarfile.open(archive, "r:*") as tar:
        try:
            manifest = json.load(tar.extractfile(MANIFEST))
        except (KeyError, ValueError, AttributeError):
            raise FailedPrecondition(f"{archive} is not a Tailor backup (no {MANIFEST})") from None
        if manifest.get("format") != FORMAT:
            raise FailedPrecondition(f"{archive} has backup format {manifest.get('format')!r}; "
                                     f"this Tailor reads format {FORMAT}")
        for member in tar.getmembers():
            if member.name.split("/", 1)[0] not in _TOP_LEVEL:
                raise FailedPrecondition(f"{archive} holds an unexpected entry {member.name!r}")
        tar.extractall(staging, filter="data")  # refuses absolute paths, .. and outside links
    missing = [v for v in manifest["bundles"] if not (staging / "bundles" / v / "manifest.json").is_file()]
    if not (staging / "store" / "data.mdb").is_file() or missing:
        raise FailedPrecondition(f"{archive} is incomplete (store or bundles {missing} missing)")
    try:  # before anything is replaced: a copy damaged inside a well-formed tar
        check_copy(staging / "store")
    except FailedPrecondition as err:
        raise FailedPrecondition(f"{archive} holds a store that cannot be opened ({err})") from None
    for version in manifest["bundles"]:
        damaged = _damaged_file(staging / "bundles" / version)
        if damaged is not None:
            raise FailedPrecondition(f"{archive} holds bundle {version} whose {damaged}")
    return manifest


def _damaged_file(bundle: Path) -> str | None:
    """What of the restored `bundle` does not match its manifest's sha256s (a file damaged inside
    a well-formed tar: the server would start without that model), or None. Only the checksums:
    a bundle an older Tailor imported keeps its own manifest's schema."""
    try:
        files = json.loads((bundle / "manifest.json").read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return "manifest.json is not valid JSON"
    if not isinstance(files, dict):
        return "manifest.json lists no files"
    for name, expected in sorted(files.items()):
        target = (bundle / name).resolve()
        if bundle.resolve() not in target.parents or not target.is_file():
            return f"{name} (in its manifest) is missing"
        actual = contract.sha256_file(target)
        if actual != expected:
            return f"{name} does not match its manifest (sha256 {actual[:12]}…, listed {str(expected)[:12]}…)"
    return None


def _swap_in(staging: Path, data_dir: Path) -> None:
    """Rename the extracted `store` and `bundles` into `data_dir`, each on disk (every file and
    directory fsynced) before it is named there: a power loss just after a restore leaves the
    old store or the whole new one, never a `store/` whose data.mdb was not written out."""
    (staging / "bundles").mkdir(exist_ok=True)
    for name in ("store", "bundles"):
        _fsync_tree(staging / name)
    for name in ("store", "bundles"):
        old = data_dir / f".replaced-{name}"
        shutil.rmtree(old, ignore_errors=True)
        if (data_dir / name).exists():
            os.replace(data_dir / name, old)
        os.replace(staging / name, data_dir / name)
        _fsync_path(data_dir)  # the rename on disk before the replaced copy is deleted
        shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first, `root` last."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
