"""The server's copy of a bundle names users by keyed hash only (docs/bundle.md, privacy.md).

Training writes users.npz with the user ids it trained on; its output directory (outside the
data dir) may keep them. Under the data dir, `user_ids` holds `tokens.user_token(id)` instead:
the HMAC-SHA256 under the `store-id` keyring that store keys name users by, so one lookup
scheme serves both, erasure leaves no id in a bundle, and a copy of the data dir names nobody.
Every lookup hashes the queried id (`Bundle.row_of`).

The rewrite runs where the server first holds a bundle: a pushed one in its staging directory,
after the checks and before it is published (`ModelRegistry.load`); bundles stored before this
(or imported with `--bundle`) at start (`hash_stored`, which shows each one's raw ids to
`before` first: the erasure's scrub queue matches them against the tombstones). It replaces users.npz (written
deterministically, so a re-push of the same bundle gives the same manifest) and manifest.json
(the new sha256, and the `user_ids` marker that makes the rewrite idempotent).

Crash safety: the new manifest is first written beside the old one (`.manifest.next`), then
users.npz, then manifest.json are replaced by rename, each on disk before the next
(`durable.replace`); a start (or a scrub) that finds `.manifest.next` finishes the swap when
users.npz already matches it, and drops it otherwise, a copy a crash cut short included: no
rename had begun (`_finish_interrupted`, which also drops a new users.npz a crash left
written but not renamed, whole or cut short). A start whose rewrite put the manifest in place
but could not sync its directory counts the bundle rewritten, with a warning
(`durable.Unconfirmed`). Worker processes of one data dir lock the bundles directory around a
rewrite, so two never rewrite one bundle at once.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import contract

from .. import durable
from ..store import tokens
from ..store.lock import locked_dir
from .bundle import HASHED_IDS, Bundle, BundleInvalid, bundle_dirs, ids_hashed, ids_marker, read_manifest

__all__ = ["RawIds", "hash_bundle", "hash_stored"]

logger = logging.getLogger("tailor.models.pseudonyms")

_NEXT = ".manifest.next"
_USERS_NEXT = ".users.npz.next"
_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Every npz member's zip time: the same arrays give the same bytes (and sha256)."""



def _write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez_compressed`, deterministic: fixed member times, the arrays' order."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    durable.replace(tmp, target)


def _rewrite(path: Path, manifest: contract.Manifest, users: dict[str, np.ndarray]
             ) -> tuple[contract.Manifest, dict[str, np.ndarray]]:
    """Write users.npz with tokens for ids and the marked manifest; the new (manifest, users)."""
    hashed = dict(users)
    hashed["user_ids"] = np.array(tokens.user_tokens(users["user_ids"].astype(str).tolist()),
                                  dtype=f"S{tokens.TOKEN_CHARS}")
    marked = contract.parse_manifest({**manifest.raw, HASHED_IDS: ids_marker()})
    new_manifest = _swap_users(path, marked, hashed)
    logger.info("bundle %s: %d user ids replaced by keyed hashes", manifest.version,
                len(hashed["user_ids"]))
    return new_manifest, hashed


def _swap_users(path: Path, manifest: contract.Manifest, users: dict[str, np.ndarray]
                ) -> contract.Manifest:
    """Replace the bundle's users.npz by `users` and its manifest by `manifest` with the new
    file's sha256 (the crash-safe order above); the new manifest. Call it under `locked_dir`."""
    staged = path / _USERS_NEXT
    _write_npz(staged, users)
    raw = dict(manifest.raw)
    raw["files"] = {**raw["files"], "users.npz": contract.sha256_file(staged)}
    durable.write_file(path / _NEXT, json.dumps(raw, indent=2) + "\n")
    durable.replace(staged, path / "users.npz")  # on disk before the manifest that names it
    durable.replace(path / _NEXT, path / "manifest.json")
    return contract.parse_manifest(raw)


def hash_bundle(bundle: Bundle, bundles_dir: Path) -> Bundle:
    """Rewrite the loaded (and checked) `bundle`'s files, and its arrays in memory, to keyed
    hashes; nothing to do when its manifest says they are."""
    if ids_hashed(bundle.manifest):
        return bundle
    with locked_dir(bundles_dir):
        bundle.manifest, bundle.users = _rewrite(bundle.path, bundle.manifest, bundle.users)
    return bundle


def _finish_interrupted(path: Path) -> None:
    """Complete a rewrite a crash cut between the two renames, and drop its leftovers: the
    new users.npz written but not renamed (as large as the file) or cut short. Call it under
    `locked_dir` (no rewrite is under way then)."""
    pending = path / _NEXT
    if pending.exists():
        if contract.sha256_file(path / "users.npz") == _pending_users(pending):
            durable.replace(pending, path / "manifest.json")
        else:
            pending.unlink()
    for leftover in (path / _USERS_NEXT, *path.glob(f".{_USERS_NEXT}.*.tmp")):
        leftover.unlink(missing_ok=True)


def _pending_users(pending: Path) -> str | None:
    """The users.npz sha256 `.manifest.next` names; None when a crash cut it short (not JSON,
    no `files`): it is written whole and synced before the first rename (`_swap_users`), so
    no rename happened, and dropping it leaves the bundle as it was. Raised, it failed this
    bundle at every start and every erasure's scrub for good (a hashed bundle is never
    rewritten at load, which would overwrite it): the erased users' rows stayed in it."""
    try:
        return json.loads(pending.read_text())["files"].get("users.npz")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


RawIds = Callable[[contract.Manifest, list[str]], None]
"""Called with a stored bundle's manifest and raw user ids just before they are hashed."""


def _hash_stored_one(path: Path, before: RawIds | None = None) -> bool:
    """Rewrite one stored bundle unless it is hashed; False when its users.npz does not match
    its manifest (left as it is: loading refuses it)."""
    _finish_interrupted(path)
    manifest = read_manifest(path)
    if ids_hashed(manifest):
        return True
    if contract.sha256_file(path / "users.npz") != manifest.files.get("users.npz"):
        return False
    with np.load(path / "users.npz", allow_pickle=False) as npz:
        users = {k: npz[k] for k in npz.files}
    if before is not None:
        before(manifest, users["user_ids"].astype(str).tolist())
    _rewrite(path, manifest, users)
    return True


def _rewritten(path: Path) -> bool:
    """Whether the manifest in place says the bundle's user ids are hashed."""
    try:
        return ids_hashed(read_manifest(path))
    except (BundleInvalid, OSError, ValueError, KeyError):
        return False


def hash_stored(bundles_dir: Path, before: RawIds | None = None) -> list[str]:
    """At start: rewrite every stored bundle that still holds raw user ids (idempotent), each
    shown to `before` first; the versions that could not be (named in the log, refused when
    loaded)."""
    failed = []
    with locked_dir(bundles_dir):
        for path in bundle_dirs(bundles_dir):
            try:
                ok = _hash_stored_one(path, before)
            except durable.Unconfirmed as err:  # renamed: the manifest may say it is done
                ok = _rewritten(path)
                logger.warning("bundle %s: user ids %s, but %s", path.name,
                               "rewritten" if ok else "not rewritten", err)
            except (BundleInvalid, OSError, ValueError, KeyError) as err:
                logger.warning("bundle %s: user ids not rewritten (%s)", path.name, err)
                ok = False
            if not ok:
                failed.append(path.name)
    if failed:
        logger.warning("bundles whose user ids stay as written (refused at load): %s", failed)
    return failed
