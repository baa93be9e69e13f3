"""The audit log: one JSON line per privileged or sensitive call, chained by MACs.

Files: `<data_dir>/audit/audit-NNNNNN.jsonl`. Each line is canonical JSON (sorted keys) of
`ts, principal, method, target, status, request_id, kid` (failed authentication adds `peer`,
`reason` and `count`, a denied call `count`: `failures`) plus `mac`, the hex HMAC-SHA256 under
the audit key `kid` of the previous line's MAC, a newline, and the line's own canonical JSON
without `mac`. Editing, dropping or reordering a line breaks every later MAC, and rebuilding the
chain needs the audit key (a plain hash chain anyone could recompute).

The chain runs across files: a file is closed at `max_bytes` and the next one's first line
chains to the last MAC of the previous file. Retention (`keep_files`) drops whole files, oldest
first, after writing `audit.head`: the first kept file and the MAC it continues from, itself
MACed. Worker processes share the files: each append takes an exclusive `flock` around reading
the previous MAC and one `O_APPEND` write, so the chain stays linear.

A chain cannot tell a log whose newest lines were cut off from one that ended there, so each
append then rewrites `audit.tip` (under the same lock): the newest line's file, MAC and time,
itself MACed. `verify_chain` requires the tip's line in the log; lines after it are allowed (a
crash between an append and the tip's rewrite). The tip lives beside the log: whoever can
rewrite the log and also puts back an older copy of `audit.tip` rolls the end back undetected;
ship the lines off the host (`clients audit tail`) for an outside anchor.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from .. import durable
from .secrets import Keyring
from .userref import target_ref

__all__ = ["AuditLog", "Verification", "verify_chain"]

FILE_RE = re.compile(r"^audit-(\d{6})\.jsonl$")
HEAD = "audit.head"
TIP = "audit.tip"
FIELD_CHARS = 256
TAIL_READ_BYTES = 64 * 1024


def _canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _line_mac(ring: Keyring, prev: str, entry: dict, kid: str) -> str:
    return ring.mac(prev.encode() + b"\n" + _canonical(entry), kid)


def _head_mac(ring: Keyring, first_file: str, prev: str, kid: str) -> str:
    return ring.mac(f"head\n{first_file}\n{prev}".encode(), kid)


def _tip_mac(ring: Keyring, file: str, mac: str, ts: str, kid: str) -> str:
    return ring.mac(f"tip\n{file}\n{mac}\n{ts}".encode(), kid)


def _file_name(n: int) -> str:
    return f"audit-{n:06d}.jsonl"


def audit_files(directory: Path) -> list[Path]:
    """The audit files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if FILE_RE.match(p.name))


def _last_line(path: Path) -> bytes | None:
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as fh:
        fh.seek(max(0, size - TAIL_READ_BYTES))
        lines = fh.read().splitlines()
    return lines[-1] if lines else None


