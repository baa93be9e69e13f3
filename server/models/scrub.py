"""Erased users leave the stored bundles' users.npz within `bundle_scrub_seconds` (issue 17).

A bundle under the data dir names users by `tokens.user_token` (`pseudonyms`); serving masks an
erased user's row in memory (`Bundle.forget`), but the file would keep their hash, training
history and seen-set until a new bundle replaced it: anyone holding the `store-id` key could
test a guessed id and read them. The scrub removes them from every stored bundle.

Tombstones name users under the `erasure` keyring, which cannot be matched against the
bundles' `store-id` hashes, so the erasure also queues the user's bundle hash (`ScrubQueue`, an
eraser): one line (hash, erasure time) appended to `bundles/.erased`; so does a bundle loaded
with user ids after the erasure that still holds the user (`ScrubQueue.check_bundle`), and
one stored with user ids (`--bundle`) that the start hashes (`ScrubQueue.check_ids`). A row
is scrubbed from bundles whose data cutoff is before the erasure (a later bundle's row of a
user who came back is their new activity). Every `bundle_scrub_seconds` one worker (the
bundles directory lock of `pseudonyms`, so no rewrite overlaps another) takes the queue
(renamed to `.erased.taking`), rewrites each stored bundle that holds a queued hash, then
deletes the queue: after that no file under the data dir holds the hash. A pass that began
while a push was under way (`staging.uploads_under_way`) keeps the queue for the next one: the
pushed bundle's check may have queued users it holds, and it is stored only at its publish.

A scrubbed row stays (rows line up across the arrays, and nothing else may index them): its
hash becomes `VOID` (no id hashes to it), its history and seen-set rows become empty (their
entries are cut from the CSR arrays), any other per-user array gets zeros in that row. The
rewrite is the one `pseudonyms` does: users.npz and the manifest's sha256 swapped by rename.

Crash safety: a crash before the queue is deleted leaves `.erased.taking`, taken again by the
next scrub (a rewrite is idempotent); a crash inside a rewrite is finished at the next start
(`pseudonyms._finish_interrupted`).
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np

from ..store import tokens
from ..store.lock import locked_dir
from .bundle import HASHED_IDS, VOID, BundleInvalid, bundle_dirs, ids_hashed, ids_marker, read_manifest
from .pseudonyms import _finish_interrupted, _swap_users
from .staging import uploads_under_way

__all__ = ["QUEUE", "VOID", "ScrubQueue", "scrub_restored", "scrub_stored", "scrub_users"]

logger = logging.getLogger("tailor.models.scrub")

QUEUE = ".erased"
_TAKING = ".erased.taking"
_CSR = (("indptr", ("items", "weights")),
        ("seen_indptr", ("seen_items", "seen_mask", "seen_last_ts")))


class ScrubQueue:
    """`UserEraser`: queue the erased user's bundle hash for the next scrub (`scrub_stored`)."""

    def __init__(self, bundles_dir: Path, clock: Callable[[], float] = time.time,
                 matches: Callable[[list[str]], dict[str, float]] | None = None):
        self.path, self.clock, self.matches = bundles_dir / QUEUE, clock, matches

    def erase_user(self, txn, user_id: str) -> int:
        """Queue the user, erased now."""
        self._append(tokens.user_token(user_id) + b" %r\n" % self.clock())
        return 0  # nothing removed from the store

    def check_bundle(self, bundle) -> None:
        """`ModelRegistry.add_check`: a bundle loaded with user ids (pushed, imported) that
        holds users erased after its cutoff (`matches`: the tombstones) queues them too, so a
        bundle trained before an erasure and pushed after the scrub loses their rows as well."""
        if not bundle.ids_hashed:
            self.check_ids(bundle.manifest, bundle.users["user_ids"].astype(str).tolist())

    def check_ids(self, manifest, user_ids: list[str]) -> None:
        """`pseudonyms.hash_stored`'s `before`: queue the users of a stored bundle (imported
        with `--bundle`, or stored before bundles were hashed) erased after its cutoff, from
        its raw ids, which the start rewrites to keyed hashes right after."""
        if self.matches is None:
            return
        erased = self.matches(user_ids)
        lines = [tokens.user_token(u) + b" %r\n" % at for u, at in erased.items()
                 if at >= manifest.cutoff]
        if lines:
            self._append(b"".join(lines))

    def _append(self, lines: bytes) -> None:
        """One write under the queue file's lock (a scrub that took the file meanwhile is seen
        by its inode, and the lines go to a new one)."""
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, self.path):
                    os.write(fd, lines)
                    os.fsync(fd)  # appended under the file's lock, not `durable`'s rename
                    return
            finally:
                os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _take_queue(bundles_dir: Path) -> dict[bytes, float]:
    """Move `.erased` aside (under its lock) and read every {hash: latest erasure time}
    queued there or left by an interrupted scrub."""
    queue, taking = bundles_dir / QUEUE, bundles_dir / _TAKING
    if queue.exists():
        fd = os.open(queue, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, queue):
                with open(taking, "ab") as out, os.fdopen(os.dup(fd), "rb") as src:
                    out.write(src.read())
                    os.fsync(out.fileno())  # appended (a retry's lines add to a taken queue)
                queue.unlink()
        finally:
            os.close(fd)
    if not taking.exists():
        return {}
    erased: dict[bytes, float] = {}
    for token, at in (line.split(b" ") for line in taking.read_bytes().split(b"\n") if line):
        erased[token] = max(float(at), erased.get(token, 0.0))
    return erased


