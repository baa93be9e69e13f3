"""Which Tailor versions may have one store open at once: those that agree on every record
layout they both know (and on the key version).

Servers hold the data dir's lock shared (`lock.lock_data_dir`), so a newer Tailor started
beside a running older one (a blue/green on one host, a second `python -m server` by mistake)
would run its layout steps under it at open (`migrate`), and the older one, which checked the
stamps only at its own open, would then misread the new layouts (or refuse the store at its
next writer's start). Each process that opens the store writable beside others (servers, and
`rotate-key`) holds, for as long as it has it open, a shared lock on a file naming its layouts:
`store/.layouts-<digest>.lock`, holding the versions as JSON. Before opening the store it
looks at the other such files: one whose lock is held (a live process) and whose layouts differ
from this code's on a kind both know is refused in one line, before anything is changed.
Versions that add kinds, or change nothing stored, keep sharing the store. A file nobody holds
(its process gone) is deleted.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

from ..durable import make_dirs
from . import layouts
from .errors import StoreLayoutsInUse
from .rekey import KEY_VERSION

__all__ = ["hold_layouts", "known_layouts"]

KEY = "key_version"
"""The key version's entry among the layouts (`rekey.KEY_VERSION`)."""
PROBE_SECONDS = 0.5
"""How long a file another process probes (holding it exclusive for an instant) is retried
before its lock counts as held by a live process."""


def known_layouts() -> dict[str, int]:
    """{record kind: layout version} this code reads and writes, and the key version."""
    return {KEY: KEY_VERSION} | {kind.name: kind.version for kind in layouts.KINDS}


def hold_layouts(store_dir: Path, mine: dict[str, int] | None = None):
    """Hold this process's layouts file shared (close the returned file to let go) once no
    live process has the store open with other layouts; `StoreLayoutsInUse` otherwise."""
    mine = known_layouts() if mine is None else mine
    make_dirs(store_dir)
    own = store_dir / _name(mine)
    held = _hold(own, mine)
    try:
        for path in sorted(store_dir.glob(".layouts-*.lock")):
            if path.name != own.name:
                theirs = _live_layouts(path)
                if theirs is not None and _differ(mine, theirs):
                    raise StoreLayoutsInUse(store_dir, _differ(mine, theirs))
    except BaseException:
        held.close()
        raise
    return held


def _name(versions: dict[str, int]) -> str:
    text = json.dumps(versions, sort_keys=True).encode()
    return f".layouts-{hashlib.blake2b(text, digest_size=8).hexdigest()}.lock"


def _hold(path: Path, versions: dict[str, int]):
    """`path` (made with `versions` in it if missing) open and locked shared; a file a prober
    deleted meanwhile is made again."""
    while True:
        if not path.exists():  # made whole (a prober never reads it half-written), and
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # never over one another
            tmp.write_text(json.dumps(versions, sort_keys=True))  # process made and holds
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        try:
            fh = open(path, encoding="utf-8")
        except FileNotFoundError:
            continue
        fcntl.flock(fh, fcntl.LOCK_SH)  # waits only while a prober holds it, an instant
        if _same_file(path, fh):
            return fh
        fh.close()  # deleted as stale between our open and our lock


def _live_layouts(path: Path) -> dict[str, int] | None:
    """The layouts of the file `path` if a live process holds it; None (and the file deleted)
    if none does."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    with fh:
        deadline = time.monotonic() + PROBE_SECONDS
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    break  # held shared: a live process has the store open with these
                time.sleep(0.01)
                continue
            if _same_file(path, fh):  # nobody holds it: its process is gone
                path.unlink(missing_ok=True)
            return None
        try:
            return {str(k): int(v) for k, v in json.loads(fh.read()).items()}
        except (ValueError, AttributeError, TypeError):
            return {KEY: -1}  # unreadable: taken as differing, the safe side


def _differ(mine: dict[str, int], theirs: dict[str, int]) -> list[str]:
    """'kind (N here, M there)' for each kind both know at other versions."""
    return [f"{name} ({mine[name]} here, {theirs[name]} there)" for name in sorted(mine)
            if name in theirs and theirs[name] != mine[name]]


def _same_file(path: Path, fh) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return False
