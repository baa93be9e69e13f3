"""Receive a pushed bundle file by file into a staging directory, then publish it by rename."""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import contract

from .. import durable
from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from ..limits import DEFAULT_LIMITS, Limits
from ..processes import owner_alive, process_started
from ..validation import check_text, check_version, shown
from .arrays import decoded_bytes
from .bundle import BundleInvalid, array_files, read_manifest

__all__ = ["BundleDiskFull", "BundleStaging", "BundleTooLarge", "checked_manifest", "claimed",
           "leftover_name", "remove_unclaimed", "sweep_leftovers", "uploads_under_way"]

logger = logging.getLogger("tailor.models.staging")

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_LEFTOVER = re.compile(r"\.(staging|import)-(\d+)(?:\.(\d+))?-.*")
STALE_SECONDS = 3600.0
"""A leftover staging directory without a live owner process older than this is removed."""


class BundleDiskFull(ResourceExhausted):
    """A push refused: the disk of the bundles directory filled up as it was stored (nothing
    of it is left there; the serving bundle is unchanged)."""

    def __init__(self, bundles_dir: Path, received: int):
        free = shutil.disk_usage(bundles_dir).free
        super().__init__(f"no space left on the disk of {bundles_dir} for the bundle "
                         f"({received} bytes received, {free} bytes free now that its upload is "
                         "removed): nothing was stored (free space, or lower TAILOR_BUNDLES_KEPT)")


class BundleTooLarge(ResourceExhausted):
    """A push refused past `Limits.bundle_upload_bytes`, as its bytes arrive (`BundleStaging.write`:
    nothing more is written) or once its .npz arrays are counted decoded (`check_decoded`); its
    staging directory is removed before the answer, the serving bundle is unchanged."""

    def __init__(self, limit: int, size: int, what: str):
        super().__init__(f"bundle larger than the {limit}-byte upload limit "
                         f"(TAILOR_LIMITS__BUNDLE_UPLOAD_BYTES): {size} bytes {what}; nothing of "
                         "it was stored and the serving bundle is unchanged (raise the setting "
                         "on every server for a larger bundle)")


def leftover_name(kind: str, rest: str) -> str:
    """The name of a directory this process fills before renaming it into place (`kind`:
    "staging" or "import"): `.<kind>-<pid>.<started>-<rest>`, its owner's pid and when that
    process started (`processes.owner_alive`), so a later process given the same pid (a
    restarted container's) is not taken for its owner; `.<kind>-<pid>-<rest>` without /proc."""
    pid = os.getpid()
    started = process_started(pid)
    return f".{kind}-{pid}-{rest}" if started is None else f".{kind}-{pid}.{started}-{rest}"


def _owner_alive(match: re.Match) -> bool:
    """Whether the process named by a `leftover_name` (matched by `_LEFTOVER`) still runs."""
    return owner_alive(int(match.group(2)), None if match.group(3) is None else int(match.group(3)))


def uploads_under_way(bundles_dir: Path) -> bool:
    """Whether a live process is filling a `.staging-*` directory here: a push between its
    first chunk and its publish, whose load checks may have queued erased users it holds for
    the scrub (`scrub.scrub_stored`) before it is stored under its version."""
    for path in bundles_dir.iterdir():
        match = _LEFTOVER.fullmatch(path.name)
        if match is not None and match.group(1) == "staging" and _owner_alive(match):
            return True
    return False


def sweep_leftovers(bundles_dir: Path, now: float | None = None) -> list[str]:
    """Remove `.staging-*` / `.import-*` directories a crashed upload or import left behind:
    those of a process that no longer runs (or whose pid went to a later process:
    `leftover_name`), and any older than `STALE_SECONDS`."""
    now = time.time() if now is None else now
    removed = []
    for path in bundles_dir.iterdir():
        if not path.name.startswith((".staging-", ".import-")) or not path.is_dir():
            continue
        match = _LEFTOVER.fullmatch(path.name)
        alive = match is not None and _owner_alive(match)
        try:
            old = now - path.stat().st_mtime > STALE_SECONDS
        except FileNotFoundError:
            continue
        if (match is not None and not alive) or (match is None and old) or (old and not alive):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if removed:
        logger.info("removed %d leftover upload directories: %s", len(removed), removed[:5])
    return removed



def checked_manifest(path: Path, limits: Limits = DEFAULT_LIMITS):
    """The manifest of the bundle at `path`, checked, its version usable as a directory name
    under the bundles directory (a pushed bundle's, an imported `--bundle`'s)."""
    manifest = read_manifest(path)
    try:
        check_version("manifest.json: version", manifest.version, limits.bundle_version_chars)
    except InvalidArgument as err:  # the bundle is bad, not the request: as for other keys
        raise FailedPrecondition(str(err)) from None
    return manifest