def scrub_users(users: dict[str, np.ndarray], erased: Collection[bytes]
                ) -> dict[str, np.ndarray] | None:
    """`users` (users.npz arrays, hashed ids) without the rows of `erased` hashes; None when
    it holds none of them."""
    ids = users["user_ids"]
    rows = np.flatnonzero(np.isin(ids, np.asarray(list(erased), dtype=ids.dtype)))
    if not len(rows):
        return None
    out = dict(users)
    out["user_ids"] = ids.copy()
    out["user_ids"][rows] = VOID
    members = {"user_ids"}
    for ptr, columns in _CSR:
        if ptr in users:
            out.update(_empty_rows(users, ptr, columns, rows))
            members.update((ptr, *columns))
    for name, array in users.items():  # any other per-user array: zeros in those rows
        if name not in members and array.ndim and len(array) == len(ids):
            out[name] = array.copy()
            out[name][rows] = 0
    return out


def _empty_rows(users, ptr: str, columns: tuple[str, ...], rows: np.ndarray) -> dict:
    """The CSR arrays `ptr`/`columns` with `rows` emptied (their entries cut out)."""
    indptr = users[ptr].astype(np.int64)
    lengths = np.diff(indptr)
    keep = np.ones(int(indptr[-1]), bool)
    for r in rows:
        keep[indptr[r]:indptr[r + 1]] = False
    lengths[rows] = 0
    new_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(users[ptr].dtype)
    return {ptr: new_ptr, **{c: users[c][keep] for c in columns}}


def _scrub_one(path: Path, queued: dict[bytes, float], any_key: bool = False) -> int:
    """Rewrite one stored bundle without the rows of the `queued` users erased after its
    cutoff (an older erasure: the row is their activity since they came back); rows removed.
    `any_key`: hashes under any `store-id` key are matched (a process that has not installed
    the key: `scrub_restored`; a hash under another key matches no queued token anyway)."""
    _finish_interrupted(path)
    manifest = read_manifest(path)
    if not ids_hashed(manifest) or not any_key and manifest.raw[HASHED_IDS] != ids_marker():
        return 0  # raw ids, or another key's hashes (both refused at load): nothing to match
    erased = {t for t, at in queued.items() if at >= manifest.cutoff}
    if not erased:
        return 0
    with np.load(path / "users.npz", allow_pickle=False) as npz:
        if not np.isin(npz["user_ids"], np.asarray(list(erased), dtype="S")).any():
            return 0  # read user_ids alone: a bundle without them is not rewritten
        users = {k: npz[k] for k in npz.files}
    scrubbed = scrub_users(users, erased)
    _swap_users(path, manifest, scrubbed)
    return int(np.count_nonzero(scrubbed["user_ids"] == VOID)
               - np.count_nonzero(users["user_ids"] == VOID))


def scrub_restored(bundles_dir: Path, erased: dict[bytes, float]) -> int:
    """Scrub the `erased` tokens ({token: erasure time}) from the bundles of a restore's
    staging copy under `bundles_dir` (nobody serves them yet: `server.backup`), at once: a
    user erased again by the restore (`store.reerase`) would otherwise keep her row in the
    files, which no erasure queues any more. A bundle that cannot be scrubbed gets the
    tokens queued (`QUEUE`) for the server's first scrub instead. The rows removed."""
    if not erased or not bundles_dir.is_dir():
        return 0
    removed, failed = 0, []
    with locked_dir(bundles_dir):
        for path in bundle_dirs(bundles_dir):
            try:
                removed += _scrub_one(path, erased, any_key=True)
            except (BundleInvalid, OSError, ValueError, KeyError) as err:
                logger.warning("bundle %s: not scrubbed at restore (%s)", path.name, err)
                failed.append(path.name)
    if failed:
        ScrubQueue(bundles_dir)._append(b"".join(t + b" %r\n" % at for t, at in erased.items()))
    return removed


def scrub_stored(bundles_dir: Path) -> int | None:
    """One scrub of every stored bundle (one worker at a time); the rows removed, None when
    no erasure was queued. The queue stays for the next pass when a bundle could not be
    scrubbed, or when a push was under way as the pass began: that push may have queued users
    its bundle holds, which is stored (under its version) only once it publishes, maybe after
    the listing below. Blocking: run it in a thread."""
    with locked_dir(bundles_dir):
        erased = _take_queue(bundles_dir)
        if not erased:
            return None
        pushing = uploads_under_way(bundles_dir)  # before the listing: published since, listed
        removed, failed = 0, []
        for path in bundle_dirs(bundles_dir):
            try:
                removed += _scrub_one(path, erased)
            except (BundleInvalid, OSError, ValueError, KeyError) as err:
                logger.warning("bundle %s: not scrubbed (%s)", path.name, err)
                failed.append(path.name)
        if not failed and not pushing:  # else the queue stays for the next pass
            (bundles_dir / _TAKING).unlink()
    logger.info("bundle scrub: %d erased users queued, %d bundle rows removed",
                len(erased), removed)
    return removed
