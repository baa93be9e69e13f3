"""Receive a pushed bundle file by file into a staging directory, then publish it by rename."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from ..errors import FailedPrecondition, InvalidArgument
from .bundle import read_manifest

__all__ = ["BundleStaging"]


class BundleStaging:
    """One upload: `write(path, offset, data)` per chunk, then `publish()` or `discard()`."""

    def __init__(self, bundles_dir: Path, max_bytes: int = 8 << 30):
        self.bundles_dir = bundles_dir
        self.dir = bundles_dir / f".staging-{uuid.uuid4().hex}"
        self.dir.mkdir(parents=True)
        self.max_bytes = max_bytes
        self.received = 0
        self._sizes: dict[str, int] = {}

    def _target(self, rel: str) -> Path:
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or any(p in ("..", "") for p in parts) or len(parts) != 1:
            raise InvalidArgument("path", f"{rel!r} is not a plain file name inside the bundle")
        return self.dir / parts[0]

    def write(self, rel: str, offset: int, data: bytes) -> None:
        target = self._target(rel)
        size = self._sizes.get(rel, 0)
        if offset != size:
            raise InvalidArgument("offset", f"{rel}: got offset {offset}, expected {size} (chunks in order)")
        self.received += len(data)
        if self.received > self.max_bytes:
            raise InvalidArgument("data", f"bundle larger than the {self.max_bytes}-byte upload limit")
        with open(target, "ab") as fh:
            fh.write(data)
        self._sizes[rel] = size + len(data)

    def publish(self) -> Path:
        """Move the staged files to bundles/<version> (atomic rename); return that directory."""
        manifest = read_manifest(self.dir)
        version = manifest.version
        if not version or "/" in version or version.startswith("."):
            raise InvalidArgument("manifest.version", f"{version!r} is not a usable directory name")
        final = self.bundles_dir / version
        for fh_path in self.dir.iterdir():
            with open(fh_path, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            same = (final / "manifest.json").read_bytes() == (self.dir / "manifest.json").read_bytes()
            self.discard()
            if not same:
                raise FailedPrecondition(f"bundle version {version!r} is already stored with a "
                                         "different manifest; train a new version")
            return final
        os.replace(self.dir, final)
        return final

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