def _newest_time(path: Path) -> float | None:
    """Unix seconds of the newest line of `path` (None: an empty file): its `ts`, or for a line
    cut by a crash or a full disk, the time the file was last written."""
    last = _last_line(path)
    if last is None:
        return None
    try:
        return datetime.fromisoformat(json.loads(last)["ts"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return path.stat().st_mtime


def _line_start(fd: int) -> bytes:
    """A newline when the file ends inside a line (a write torn by a crash), else nothing."""
    size = os.fstat(fd).st_size
    return b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""


def _write_record(path: Path, record: dict, sync: bool = False) -> None:
    """Write the head or tip record whole or not at all (a temp file beside it, then replaced);
    `sync`: on disk before the caller goes on (`durable.replace`), as the head must be before
    the files it stands for are deleted. The tip is not fsynced: neither are the lines it names
    (an fsync each per audited call), and a tip on disk ahead of its line would read, after a
    power loss, as a log cut short."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    if sync:
        durable.replace(tmp, path)
    else:
        os.replace(tmp, path)


def _verified(text: str, ring: Keyring, mac: Callable[[dict], str]) -> dict | None:
    """The head or tip record in `text` if its key is known and its MAC is `mac(record)`."""
    try:
        record = json.loads(text)
        good = ring.key_of(record["kid"]) is not None and record["mac"] == mac(record)
    except (ValueError, KeyError, TypeError):
        return None
    return record if good else None


def _mac_of(line: bytes) -> str:
    """The MAC of an audit line; a torn or foreign line (a crash mid-write, an edit) gives a
    value no key produces, so the chain stays appendable and `verify` names that line."""
    try:
        return str(json.loads(line)["mac"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"


class AuditLog:
    """Appends chained audit lines under `directory`; safe across threads and processes."""

    def __init__(self, directory: Path, ring: Keyring, *, max_bytes: int = 16 << 20,
                 keep_files: int = 0):
        self.directory = Path(directory)
        self.ring = ring
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        durable.make_dirs(self.directory)
        self._thread_lock = threading.Lock()
        self._lock_path = self.directory / "audit.lock"

    def record(self, principal: str, method: str, target: str, status: str, request_id: str,
               **details: str | int) -> dict:
        """Append one line; `target` (a user id, or a key of another kind: `userref.CampaignKey`,
        `userref.AddressKey`) is stored as its labelled keyed hash (`userref.target_ref`);
        `details` (failed authentication's `peer`, `reason`, `count`; a denial's `count`) are added as
        they are."""
        entry = {**{k: v[:FIELD_CHARS] if isinstance(v, str) else v for k, v in details.items()},
                 "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "principal": principal[:FIELD_CHARS], "method": method[:FIELD_CHARS],
                 "target": target_ref(target) if target else "", "status": status[:FIELD_CHARS],
                 "request_id": request_id[:FIELD_CHARS], "kid": self.ring.kid}
        with self._thread_lock, open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            path, prev = self._tail_position()
            entry["mac"] = _line_mac(self.ring, prev, entry, self.ring.kid)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, _line_start(fd) + _canonical(entry) + b"\n")
            finally:
                os.close(fd)
            self._write_tip(path.name, entry)
        return entry

    def _write_tip(self, file: str, entry: dict) -> None:
        """Anchor the chain's end at the line just appended (lock held)."""
        tip = {"file": file, "line_mac": entry["mac"], "ts": entry["ts"], "kid": self.ring.kid}
        tip["mac"] = _tip_mac(self.ring, file, entry["mac"], entry["ts"], self.ring.kid)
        _write_record(self.directory / TIP, tip)

    def _tail_position(self) -> tuple[Path, str]:
        """The file to append to and the MAC the next line chains to (lock held)."""
        files = audit_files(self.directory)
        if not files:
            return self.directory / _file_name(1), self._head_prev()
        for path in reversed(files):
            last = _last_line(path)
            if last is not None:
                prev = _mac_of(last)
                break
        else:
            prev = self._head_prev()
        current = files[-1]
        if current.stat().st_size >= self.max_bytes:
            current = self.directory / _file_name(int(FILE_RE.match(current.name)[1]) + 1)
            self._drop_old([*files, current])
        return current, prev

    def _head_prev(self) -> str:
        path = self.directory / HEAD
        return json.loads(path.read_text())["prev"] if path.exists() else ""

    def drop_before(self, cutoff: float) -> int:
        """Retention by age: drop the oldest files whose newest line is older than `cutoff`
        (unix seconds), never the file being written; returns how many went."""
        with self._thread_lock, open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            files, n = audit_files(self.directory), 0
            for path in files[:-1]:
                newest = _newest_time(path)
                if newest is not None and newest >= cutoff:
                    break
                n += 1
            if n:
                self._drop_first(files, n)
            return n

    def _drop_old(self, files: list[Path]) -> None:
        """Retention: keep the newest `keep_files` (the new one included); record the head first."""
        if self.keep_files <= 0 or len(files) <= self.keep_files:
            return
        self._drop_first(files, len(files) - self.keep_files)

    def _drop_first(self, files: list[Path], n: int) -> None:
        """Drop the oldest `n` of `files` after writing the head the next one continues from."""
        dropped, first = files[:n], files[n]
        prev = _mac_of(_last_line(dropped[-1]) or b"")
        head = {"file": first.name, "prev": prev, "kid": self.ring.kid}
        head["mac"] = _head_mac(self.ring, first.name, prev, self.ring.kid)
        _write_record(self.directory / HEAD, head, sync=True)
        for path in dropped:
            path.unlink()

    def tail(self, n: int) -> list[str]:
        """The newest `n` lines, oldest first, as of one moment: the files and the newest one's
        size are read under the writers' lock, so a line being appended is not answered half."""
        if n <= 0:
            return []
        with _writers_lock(self.directory):
            files = audit_files(self.directory)
            newest = files[-1].stat().st_size if files else 0
        lines: list[str] = []
        for i, path in enumerate(reversed(files)):
            if len(lines) >= n:
                break
            try:
                with open(path, "rb") as fh:
                    raw = fh.read(newest) if i == 0 else fh.read()
            except FileNotFoundError:  # dropped by retention in another process meanwhile
                break
            lines[:0] = raw.decode(errors="replace").splitlines()
        return lines[-n:]


@dataclass
class Verification:
    ok: bool
    files: int = 0
    lines: int = 0
    first_broken: str = ""
    reason: str = ""
    head: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "files": self.files, "lines": self.lines,
                "first_broken": self.first_broken, "reason": self.reason}


def _check_head(head_text: str | None, ring: Keyring, files: list[Path]
                ) -> tuple[str, Verification | None]:
    """The MAC the oldest file continues from (`head_text`: the head record, None without
    one), or a failed Verification."""
    if head_text is None:
        if files and files[0].name != _file_name(1):
            return "", Verification(False, first_broken=files[0].name,
                                    reason=f"{_file_name(1)} is missing and there is no {HEAD}")
        return "", None
    head = _verified(head_text, ring, lambda h: _head_mac(ring, h["file"], h["prev"], h["kid"]))
    if head is None:
        return "", Verification(False, first_broken=HEAD, reason="the head record's MAC does not verify")
    if files and files[0].name != head["file"]:
        why = f"{HEAD} continues at {head['file']}, the oldest file is {files[0].name}"
        return "", Verification(False, first_broken=files[0].name, reason=why)
    return head["prev"], None


def _check_line(ring: Keyring, prev: str, raw: str) -> tuple[str, str]:
    """(this line's MAC, '') or ('', why it does not verify)."""
    try:
        entry = json.loads(raw)
        mac, kid = entry.pop("mac"), entry["kid"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", "not an audit line"
    if ring.key_of(kid) is None:
        return "", f"unknown audit key {kid!r}"
    if _line_mac(ring, prev, entry, kid) != mac:
        return "", "MAC mismatch (the line or one before it was changed, removed or reordered)"
    return mac, ""


def _parse_tip(tip_text: str | None, ring: Keyring) -> tuple[dict | None, str]:
    """(the tip record, '') if it verifies, else (None, why not)."""
    if tip_text is None:
        return None, (f"{TIP} is missing: the newest lines cannot be checked (it was deleted, "
                      "or no server of this version has appended to the log yet)")
    tip = _verified(tip_text, ring,
                    lambda t: _tip_mac(ring, t["file"], t["line_mac"], t["ts"], t["kid"]))
    return (tip, "") if tip is not None else (None, f"the {TIP} record's MAC does not verify")


def _tip_missing(tip: dict, files: list[Path], macs: set[str]) -> str:
    """Why the log does not reach the tip's line ('' if it does: its MAC is among `macs`, those
    of the tip's file; or retention dropped that file and the log goes on past it)."""
    if tip["line_mac"] in macs:
        return ""
    n = int(FILE_RE.match(tip["file"])[1]) if FILE_RE.match(tip["file"]) else 0
    if files and n < int(FILE_RE.match(files[0].name)[1]):
        return ""
    where = tip["file"] if any(p.name == tip["file"] for p in files) else f"{tip['file']} (gone)"
    return (f"the newest line written (in {where}, at {tip['ts']}) is not in the log: lines "
            "at its end were removed")


@contextlib.contextmanager
def _writers_lock(directory: Path) -> Iterator[None]:
    """The writers' lock on `directory` (`AuditLog.record` holds it around each append), for a
    reader: opened read-only, never created (a verifier running as another account must not
    leave a lock file the server cannot open); without one (no writer yet, a copied log)
    nothing to wait for."""
    try:
        lock = open(directory / "audit.lock", "rb")
    except (FileNotFoundError, PermissionError):
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


@contextlib.contextmanager
def _snapshot(directory: Path
              ) -> Iterator[tuple[str | None, str | None, list[tuple[Path, BinaryIO, int]]]]:
    """(the head record's text, the tip record's text, [(file, open file, bytes to read)]
    oldest first) as of one moment: taken under the writers' lock (a few opens, not the
    reading), so a rotation that drops files or moves the head, a line half written, and a tip
    not yet rewritten, are not seen. The open files keep what retention deletes meanwhile
    readable; a file's bytes are its size then."""
    if not directory.is_dir():
        yield None, None, []
        return
    with contextlib.ExitStack() as stack:
        with _writers_lock(directory):
            head_text, tip_text = _read_text(directory / HEAD), _read_text(directory / TIP)
            files = [(path, stack.enter_context(open(path, "rb"))) for path in audit_files(directory)]
            files = [(path, fh, os.fstat(fh.fileno()).st_size) for path, fh in files]
        yield head_text, tip_text, files


def verify_chain(directory: Path, ring: Keyring) -> Verification:
    """Check every line of every audit file, as of one moment (servers may keep writing);
    name the first line that does not verify, then check that the log reaches `audit.tip`
    (the newest line written), so newest lines or files removed are named too. No file and
    no tip: nothing to check (ok)."""
    with _snapshot(directory) as (head_text, tip_text, snapshot):
        files = [path for path, _, _ in snapshot]
        prev, failed = _check_head(head_text, ring, files)
        if failed is not None:
            return failed
        n_lines, tip_macs = 0, set()
        tip, tip_problem = _parse_tip(tip_text, ring)
        for i, (path, fh, size) in enumerate(snapshot):
            expected = int(FILE_RE.match(files[0].name)[1]) + i
            if path.name != _file_name(expected):
                return Verification(False, i, n_lines, path.name, f"{_file_name(expected)} is missing")
            for lineno, raw in enumerate(fh.read(size).decode(errors="replace").splitlines(), 1):
                prev, problem = _check_line(ring, prev, raw)
                if problem:
                    return Verification(False, i + 1, n_lines, f"{path.name}:{lineno}", problem)
                n_lines += 1
                if tip is not None and path.name == tip["file"]:
                    tip_macs.add(prev)
        if tip_text is None and n_lines == 0:
            return Verification(True, len(files), 0)
        if tip is not None:
            tip_problem = _tip_missing(tip, files, tip_macs)
        if tip_problem:
            return Verification(False, len(files), n_lines, TIP, tip_problem)
        return Verification(True, len(files), n_lines)
