"""The backup file read into a restore's staging dir and checked before anything is replaced:
a tar of this format, with only the expected entries, a store copy that opens, and bundles
whose files match their manifests' sha256s."""
from __future__ import annotations

import json
import lzma
import tarfile
import zlib
from pathlib import Path

import contract

from ..errors import FailedPrecondition
from ..files import private_tree
from ..store.backup import check_copy
from ..store.errors import out_of_space
from .archive import FORMAT, MANIFEST, TOP_LEVEL

__all__ = ["extract"]


def extract(archive: Path, staging: Path) -> dict:
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
            if member.name.split("/", 1)[0] not in TOP_LEVEL:
                raise FailedPrecondition(f"{archive} holds an unexpected entry {member.name!r}")
        tar.extractall(staging, filter="data")  # refuses absolute paths, .. and outside links
    # the data filter keeps a member's mode (a tar's 0644 files, an older backup's 0644 pads
    # `store/keyslots` too): the server's account's alone, as everything it writes
    private_tree(staging)
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