def _same_bundle(stored: Path, staged: Path) -> bool:
    """Whether two manifests describe the same bundle: equal but for the sha256 of users.npz,
    which the server's copy changes when it scrubs erased users (`scrub`)."""
    def key(path: Path) -> dict:
        raw = json.loads(path.read_bytes())
        files = raw.get("files")
        if isinstance(files, dict):
            raw["files"] = {k: v for k, v in files.items() if k != "users.npz"}
        return raw
    try:
        return key(stored) == key(staged)
    except (OSError, ValueError):
        return False


def _damage(stored: Path) -> str | None:
    """What is wrong with the files of a stored bundle (the checks of a load: each file the
    manifest lists present, of its sha256), or None."""
    try:
        contract.check_files(stored, read_manifest(stored))
    except (contract.BundleError, BundleInvalid) as err:
        return str(err)
    except OSError as err:
        return err.strerror or str(err)
    return None


def claimed(path: Path) -> int | None:
    """A descriptor of directory `path` holding a shared flock on it, or None when `path` is
    gone (or another directory) once the lock is held: its push removed it (`alone`). A push
    holds its version so from its publish, a load from disk (`ModelRegistry.activate`) while
    it reads and swaps it in: a prune (`remove_unclaimed`) leaves it meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    if _still_names(path, fd):
        return fd
    os.close(fd)
    return None


def _still_names(path: Path, fd: int) -> bool:
    """Whether `path` still names the directory `fd` holds (not gone, nor another put there)."""
    try:
        now, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def remove_unclaimed(path: Path, needed: Callable[[], bool] = lambda: False) -> bool:
    """Remove stored version `path` unless a push or a load holds it (`claimed`: a push from
    its publish to its end, `ModelRegistry.activate` until it is recorded), or `needed()` says,
    asked once it is held here alone, that it is to be kept after all (a prune's choice made
    before a rollback to it was recorded); True when removed. A push reaching it meanwhile
    waits, then stores its own copy (`claimed`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        if needed():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)


