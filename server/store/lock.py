"""A lock file beside the store: servers hold it shared, compaction needs it exclusive."""
from __future__ import annotations

import fcntl
from pathlib import Path

from ..errors import FailedPrecondition

__all__ = ["lock_data_dir"]


def lock_data_dir(data_dir: Path, exclusive: bool):
    """Take the data dir's lock (non-blocking); the returned file holds it until closed."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fh = open(data_dir / "tailor.lock", "a+")
    except OSError as err:  # a file in the way, no permission, a read-only file system
        raise FailedPrecondition(f"cannot use {data_dir} as a data dir: "
                                 f"{err.strerror or err}") from None
    try:
        fcntl.flock(fh, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise FailedPrecondition(
            f"{data_dir} is in use by a running server" if exclusive
            else f"{data_dir} is being compacted; start the server when it is done") from None
    return fh
