"""Errors of the store: its encryption (all refuse an open or a read: FAILED_PRECONDITION), and a
write past the map's ceiling or on a full disk (RESOURCE_EXHAUSTED)."""
from __future__ import annotations

import errno

import lmdb

from ..errors import FailedPrecondition, ResourceExhausted

__all__ = ["StoreKeyMissing", "StoreKeyMismatch", "StoreEncrypted", "StoreFull", "StoreDiskFull",
           "StoreKeyringMissing", "StoreUnreadable", "StorePadsMissing", "StoreLayoutsInUse", "out_of_space"]


class StoreKeyMissing(FailedPrecondition):
    """A data key is wrapped under a master key the `encryption` keyring no longer holds."""

    def __init__(self, kid: str):
        super().__init__(f"data keys are wrapped under master key {kid!r}, which the "
                         "'encryption' keyring does not hold: restore it, or finish "
                         "`python -m server rotate-key` before dropping it")


POINT_AT_KEYS = ("point --secrets-dir, TAILOR_SECRETS_DIR or the config file's secrets_dir at "
                 "the deployment's keyring directory")
"""How to name the keyrings a store was written under (`StoreKeyMismatch`, `StoreKeyringMissing`)."""


class StoreKeyMismatch(FailedPrecondition):
    """The store was keyed under another `store-id` key. `keys`: where this one was read from
    and how that was chosen (`crypto.store_id_origin`), so a server started from another
    working directory (the default keyring directory is relative to it) says where it looked."""

    def __init__(self, path, keys: str = ""):
        self.path = path
        read = f" read from {keys}" if keys else ""
        super().__init__(f"store at {path} was written under another 'store-id' key: its "
                         f"records cannot be found with this one{read} (restore the "
                         f"deployment's key, or {POINT_AT_KEYS})")


class StoreKeyringMissing(FailedPrecondition):
    """No `store-id` keyring for a store stamped under one (`crypto.refuse_keyless_store`):
    raised before any keyring is generated, since a key generated now could never match."""

    def __init__(self, path, keys: str):
        super().__init__(f"store at {path} was written under a 'store-id' key and there is none "
                         f"at {keys}: no keys were generated (restore the deployment's keyrings "
                         f"there, or {POINT_AT_KEYS})")


class StoreEncrypted(FailedPrecondition):
    """An encrypted store opened without encryption (settings or secrets)."""

    def __init__(self, path):
        super().__init__(f"store at {path} is encrypted at rest: open it with encryption on "
                         "and the 'encryption' keyring")


class StoreFull(ResourceExhausted):
    """A write refused: the LMDB map is at its ceiling (`TAILOR_LMDB_MAX_MAP_SIZE`). Counted as
    `tailor_store_full_refusals_total` when it ends a call (`server.errors`), so an alert tells
    it from the RESOURCE_EXHAUSTED a caller causes (a profile over its attribute limit)."""

    store_full = True

    def __init__(self, max_map_size: int, reserve: int):
        super().__init__(f"store is full: LMDB map at its ceiling of {max_map_size} bytes less "
                         f"{reserve} kept for erasure (raise TAILOR_LMDB_MAX_MAP_SIZE)")


class StoreDiskFull(ResourceExhausted):
    """A write refused: the filesystem holding the store has no space left (nothing of the write
    was stored). Counted with `StoreFull` (`tailor_store_full_refusals_total`): the store is
    full, only the disk is the ceiling."""

    store_full = True

    def __init__(self, path, free: int):
        super().__init__(f"store is full: no space left on the disk of {path} ({free} bytes "
                         "free); nothing of this write was stored (free space or grow the volume)")


class StoreUnreadable(FailedPrecondition):
    """The store's files do not open as an LMDB environment: damaged, cut short, or not a
    store at all (`lmdb_store.open_env`)."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot open the store at {path}: {reason}")


class StorePadsMissing(FailedPrecondition):
    """An encrypted store whose pad file (`datakeys.SLOTS_FILE`) lacks pads its data keys use:
    `data.mdb` copied or restored without it. Served, every user would read as erased."""

    def __init__(self, path, keys: int, pads: int):
        super().__init__(f"store at {path}: its data keys use {keys} pads but keyslots holds "
                         f"{pads}: data.mdb was copied or restored without its keyslots file "
                         "(copy both, as backups and compaction do); served, every user would "
                         "read as erased")


class StoreLayoutsInUse(FailedPrecondition):
    """The store is open in a live process of a Tailor whose record layouts differ from this
    one's (`sharing`): opened here, its layout steps would run under that process, which would
    then misread the records."""

    def __init__(self, path, kinds: list[str]):
        super().__init__(f"store at {path} is open in a running Tailor of another version, "
                         f"whose record layouts differ from this one's: {', '.join(kinds)}; "
                         "stop it first (upgrade: stop, back up, migrate, start)")


def out_of_space(err: BaseException) -> bool:
    """Whether `err` says the disk (or the quota) is full: ENOSPC/EDQUOT, or LMDB's DiskError
    (a copy or a commit that ran out of space)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, lmdb.DiskError)
