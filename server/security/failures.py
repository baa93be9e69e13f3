"""Refused calls in the audit log, collapsed per pair and interval: failed authentication
per (peer, reason), denied calls (PERMISSION_DENIED) per (principal, method).

Anyone who reaches the port can fail authentication, and any principal can call a method its
roles do not cover (with an IdP's JWTs: anyone with an account), so one audit line per refusal
let them fill the disk the store lives on. Now the first refusal of a pair in an interval is
audited at once, as any was; that pair's further refusals in the interval become one line when
it ends, with `count` = how many. At most `max_pairs` pairs are tracked per interval: refusals
of any further pair share the pair ("*", "*"), but for a denied call, counted under its
principal first and whose first line names its own principal and method. Lines go to the
audit hook from a worker thread (an async hook is awaited), never as file I/O on the event loop.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass

from .logging import audit_failed

__all__ = ["DENIED", "DeniedDigest", "FailedAuthDigest", "OVERFLOW", "peer_host"]

OVERFLOW = ("*", "*")
"""The pair that failures of pairs beyond `max_pairs` are counted under."""
PRINCIPAL, STATUS = "unauthenticated", "UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED"
TARGET_CHARS = 2048
"""Longest denied call's target kept (ids are at most 240 bytes, addresses 1,024 characters)."""


def peer_host(peer: str) -> str:
    """The caller's address without its port (`ipv4:10.0.0.7:53422` -> `ipv4:10.0.0.7`): each
    connection has its own port, the pair is per client."""
    kind, _, rest = (peer or "").partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer or "unknown"


@dataclass
class _Pending:
    varying: str | None = None
    """The field a pair's lines may differ in (failed authentication's method, a denial's
    target) over the failures after the first: None before the second, `MIXED` once two differ."""
    more: int = 0
    """Failures after the first (the one already audited) in this interval."""


class _Digest:
    """Counts refused calls per pair over an interval: a pair's first in the interval is written
    at once, its further ones as one line with `count` when the interval ends (or at `close`).
    At most `max_pairs` pairs per interval; further ones share `OVERFLOW`. `_write` says how a
    pair's line reads."""

    MIXED = "*"

    def __init__(self, audit, interval: float, max_pairs: int):
        self.audit, self.interval, self.max_pairs = audit, interval, max_pairs
        self._pairs: dict[tuple[str, str], _Pending] = {}
        self._flusher: asyncio.Task | None = None
        self._flushing: asyncio.Future | None = None
        """The timer's flush under way: `close` lets it finish rather than cut it short."""

    async def _count(self, pair: tuple[str, str], varying: str, request_id: str) -> None:
        key = self._key(pair)
        pending = self._pairs.get(key)
        if pending is not None:
            pending.more += 1
            # of one type too: a user "x" and a `userref.CampaignKey` "x" are two targets
            same = pending.varying is None or (
                pending.varying == varying and type(pending.varying) is type(varying))
            pending.varying = varying if same else self.MIXED
            return
        self._pairs[key] = _Pending()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_after(self.interval))
        await self._write(self._first(pair, key), varying, request_id, 1)

    def _key(self, pair: tuple[str, str]) -> tuple[str, str]:
        """The key `pair`'s failures are counted under this interval."""
        if pair not in self._pairs and len(self._pairs) >= self.max_pairs:
            return OVERFLOW
        return pair

    def _first(self, pair: tuple[str, str], key: tuple[str, str]) -> tuple[str, str]:
        """The pair the first line of `key` in an interval names (`pair`: the failure's own)."""
        return key

    def _new_interval(self) -> dict[tuple[str, str], _Pending]:
        pairs, self._pairs = self._pairs, {}
        return pairs

    async def flush(self) -> None:
        """Write one line per pair that failed again since its first line; start a new interval."""
        pairs = self._new_interval()
        for pair, pending in pairs.items():
            if pending.more:
                await self._write(pair, pending.varying, "", pending.more)

    async def close(self) -> None:
        """Stop the timer and write what is counted (server stop), after the lines of a flush
        the timer had under way (cancelled with it, the pairs it had not written were lost)."""
        if self._flusher is not None:
            self._flusher.cancel()
        if self._flushing is not None:
            await self._flushing
        await self.flush()

    async def _flush_after(self, delay: float) -> None:
        """The interval's timer; it runs on while pairs are counted (failures that came while
        a flush was writing began the next interval's pairs, with no timer of their own)."""
        while True:
            await asyncio.sleep(delay)
            self._flushing = asyncio.ensure_future(self.flush())
            await asyncio.shield(self._flushing)
            if not self._pairs:  # no await from here to the task's end: the next failure
                return           # sees this timer done and starts one

    async def _write(self, pair: tuple[str, str], varying: str, request_id: str,
                     count: int) -> None:
        raise NotImplementedError

    async def _record(self, *args: str, **details: str | int) -> None:
        try:
            if inspect.iscoroutinefunction(self.audit.record):
                await self.audit.record(*args, **details)
            else:
                await asyncio.to_thread(self.audit.record, *args, **details)
        except Exception:  # the audit log failing must not change the call's answer; say so
            audit_failed(args[1])


class FailedAuthDigest(_Digest):
    """Counts failed authentication per (peer, reason) and writes it to `audit` (its
    `record(principal, method, target, status, request_id, **details)`, sync or async)."""

    async def failed(self, peer: str, method: str, reason: str, request_id: str) -> None:
        """One failed authentication: audited now if it is its pair's first in the interval."""
        await self._count((peer_host(peer), reason), method, request_id)

    async def _write(self, pair, varying, request_id, count):
        peer, reason = pair
        await self._record(PRINCIPAL, varying, "", STATUS, request_id,
                           peer=peer, reason=reason, count=count)


class DeniedDigest(_Digest):
    """Counts denied calls (PERMISSION_DENIED) per (principal, method) and writes them to
    `audit` with `count`: the first of an interval with its target, the rest as one line whose
    target is theirs when they all named the same one, else empty.

    Past `max_pairs` pairs, a principal's denials of further methods are counted under
    (principal, "*"), for at most `max_pairs` such principals, and only past those under
    ("*", "*") (principals beyond both bounds: JWT subjects, which no auth config bounds). The
    first line of each is written at once with the denied call's own principal, method, target
    and request id: whoever was refused, the log names them and what they called."""

    MIXED = ""

    def __init__(self, audit, interval: float, max_pairs: int):
        super().__init__(audit, interval, max_pairs)
        self._spilled = 0
        """(principal, "*") keys among this interval's pairs."""

    def _key(self, pair):
        if pair in self._pairs or len(self._pairs) - self._spilled < self.max_pairs:
            return pair
        own = (pair[0], OVERFLOW[1])
        if own in self._pairs:
            return own
        if self._spilled < self.max_pairs:
            self._spilled += 1
            return own
        return OVERFLOW

    def _first(self, pair, key):
        return pair

    def _new_interval(self):
        self._spilled = 0
        return super()._new_interval()

    async def denied(self, principal: str, method: str, target: str, request_id: str) -> None:
        """One denied call: audited now if it is its pair's first in the interval. A target
        longer than any id or address (`TARGET_CHARS`; the denied request was never validated)
        names no record and is not kept for the interval: audited as none."""
        target = target if len(target) <= TARGET_CHARS else ""
        await self._count((principal, method), target, request_id)

    async def _write(self, pair, varying, request_id, count):
        principal, method = pair
        await self._record(principal, method, varying, DENIED, request_id, count=count)
