"""A start the host refuses, in one line: an OSError of a kind the host causes (`HOST_ERRORS`: a
directory this account may not write, a read-only or full disk, a port taken) or a directory
made but not synced (`durable.Unconfirmed`).

`python -m server` prints it as its `error:` line (`server.__main__._serve`, one process), and
each worker of `--workers N` logs it before it exits refused (`server.worker`): the same text,
naming the path setting that holds the file (its flag and `TAILOR_` variable) or the ports.
Any other exception is a bug and keeps its traceback (`start_error` answers None).
"""
from __future__ import annotations

import errno
import os
from collections.abc import Container
from pathlib import Path

from .config import Settings, path_fields
from .durable import Unconfirmed

__all__ = ["HOST_ERRORS", "serve_flags", "start_error"]

HOST_ERRORS = {
    errno.EACCES: "run the server as an account that may write there, or point the setting at "
                  "a directory it may",
    errno.EPERM: "point the setting at a directory this account may write",
    errno.EROFS: "point the setting at a writable file system",
    errno.ENOSPC: "free space on that disk, or point the setting at another",
    errno.EDQUOT: "free space, or raise this account's disk quota",
    errno.ENOTDIR: "a part of the path is a file: point the setting elsewhere",
    errno.EADDRINUSE: "stop what listens on it, or choose another port",
    errno.EADDRNOTAVAIL: "listen on an address of this machine (--host)",
}
"""The OSErrors a start reports in one line, by errno, with what to do."""


def start_error(err: OSError, settings: Settings, flags: Container[str]) -> str | None:
    """`err` in one line (`flags`: the settings `serve` has a flag for), or None when it is not
    one the host causes."""
    if isinstance(err, Unconfirmed):  # made, not synced: a start must not build on it
        return (f"{_setting_of(err.directory, settings, flags)}{err.directory} could not be "
                f"synced ({err.strerror}): check that disk, then start again")
    if err.errno not in HOST_ERRORS:
        return None
    why = f"{(err.strerror or str(err)).lower()}: {HOST_ERRORS[err.errno]}"
    if err.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        ports = [f"{name} {getattr(settings, name)}" for name in
                 ("port", "metrics_port", "public_http_port") if getattr(settings, name)]
        return f"cannot listen on {settings.host} ({', '.join(ports)}): {why}"
    if err.filename is None:
        return f"cannot start: {why}"
    return f"{_setting_of(err.filename, settings, flags)}cannot use {err.filename}: {why}"


def serve_flags() -> frozenset[str]:
    """The settings `python -m server serve` has a flag for: a worker, which was not given the
    command line, names them as `_serve` does (read only when a start failed)."""
    from .__main__ import build_parser
    return frozenset(vars(build_parser().parse_args(["serve"]))) - {"command", "config"}


def _setting_of(file, settings: Settings, flags: Container[str]) -> str:
    """`name (--flag, TAILOR_NAME): ` of the path setting nearest above `file` (`bundle`, not
    `data_dir`, for a file of a bundle kept in the data dir), or "" when none holds it."""
    path = Path(os.path.abspath(file))
    holders = {name: Path(os.path.abspath(value)) for name in path_fields()
               if (value := getattr(settings, name)) is not None}
    holders = {name: p for name, p in holders.items() if p in (path, *path.parents)}
    if not holders:
        return ""
    name = max(holders, key=lambda n: len(holders[n].parts))
    flag = f"--{name.replace('_', '-')}, " if name in flags else ""
    return f"{name} ({flag}TAILOR_{name.upper()}): "