class BundleStaging:
    """One upload: `write(path, offset, data)` per chunk, then `publish()` or `discard()`."""

    REPLACE_WAIT_SECONDS = 10.0
    """How long a push waits to hold a damaged stored copy alone before it replaces it."""

    def __init__(self, bundles_dir: Path, limits: Limits = DEFAULT_LIMITS):
        self.bundles_dir = bundles_dir
        self.dir = bundles_dir / leftover_name("staging", uuid.uuid4().hex)
        durable.make_dirs(bundles_dir)  # synced in its parent when a push makes it
        self.dir.mkdir(mode=0o700)  # scratch: synced whole (`fsync_tree`) before it is renamed
        self.max_bytes = limits.bundle_upload_bytes
        self.limits = limits
        self.received = 0
        self.chunks = 0
        self.created = False
        """True once `publish` stored a version the bundles directory did not hold."""
        self.version = ""
        """The version `publish` stored or found stored."""
        self._claim: int | None = None
        """The published directory's descriptor, holding a shared flock on it until `release`:
        every push of a version holds one, so the push that stored it sees whether another push
        of the same version (this worker's or another's) found it stored (`alone`)."""
        self._sizes: dict[str, int] = {}

    def _target(self, rel: str) -> Path:
        check_text("path", rel, self.limits.bundle_path_chars)
        if not _PLAIN_NAME.fullmatch(rel):
            raise InvalidArgument("path", f"{shown(rel)} is not a plain file name inside the "
                                  "bundle (letters, digits, '.', '_', '-'; not starting with '.')")
        return self.dir / rel

    def write(self, rel: str, offset: int, data: bytes) -> None:
        target = self._target(rel)
        self.chunks += 1
        if self.chunks > self.limits.bundle_chunks:
            raise InvalidArgument("chunks", f"more than {self.chunks - 1} chunks, at most "
                                  f"{self.limits.bundle_chunks} a push (limits.bundle_chunks, "
                                  "TAILOR_LIMITS__BUNDLE_CHUNKS): send larger chunks; nothing "
                                  "of it was stored")
        if rel not in self._sizes and len(self._sizes) >= self.limits.bundle_files:
            raise InvalidArgument("path", f"{shown(rel)}: a bundle has at most "
                                  f"{self.limits.bundle_files} files")
        size = self._sizes.get(rel, 0)
        if offset != size:
            raise InvalidArgument("offset", f"{rel}: got offset {offset}, expected {size} "
                                  "(chunks in order)")
        if self.received + len(data) > self.max_bytes:
            raise BundleTooLarge(self.max_bytes, self.received + len(data),
                                 f"with this chunk of {shown(rel)}")
        self.received += len(data)
        with open(target, "ab") as fh:
            fh.write(data)
        self._sizes[rel] = size + len(data)

    def manifest(self):
        """The staged manifest, checked, its version usable as a directory name."""
        return checked_manifest(self.dir, self.limits)

    def check_decoded(self, manifest) -> None:
        """The upload limit holds for the bundle as it is loaded: a compressed .npz counts by
        the bytes its arrays take decoded (from their headers, before any is decoded), so a
        small compressed file cannot make every worker allocate gigabytes. Every file the load
        reads as an .npz counts (`bundle.array_files` of the staged `manifest`: a content map
        named content.bin too), if staged here (a name that is no staged file is refused by
        the load)."""
        total, names = self.received, set(array_files(manifest))
        for path in (p for p in self.dir.iterdir() if p.name in names and p.is_file()):
            decoded = decoded_bytes(path)
            if decoded is not None:
                total += max(decoded - path.stat().st_size, 0)
        if total > self.max_bytes:
            raise BundleTooLarge(self.max_bytes, total, "once its .npz arrays are decoded")

    def publish(self) -> Path:
        """Move the staged files to bundles/<version> (atomic rename); return that directory."""
        manifest = self.manifest()
        version = self.version = manifest.version
        final = self.bundles_dir / version
        listed = {"manifest.json", *manifest.files}
        for path in self.dir.iterdir():
            if path.name not in listed:  # never store what the manifest does not account for
                logger.warning("bundle %s: dropping %s (%d bytes), not listed in the manifest",
                               version, shown(path.name), path.stat().st_size)
                path.unlink()
        durable.fsync_tree(self.dir)  # every file and name on disk before it is renamed in
        for _ in range(3):  # another push may store the version as this one renames
            if final.exists():
                self._claim = claimed(final)  # None: its push removed it meanwhile (`alone`)
            if self._claim is not None:
                found = self._found_stored(final, version)
                if found is not None:
                    return found
                continue  # its copy was damaged, and is set aside: this upload takes its place
            if self._store(final):
                durable.fsync_path(self.bundles_dir)  # the rename, before a pointer names it
                return final
        raise FailedPrecondition(f"bundle version {version!r} is being stored and removed by "
                                 "other pushes; push it again")

    def _found_stored(self, final: Path, version: str) -> Path | None:
        """The version is stored (and claimed): this upload is dropped, its manifest checked;
        None when the stored copy is damaged (a file missing, or not of its sha256: changed on
        disk under the server), which is then set aside for this upload to be stored instead.
        Kept, a damaged copy was served from the pushing worker's memory (it loaded the upload)
        while the other workers, and every later start, failed to load it from disk."""
        if not _same_bundle(final / "manifest.json", self.dir / "manifest.json"):
            self.discard()
            self.release()
            raise FailedPrecondition(f"bundle version {version!r} is already stored with a "
                                     "different manifest; train a new version")
        damage = _damage(final)
        if damage is None:
            self.discard()
            return final
        if not self._held_alone(final):  # another push replaced it meanwhile: check its copy
            self.release()
            return None
        aside = self.bundles_dir / leftover_name("staging", f"damaged-{uuid.uuid4().hex}")
        os.replace(final, aside)
        self.release()
        logger.warning("bundle %s: its stored copy is damaged (%s): replaced by this push's",
                       version, damage)
        shutil.rmtree(aside, ignore_errors=True)  # a crash first: `sweep_leftovers` removes it
        return None

    def _held_alone(self, final: Path) -> bool:
        """Wait, `REPLACE_WAIT_SECONDS` at most, until this push holds the stored copy it
        checked alone (as a prune does before it removes one: another push or a load from disk
        may be reading it); False when `final` is another directory by then (a push that held
        it too replaced it). Setting it aside at once removed, in two pushes of the version at
        once, the copy the other had just stored and was loading on every worker."""
        deadline = time.monotonic() + self.REPLACE_WAIT_SECONDS
        while not self.alone():  # a failed try drops the shared lock (flock converts so)
            if time.monotonic() > deadline:
                self.discard()
                self.release()
                raise FailedPrecondition(f"bundle version {self.version!r}: its stored copy "
                                         "is damaged and another push or a load still reads "
                                         "it; push it again")
            time.sleep(0.05)
        return _still_names(final, self._claim)

    def _store(self, final: Path) -> bool:
        """Rename the staged directory to `final`, claimed from before the rename (a prune
        reaching the version as it appears finds it held); False when `final` appeared
        meanwhile (another push stored it)."""
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # the descriptor follows the directory's rename
            os.replace(self.dir, final)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        except BaseException:
            os.close(fd)
            raise
        self.created = True
        self._claim = fd
        return True

    def alone(self) -> bool:
        """Whether no other push holds the version this one published (its claim turned
        exclusive, until `release`: a push finding it stored meanwhile waits, then finds it
        gone and stores its own copy). A push that stored a version removes it on failure only
        then: another push of it (which found it stored) may be serving it."""
        if self._claim is None:
            return False
        try:
            fcntl.flock(self._claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        """Drop the claim on the published version (the push is over)."""
        if self._claim is not None:
            os.close(self._claim)
            self._claim = None

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
